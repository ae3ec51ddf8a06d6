//! containerd's content service, served to the daemon for local build cache:
//! each store is an OCI image layout directory on this machine
//! (`blobs/sha256/…`, `index.json`), chosen per call by the metadata
//! `buildkit-attachable-store-id` (`local:DIR`).
//!
//! Blobs are written under `ingest/` and renamed into `blobs/` only after their
//! digest checks out, so an interrupted export never leaves a partial blob and
//! concurrent writers of one blob cannot corrupt it. `index.json` is the client's
//! to update after a successful export ([`OciLayout::put_tag`]).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, Streaming};

use crate::wire::containerd::services::content::v1 as pb;
use pb::content_server::{Content, ContentServer};

pub(crate) const METHODS: &[&str] = &[
    "/containerd.services.content.v1.Content/Info",
    "/containerd.services.content.v1.Content/Update",
    "/containerd.services.content.v1.Content/List",
    "/containerd.services.content.v1.Content/Delete",
    "/containerd.services.content.v1.Content/Read",
    "/containerd.services.content.v1.Content/Status",
    "/containerd.services.content.v1.Content/ListStatuses",
    "/containerd.services.content.v1.Content/Write",
    "/containerd.services.content.v1.Content/Abort",
];

const STORE_ID: &str = "buildkit-attachable-store-id";
const READ_CHUNK: usize = 1 << 20;

/// The store id BuildKit uses for a local cache directory.
pub fn local_store_id(dir: &str) -> String {
    format!("local:{dir}")
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        OciLayout { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn hex(digest: &str) -> Result<&str, Status> {
        digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| Status::invalid_argument(format!("unsupported digest {digest:?}")))
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, Status> {
        Ok(self.dir.join("blobs/sha256").join(Self::hex(digest)?))
    }

    fn ingest_path(&self, reference: &str) -> PathBuf {
        let name: String = Sha256::digest(reference.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join("ingest").join(name)
    }

    /// Creates the layout's skeleton if missing.
    pub fn init(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.dir.join("blobs/sha256"))?;
        std::fs::create_dir_all(self.dir.join("ingest"))?;
        let layout = self.dir.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(())
    }

    fn index(&self) -> std::io::Result<serde_json::Value> {
        match std::fs::read(self.dir.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": []
            })),
            Err(e) => Err(e),
        }
    }

    /// The descriptor tagged `tag` in index.json (annotation
    /// `org.opencontainers.image.ref.name`), if any.
    pub fn get_tag(&self, tag: &str) -> std::io::Result<Option<serde_json::Value>> {
        let index = self.index()?;
        Ok(index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .cloned())
    }

    /// Points `tag` at `descriptor` in index.json, keeping other tags. The file
    /// is replaced atomically, under a lock that serialises concurrent builds.
    pub fn put_tag(&self, tag: &str, mut descriptor: serde_json::Value) -> std::io::Result<()> {
        self.init()?;
        let lock = std::fs::File::create(self.dir.join(".strata-index.lock"))?;
        lock.lock()?;
        let mut index = self.index()?;
        descriptor["annotations"]["org.opencontainers.image.ref.name"] = tag.into();
        let manifests = index["manifests"].as_array_mut();
        let mut list: Vec<serde_json::Value> = manifests.map(std::mem::take).unwrap_or_default();
        list.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
        list.push(descriptor);
        index["manifests"] = list.into();
        let bytes = serde_json::to_vec(&index)?;
        write_atomic(&self.dir.join("index.json"), &bytes)
    }
}

/// Writes `path` through a temporary file, fsync and rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("strata-tmp-{}", super::random_id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Content stores by store id.
#[derive(Debug, Clone, Default)]
pub struct ContentStores {
    stores: Arc<BTreeMap<String, OciLayout>>,
}

