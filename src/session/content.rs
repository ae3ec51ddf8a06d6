//! containerd's content service (`containerd.services.content.v1.Content`),
//! served to the daemon for local build caches. Each store is an OCI image
//! layout directory on this machine (`blobs/sha256/…`, `index.json`,
//! `oci-layout`), chosen per call by the metadata `buildkit-attachable-store-id`,
//! whose value BuildKit forms as `local:` + the `dest`/`src` attribute exactly
//! as given (see [`local_store_id`]).
//!
//! The daemon (through containerd's proxy store) calls Info, Read and Write;
//! the others are served for completeness, except Delete: BuildKit never
//! deletes from a client's store, and a cache directory is only added to.
//!
//! Writes follow containerd's content server: a first STAT names the ref and
//! may carry the expected digest and size (if that blob is already present the
//! answer is AlreadyExists, which the daemon takes as "done"); WRITEs append at
//! the current offset (offset 0 restarts); COMMIT checks size and digest. Bytes
//! go to a file of their own under `ingest/` and are renamed into `blobs/` only
//! after the digest checks out, so an interrupted or wrong write never leaves a
//! partial blob, and concurrent writers of one blob cannot corrupt it (the
//! content is the same, the rename atomic). A ref being written is locked
//! (Unavailable, which the daemon retries), as in containerd.
//!
//! `index.json` is the client's to update after a successful export
//! ([`OciLayout::put_tag`]); imports resolve a tag to a digest first
//! ([`OciLayout::get_tag`]).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::{Request, Response, Status, Streaming};

use super::io_status;
use crate::cleanup::TempPath;
use crate::ocilayout::{sync_dir, OciLayout};
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

/// The metadata key naming the store (BuildKit's `session/content.GRPCHeaderID`).
const STORE_ID: &str = "buildkit-attachable-store-id";
/// Largest data chunk in one Read answer.
const READ_CHUNK: usize = 1 << 20;
/// Infos per List answer (containerd's batch).
const LIST_BATCH: usize = 100;

/// The blob `digest` of `layout`, or the answer the daemon gets for a digest
/// that is not `sha256:` + 64 hex digits.
fn blob_path(layout: &OciLayout, digest: &str) -> Result<PathBuf, Status> {
    layout
        .blob_path(digest)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A write in progress, as Status and ListStatuses report it.
#[derive(Debug, Clone)]
struct Active {
    token: String,
    path: PathBuf,
    offset: i64,
    total: i64,
    expected: String,
    started: SystemTime,
    updated: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    /// By (store id, ref).
    writes: HashMap<(String, String), Active>,
    /// Labels set by commits and updates, by (store dir, digest). They are
    /// containerd's GC hints; a layout directory has no place for them on disk.
    labels: HashMap<(PathBuf, String), BTreeMap<String, String>>,
}

/// Content stores by store id; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct ContentStores {
    stores: Arc<BTreeMap<String, OciLayout>>,
    state: Arc<Mutex<State>>,
}

impl ContentStores {
    pub fn new(stores: BTreeMap<String, OciLayout>) -> Self {
        ContentStores {
            stores: Arc::new(stores),
            state: Arc::default(),
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

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store a request names, with its id.
    fn choose<T>(&self, request: &Request<T>) -> Result<(String, OciLayout), Status> {
        let id = request
            .metadata()
            .get(STORE_ID)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!("request lacks metadata {STORE_ID}"))
            })?;
        let layout = self
            .stores
            .get(id)
            .ok_or_else(|| Status::not_found(format!("unknown store {id}")))?;
        Ok((id.to_owned(), layout.clone()))
    }

    fn info_of(&self, layout: &OciLayout, digest: &str) -> Result<pb::Info, Status> {
        let path = blob_path(layout, digest)?;
        let meta = fs::metadata(&path)
            .map_err(|_| Status::not_found(format!("content {digest}: not found")))?;
        let created = meta.modified().ok().map(prost_types::Timestamp::from);
        let labels = self
            .state()
            .labels
            .get(&(layout.dir().to_owned(), digest.to_owned()))
            .cloned()
            .unwrap_or_default();
        Ok(pb::Info {
            digest: digest.to_owned(),
            size: meta.len() as i64,
            created_at: created,
            updated_at: created,
            labels,
        })
    }
}

