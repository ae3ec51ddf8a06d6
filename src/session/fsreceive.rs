//! The receiving side of fsutil's DiffCopy: the daemon sends a tree (the
//! `local` exporter's output) as STAT packets, we request each regular file's
//! content (REQ), it streams DATA, and we end with FIN.
//!
//! The tree is written to a directory beside the destination and swapped in
//! only when complete, so an interrupted export leaves an existing one intact.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

use super::filesync::{go_mode, posix_permissions};
use crate::wire::fsutil::types::packet::PacketType;
use crate::wire::fsutil::types::{Packet, Stat};

/// A file being received: where it goes and the metadata to apply once complete.
struct Pending {
    path: PathBuf,
    file: Option<fs::File>,
    stat: Stat,
}

/// Metadata applied after everything is written (writing into a directory
/// changes its mtime; a read-only directory would refuse the writes).
struct Deferred {
    path: PathBuf,
    stat: Stat,
}

fn mtime(stat: &Stat) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(stat.mod_time.max(0) as u64)
}

/// A relative, clean path from the wire, or an error (the daemon must never
/// make us write outside the destination).
fn safe_relative(path: &str) -> Result<PathBuf, Status> {
    let p = Path::new(path);
    if path.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Status::invalid_argument(format!(
            "refusing unsafe path {path:?} in the export"
        )));
    }
    Ok(p.to_owned())
}

fn io_status(what: &str, path: &Path, e: std::io::Error) -> Status {
    Status::internal(format!("{what} {}: {e}", path.display()))
}

fn apply_metadata(path: &Path, stat: &Stat, chown: bool) -> Result<(), Status> {
    if chown {
        std::os::unix::fs::lchown(path, Some(stat.uid), Some(stat.gid))
            .map_err(|e| io_status("chown", path, e))?;
    }
    if stat.mode & go_mode::SYMLINK == 0 {
        fs::set_permissions(
            path,
            fs::Permissions::from_mode(posix_permissions(stat.mode)),
        )
        .map_err(|e| io_status("chmod", path, e))?;
        if let Ok(f) = fs::File::open(path) {
            let _ = f.set_modified(mtime(stat));
        }
    }
    Ok(())
}

