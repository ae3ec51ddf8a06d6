//! The receiving side of fsutil's DiffCopy: the daemon (the `local` exporter)
//! sends a tree and we write it to a directory.
//!
//! The protocol, as fsutil's `receive.go`/`send.go` run it:
//! 1. The sender lists every entry as a STAT packet (parents first); a STAT
//!    without a stat ends the listing. Each STAT's 0-based position is its id.
//! 2. The receiver sends REQ{id} for each regular file whose content it wants
//!    (it may do so while the listing is still arriving); the sender answers
//!    with DATA{id, chunk}… and an empty DATA{id}. Up to four files stream at
//!    once, so DATA packets of different ids interleave.
//! 3. Once it has every file, **the receiver sends FIN**; the sender answers
//!    FIN and is done. Either side may send ERR (its text) instead.
//!
//! Hard links arrive as regular-file STATs with `linkname` set to the path of
//! an earlier entry (no REQ for them); symlinks carry their target in
//! `linkname`. Modes are Go `os.FileMode` bits.
//!
//! What we apply, as fsutil's disk writer does: permissions (with setuid,
//! setgid, sticky) and times (atime = mtime = the STAT's, symlinks included).
//! Fifos and device nodes are made with mknod; a device node we may not
//! create (not root) is skipped with a warning, as are sockets. Owners are
//! not applied: like buildctl (which rewrites every uid/gid to its own), the
//! exported files belong to the user running strata. Xattrs are not written.
//!
//! Atomicity: the tree is written into a hidden staging directory beside the
//! destination and moved into place only once complete, so an interrupted
//! export leaves an existing destination as it was. An existing destination
//! is *replaced*, not merged (buildctl merges): the result is exactly the
//! build's output, with no stale files from earlier exports. Directories that
//! contain the current directory (`dest=.`) are refused rather than replaced.
//! If the daemon sends several trees for one exporter in one build (one per
//! platform), the first replaces the destination and later ones merge into it.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

use super::filesync::{go_mode, posix_permissions};
use super::io_status;
use crate::wire::fsutil::types::packet::PacketType;
use crate::wire::fsutil::types::{Packet, Stat};

/// How long we wait for the sender's FIN after ours; everything is on disk by then.
const FIN_WAIT: Duration = Duration::from_secs(30);

/// Where one exporter's trees go, shared by every transfer of one build.
#[derive(Debug, Clone)]
pub(crate) struct TreeTarget {
    dest: PathBuf,
    /// Whether a transfer of this build already replaced `dest`.
    replaced: Arc<Mutex<bool>>,
}

impl TreeTarget {
    pub(crate) fn new(dest: PathBuf) -> Self {
        TreeTarget {
            dest,
            replaced: Arc::new(Mutex::new(false)),
        }
    }
}

/// The type bits of entries that have no content to request.
const SPECIAL: u32 = go_mode::DEVICE | go_mode::NAMED_PIPE | go_mode::SOCKET | go_mode::CHAR_DEVICE;

