//! `moby.filesync.v1.FileSend/DiffCopy`: receives an exporter's output (an
//! OCI or docker tarball) into a file on this machine. The daemon names the
//! exporter by its index in the Solve request (`buildkit-attachable-exporter-id`).
//!
//! The file is written beside its destination and renamed over it only once
//! the whole stream arrived: an interrupted export leaves the old file intact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::wire::moby::filesync::v1::file_send_server::{FileSend, FileSendServer};
use crate::wire::moby::filesync::v1::BytesMessage;

pub(crate) const METHODS: &[&str] = &["/moby.filesync.v1.FileSend/DiffCopy"];

const EXPORTER_ID: &str = "buildkit-attachable-exporter-id";

/// Where each file-producing exporter's bytes go, by exporter index.
#[derive(Debug, Clone, Default)]
pub struct ExportFiles {
    files: Arc<BTreeMap<usize, PathBuf>>,
}

impl ExportFiles {
    pub fn new(files: BTreeMap<usize, PathBuf>) -> Self {
        ExportFiles {
            files: Arc::new(files),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub(crate) fn service(self) -> FileSendServer<ExportFiles> {
        FileSendServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
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

type Empty = Pin<Box<dyn Stream<Item = Result<BytesMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FileSend for ExportFiles {
    type DiffCopyStream = Empty;

    async fn diff_copy(
        &self,
        request: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let id: usize = request
            .metadata()
            .get(EXPORTER_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let dest =
            self.files.get(&id).cloned().ok_or_else(|| {
                Status::not_found(format!("exporter {id} has no destination file"))
            })?;
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| Status::internal(format!("creating {}: {e}", parent.display())))?;
        }
        let mut staged = Staged::beside(&dest);
        let mut file = tokio::fs::File::create(&staged.tmp)
            .await
            .map_err(|e| Status::internal(format!("creating {}: {e}", staged.tmp.display())))?;
        let mut inbound = request.into_inner();
        while let Some(message) = inbound.next().await {
            let message = message?;
            file.write_all(&message.data)
                .await
                .map_err(|e| Status::internal(format!("writing {}: {e}", dest.display())))?;
        }
        file.sync_all()
            .await
            .map_err(|e| Status::internal(format!("writing {}: {e}", dest.display())))?;
        drop(file);
        tokio::fs::rename(&staged.tmp, &dest).await.map_err(|e| {
            Status::internal(format!("moving the export to {}: {e}", dest.display()))
        })?;
        staged.committed = true;
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }
}