fn status_of(reference: &str, active: &Active) -> pb::Status {
    pb::Status {
        started_at: Some(active.started.into()),
        updated_at: Some(active.updated.into()),
        r#ref: reference.to_owned(),
        offset: active.offset,
        total: active.total,
        expected: active.expected.clone(),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Content for ContentStores {
    async fn info(
        &self,
        r: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let (_, layout) = self.choose(&r)?;
        let info = self.info_of(&layout, &r.get_ref().digest)?;
        Ok(Response::new(pb::InfoResponse { info: Some(info) }))
    }

    async fn update(
        &self,
        r: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let (_, layout) = self.choose(&r)?;
        let req = r.into_inner();
        let update = req.info.unwrap_or_default();
        self.info_of(&layout, &update.digest)?; // must exist
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        {
            let mut state = self.state();
            let labels = state
                .labels
                .entry((layout.dir().to_owned(), update.digest.clone()))
                .or_default();
            if paths.is_empty() {
                *labels = update.labels.clone();
            }
            for path in &paths {
                if path == "labels" {
                    *labels = update.labels.clone();
                } else if let Some(key) = path.strip_prefix("labels.") {
                    match update.labels.get(key) {
                        Some(value) => labels.insert(key.to_owned(), value.clone()),
                        None => labels.remove(key),
                    };
                } else {
                    return Err(Status::invalid_argument(format!(
                        "cannot update {path:?} field on content info {:?}",
                        update.digest
                    )));
                }
            }
        }
        let info = self.info_of(&layout, &update.digest)?;
        Ok(Response::new(pb::UpdateResponse { info: Some(info) }))
    }

    type ListStream = BoxStream<pb::ListContentResponse>;

    async fn list(
        &self,
        r: Request<pb::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        // Filters are not applied: the daemon never lists a session store.
        let (_, layout) = self.choose(&r)?;
        let mut infos = Vec::new();
        if let Ok(entries) = fs::read_dir(layout.dir().join("blobs/sha256")) {
            for entry in entries.flatten() {
                let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
                if let Ok(info) = self.info_of(&layout, &digest) {
                    infos.push(info);
                }
            }
        }
        infos.sort_by(|a, b| a.digest.cmp(&b.digest));
        let batches: Vec<_> = infos
            .chunks(LIST_BATCH)
            .map(|batch| {
                Ok(pb::ListContentResponse {
                    info: batch.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches))))
    }

    async fn delete(&self, r: Request<pb::DeleteContentRequest>) -> Result<Response<()>, Status> {
        let _ = self.choose(&r)?;
        Err(Status::unimplemented(
            "strata's cache stores are only added to; they do not delete content",
        ))
    }

    type ReadStream = BoxStream<pb::ReadContentResponse>;

    async fn read(
        &self,
        r: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let (_, layout) = self.choose(&r)?;
        let req = r.into_inner();
        let path = blob_path(&layout, &req.digest)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|_| Status::not_found(format!("content {}: not found", req.digest)))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| io_status("reading", &path, e))?
            .len() as i64;
        if req.offset < 0 {
            return Err(Status::invalid_argument("negative read offset"));
        }
        if req.offset > len {
            return Err(Status::out_of_range(format!(
                "read past object length {len} bytes"
            )));
        }
        // `size` comes from the daemon: compare without adding (no overflow).
        let end = if req.size <= 0 || req.size > len - req.offset {
            len
        } else {
            req.offset + req.size
        };
        file.seek(std::io::SeekFrom::Start(req.offset as u64))
            .await
            .map_err(|e| io_status("reading", &path, e))?;
        let stream = futures::stream::unfold(
            (file, req.offset, path),
            move |(mut file, offset, path)| async move {
                if offset >= end {
                    return None;
                }
                let n = ((end - offset) as usize).min(READ_CHUNK);
                let mut data = vec![0u8; n];
                match file.read_exact(&mut data).await {
                    Ok(_) => {
                        let reply = pb::ReadContentResponse {
                            offset,
                            data: data.into(),
                        };
                        Some((Ok(reply), (file, offset + n as i64, path)))
                    }
                    Err(e) => Some((Err(io_status("reading", &path, e)), (file, end, path))),
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let (store, _) = self.choose(&r)?;
        let reference = r.get_ref().r#ref.clone();
        let state = self.state();
        let active = state
            .writes
            .get(&(store, reference.clone()))
            .ok_or_else(|| Status::not_found(format!("ref {reference}: not found")))?;
        Ok(Response::new(pb::StatusResponse {
            status: Some(status_of(&reference, active)),
        }))
    }

    async fn list_statuses(
        &self,
        r: Request<pb::ListStatusesRequest>,
    ) -> Result<Response<pb::ListStatusesResponse>, Status> {
        let (store, _) = self.choose(&r)?;
        let state = self.state();
        let mut statuses: Vec<_> = state
            .writes
            .iter()
            .filter(|((s, _), _)| *s == store)
            .map(|((_, reference), active)| status_of(reference, active))
            .collect();
        statuses.sort_by(|a, b| a.r#ref.cmp(&b.r#ref));
        Ok(Response::new(pb::ListStatusesResponse { statuses }))
    }

    type WriteStream = BoxStream<pb::WriteContentResponse>;

    async fn write(
        &self,
        r: Request<Streaming<pb::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let (store, layout) = self.choose(&r)?;
        let mut inbound = r.into_inner();
        let stores = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut ingest: Option<Ingest> = None;
            while let Some(message) = inbound.next().await {
                let Ok(req) = message else {
                    break; // the daemon went away; the ingest is dropped below
                };
                let commit = req.action == pb::WriteAction::Commit as i32;
                let (stores, store, layout) = (stores.clone(), store.clone(), layout.clone());
                let mut current = ingest.take();
                let handled = tokio::task::spawn_blocking(move || {
                    let reply = handle_write(&stores, &store, &layout, &mut current, req);
                    (current, reply)
                })
                .await;
                let reply = match handled {
                    Ok((current, reply)) => {
                        ingest = current;
                        reply
                    }
                    Err(e) => Err(Status::internal(format!("the write failed: {e}"))),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed || commit {
                    break;
                }
            }
            // An ingest that was not committed goes with its file.
            drop(ingest);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn abort(&self, r: Request<pb::AbortRequest>) -> Result<Response<()>, Status> {
        let (store, _) = self.choose(&r)?;
        let reference = r.get_ref().r#ref.clone();
        let active = self
            .state()
            .writes
            .remove(&(store, reference.clone()))
            .ok_or_else(|| Status::not_found(format!("ref {reference}: not found")))?;
        // The writer keeps an unlinked file; its commit then fails.
        let _ = fs::remove_file(&active.path);
        Ok(Response::new(()))
    }
}

/// One blob being written by one Write stream.
struct Ingest {
    state: Arc<Mutex<State>>,
    key: (String, String),
    token: String,
    /// The ingest file, removed unless committed (also on a signal).
    tmp: TempPath,
    file: fs::File,
    hasher: Sha256,
    offset: i64,
    total: i64,
    expected: String,
    started: SystemTime,
}

impl Ingest {
    fn start(
        stores: &ContentStores,
        store: &str,
        layout: &OciLayout,
        reference: &str,
    ) -> Result<Ingest, Status> {
        let key = (store.to_owned(), reference.to_owned());
        let mut state = stores.state();
        if state.writes.contains_key(&key) {
            return Err(Status::unavailable(format!("ref {reference} locked")));
        }
        let dir = layout.ingest_dir();
        fs::create_dir_all(&dir).map_err(|e| io_status("creating", &dir, e))?;
        fs::create_dir_all(layout.dir().join("blobs/sha256"))
            .map_err(|e| io_status("creating", layout.dir(), e))?;
        let token = crate::ids::random_id();
        let tmp = TempPath::new(dir.join(format!("{token}.strata")));
        let path = tmp.path().to_owned();
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_status("creating", &path, e))?;
        let now = SystemTime::now();
        state.writes.insert(
            key.clone(),
            Active {
                token: token.clone(),
                path: path.clone(),
                offset: 0,
                total: 0,
                expected: String::new(),
                started: now,
                updated: now,
            },
        );
        Ok(Ingest {
            state: stores.state.clone(),
            key,
            token,
            tmp,
            file,
            hasher: Sha256::new(),
            offset: 0,
            total: 0,
            expected: String::new(),
            started: now,
        })
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex(&self.hasher.clone().finalize()))
    }

    fn publish(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(active) = state.writes.get_mut(&self.key) {
            if active.token == self.token {
                active.offset = self.offset;
                active.total = self.total;
                active.expected = self.expected.clone();
                active.updated = SystemTime::now();
            }
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state
            .writes
            .get(&self.key)
            .is_some_and(|a| a.token == self.token)
        {
            state.writes.remove(&self.key);
        }
    }
}

impl Ingest {
    /// Appends `data` at `offset`, which must be where the blob ends; offset
    /// 0 restarts the blob (containerd's rule).
    fn write_at(&mut self, offset: i64, data: &[u8]) -> Result<(), Status> {
        if offset > 0 && offset != self.offset {
            return Err(Status::out_of_range(format!(
                "write @{offset} must occur at current offset {}",
                self.offset
            )));
        }
        let path = self.tmp.path().to_owned();
        let written = |e: std::io::Error| io_status("writing", &path, e);
        if offset == 0 && self.offset > 0 {
            use std::io::Seek;
            self.file.set_len(0).map_err(written)?;
            self.file.rewind().map_err(written)?;
            self.hasher = Sha256::new();
            self.offset = 0;
        }
        if !data.is_empty() {
            self.file.write_all(data).map_err(written)?;
            self.hasher.update(data);
            self.offset += data.len() as i64;
        }
        Ok(())
    }

    /// Checks size and digest against what the writer announced, then moves
    /// the ingest file into place as the blob (synced, so a crash after the
    /// reply keeps it). Returns the blob's digest.
    fn commit(&mut self, layout: &OciLayout) -> Result<String, Status> {
        if self.total > 0 && self.offset != self.total {
            return Err(Status::failed_precondition(format!(
                "unexpected commit size {}, expected {}",
                self.offset, self.total
            )));
        }
        let digest = self.digest();
        if !self.expected.is_empty() && digest != self.expected {
            return Err(Status::failed_precondition(format!(
                "unexpected commit digest {digest}, expected {}",
                self.expected
            )));
        }
        self.file
            .sync_all()
            .map_err(|e| io_status("writing", self.tmp.path(), e))?;
        let blob = blob_path(layout, &digest)?;
        fs::rename(self.tmp.path(), &blob).map_err(|e| io_status("committing", &blob, e))?;
        self.tmp.keep();
        if let Some(dir) = blob.parent() {
            sync_dir(dir);
        }
        Ok(digest)
    }
}

/// One message of a Write stream (blocking: disk I/O and hashing).
fn handle_write(
    stores: &ContentStores,
    store: &str,
    layout: &OciLayout,
    ingest: &mut Option<Ingest>,
    req: pb::WriteContentRequest,
) -> Result<pb::WriteContentResponse, Status> {
    let action = pb::WriteAction::try_from(req.action)
        .map_err(|_| Status::invalid_argument(format!("unknown write action {}", req.action)))?;
    if ingest.is_none() && req.r#ref.is_empty() {
        return Err(Status::invalid_argument(
            "first message must have a reference",
        ));
    }
    if !req.expected.is_empty() && blob_path(layout, &req.expected)?.exists() {
        *ingest = None;
        return Err(Status::already_exists(format!(
            "blob with expected digest {} exists",
            req.expected
        )));
    }
    if ingest.is_none() {
        *ingest = Some(Ingest::start(stores, store, layout, &req.r#ref)?);
    }
    let current = ingest.as_mut().expect("set above");
    if !req.expected.is_empty() {
        current.expected = req.expected.clone();
    }
    if req.total > 0 {
        current.total = req.total;
    }
    if matches!(action, pb::WriteAction::Write | pb::WriteAction::Commit) {
        current.write_at(req.offset, &req.data)?;
    }
    current.publish();
    let reply = pb::WriteContentResponse {
        action: req.action,
        started_at: Some(current.started.into()),
        updated_at: Some(SystemTime::now().into()),
        offset: current.offset,
        total: current.total,
        digest: current.digest(),
    };
    if action == pb::WriteAction::Commit {
        let digest = current.commit(layout)?;
        *ingest = None;
        if !req.labels.is_empty() {
            stores
                .state()
                .labels
                .insert((layout.dir().to_owned(), digest), req.labels);
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::content_client::ContentClient;
    use std::path::Path;
    use std::time::Duration;
    use tonic::transport::Channel;

    const HELLO: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const STORE: &str = "local:cache";

    async fn serve(stores: ContentStores) -> Channel {
        super::super::serve_on_loopback(tonic::service::Routes::new(stores.service())).await
    }

    fn in_store<T>(message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(STORE_ID, STORE.parse().unwrap());
        request
    }

    /// A store in a temporary directory, and a client for it.
    async fn store() -> (
        tempfile::TempDir,
        OciLayout,
        ContentStores,
        ContentClient<Channel>,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OciLayout::new(tmp.path().join("cache"));
        layout.init().unwrap();
        let stores = ContentStores::new(BTreeMap::from([(STORE.to_owned(), layout.clone())]));
        let client = ContentClient::new(serve(stores.clone()).await);
        (tmp, layout, stores, client)
    }

    fn req(action: pb::WriteAction, data: &[u8], offset: i64) -> pb::WriteContentRequest {
        pb::WriteContentRequest {
            action: action as i32,
            offset,
            data: bytes::Bytes::copy_from_slice(data),
            ..Default::default()
        }
    }

    fn stat(reference: &str, total: i64, expected: &str) -> pb::WriteContentRequest {
        pb::WriteContentRequest {
            r#ref: reference.into(),
            total,
            expected: expected.into(),
            ..req(pb::WriteAction::Stat, b"", 0)
        }
    }

    fn commit(total: i64, offset: i64, expected: &str) -> pb::WriteContentRequest {
        pb::WriteContentRequest {
            total,
            expected: expected.into(),
            ..req(pb::WriteAction::Commit, b"", offset)
        }
    }

    /// Runs one Write stream the way containerd's proxy store does: one
    /// request, one answer; stops at the first error.
    async fn write(
        client: &mut ContentClient<Channel>,
        requests: Vec<pb::WriteContentRequest>,
    ) -> Result<Vec<pb::WriteContentResponse>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut replies = client
            .write(in_store(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await?
            .into_inner();
        let mut out = Vec::new();
        for r in requests {
            tx.send(r).await.unwrap();
            match replies.message().await? {
                Some(reply) => out.push(reply),
                None => break,
            }
        }
        Ok(out)
    }

    fn count(dir: &Path) -> usize {
        fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    #[tokio::test]
    async fn write_commit_then_info_and_read_back() {
        let (_tmp, layout, _, mut client) = store().await;
        let replies = write(
            &mut client,
            vec![
                stat("hello", 5, HELLO),
                req(pb::WriteAction::Write, b"hel", 0),
                req(pb::WriteAction::Write, b"lo", 3),
                commit(5, 5, HELLO),
            ],
        )
        .await
        .unwrap();
        assert_eq!(replies[0].offset, 0);
        assert_eq!(replies[2].offset, 5);
        assert_eq!(replies[3].digest, HELLO);
        assert_eq!(
            fs::read(blob_path(&layout, HELLO).unwrap()).unwrap(),
            b"hello"
        );
        assert_eq!(count(&layout.ingest_dir()), 0);

        let info = client
            .info(in_store(pb::InfoRequest {
                digest: HELLO.into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap();
        assert_eq!(info.size, 5);

        let read = |offset, size| {
            let mut client = client.clone();
            async move {
                let stream = client
                    .read(in_store(pb::ReadContentRequest {
                        digest: HELLO.into(),
                        offset,
                        size,
                    }))
                    .await?
                    .into_inner();
                let parts: Vec<_> = stream.collect().await;
                let mut data = Vec::new();
                for p in parts {
                    data.extend_from_slice(&p?.data);
                }
                Ok::<_, Status>(data)
            }
        };
        assert_eq!(read(0, 0).await.unwrap(), b"hello");
        assert_eq!(read(1, 3).await.unwrap(), b"ell");
        assert_eq!(read(3, 100).await.unwrap(), b"lo");
        assert_eq!(
            read(6, 0).await.unwrap_err().code(),
            tonic::Code::OutOfRange
        );

        // A blob already there: the first STAT says so, as containerd does.
        let err = write(&mut client, vec![stat("again", 5, HELLO)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
        let missing = format!("sha256:{}", "1".repeat(64));
        let err = client
            .info(in_store(pb::InfoRequest { digest: missing }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn large_blobs_are_read_in_chunks() {
        let (_tmp, _layout, _, mut client) = store().await;
        let data: Vec<u8> = (0..(READ_CHUNK * 2 + 10))
            .map(|i| (i % 251) as u8)
            .collect();
        let digest = format!("sha256:{}", hex(&Sha256::digest(&data)));
        let mut requests = vec![stat("big", data.len() as i64, &digest)];
        let mut offset = 0;
        for chunk in data.chunks(700_000) {
            requests.push(req(pb::WriteAction::Write, chunk, offset));
            offset += chunk.len() as i64;
        }
        requests.push(commit(data.len() as i64, offset, &digest));
        write(&mut client, requests).await.unwrap();
        let parts: Vec<_> = client
            .read(in_store(pb::ReadContentRequest {
                digest,
                offset: 0,
                size: 0,
            }))
            .await
            .unwrap()
            .into_inner()
            .collect()
            .await;
        let parts: Vec<_> = parts.into_iter().map(Result::unwrap).collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.data.len() <= READ_CHUNK));
        assert_eq!(parts[1].offset, READ_CHUNK as i64);
        assert_eq!(parts.concat_data(), data);
    }

    trait Concat {
        fn concat_data(&self) -> Vec<u8>;
    }

    impl Concat for Vec<pb::ReadContentResponse> {
        fn concat_data(&self) -> Vec<u8> {
            self.iter().flat_map(|p| p.data.to_vec()).collect()
        }
    }

    #[tokio::test]
    async fn a_wrong_digest_or_size_is_rejected_and_leaves_nothing() {
        let (_tmp, layout, _, mut client) = store().await;
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = write(
            &mut client,
            vec![
                stat("w", 5, &wrong),
                req(pb::WriteAction::Write, b"hello", 0),
                commit(5, 5, &wrong),
            ],
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        let err = write(
            &mut client,
            vec![
                stat("w", 6, ""),
                req(pb::WriteAction::Write, b"hello", 0),
                commit(6, 5, ""),
            ],
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        let err = write(
            &mut client,
            vec![
                stat("w", 5, ""),
                req(pb::WriteAction::Write, b"he", 0),
                req(pb::WriteAction::Write, b"llo", 7),
            ],
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(count(&layout.dir().join("blobs/sha256")), 0);
        assert_eq!(count(&layout.ingest_dir()), 0);
    }

    #[tokio::test]
    async fn an_interrupted_write_leaves_no_blob_and_frees_its_ref() {
        let (_tmp, layout, _, mut client) = store().await;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut replies = client
            .write(in_store(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await
            .unwrap()
            .into_inner();
        tx.send(stat("cut", 5, HELLO)).await.unwrap();
        replies.message().await.unwrap().unwrap();
        tx.send(req(pb::WriteAction::Write, b"hel", 0))
            .await
            .unwrap();
        replies.message().await.unwrap().unwrap();

        // While it runs, the ref is visible and locked.
        let status = client
            .status(in_store(pb::StatusRequest {
                r#ref: "cut".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!((status.offset, status.total), (3, 5));
        assert_eq!(status.expected, HELLO);
        let listed = client
            .list_statuses(in_store(pb::ListStatusesRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.statuses.len(), 1);
        let err = write(&mut client, vec![stat("cut", 5, "")])
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(count(&layout.ingest_dir()), 1);

        drop(tx); // the daemon went away mid-blob
        drop(replies);
        for _ in 0..100 {
            if count(&layout.ingest_dir()) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(count(&layout.ingest_dir()), 0);
        assert_eq!(count(&layout.dir().join("blobs/sha256")), 0);
        let err = client
            .status(in_store(pb::StatusRequest {
                r#ref: "cut".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        // The ref is free again, and offset 0 restarts a blob.
        write(
            &mut client,
            vec![
                stat("cut", 5, ""),
                req(pb::WriteAction::Write, b"xx", 0),
                req(pb::WriteAction::Write, b"hello", 0),
                commit(5, 5, HELLO),
            ],
        )
        .await
        .unwrap();
        assert!(blob_path(&layout, HELLO).unwrap().exists());
    }

    #[tokio::test]
    async fn concurrent_writers_of_one_blob_both_succeed() {
        let (_tmp, layout, _, client) = store().await;
        let one = |reference: &'static str| {
            let mut client = client.clone();
            async move {
                write(
                    &mut client,
                    vec![
                        stat(reference, 5, ""),
                        req(pb::WriteAction::Write, b"hello", 0),
                        commit(5, 5, HELLO),
                    ],
                )
                .await
            }
        };
        let (a, b) = tokio::join!(one("a"), one("b"));
        for r in [a, b] {
            match r {
                Ok(replies) => assert_eq!(replies.last().unwrap().digest, HELLO),
                Err(e) => assert_eq!(e.code(), tonic::Code::AlreadyExists),
            }
        }
        assert_eq!(
            fs::read(blob_path(&layout, HELLO).unwrap()).unwrap(),
            b"hello"
        );
        assert_eq!(count(&layout.ingest_dir()), 0);
    }

    #[tokio::test]
    async fn labels_list_and_the_store_id() {
        let (_tmp, _layout, _, mut client) = store().await;
        let mut commit_labelled = commit(5, 5, HELLO);
        commit_labelled
            .labels
            .insert("containerd.io/gc.root".into(), "x".into());
        write(
            &mut client,
            vec![
                stat("l", 5, ""),
                req(pb::WriteAction::Write, b"hello", 0),
                commit_labelled,
            ],
        )
        .await
        .unwrap();
        let info = |client: &mut ContentClient<Channel>| {
            let mut client = client.clone();
            async move {
                client
                    .info(in_store(pb::InfoRequest {
                        digest: HELLO.into(),
                    }))
                    .await
                    .unwrap()
                    .into_inner()
                    .info
                    .unwrap()
            }
        };
        assert_eq!(info(&mut client).await.labels.len(), 1);
        client
            .update(in_store(pb::UpdateRequest {
                info: Some(pb::Info {
                    digest: HELLO.into(),
                    labels: BTreeMap::from([("a".into(), "b".into())]),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["labels.a".into(), "labels.containerd.io/gc.root".into()],
                }),
            }))
            .await
            .unwrap();
        let labels = info(&mut client).await.labels;
        assert_eq!(labels, BTreeMap::from([("a".into(), "b".into())]));

        let listed: Vec<_> = client
            .list(in_store(pb::ListContentRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .collect()
            .await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].as_ref().unwrap().info[0].digest, HELLO);

        let err = client
            .delete(in_store(pb::DeleteContentRequest {
                digest: HELLO.into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);

        let mut other = Request::new(pb::InfoRequest {
            digest: HELLO.into(),
        });
        other
            .metadata_mut()
            .insert(STORE_ID, "local:elsewhere".parse().unwrap());
        assert_eq!(
            client.info(other).await.unwrap_err().code(),
            tonic::Code::NotFound
        );
        let bare = Request::new(pb::InfoRequest {
            digest: HELLO.into(),
        });
        assert_eq!(
            client.info(bare).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn request() -> impl Strategy<Value = pb::WriteContentRequest> {
            let digests = prop::sample::select(&[HELLO, "", "sha256:zz", "md5:1", "sha256:"][..]);
            (
                0..4i32,
                prop::sample::select(&["", "r", "../r", "r/../../x"][..]),
                prop_oneof![Just(0i64), Just(5), Just(-1), Just(i64::MAX), any::<i64>()],
                prop_oneof![Just(0i64), Just(5), Just(i64::MIN), any::<i64>()],
                digests,
                prop::collection::vec(any::<u8>(), 0..8),
            )
                .prop_map(|(action, r, offset, total, expected, data)| {
                    pb::WriteContentRequest {
                        action,
                        r#ref: r.into(),
                        offset,
                        total,
                        expected: expected.into(),
                        data: data.into(),
                        ..Default::default()
                    }
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

            /// Any sequence of write requests: an answer or an error, never a
            /// panic, and nothing but checked blobs left in the layout.
            #[test]
            fn write_requests_never_panic(requests in prop::collection::vec(request(), 1..8)) {
                let tmp = tempfile::tempdir().unwrap();
                let layout = OciLayout::new(tmp.path().join("cache"));
                layout.init().unwrap();
                let stores = ContentStores::new(BTreeMap::from([(STORE.to_owned(), layout.clone())]));
                let mut ingest = None;
                for r in requests {
                    if handle_write(&stores, STORE, &layout, &mut ingest, r).is_err() {
                        ingest = None;
                    }
                }
                drop(ingest);
                prop_assert_eq!(count(&layout.ingest_dir()), 0);
                for blob in fs::read_dir(layout.dir().join("blobs/sha256")).unwrap() {
                    let blob = blob.unwrap();
                    let digest = format!("sha256:{}", hex(&Sha256::digest(fs::read(blob.path()).unwrap())));
                    prop_assert_eq!(digest, format!("sha256:{}", blob.file_name().to_string_lossy()));
                }
            }

            /// Any read range of a stored blob.
            #[test]
            fn read_ranges_never_panic(offset in any::<i64>(), size in any::<i64>()) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let tmp = tempfile::tempdir().unwrap();
                    let layout = OciLayout::new(tmp.path().join("cache"));
                    layout.init().unwrap();
                    fs::write(layout.blob_path(HELLO).unwrap(), "hello").unwrap();
                    let stores = ContentStores::new(BTreeMap::from([(STORE.to_owned(), layout)]));
                    let read = pb::ReadContentRequest { digest: HELLO.into(), offset, size };
                    if let Ok(stream) = Content::read(&stores, in_store(read)).await {
                        let chunks: Vec<_> = stream.into_inner().collect().await;
                        let bytes: usize = chunks.iter().flatten().map(|c| c.data.len()).sum();
                        assert!(bytes <= 5);
                    }
                });
            }
        }
    }
}
