//! `moby.filesync.v1.FileSend/DiffCopy`: receives an exporter's output. The
//! daemon names the exporter by its index in the Solve request
//! (`buildkit-attachable-exporter-id`). The one method carries two formats:
//! raw tar bytes in `BytesMessage`s for `tar`/`oci`/`docker` (written to a
//! file; the daemon closes its side at the end and waits for ours), and fsutil
//! packets for `local` (a tree, see [`super::fsreceive`]). So this service is
//! written by hand over a codec that passes message bytes through, and each
//! call is decoded by what its exporter id is registered as.
//!
//! Either way the result is staged beside its destination and handed to the
//! build's [`StagedExports`], which moves it over the destination only once
//! the build succeeded: a failed or interrupted export leaves the old one intact.

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

use super::fsreceive::{receive_tree, TreeTarget};
use super::staging::{LocalDest, StagedExports};
use crate::cleanup::TempPath;
use crate::options::{Output, TarStream};
use crate::wire::moby::filesync::v1::BytesMessage;

pub(crate) const METHODS: &[&str] = &["/moby.filesync.v1.FileSend/DiffCopy"];

const EXPORTER_ID: &str = "buildkit-attachable-exporter-id";

/// Where one exporter's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportTarget {
    /// A tarball (`oci`, `docker` exporters).
    File(PathBuf),
    /// A directory tree (`local` exporter); see [`LocalDest`] for what may
    /// be replaced.
    Dir(LocalDest),
    /// A tarball handed on as it arrives (to a docker daemon's image load).
    Stream(TarStream),
}

impl ExportTarget {
    /// Where on this machine the exporter's output goes, if anywhere.
    pub(crate) fn of(output: &Output) -> Option<ExportTarget> {
        match output {
            Output::Oci { dest, .. } | Output::Docker { dest, .. } => {
                Some(ExportTarget::File(dest.clone()))
            }
            Output::Local { dest, replace } => Some(ExportTarget::Dir(LocalDest {
                dir: dest.clone(),
                replace: *replace,
            })),
            Output::DockerStream { stream, .. } | Output::Tar { stream } => {
                Some(ExportTarget::Stream(stream.clone()))
            }
            Output::Image { .. } | Output::Moby { .. } | Output::OciDir { .. } => None,
        }
    }
}

/// Where each exporter's output goes, by exporter index, for one build.
#[derive(Debug, Clone, Default)]
pub struct ExportFiles {
    targets: Arc<BTreeMap<usize, Target>>,
}

/// A target with what its transfers share.
#[derive(Debug, Clone)]
enum Target {
    File(PathBuf, StagedExports),
    Tree(TreeTarget),
    Stream(TarStream),
}

impl ExportFiles {
    /// Receivers for `targets`, staging what arrives in `staged`.
    pub fn new(targets: BTreeMap<usize, ExportTarget>, staged: &StagedExports) -> Self {
        let targets = targets
            .into_iter()
            .map(|(id, target)| {
                let target = match target {
                    ExportTarget::File(path) => Target::File(path, staged.clone()),
                    ExportTarget::Dir(dest) => Target::Tree(TreeTarget::new(dest, staged.clone())),
                    ExportTarget::Stream(stream) => Target::Stream(stream),
                };
                (id, target)
            })
            .collect();
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
            Target::File(dest, staged) => {
                // The whole tar arrives before we answer: the daemon waits for
                // our end of the stream to know the file is safe.
                let tmp = receive_file(&dest, inbound).await?;
                staged.file(tmp, dest);
            }
            Target::Stream(stream) => forward_tar(&stream, inbound).await?,
            Target::Tree(tree) => {
                tokio::spawn(async move {
                    let errors = tx.clone();
                    if let Err(e) = receive_tree(tree, inbound, tx).await {
                        let _ = errors.send(Err(e)).await;
                    }
                });
            }
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Passes a tarball on to `stream`'s reader as it arrives; a broken
/// transfer reaches the reader as an error.
async fn forward_tar(stream: &TarStream, mut inbound: Streaming<Bytes>) -> Result<(), Status> {
    let tx = stream
        .take()
        .ok_or_else(|| Status::already_exists("this export stream was already sent"))?;
    let stopped = || Status::aborted("the reader of the exported tarball stopped");
    while let Some(message) = inbound.next().await {
        let data = match message.and_then(|m| {
            BytesMessage::decode(m)
                .map_err(|e| Status::invalid_argument(format!("bad export message: {e}")))
        }) {
            Ok(message) => message.data,
            Err(status) => {
                let _ = tx
                    .send(Err(std::io::Error::other(status.message().to_owned())))
                    .await;
                return Err(status);
            }
        };
        tx.send(Ok(data)).await.map_err(|_| stopped())?;
    }
    Ok(())
}

/// Receives a tarball into a temporary file beside `dest`.
async fn receive_file(dest: &Path, mut inbound: Streaming<Bytes>) -> Result<TempPath, Status> {
    let failed = |what: &str, path: &Path, e: std::io::Error| {
        Status::internal(format!("{what} {}: {e}", path.display()))
    };
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| failed("creating", parent, e))?;
    }
    let staged = TempPath::beside(dest);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(staged.path())
        .await
        .map_err(|e| failed("creating", staged.path(), e))?;
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
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::fsutil::types::packet::PacketType;
    use crate::wire::fsutil::types::{Packet, Stat};
    use crate::wire::moby::filesync::v1::file_send_client::FileSendClient;
    use tonic::transport::Channel;

