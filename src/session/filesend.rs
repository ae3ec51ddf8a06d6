//! `moby.filesync.v1.FileSend/DiffCopy`: receives an exporter's output. The
//! daemon names the exporter by its index in the Solve request
//! (`buildkit-attachable-exporter-id`). The one method carries two formats:
//! raw tar bytes in `BytesMessage`s for `oci`/`docker` (written to a file), and
//! fsutil packets for `local` (a tree, see [`super::fsreceive`]). So this
//! service is written by hand over a codec that passes message bytes through.
//!
//! Either way the result is staged beside its destination and moved over it
//! only once complete: an interrupted export leaves the old one intact.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use futures::StreamExt;
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use crate::wire::moby::filesync::v1::BytesMessage;

pub(crate) const METHODS: &[&str] = &["/moby.filesync.v1.FileSend/DiffCopy"];

const EXPORTER_ID: &str = "buildkit-attachable-exporter-id";

/// Where one exporter's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportTarget {
    /// A tarball (`oci`, `docker` exporters).
    File(PathBuf),
    /// A directory tree (`local` exporter); an existing one is replaced whole.
    Dir(PathBuf),
}

/// Where each exporter's output goes, by exporter index.
#[derive(Debug, Clone, Default)]
pub struct ExportFiles {
    targets: Arc<BTreeMap<usize, ExportTarget>>,
}

impl ExportFiles {
    pub fn new(targets: BTreeMap<usize, ExportTarget>) -> Self {
        ExportFiles {
            targets: Arc::new(targets),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub(crate) fn service(self) -> FileSendService {
        FileSendService { files: self }
    }
}

/// Passes gRPC message payloads through as bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The FileSend service, routed by hand (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct FileSendService {
    files: ExportFiles,
}

impl NamedService for FileSendService {
    const NAME: &'static str = "moby.filesync.v1.FileSend";
}

type Outbound = ReceiverStream<Result<Bytes, Status>>;

impl StreamingService<Bytes> for FileSendService {
    type Response = Bytes;
    type ResponseStream = Outbound;
    type Future = futures::future::BoxFuture<'static, Result<Response<Outbound>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let files = self.files.clone();
        Box::pin(async move { files.diff_copy(request).await })
    }
}

impl tower::Service<http::Request<Body>> for FileSendService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            if request.uri().path() != METHODS[0] {
                return Ok(Status::unimplemented("FileSend has only DiffCopy").into_http());
            }
            let mut grpc =
                Grpc::new(RawCodec).apply_max_message_size_config(Some(64 << 20), Some(64 << 20));
            Ok(grpc.streaming(service, request).await)
        })
    }
}

impl ExportFiles {
    async fn diff_copy(
        &self,
        request: Request<Streaming<Bytes>>,
    ) -> Result<Response<Outbound>, Status> {
        let id: usize = request
            .metadata()
            .get(EXPORTER_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let target = self.targets.get(&id).cloned().ok_or_else(|| {
            Status::not_found(format!("exporter {id} has no destination on this machine"))
        })?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        match target {
            ExportTarget::File(dest) => {
                // The whole tar arrives before we answer: the daemon waits for
                // our end of the stream to know the file is safe.
                receive_file(&dest, inbound).await?;
            }
            ExportTarget::Dir(dest) => {
                tokio::spawn(async move {
                    let errors = tx.clone();
                    if let Err(e) = super::fsreceive::receive_tree(dest, inbound, tx).await {
                        let _ = errors.send(Err(e)).await;
                    }
                });
            }
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A temporary file beside `dest`, removed unless committed.
struct Staged {
    tmp: PathBuf,
    committed: bool,
}

impl Staged {
    fn beside(dest: &Path) -> Staged {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "export".into());
        let tmp = dest.with_file_name(format!(".{name}.strata-{}", super::random_id()));
        Staged {
            tmp,
            committed: false,
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

async fn receive_file(dest: &Path, mut inbound: Streaming<Bytes>) -> Result<(), Status> {
    let failed = |what: &str, path: &Path, e: std::io::Error| {
        Status::internal(format!("{what} {}: {e}", path.display()))
    };
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| failed("creating", parent, e))?;
    }
    let mut staged = Staged::beside(dest);
    let mut file = tokio::fs::File::create(&staged.tmp)
        .await
        .map_err(|e| failed("creating", &staged.tmp, e))?;
    while let Some(message) = inbound.next().await {
        let message = BytesMessage::decode(message?)
            .map_err(|e| Status::invalid_argument(format!("bad export message: {e}")))?;
        file.write_all(&message.data)
            .await
            .map_err(|e| failed("writing", dest, e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| failed("writing", dest, e))?;
    drop(file);
    tokio::fs::rename(&staged.tmp, dest)
        .await
        .map_err(|e| failed("moving the export to", dest, e))?;
    staged.committed = true;
    Ok(())
}