impl ContentStores {
    pub fn new(stores: BTreeMap<String, OciLayout>) -> Self {
        ContentStores {
            stores: Arc::new(stores),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stores.is_empty()
    }

    pub(crate) fn service(self) -> ContentServer<ContentStores> {
        ContentServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    fn choose<T>(&self, request: &Request<T>) -> Result<&OciLayout, Status> {
        let id = request
            .metadata()
            .get(STORE_ID)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!("request lacks metadata {STORE_ID}"))
            })?;
        self.stores
            .get(id)
            .ok_or_else(|| Status::not_found(format!("unknown store {id}")))
    }
}

fn io_status(e: std::io::Error) -> Status {
    match e.kind() {
        std::io::ErrorKind::NotFound => Status::not_found(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn info_of(layout: &OciLayout, digest: &str) -> Result<pb::Info, Status> {
    let path = layout.blob_path(digest)?;
    let meta = std::fs::metadata(&path)
        .map_err(|_| Status::not_found(format!("content {digest}: not found")))?;
    let modified = meta.modified().ok().map(prost_types::Timestamp::from);
    Ok(pb::Info {
        digest: digest.to_owned(),
        size: meta.len() as i64,
        created_at: modified,
        updated_at: modified,
        labels: BTreeMap::new(),
    })
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Content for ContentStores {
    async fn info(
        &self,
        r: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let layout = self.choose(&r)?;
        let info = info_of(layout, &r.get_ref().digest)?;
        Ok(Response::new(pb::InfoResponse { info: Some(info) }))
    }

    async fn update(
        &self,
        r: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        // Labels (containerd's GC hints) mean nothing in a layout directory.
        let layout = self.choose(&r)?;
        let digest = r
            .get_ref()
            .info
            .as_ref()
            .map(|i| i.digest.clone())
            .unwrap_or_default();
        let info = info_of(layout, &digest)?;
        Ok(Response::new(pb::UpdateResponse { info: Some(info) }))
    }

    type ListStream = Stream_<pb::ListContentResponse>;

    async fn list(
        &self,
        r: Request<pb::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let layout = self.choose(&r)?;
        let mut infos = Vec::new();
        if let Ok(entries) = std::fs::read_dir(layout.dir.join("blobs/sha256")) {
            for entry in entries.flatten() {
                let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
                if let Ok(info) = info_of(layout, &digest) {
                    infos.push(info);
                }
            }
        }
        let reply = pb::ListContentResponse { info: infos };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(reply)]))))
    }

    async fn delete(&self, r: Request<pb::DeleteContentRequest>) -> Result<Response<()>, Status> {
        // A cache directory is only ever added to during a build.
        let _ = self.choose(&r)?;
        Err(Status::unimplemented(
            "strata's cache stores do not delete content",
        ))
    }

    type ReadStream = Stream_<pb::ReadContentResponse>;

    async fn read(
        &self,
        r: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let layout = self.choose(&r)?;
        let req = r.into_inner();
        let path = layout.blob_path(&req.digest)?;
        let mut file = std::fs::File::open(&path)
            .map_err(|_| Status::not_found(format!("content {}: not found", req.digest)))?;
        let len = file.metadata().map_err(io_status)?.len() as i64;
        let start = req.offset.clamp(0, len);
        let end = if req.size > 0 {
            (start + req.size).min(len)
        } else {
            len
        };
        file.seek(SeekFrom::Start(start as u64))
            .map_err(io_status)?;
        let stream = futures::stream::unfold((file, start), move |(mut file, offset)| async move {
            if offset >= end {
                return None;
            }
            let n = ((end - offset) as usize).min(READ_CHUNK);
            let mut data = vec![0u8; n];
            match file.read_exact(&mut data) {
                Ok(()) => Some((
                    Ok(pb::ReadContentResponse {
                        offset,
                        data: data.into(),
                    }),
                    (file, offset + n as i64),
                )),
                Err(e) => Some((Err(io_status(e)), (file, end))),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let layout = self.choose(&r)?;
        let reference = &r.get_ref().r#ref;
        let path = layout.ingest_path(reference);
        let meta = std::fs::metadata(&path)
            .map_err(|_| Status::not_found(format!("no ingest {reference}")))?;
        Ok(Response::new(pb::StatusResponse {
            status: Some(pb::Status {
                r#ref: reference.clone(),
                offset: meta.len() as i64,
                ..Default::default()
            }),
        }))
    }

    async fn list_statuses(
        &self,
        r: Request<pb::ListStatusesRequest>,
    ) -> Result<Response<pb::ListStatusesResponse>, Status> {
        let _ = self.choose(&r)?;
        Ok(Response::new(pb::ListStatusesResponse::default()))
    }

    type WriteStream = Stream_<pb::WriteContentResponse>;

    async fn write(
        &self,
        r: Request<Streaming<pb::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let layout = self.choose(&r)?.clone();
        layout.init().map_err(io_status)?;
        let mut inbound = r.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut ingest: Option<Ingest> = None;
            while let Some(message) = inbound.next().await {
                let reply = match message {
                    Ok(req) => handle_write(&layout, &mut ingest, req),
                    Err(e) => Err(e),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
            // An ingest that was not committed is dropped with its file.
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn abort(&self, r: Request<pb::AbortRequest>) -> Result<Response<()>, Status> {
        let layout = self.choose(&r)?;
        let _ = std::fs::remove_file(layout.ingest_path(&r.get_ref().r#ref));
        Ok(Response::new(()))
    }
}

/// One blob being written: bytes go to `path` under `ingest/`.
struct Ingest {
    reference: String,
    path: PathBuf,
    file: std::fs::File,
    offset: i64,
    total: i64,
    expected: String,
    started: prost_types::Timestamp,
    committed: bool,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn handle_write(
    layout: &OciLayout,
    ingest: &mut Option<Ingest>,
    req: pb::WriteContentRequest,
) -> Result<pb::WriteContentResponse, Status> {
    let action = pb::WriteAction::try_from(req.action)
        .map_err(|_| Status::invalid_argument("unknown write action"))?;
    if ingest.is_none() {
        if !req.expected.is_empty() && layout.blob_path(&req.expected)?.exists() {
            return Err(Status::already_exists(format!(
                "content {} exists",
                req.expected
            )));
        }
        let path = layout.ingest_path(&req.r#ref);
        // Each ingest restarts from zero: a leftover from an interrupted run is discarded.
        let file = std::fs::File::create(&path).map_err(io_status)?;
        *ingest = Some(Ingest {
            reference: req.r#ref.clone(),
            path,
            file,
            offset: 0,
            total: req.total,
            expected: req.expected.clone(),
            started: prost_types::Timestamp::from(std::time::SystemTime::now()),
            committed: false,
        });
    }
    let current = ingest.as_mut().expect("set above");
    if !req.r#ref.is_empty() && req.r#ref != current.reference {
        return Err(Status::invalid_argument("one write stream serves one ref"));
    }
    if req.total > 0 {
        current.total = req.total;
    }
    if !req.expected.is_empty() {
        current.expected = req.expected.clone();
    }
    let now = prost_types::Timestamp::from(std::time::SystemTime::now());
    match action {
        pb::WriteAction::Stat => {}
        pb::WriteAction::Write | pb::WriteAction::Commit => {
            if !req.data.is_empty() {
                if req.offset != current.offset {
                    return Err(Status::failed_precondition(format!(
                        "write at offset {} but {} bytes were written",
                        req.offset, current.offset
                    )));
                }
                current.file.write_all(&req.data).map_err(io_status)?;
                current.offset += req.data.len() as i64;
            }
        }
    }
    let mut reply = pb::WriteContentResponse {
        action: req.action,
        started_at: Some(current.started),
        updated_at: Some(now),
        offset: current.offset,
        total: current.total,
        digest: String::new(),
    };
    if action == pb::WriteAction::Commit {
        current.file.sync_all().map_err(io_status)?;
        if current.total > 0 && current.offset != current.total {
            return Err(Status::failed_precondition(format!(
                "commit of {} after {} of {} bytes",
                current.reference, current.offset, current.total
            )));
        }
        let mut f = std::fs::File::open(&current.path).map_err(io_status)?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut f, &mut hasher).map_err(io_status)?;
        let digest = format!(
            "sha256:{}",
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        if !current.expected.is_empty() && digest != current.expected {
            return Err(Status::failed_precondition(format!(
                "content has digest {digest}, expected {}",
                current.expected
            )));
        }
        std::fs::rename(&current.path, layout.blob_path(&digest)?).map_err(io_status)?;
        current.committed = true;
        reply.digest = digest;
        *ingest = None;
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(
        layout: &OciLayout,
        ingest: &mut Option<Ingest>,
        action: pb::WriteAction,
        data: &[u8],
        offset: i64,
        expected: &str,
    ) -> Result<pb::WriteContentResponse, Status> {
        handle_write(
            layout,
            ingest,
            pb::WriteContentRequest {
                action: action as i32,
                r#ref: "ref-1".into(),
                total: 5,
                expected: expected.into(),
                offset,
                data: bytes::Bytes::copy_from_slice(data),
                labels: BTreeMap::new(),
            },
        )
    }

    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn write_commit_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OciLayout::new(tmp.path());
        layout.init().unwrap();
        let mut ingest = None;
        write(&layout, &mut ingest, pb::WriteAction::Stat, b"", 0, HELLO).unwrap();
        write(&layout, &mut ingest, pb::WriteAction::Write, b"hel", 0, "").unwrap();
        let done = write(
            &layout,
            &mut ingest,
            pb::WriteAction::Commit,
            b"lo",
            3,
            HELLO,
        )
        .unwrap();
        assert_eq!(done.digest, HELLO);
        assert_eq!(
            std::fs::read(layout.blob_path(HELLO).unwrap()).unwrap(),
            b"hello"
        );
        assert_eq!(
            std::fs::read_dir(tmp.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
        let mut again = None;
        let err = write(&layout, &mut again, pb::WriteAction::Stat, b"", 0, HELLO).unwrap_err();
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
    }

    #[test]
    fn a_wrong_digest_or_an_interrupted_write_leaves_no_blob() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OciLayout::new(tmp.path());
        layout.init().unwrap();
        let wrong = format!("sha256:{}", "0".repeat(64));
        let mut ingest = None;
        let err = write(
            &layout,
            &mut ingest,
            pb::WriteAction::Commit,
            b"hello",
            0,
            &wrong,
        )
        .unwrap_err();
        assert!(err.message().contains("expected"), "{err:?}");
        drop(ingest);
        let mut ingest = None;
        write(
            &layout,
            &mut ingest,
            pb::WriteAction::Write,
            b"he",
            0,
            HELLO,
        )
        .unwrap();
        drop(ingest); // the stream broke
        assert_eq!(
            std::fs::read_dir(tmp.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(tmp.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn index_tags_are_replaced_atomically_and_others_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OciLayout::new(tmp.path());
        let desc = |d: &str| serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": 1});
        layout.put_tag("latest", desc("sha256:a")).unwrap();
        layout.put_tag("other", desc("sha256:b")).unwrap();
        layout.put_tag("latest", desc("sha256:c")).unwrap();
        assert_eq!(
            layout.get_tag("latest").unwrap().unwrap()["digest"],
            "sha256:c"
        );
        assert_eq!(
            layout.get_tag("other").unwrap().unwrap()["digest"],
            "sha256:b"
        );
        assert!(layout.get_tag("none").unwrap().is_none());
        assert!(tmp.path().join("oci-layout").exists());
    }
}