    async fn serve(files: ExportFiles) -> Channel {
        super::super::serve_on_loopback(tonic::service::Routes::new(files.service())).await
    }

    fn with_exporter<T>(message: T, id: &str) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(EXPORTER_ID, id.parse().unwrap());
        request
    }

    #[tokio::test]
    async fn tar_bytes_go_to_their_file_by_exporter_id() {
        let tmp = tempfile::tempdir().unwrap();
        let first = tmp.path().join("one.tar");
        let second = tmp.path().join("sub/two.tar");
        let staged = StagedExports::default();
        let files = ExportFiles::new(
            BTreeMap::from([
                (0, ExportTarget::File(first.clone())),
                (1, ExportTarget::File(second.clone())),
            ]),
            &staged,
        );
        let mut client = FileSendClient::new(serve(files).await);
        let chunks = ["abc", "def"].map(|c| BytesMessage {
            data: Bytes::from_static(c.as_bytes()),
        });
        let reply = client
            .diff_copy(with_exporter(futures::stream::iter(chunks), "1"))
            .await
            .unwrap();
        let rest: Vec<_> = reply.into_inner().collect().await;
        assert!(rest.is_empty(), "{rest:?}");
        assert!(!second.exists(), "in place only once the build succeeded");
        staged.commit().unwrap();
        assert_eq!(std::fs::read(&second).unwrap(), b"abcdef");
        assert!(!first.exists());
        assert_eq!(
            std::fs::read_dir(second.parent().unwrap()).unwrap().count(),
            1
        );

        let err = client
            .diff_copy(with_exporter(futures::stream::iter(vec![]), "7"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }

    /// The daemon's side of a local export: fsutil's sender, over FileSend.
    async fn send_tree(channel: Channel, id: &str, entries: Vec<(Stat, &'static [u8])>) {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let (tx, rx) = mpsc::channel::<Packet>(64);
        let stat = |s: Option<Stat>| Packet {
            r#type: PacketType::PacketStat as i32,
            stat: s,
            ..Default::default()
        };
        for (s, _) in &entries {
            tx.send(stat(Some(s.clone()))).await.unwrap();
        }
        tx.send(stat(None)).await.unwrap();
        let codec = tonic_prost::ProstCodec::<Packet, Packet>::default();
        let path = http::uri::PathAndQuery::from_static("/moby.filesync.v1.FileSend/DiffCopy");
        let reply = grpc
            .streaming(with_exporter(ReceiverStream::new(rx), id), path, codec)
            .await
            .unwrap();
        let mut replies = reply.into_inner();
        while let Some(p) = replies.next().await {
            let p = p.unwrap();
            match PacketType::try_from(p.r#type).unwrap() {
                PacketType::PacketReq => {
                    let content = entries[p.id as usize].1;
                    for chunk in content.chunks(3) {
                        let data = Packet {
                            r#type: PacketType::PacketData as i32,
                            id: p.id,
                            data: Bytes::copy_from_slice(chunk),
                            ..Default::default()
                        };
                        tx.send(data).await.unwrap();
                    }
                    let end = Packet {
                        r#type: PacketType::PacketData as i32,
                        id: p.id,
                        ..Default::default()
                    };
                    tx.send(end).await.unwrap();
                }
                PacketType::PacketFin => {
                    let fin = Packet {
                        r#type: PacketType::PacketFin as i32,
                        ..Default::default()
                    };
                    tx.send(fin).await.unwrap();
                }
                other => panic!("unexpected {other:?}: {p:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_local_export_arrives_as_a_tree() {
        use crate::localtree::go_mode;
        let tmp = tempfile::tempdir().unwrap();
        let tar = tmp.path().join("image.tar");
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("old"), "x").unwrap();
        let staged = StagedExports::default();
        let dest = LocalDest {
            dir: out.clone(),
            replace: true,
        };
        let files = ExportFiles::new(
            BTreeMap::from([
                (0, ExportTarget::File(tar.clone())),
                (1, ExportTarget::Dir(dest)),
            ]),
            &staged,
        );
        let channel = serve(files).await;
        let stat = |path: &str, mode: u32| Stat {
            path: path.into(),
            mode,
            ..Default::default()
        };
        let entries: Vec<(Stat, &'static [u8])> = vec![
            (stat("bin", go_mode::DIR | 0o755), b""),
            (stat("bin/tool", 0o755), b"#!/bin/sh\necho hi\n"),
            (stat("etc", go_mode::DIR | 0o755), b""),
            (stat("etc/empty", 0o644), b""),
            (
                Stat {
                    linkname: "../bin/tool".into(),
                    ..stat("etc/tool", go_mode::SYMLINK | 0o777)
                },
                b"",
            ),
        ];
        send_tree(channel, "1", entries).await;
        staged.commit().unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("bin/tool")).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        assert_eq!(std::fs::read(out.join("etc/empty")).unwrap(), b"");
        assert_eq!(
            std::fs::read_to_string(out.join("etc/tool")).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        assert!(!out.join("old").exists());
        assert!(!tar.exists());
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