fn c_path(path: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Sets atime and mtime to the STAT's time without following a symlink.
fn set_times(path: &Path, stat: &Stat) -> std::io::Result<()> {
    const NS: i64 = 1_000_000_000;
    let time = libc::timespec {
        tv_sec: stat.mod_time.div_euclid(NS) as libc::time_t,
        tv_nsec: stat.mod_time.rem_euclid(NS) as _,
    };
    let times = [time, time];
    let path = c_path(path)?;
    // SAFETY: a NUL-terminated path and two timespecs, as utimensat(2) takes.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Creates a fifo or device node.
fn make_node(path: &Path, stat: &Stat) -> std::io::Result<()> {
    let kind = if stat.mode & go_mode::NAMED_PIPE != 0 {
        libc::S_IFIFO
    } else if stat.mode & go_mode::CHAR_DEVICE != 0 {
        libc::S_IFCHR
    } else {
        libc::S_IFBLK
    };
    let mode = kind | posix_permissions(stat.mode) as libc::mode_t;
    let dev = libc::makedev(stat.devmajor as _, stat.devminor as _);
    let path = c_path(path)?;
    // SAFETY: a NUL-terminated path and plain integers, as mknod(2) takes.
    if unsafe { libc::mknod(path.as_ptr(), mode, dev) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A relative, clean path from the wire, or an error: the daemon must never
/// make us write outside the destination.
fn safe_relative(path: &str) -> Result<PathBuf, Status> {
    let p = Path::new(path);
    if path.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Status::invalid_argument(format!(
            "refusing unsafe path {path:?} in the export"
        )));
    }
    Ok(p.to_owned())
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

/// What the protocol loop asks the disk writer to do, in order.
#[derive(Debug)]
enum Op {
    Dir(PathBuf, Stat),
    Symlink(PathBuf, Stat),
    /// A fifo or device node.
    Node(PathBuf, Stat),
    Hardlink {
        path: PathBuf,
        target: PathBuf,
    },
    Create {
        id: u32,
        path: PathBuf,
        stat: Stat,
    },
    Data {
        id: u32,
        data: Bytes,
    },
    Close {
        id: u32,
    },
    /// Everything arrived: apply the deferred metadata and move the tree into place.
    Commit,
}

/// Receives one tree for `target`; `outbound` carries our REQ, FIN and ERR packets.
pub(crate) async fn receive_tree<S>(
    target: TreeTarget,
    mut inbound: S,
    outbound: mpsc::Sender<Result<Bytes, Status>>,
) -> Result<(), Status>
where
    S: Stream<Item = Result<Bytes, Status>> + Unpin,
{
    let (ops, rx) = mpsc::channel::<Op>(256);
    let writer = tokio::task::spawn_blocking(move || write_tree(&target, rx));
    let received = receive_packets(&mut inbound, &outbound, &ops).await;
    drop(ops);
    let written = writer
        .await
        .unwrap_or_else(|e| Err(Status::internal(format!("the export writer failed: {e}"))));
    // A failed write explains a failed send to the writer better than the send does.
    let result = match (received, written) {
        (Ok(()), written) => written,
        (Err(_), Err(e)) if e.code() != tonic::Code::Aborted => Err(e),
        (Err(e), _) => Err(e),
    };
    match result {
        Ok(()) => {
            // The tree is in place. Our FIN ends the transfer; the sender
            // answers FIN, which we wait for only to end the call cleanly.
            let _ = outbound
                .send(Ok(packet(PacketType::PacketFin, 0, &[])))
                .await;
            let _ = tokio::time::timeout(FIN_WAIT, async {
                while let Some(Ok(message)) = inbound.next().await {
                    if Packet::decode(message)
                        .is_ok_and(|p| p.r#type == PacketType::PacketFin as i32)
                    {
                        break;
                    }
                }
            })
            .await;
            Ok(())
        }
        Err(e) => {
            let _ = outbound
                .send(Ok(packet(PacketType::PacketErr, 0, e.message().as_bytes())))
                .await;
            Err(e)
        }
    }
}

/// Runs the protocol until every requested file is complete, feeding the writer.
async fn receive_packets<S>(
    inbound: &mut S,
    outbound: &mpsc::Sender<Result<Bytes, Status>>,
    ops: &mpsc::Sender<Op>,
) -> Result<(), Status>
where
    S: Stream<Item = Result<Bytes, Status>> + Unpin,
{
    let to_writer = |op: Op| async move {
        ops.send(op)
            .await
            .map_err(|_| Status::aborted("the export writer stopped"))
    };
    let mut next_id: u32 = 0;
    let mut pending: HashMap<u32, ()> = HashMap::new();
    let mut listing_done = false;
    let mut sockets = 0usize;
    loop {
        if listing_done && pending.is_empty() {
            if sockets > 0 {
                tracing::warn!("the local export skipped {sockets} sockets");
            }
            return to_writer(Op::Commit).await;
        }
        let Some(message) = inbound.next().await else {
            return Err(Status::aborted(
                "the export stream ended before it was complete",
            ));
        };
        let p = Packet::decode(message?)
            .map_err(|e| Status::invalid_argument(format!("bad export packet: {e}")))?;
        match PacketType::try_from(p.r#type) {
            Ok(PacketType::PacketStat) => {
                let Some(stat) = p.stat else {
                    listing_done = true;
                    continue;
                };
                if listing_done {
                    return Err(Status::invalid_argument(
                        "STAT after the end of the listing",
                    ));
                }
                let id = next_id;
                next_id += 1;
                let path = safe_relative(&stat.path)?;
                if stat.mode & go_mode::DIR != 0 {
                    to_writer(Op::Dir(path, stat)).await?;
                } else if stat.mode & go_mode::SYMLINK != 0 {
                    to_writer(Op::Symlink(path, stat)).await?;
                } else if stat.mode & go_mode::SOCKET != 0 {
                    sockets += 1;
                } else if stat.mode & SPECIAL != 0 {
                    to_writer(Op::Node(path, stat)).await?;
                } else if !stat.linkname.is_empty() {
                    let target = safe_relative(&stat.linkname)?;
                    to_writer(Op::Hardlink { path, target }).await?;
                } else {
                    to_writer(Op::Create { id, path, stat }).await?;
                    pending.insert(id, ());
                    outbound
                        .send(Ok(packet(PacketType::PacketReq, id, &[])))
                        .await
                        .map_err(|_| Status::cancelled("the export stream closed"))?;
                }
            }
            Ok(PacketType::PacketData) => {
                if !pending.contains_key(&p.id) {
                    return Err(Status::invalid_argument(format!(
                        "data for unrequested file {}",
                        p.id
                    )));
                }
                if p.data.is_empty() {
                    pending.remove(&p.id);
                    to_writer(Op::Close { id: p.id }).await?;
                } else {
                    to_writer(Op::Data {
                        id: p.id,
                        data: p.data,
                    })
                    .await?;
                }
            }
            Ok(PacketType::PacketFin) => {
                return Err(Status::aborted("the daemon ended the export early"));
            }
            Ok(PacketType::PacketErr) => {
                return Err(Status::aborted(format!(
                    "the daemon failed sending the export: {}",
                    String::from_utf8_lossy(&p.data)
                )));
            }
            Ok(PacketType::PacketReq) => {
                return Err(Status::invalid_argument("REQ from the sending side"));
            }
            // Like fsutil, ignore packet types we do not know.
            Err(_) => {}
        }
    }
}

/// A directory removed (with everything in it) unless kept.
struct TempTree {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempTree {
    fn drop(&mut self) {
        if !self.keep {
            let _ = remove_tree(&self.path);
        }
    }
}

/// Removes a tree, making read-only directories in it writable if needed.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_writable(path);
            fs::remove_dir_all(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn make_writable(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

/// The directory a destination resolves to, checked for being safe to replace.
fn resolve_dest(dest: &Path) -> Result<PathBuf, Status> {
    let resolved = match fs::canonicalize(dest) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dest.as_os_str().is_empty() {
                return Err(Status::invalid_argument("the export destination is empty"));
            }
            std::path::absolute(dest).map_err(|e| io_status("resolving", dest, e))?
        }
        Err(e) => return Err(io_status("resolving", dest, e)),
    };
    if resolved.parent().is_none() {
        return Err(Status::invalid_argument(format!(
            "refusing to replace {} with the export",
            resolved.display()
        )));
    }
    if let Ok(cwd) = std::env::current_dir().and_then(fs::canonicalize) {
        if cwd.starts_with(&resolved) {
            return Err(Status::invalid_argument(format!(
                "refusing to replace {}: it holds the current directory (local exports replace \
                 their destination; name a new or dedicated directory)",
                dest.display()
            )));
        }
    }
    Ok(resolved)
}

/// The disk side: writes the tree into a staging directory, then moves it into place.
fn write_tree(target: &TreeTarget, mut ops: mpsc::Receiver<Op>) -> Result<(), Status> {
    let dest = resolve_dest(&target.dest)?;
    let parent = dest.parent().expect("checked by resolve_dest").to_owned();
    fs::create_dir_all(&parent).map_err(|e| io_status("creating", &parent, e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let mut staging = TempTree {
        path: parent.join(format!(".{name}.strata-{}", super::random_id())),
        keep: false,
    };
    let root = staging.path.clone();
    fs::create_dir(&root).map_err(|e| io_status("creating", &root, e))?;

    let mut open: HashMap<u32, (fs::File, PathBuf, Stat)> = HashMap::new();
    let mut dirs: Vec<(PathBuf, Stat)> = Vec::new();
    let mut hardlinks: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut files: Vec<(PathBuf, Stat)> = Vec::new();
    let mut links: Vec<(PathBuf, Stat)> = Vec::new();
    let mut nodes: Vec<(PathBuf, Stat)> = Vec::new();
    let mut skipped_devices = 0usize;
    // The symlinks we made: nothing may be written through one (only a
    // misbehaving sender would list entries below a symlink).
    let mut symlinks: HashSet<PathBuf> = HashSet::new();
    let through_symlink = |rel: &Path, symlinks: &HashSet<PathBuf>| -> Result<(), Status> {
        match rel.ancestors().find(|a| symlinks.contains(*a)) {
            Some(link) => Err(Status::invalid_argument(format!(
                "refusing {} in the export: {} is a symlink",
                rel.display(),
                link.display()
            ))),
            None => Ok(()),
        }
    };
    let parent_of = |path: &Path| -> Result<(), Status> {
        match path.parent() {
            Some(p) if !p.exists() => {
                fs::create_dir_all(p).map_err(|e| io_status("creating", p, e))
            }
            _ => Ok(()),
        }
    };
    loop {
        let Some(op) = ops.blocking_recv() else {
            return Err(Status::aborted("the export was interrupted"));
        };
        match op {
            Op::Dir(rel, stat) => {
                through_symlink(&rel, &symlinks)?;
                let path = root.join(rel);
                fs::create_dir_all(&path).map_err(|e| io_status("creating", &path, e))?;
                dirs.push((path, stat));
            }
            Op::Symlink(rel, stat) => {
                through_symlink(&rel, &symlinks)?;
                let path = root.join(&rel);
                parent_of(&path)?;
                std::os::unix::fs::symlink(&stat.linkname, &path)
                    .map_err(|e| io_status("creating symlink", &path, e))?;
                symlinks.insert(rel);
                links.push((path, stat));
            }
            Op::Node(rel, stat) => {
                through_symlink(&rel, &symlinks)?;
                let path = root.join(&rel);
                parent_of(&path)?;
                match make_node(&path, &stat) {
                    Ok(()) => nodes.push((path, stat)),
                    Err(e)
                        if stat.mode & go_mode::DEVICE != 0
                            && e.kind() == std::io::ErrorKind::PermissionDenied =>
                    {
                        skipped_devices += 1;
                    }
                    Err(e) => return Err(io_status("creating", &path, e)),
                }
            }
            Op::Hardlink { path, target } => {
                through_symlink(&path, &symlinks)?;
                if let Some(dir) = target.parent() {
                    through_symlink(dir, &symlinks)?;
                }
                hardlinks.push((root.join(target), root.join(path)));
            }
            Op::Create { id, path, stat } => {
                through_symlink(&path, &symlinks)?;
                let path = root.join(path);
                parent_of(&path)?;
                // create_new: never through an existing entry (a symlink listed twice).
                let file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| io_status("creating", &path, e))?;
                open.insert(id, (file, path, stat));
            }
            Op::Data { id, data } => {
                let (file, path, _) = open
                    .get_mut(&id)
                    .ok_or_else(|| Status::internal(format!("no open file {id}")))?;
                file.write_all(&data)
                    .map_err(|e| io_status("writing", path, e))?;
            }
            Op::Close { id } => {
                let (file, path, stat) = open
                    .remove(&id)
                    .ok_or_else(|| Status::internal(format!("no open file {id}")))?;
                drop(file);
                files.push((path, stat));
            }
            Op::Commit => break,
        }
    }

    if skipped_devices > 0 {
        tracing::warn!(
            "the local export skipped {skipped_devices} device nodes (creating them needs root)"
        );
    }
    // Metadata last: a read-only file or directory would refuse what came
    // after, and any entry made in a directory changes the directory's times.
    let chmod = |path: &Path, stat: &Stat| {
        fs::set_permissions(
            path,
            fs::Permissions::from_mode(posix_permissions(stat.mode)),
        )
        .map_err(|e| io_status("chmod", path, e))
    };
    let times = |path: &Path, stat: &Stat| {
        set_times(path, stat).map_err(|e| io_status("setting times on", path, e))
    };
    for (path, stat) in files.iter().chain(&nodes) {
        chmod(path, stat)?;
        times(path, stat)?;
    }
    for (target, path) in &hardlinks {
        parent_of(path)?;
        fs::hard_link(target, path).map_err(|e| io_status("linking", path, e))?;
    }
    for (path, stat) in &links {
        times(path, stat)?;
    }
    // Deepest first: a directory's times are set after everything inside it.
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, stat) in &dirs {
        chmod(path, stat)?;
        times(path, stat)?;
    }

    let mut replaced = target
        .replaced
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *replaced {
        merge_into(&root, &dest)?;
    } else {
        swap_in(&root, &dest)?;
        staging.keep = true;
        *replaced = true;
    }
    Ok(())
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
    let existing = fs::symlink_metadata(dest).ok();
    if let Some(meta) = &existing {
        if meta.is_dir() {
            // The new tree keeps the permissions the destination had.
            let _ = fs::set_permissions(staging, meta.permissions());
        }
        fs::rename(dest, &old).map_err(|e| io_status("moving aside", dest, e))?;
    }
    if let Err(e) = fs::rename(staging, dest) {
        if existing.is_some() {
            let _ = fs::rename(&old, dest);
        }
        return Err(io_status("moving the export to", dest, e));
    }
    if let Some(meta) = existing {
        let removed = if meta.is_dir() {
            remove_tree(&old)
        } else {
            fs::remove_file(&old)
        };
        if let Err(e) = removed {
            tracing::warn!("could not remove the previous {}: {e}", old.display());
        }
    }
    Ok(())
}

/// Moves everything in `from` into `into`, descending where both have a directory.
fn merge_into(from: &Path, into: &Path) -> Result<(), Status> {
    for entry in fs::read_dir(from).map_err(|e| io_status("reading", from, e))? {
        let entry = entry.map_err(|e| io_status("reading", from, e))?;
        let src = entry.path();
        let dst = into.join(entry.file_name());
        let src_is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let dst_meta = fs::symlink_metadata(&dst).ok();
        match dst_meta {
            Some(m) if m.is_dir() && src_is_dir => merge_into(&src, &dst)?,
            Some(m) if m.is_dir() => {
                remove_tree(&dst).map_err(|e| io_status("replacing", &dst, e))?;
                fs::rename(&src, &dst).map_err(|e| io_status("moving", &dst, e))?;
            }
            _ => fs::rename(&src, &dst).map_err(|e| io_status("moving", &dst, e))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const MTIME: i64 = 1_700_000_000_123_456_789;

    fn stat(path: &str, mode: u32) -> Stat {
        Stat {
            path: path.into(),
            mode,
            mod_time: MTIME,
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

    fn fin() -> Result<Bytes, Status> {
        Ok(packet(PacketType::PacketFin, 0, &[]))
    }

    fn sent(rx: &mut mpsc::Receiver<Result<Bytes, Status>>) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.push(Packet::decode(b.unwrap()).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn receives_a_tree_and_replaces_the_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("stale.txt"), "old").unwrap();
        let inbound = futures::stream::iter(vec![
            stat_packet(Some(stat("dir", go_mode::DIR | 0o555))),
            stat_packet(Some(stat("dir/a.txt", 0o640))),
            stat_packet(Some(stat("dir/b.sh", 0o755 | go_mode::SETUID))),
            stat_packet(Some(Stat {
                linkname: "dir/a.txt".into(),
                ..stat("hard.txt", 0o640)
            })),
            stat_packet(Some(Stat {
                linkname: "dir/a.txt".into(),
                ..stat("link", go_mode::SYMLINK | 0o777)
            })),
            stat_packet(Some(stat("fifo", go_mode::NAMED_PIPE | 0o644))),
            stat_packet(Some(stat("empty", 0o600))),
            stat_packet(Some(stat("sock", go_mode::SOCKET | 0o755))),
            stat_packet(None),
            // Files stream concurrently: chunks of different ids interleave.
            data(1, b"hel"),
            data(2, b"#!/bin/sh"),
            data(6, b""),
            data(1, b"lo"),
            data(2, b""),
            data(1, b""),
            fin(),
        ]);
        let (tx, mut rx) = mpsc::channel(16);
        receive_tree(TreeTarget::new(dest.clone()), inbound, tx)
            .await
            .unwrap();
        let sent = sent(&mut rx);
        let reqs: Vec<u32> = sent
            .iter()
            .filter(|p| p.r#type == PacketType::PacketReq as i32)
            .map(|p| p.id)
            .collect();
        assert_eq!(reqs, [1, 2, 6], "ids count every STAT; links get no REQ");
        assert_eq!(sent.last().unwrap().r#type, PacketType::PacketFin as i32);
        assert_eq!(fs::read_to_string(dest.join("dir/a.txt")).unwrap(), "hello");
        assert_eq!(fs::read_to_string(dest.join("hard.txt")).unwrap(), "hello");
        assert_eq!(
            fs::metadata(dest.join("hard.txt")).unwrap().ino(),
            fs::metadata(dest.join("dir/a.txt")).unwrap().ino()
        );
        assert_eq!(
            fs::read_link(dest.join("link")).unwrap(),
            Path::new("dir/a.txt")
        );
        assert_eq!(fs::read(dest.join("empty")).unwrap(), b"");
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::symlink_metadata(dest.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert!(!dest.join("sock").exists(), "sockets are skipped");
        let mode = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("dir"), 0o555);
        assert_eq!(mode("dir/a.txt"), 0o640);
        assert_eq!(mode("dir/b.sh"), 0o4755);
        assert_eq!(mode("fifo"), 0o644);
        let mtime = |p: &str| {
            let m = fs::symlink_metadata(dest.join(p)).unwrap();
            m.mtime() * 1_000_000_000 + m.mtime_nsec()
        };
        for p in ["dir", "dir/a.txt", "dir/b.sh", "link", "fifo", "empty"] {
            assert_eq!(mtime(p), MTIME, "{p}");
        }
        assert!(!dest.join("stale.txt").exists(), "the old tree is replaced");
        let leftovers: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no staging or old dirs left");
        make_writable(&dest);
    }

    #[tokio::test]
    async fn an_interrupted_export_leaves_the_old_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("keep.txt"), "old").unwrap();
        let inbound = futures::stream::iter(vec![
            stat_packet(Some(stat("a.txt", 0o644))),
            stat_packet(None),
            data(0, b"hel"),
        ]);
        let (tx, mut rx) = mpsc::channel(16);
        let err = receive_tree(TreeTarget::new(dest.clone()), inbound, tx)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
        assert_eq!(fs::read_to_string(dest.join("keep.txt")).unwrap(), "old");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
        let last = sent(&mut rx).pop().unwrap();
        assert_eq!(last.r#type, PacketType::PacketErr as i32);
    }

    #[tokio::test]
    async fn an_error_from_the_daemon_leaves_no_new_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let inbound = futures::stream::iter(vec![
            stat_packet(Some(stat("a.txt", 0o644))),
            Ok(packet(PacketType::PacketErr, 0, b"disk on fire")),
        ]);
        let (tx, _rx) = mpsc::channel(16);
        let err = receive_tree(TreeTarget::new(dest.clone()), inbound, tx)
            .await
            .unwrap_err();
        assert!(err.message().contains("disk on fire"), "{err:?}");
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn paths_outside_the_destination_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../evil", "/etc/passwd", "a/../../b", ""] {
            let inbound = futures::stream::iter(vec![stat_packet(Some(stat(bad, 0o644)))]);
            let (tx, _rx) = mpsc::channel(16);
            let err = receive_tree(TreeTarget::new(tmp.path().join("out")), inbound, tx)
                .await
                .unwrap_err();
            assert!(err.message().contains("unsafe path"), "{bad}: {err:?}");
        }
        let inbound = futures::stream::iter(vec![
            stat_packet(Some(Stat {
                linkname: "../../etc/passwd".into(),
                ..stat("h", 0o644)
            })),
            stat_packet(None),
        ]);
        let (tx, _rx) = mpsc::channel(16);
        let err = receive_tree(TreeTarget::new(tmp.path().join("out")), inbound, tx)
            .await
            .unwrap_err();
        assert!(err.message().contains("unsafe path"), "{err:?}");
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_second_tree_of_one_build_merges() {
        // One tree per platform (platform-split): the first replaces, the next merges.
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("stale"), "old").unwrap();
        let target = TreeTarget::new(dest.clone());
        for platform in ["linux_amd64", "linux_arm64"] {
            let inbound = futures::stream::iter(vec![
                stat_packet(Some(stat(platform, go_mode::DIR | 0o755))),
                stat_packet(Some(stat(&format!("{platform}/f"), 0o644))),
                stat_packet(None),
                data(1, platform.as_bytes()),
                data(1, b""),
                fin(),
            ]);
            let (tx, _rx) = mpsc::channel(16);
            receive_tree(target.clone(), inbound, tx).await.unwrap();
        }
        let mut names: Vec<_> = fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["linux_amd64", "linux_arm64"]);
        assert_eq!(
            fs::read_to_string(dest.join("linux_arm64/f")).unwrap(),
            "linux_arm64"
        );
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn nothing_is_written_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let cases: Vec<Vec<Result<Bytes, Status>>> = vec![
            vec![
                stat_packet(Some(Stat {
                    linkname: outside.to_string_lossy().into_owned(),
                    ..stat("l", go_mode::SYMLINK | 0o777)
                })),
                stat_packet(Some(stat("l/f", 0o644))),
            ],
            vec![
                stat_packet(Some(Stat {
                    linkname: outside.join("f").to_string_lossy().into_owned(),
                    ..stat("l", go_mode::SYMLINK | 0o777)
                })),
                stat_packet(Some(stat("l", 0o644))),
            ],
            vec![
                stat_packet(Some(Stat {
                    linkname: outside.to_string_lossy().into_owned(),
                    ..stat("l", go_mode::SYMLINK | 0o777)
                })),
                stat_packet(Some(stat("l", go_mode::DIR | 0o777))),
            ],
        ];
        for case in cases {
            let mut packets = case;
            packets.push(stat_packet(None));
            packets.push(data(1, b"x"));
            packets.push(data(1, b""));
            let (tx, _rx) = mpsc::channel(16);
            let dest = tmp.path().join("out");
            let inbound = futures::stream::iter(packets);
            assert!(receive_tree(TreeTarget::new(dest), inbound, tx)
                .await
                .is_err());
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
            let mode = fs::metadata(&outside).unwrap().mode() & 0o777;
            assert_ne!(mode, 0o777);
        }
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_current_directory_is_never_replaced() {
        let cwd = std::env::current_dir().unwrap();
        assert!(resolve_dest(Path::new(".")).is_err());
        assert!(resolve_dest(cwd.parent().unwrap()).is_err());
        assert!(resolve_dest(Path::new("/")).is_err());
        assert!(resolve_dest(&cwd.join("target-of-some-export")).is_ok());
    }
}