/// Receives one tree into `dest`; `outbound` carries our REQ/FIN packets.
pub(crate) async fn receive_tree<S>(
    dest: PathBuf,
    mut inbound: S,
    outbound: mpsc::Sender<Result<Bytes, Status>>,
) -> Result<(), Status>
where
    S: Stream<Item = Result<Bytes, Status>> + Unpin,
{
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    fs::create_dir_all(&parent).map_err(|e| io_status("creating", &parent, e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let staging = parent.join(format!(".{name}.strata-{}", super::random_id()));
    fs::create_dir(&staging).map_err(|e| io_status("creating", &staging, e))?;
    let result = receive_into(&staging, &mut inbound, &outbound).await;
    match result {
        Ok(()) => swap_in(&staging, &dest),
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            let _ = outbound
                .send(Ok(packet(PacketType::PacketErr, 0, e.message().as_bytes())))
                .await;
            Err(e)
        }
    }
}

fn packet(kind: PacketType, id: u32, data: &[u8]) -> Bytes {
    Packet {
        r#type: kind as i32,
        stat: None,
        id,
        data: Bytes::copy_from_slice(data),
    }
    .encode_to_vec()
    .into()
}

/// Replaces `dest` with `staging`: the old tree is moved aside first and
/// removed only after the new one is in place.
fn swap_in(staging: &Path, dest: &Path) -> Result<(), Status> {
    let old = dest.with_file_name(format!(
        ".{}.strata-old-{}",
        dest.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        super::random_id()
    ));
    let had_old = dest.exists();
    if had_old {
        fs::rename(dest, &old).map_err(|e| io_status("moving aside", dest, e))?;
    }
    if let Err(e) = fs::rename(staging, dest) {
        if had_old {
            let _ = fs::rename(&old, dest);
        }
        let _ = fs::remove_dir_all(staging);
        return Err(io_status("moving the export to", dest, e));
    }
    if had_old {
        let _ = if old.is_dir() {
            fs::remove_dir_all(&old)
        } else {
            fs::remove_file(&old)
        };
    }
    Ok(())
}

async fn receive_into<S>(
    root: &Path,
    inbound: &mut S,
    outbound: &mpsc::Sender<Result<Bytes, Status>>,
) -> Result<(), Status>
where
    S: Stream<Item = Result<Bytes, Status>> + Unpin,
{
    let chown = nix_is_root();
    let mut next_id: u32 = 0;
    let mut pending: HashMap<u32, Pending> = HashMap::new();
    let mut dirs: Vec<Deferred> = Vec::new();
    let mut hardlinks: Vec<(PathBuf, PathBuf, Stat)> = Vec::new();
    let mut listing_done = false;
    let mut fin_sent = false;
    let send = |bytes: Bytes| async move {
        outbound
            .send(Ok(bytes))
            .await
            .map_err(|_| Status::cancelled("the export stream closed"))
    };

    while let Some(message) = inbound.next().await {
        let p = Packet::decode(message?)
            .map_err(|e| Status::invalid_argument(format!("bad export packet: {e}")))?;
        match PacketType::try_from(p.r#type) {
            Ok(PacketType::PacketStat) => {
                let Some(stat) = p.stat else {
                    listing_done = true;
                    if pending.is_empty() && !fin_sent {
                        finish(root, &mut dirs, &hardlinks, chown)?;
                        send(packet(PacketType::PacketFin, 0, &[])).await?;
                        fin_sent = true;
                    }
                    continue;
                };
                let id = next_id;
                next_id += 1;
                let rel = safe_relative(&stat.path)?;
                let path = root.join(&rel);
                if stat.mode & go_mode::DIR != 0 {
                    fs::create_dir_all(&path).map_err(|e| io_status("creating", &path, e))?;
                    dirs.push(Deferred { path, stat });
                } else if stat.mode & go_mode::SYMLINK != 0 {
                    std::os::unix::fs::symlink(&stat.linkname, &path)
                        .map_err(|e| io_status("creating symlink", &path, e))?;
                    apply_metadata(&path, &stat, chown)?;
                } else if !stat.linkname.is_empty() {
                    let target = root.join(safe_relative(&stat.linkname)?);
                    hardlinks.push((target, path, stat));
                } else if stat.mode & (go_mode::DEVICE | go_mode::NAMED_PIPE | go_mode::SOCKET) != 0
                {
                    // Devices, pipes and sockets have no content to export; skip them.
                } else {
                    let file =
                        fs::File::create(&path).map_err(|e| io_status("creating", &path, e))?;
                    pending.insert(
                        id,
                        Pending {
                            path,
                            file: Some(file),
                            stat,
                        },
                    );
                    send(packet(PacketType::PacketReq, id, &[])).await?;
                }
            }
            Ok(PacketType::PacketData) => {
                let entry = pending.get_mut(&p.id).ok_or_else(|| {
                    Status::invalid_argument(format!("data for unrequested file {}", p.id))
                })?;
                if p.data.is_empty() {
                    let done = pending.remove(&p.id).expect("present");
                    drop(done.file);
                    apply_metadata(&done.path, &done.stat, chown)?;
                    if listing_done && pending.is_empty() && !fin_sent {
                        finish(root, &mut dirs, &hardlinks, chown)?;
                        send(packet(PacketType::PacketFin, 0, &[])).await?;
                        fin_sent = true;
                    }
                } else if let Some(file) = entry.file.as_mut() {
                    file.write_all(&p.data)
                        .map_err(|e| io_status("writing", &entry.path, e))?;
                }
            }
            Ok(PacketType::PacketFin) => {
                // The sender's answer to our FIN: the transfer is complete.
                if fin_sent {
                    return Ok(());
                }
                return Err(Status::aborted("the daemon ended the export early"));
            }
            Ok(PacketType::PacketErr) => {
                return Err(Status::aborted(format!(
                    "the daemon failed sending the export: {}",
                    String::from_utf8_lossy(&p.data)
                )))
            }
            Ok(PacketType::PacketReq) | Err(_) => {
                return Err(Status::invalid_argument("unexpected packet in an export"))
            }
        }
    }
    if fin_sent {
        Ok(())
    } else {
        Err(Status::aborted(
            "the export stream ended before it was complete",
        ))
    }
}

/// Hard links (their targets are complete now), then directory metadata,
/// deepest first.
fn finish(
    root: &Path,
    dirs: &mut [Deferred],
    hardlinks: &[(PathBuf, PathBuf, Stat)],
    chown: bool,
) -> Result<(), Status> {
    for (target, path, _) in hardlinks {
        fs::hard_link(target, path).map_err(|e| io_status("linking", path, e))?;
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
    for d in dirs.iter() {
        apply_metadata(&d.path, &d.stat, chown)?;
    }
    let _ = root;
    Ok(())
}

/// Whether we may give files their recorded owners.
fn nix_is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(path: &str, mode: u32, size: i64) -> Stat {
        Stat {
            path: path.into(),
            mode,
            size,
            mod_time: 1_700_000_000_000_000_000,
            ..Default::default()
        }
    }

    fn stat_packet(s: Option<Stat>) -> Result<Bytes, Status> {
        Ok(Packet {
            r#type: PacketType::PacketStat as i32,
            stat: s,
            id: 0,
            data: Bytes::new(),
        }
        .encode_to_vec()
        .into())
    }

    fn data(id: u32, d: &[u8]) -> Result<Bytes, Status> {
        Ok(packet(PacketType::PacketData, id, d))
    }

    #[tokio::test]
    async fn receives_a_tree_and_replaces_the_destination_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("stale.txt"), "old").unwrap();
        let inbound = futures::stream::iter(vec![
            stat_packet(Some(stat("dir", go_mode::DIR | 0o755, 0))),
            stat_packet(Some(stat("dir/a.txt", 0o644, 5))),
            stat_packet(Some(Stat {
                linkname: "dir/a.txt".into(),
                ..stat("hard.txt", 0o644, 0)
            })),
            stat_packet(Some(Stat {
                linkname: "dir/a.txt".into(),
                ..stat("link", go_mode::SYMLINK | 0o777, 0)
            })),
            stat_packet(None),
            data(1, b"hello"),
            data(1, b""),
            Ok(packet(PacketType::PacketFin, 0, &[])),
        ]);
        let (tx, mut rx) = mpsc::channel(16);
        receive_tree(dest.clone(), inbound, tx).await.unwrap();
        let mut sent = Vec::new();
        while let Ok(b) = rx.try_recv() {
            sent.push(Packet::decode(b.unwrap()).unwrap());
        }
        assert_eq!(sent[0].r#type, PacketType::PacketReq as i32);
        assert_eq!(sent[0].id, 1, "ids count every STAT");
        assert_eq!(sent.last().unwrap().r#type, PacketType::PacketFin as i32);
        assert_eq!(fs::read_to_string(dest.join("dir/a.txt")).unwrap(), "hello");
        assert_eq!(fs::read_to_string(dest.join("hard.txt")).unwrap(), "hello");
        assert_eq!(
            fs::read_link(dest.join("link")).unwrap(),
            Path::new("dir/a.txt")
        );
        assert!(!dest.join("stale.txt").exists(), "the old tree is replaced");
        let leftovers: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no staging dirs left");
    }

    #[tokio::test]
    async fn an_interrupted_export_leaves_the_old_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("keep.txt"), "old").unwrap();
        let inbound = futures::stream::iter(vec![
            stat_packet(Some(stat("a.txt", 0o644, 5))),
            stat_packet(None),
            data(0, b"hel"),
        ]);
        let (tx, _rx) = mpsc::channel(16);
        assert!(receive_tree(dest.clone(), inbound, tx).await.is_err());
        assert_eq!(fs::read_to_string(dest.join("keep.txt")).unwrap(), "old");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn paths_outside_the_destination_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let inbound = futures::stream::iter(vec![stat_packet(Some(stat("../evil", 0o644, 1)))]);
        let (tx, _rx) = mpsc::channel(16);
        let err = receive_tree(tmp.path().join("out"), inbound, tx)
            .await
            .unwrap_err();
        assert!(err.message().contains("unsafe path"), "{err:?}");
    }
}
