//! `moby.filesync.v1.FileSync/DiffCopy`: sends a local directory (an overlay, a
//! build context) to the daemon with fsutil's packet protocol.
//!
//! We list every entry as a STAT packet (depth first, names sorted byte-wise,
//! parents before children), end the listing with an empty STAT, then answer
//! the daemon's REQ packets with DATA chunks and an empty DATA, until FIN.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::localtree::{walk, Entry, PatternSet, WalkFilter};
use crate::options::LocalDir;
use crate::wire::fsutil::types::packet::PacketType;
use crate::wire::fsutil::types::Packet;
use crate::wire::moby::filesync::v1::file_sync_server::{FileSync, FileSyncServer};

pub(crate) const METHODS: &[&str] = &[
    "/moby.filesync.v1.FileSync/DiffCopy",
    "/moby.filesync.v1.FileSync/TarStream",
];

/// How much file data goes in one DATA packet (fsutil uses the same).
const CHUNK: usize = 32 * 1024;

/// How many files are read and sent at once.
const FILES_IN_FLIGHT: usize = 4;

/// The FileSync service over a set of named local directories.
#[derive(Debug, Clone, Default)]
pub struct LocalDirs {
    dirs: Arc<BTreeMap<String, LocalDir>>,
}

impl LocalDirs {
    pub fn new(dirs: BTreeMap<String, LocalDir>) -> Self {
        LocalDirs {
            dirs: Arc::new(dirs),
        }
    }

    pub(crate) fn service(self) -> FileSyncServer<LocalDirs> {
        FileSyncServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

/// A metadata value, URL-unescaped when the daemon marks it `<key>-encoded`.
fn metadata_values(md: &MetadataMap, key: &str) -> Vec<String> {
    let encoded = md.get(format!("{key}-encoded").as_str()).is_some();
    md.get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            if encoded {
                percent_decode(v)
            } else {
                v.to_owned()
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send + 'static>>;

fn packet(kind: PacketType) -> Packet {
    Packet {
        r#type: kind as i32,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl FileSync for LocalDirs {
    type DiffCopyStream = PacketStream;

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let md = request.metadata();
        let name = metadata_values(md, "dir-name")
            .into_iter()
            .next()
            .unwrap_or_default();
        let dir = self.dirs.get(&name).cloned().ok_or_else(|| {
            Status::not_found(format!("no local directory named {name:?} in this session"))
        })?;
        let mut excludes = metadata_values(md, "exclude-patterns");
        excludes.extend(dir.excludes.iter().cloned());
        // fsutil's followpaths (the Dockerfile frontend loads .dockerignore
        // and the Dockerfile with them) include those paths, as patterns do.
        let mut includes = metadata_values(md, "include-patterns");
        includes.extend(metadata_values(md, "followpaths"));
        let filter = WalkFilter {
            include: PatternSet::new(&includes),
            exclude: PatternSet::new(&excludes),
        };
        let root = dir.path.clone();
        let entries = tokio::task::spawn_blocking(move || walk(&root, &filter))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("reading {}: {e}", dir.path.display())))?;

        let (tx, rx) = mpsc::channel::<Result<Packet, Status>>(64);
        let inbound = request.into_inner();
        tokio::spawn(send_dir(entries, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type TarStreamStream = PacketStream;

    async fn tar_stream(
        &self,
        _request: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::TarStreamStream>, Status> {
        Err(Status::unimplemented(
            "strata sends directories with DiffCopy",
        ))
    }
}

/// What the daemon asks of the sender.
enum Asked {
    /// The content of the file with this id (its index in the listing).
    File(u32),
    /// The listing and every requested file were received: finish.
    Fin,
}

/// Reads the daemon's requests as they come and queues them, a few bytes
/// each: left unread, they would wait in the HTTP/2 receive buffer at a few
/// hundred bytes each (the daemon asks for every file at once). The queue is
/// bounded by the listing of `listed` entries: each id is queued once, an
/// unknown id ends it.
fn read_requests(
    mut inbound: Streaming<Packet>,
    listed: usize,
) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<Asked>) {
    let (req_tx, requests) = mpsc::unbounded_channel::<Asked>();
    let reader = tokio::spawn(async move {
        let mut asked = vec![false; listed];
        while let Some(Ok(p)) = inbound.next().await {
            let request = match PacketType::try_from(p.r#type) {
                Ok(PacketType::PacketReq) => match asked.get_mut(p.id as usize) {
                    Some(true) => continue,
                    Some(seen) => {
                        *seen = true;
                        Asked::File(p.id)
                    }
                    None => {
                        let _ = req_tx.send(Asked::File(p.id));
                        return;
                    }
                },
                Ok(PacketType::PacketFin) => Asked::Fin,
                Ok(PacketType::PacketErr) => {
                    tracing::warn!(
                        "the daemon stopped the upload: {}",
                        String::from_utf8_lossy(&p.data)
                    );
                    return;
                }
                _ => continue,
            };
            if req_tx.send(request).is_err() {
                return;
            }
        }
    });
    (reader, requests)
}

/// Runs the sender side of the protocol for one listing.
async fn send_dir(
    entries: Vec<Entry>,
    inbound: Streaming<Packet>,
    tx: mpsc::Sender<Result<Packet, Status>>,
) {
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(FILES_IN_FLIGHT));
    let (sent_tx, mut sent_rx) = mpsc::channel::<Result<(), String>>(1);
    // One listing, shared: the STATs are sent from it, and a file's id is its
    // index in it.
    let mut entries = entries;
    entries.shrink_to_fit();
    let entries = Arc::new(entries);
    let lister = {
        let tx = tx.clone();
        let entries = entries.clone();
        tokio::spawn(async move {
            for entry in entries.iter() {
                let p = Packet {
                    stat: Some(entry.stat.clone()),
                    ..packet(PacketType::PacketStat)
                };
                if tx.send(Ok(p)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Ok(packet(PacketType::PacketStat))).await;
            let _ = sent_tx.send(Ok(())).await;
        })
    };

    let (reader, mut requests) = read_requests(inbound, entries.len());
    while let Some(request) = requests.recv().await {
        match request {
            Asked::File(id) => {
                let Some(path) = entries.get(id as usize).and_then(|e| e.source.clone()) else {
                    let _ = tx
                        .send(Ok(Packet {
                            data: Bytes::from(format!("invalid file id {id}")),
                            ..packet(PacketType::PacketErr)
                        }))
                        .await;
                    break;
                };
                // A few files at a time, as fsutil does: a reader per file
                // would hold a buffer and a descriptor each.
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                // Detached: a kept JoinHandle would keep the finished task's
                // memory alive, a kilobyte per file until the upload ends.
                let tx = tx.clone();
                tokio::task::spawn_blocking(move || {
                    send_file(id, &path, &tx);
                    drop(permit);
                });
            }
            Asked::Fin => {
                let _ = sent_rx.recv().await;
                // Every permit back: every file sent.
                let _ = in_flight.acquire_many(FILES_IN_FLIGHT as u32).await;
                let _ = tx.send(Ok(packet(PacketType::PacketFin))).await;
                break;
            }
        }
    }
    reader.abort();
    lister.abort();
}

/// Sends one file as DATA packets, then an empty DATA. Runs on a blocking
/// thread: one task per file reads it whole, rather than a task per read.
/// A file that cannot be opened or read ends the transfer with ERR, as
/// fsutil's sender does: never an empty or partial file in a build.
fn send_file(id: u32, path: &Path, tx: &mpsc::Sender<Result<Packet, Status>>) {
    use std::io::Read;
    let fail = |what: &str, e: std::io::Error| {
        let _ = tx.blocking_send(Ok(Packet {
            data: Bytes::from(format!("{what} {}: {e}", path.display())),
            ..packet(PacketType::PacketErr)
        }));
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return fail("opening", e),
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let p = Packet {
                    id,
                    data: Bytes::copy_from_slice(&buf[..n]),
                    ..packet(PacketType::PacketData)
                };
                if tx.blocking_send(Ok(p)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return fail("reading", e),
        }
    }
    let _ = tx.blocking_send(Ok(Packet {
        id,
        ..packet(PacketType::PacketData)
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_unescapes_when_marked() {
        assert_eq!(percent_decode("a%20b%2Fc"), "a b/c");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn a_file_that_cannot_be_read_is_an_error_not_an_empty_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        send_file(3, &tmp.path().join("vanished"), &tx);
        let p = rx.try_recv().unwrap().unwrap();
        assert_eq!(p.r#type, PacketType::PacketErr as i32);
        assert!(String::from_utf8_lossy(&p.data).contains("vanished"));
        assert!(rx.try_recv().is_err(), "no DATA after the error");
    }
}
