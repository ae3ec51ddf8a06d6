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
//! Safety: the daemon is not trusted. Every path must be plain and relative,
//! and every write, link, chmod and utimes resolves beneath a private staging
//! directory without following a symlink ([`Beneath`]); hard links are made
//! when listed, so no later entry can redirect them. The finished tree is
//! handed to the build's [`StagedExports`], which moves it over the
//! destination only once the whole build succeeded (see [`super::staging`]).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

use super::beneath::Beneath;
use super::io_status;
use super::staging::{LocalDest, StagedExports};
use crate::cleanup::TempPath;
use crate::localtree::{go_mode, posix_permissions};
use crate::wire::fsutil::types::packet::PacketType;
use crate::wire::fsutil::types::{Packet, Stat};

/// How long we wait for the sender's FIN after ours; everything is on disk by then.
const FIN_WAIT: Duration = Duration::from_secs(30);

/// Where one exporter's trees go, shared by every transfer of one build.
#[derive(Debug, Clone)]
pub(crate) struct TreeTarget {
    dest: LocalDest,
    /// Where finished trees wait for the build to succeed.
    staged: StagedExports,
}

impl TreeTarget {
    pub(crate) fn new(dest: LocalDest, staged: StagedExports) -> Self {
        TreeTarget { dest, staged }
    }
}

/// The type bits of entries that have no content to request.
const SPECIAL: u32 = go_mode::DEVICE | go_mode::NAMED_PIPE | go_mode::SOCKET | go_mode::CHAR_DEVICE;

/// The STAT's time as a timespec (atime = mtime, as fsutil applies it).
fn timespec(stat: &Stat) -> libc::timespec {
    const NS: i64 = 1_000_000_000;
    libc::timespec {
        tv_sec: stat.mod_time.div_euclid(NS) as libc::time_t,
        tv_nsec: stat.mod_time.rem_euclid(NS) as _,
    }
}

/// The mknod mode and device of a fifo or device node.
fn node_kind(stat: &Stat) -> (libc::mode_t, libc::dev_t) {
    let kind = if stat.mode & go_mode::NAMED_PIPE != 0 {
        libc::S_IFIFO
    } else if stat.mode & go_mode::CHAR_DEVICE != 0 {
        libc::S_IFCHR
    } else {
        libc::S_IFBLK
    };
    let mode = kind | posix_permissions(stat.mode) as libc::mode_t;
    (mode, libc::makedev(stat.devmajor as _, stat.devminor as _))
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
    let mut receiving = Receiving {
        outbound,
        ops,
        next_id: 0,
        pending: HashSet::new(),
        listing_done: false,
        sockets: 0,
    };
    while !(receiving.listing_done && receiving.pending.is_empty()) {
        let Some(message) = inbound.next().await else {
            return Err(Status::aborted(
                "the export stream ended before it was complete",
            ));
        };
        let p = Packet::decode(message?)
            .map_err(|e| Status::invalid_argument(format!("bad export packet: {e}")))?;
        receiving.on_packet(p).await?;
    }
    if receiving.sockets > 0 {
        tracing::warn!("the local export skipped {} sockets", receiving.sockets);
    }
    receiving.to_writer(Op::Commit).await
}

/// The receiving side's state: files requested and not yet complete, and
/// whether the sender's listing has ended.
struct Receiving<'a> {
    outbound: &'a mpsc::Sender<Result<Bytes, Status>>,
    ops: &'a mpsc::Sender<Op>,
    next_id: u32,
    pending: HashSet<u32>,
    listing_done: bool,
    sockets: usize,
}

impl Receiving<'_> {
    async fn to_writer(&self, op: Op) -> Result<(), Status> {
        self.ops
            .send(op)
            .await
            .map_err(|_| Status::aborted("the export writer stopped"))
    }

    async fn on_packet(&mut self, p: Packet) -> Result<(), Status> {
        match PacketType::try_from(p.r#type) {
            Ok(PacketType::PacketStat) => match p.stat {
                None => {
                    self.listing_done = true;
                    Ok(())
                }
                Some(stat) => self.on_stat(stat).await,
            },
            Ok(PacketType::PacketData) => self.on_data(p.id, p.data).await,
            Ok(PacketType::PacketFin) => Err(Status::aborted("the daemon ended the export early")),
            Ok(PacketType::PacketErr) => Err(Status::aborted(format!(
                "the daemon failed sending the export: {}",
                String::from_utf8_lossy(&p.data)
            ))),
            Ok(PacketType::PacketReq) => Err(Status::invalid_argument("REQ from the sending side")),
            // Like fsutil, ignore packet types we do not know.
            Err(_) => Ok(()),
        }
    }

    /// One entry of the listing: everything but a regular file is written
    /// at once; a regular file is created and its data requested.
    async fn on_stat(&mut self, stat: Stat) -> Result<(), Status> {
        if self.listing_done {
            return Err(Status::invalid_argument(
                "STAT after the end of the listing",
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        let path = safe_relative(&stat.path)?;
        let op = if stat.mode & go_mode::DIR != 0 {
            Op::Dir(path, stat)
        } else if stat.mode & go_mode::SYMLINK != 0 {
            Op::Symlink(path, stat)
        } else if stat.mode & go_mode::SOCKET != 0 {
            self.sockets += 1;
            return Ok(());
        } else if stat.mode & SPECIAL != 0 {
            Op::Node(path, stat)
        } else if !stat.linkname.is_empty() {
            let target = safe_relative(&stat.linkname)?;
            Op::Hardlink { path, target }
        } else {
            self.to_writer(Op::Create { id, path, stat }).await?;
            self.pending.insert(id);
            return self
                .outbound
                .send(Ok(packet(PacketType::PacketReq, id, &[])))
                .await
                .map_err(|_| Status::cancelled("the export stream closed"));
        };
        self.to_writer(op).await
    }

    /// A chunk of a requested file; an empty one closes it.
    async fn on_data(&mut self, id: u32, data: Bytes) -> Result<(), Status> {
        if !self.pending.contains(&id) {
            return Err(Status::invalid_argument(format!(
                "data for unrequested file {id}"
            )));
        }
        if data.is_empty() {
            self.pending.remove(&id);
            self.to_writer(Op::Close { id }).await
        } else {
            self.to_writer(Op::Data { id, data }).await
        }
    }
}

/// The disk side: writes the tree into a private staging directory beside the
/// destination and hands it to the build's [`StagedExports`], which moves it
/// into place once the build succeeded.
fn write_tree(target: &TreeTarget, mut ops: mpsc::Receiver<Op>) -> Result<(), Status> {
    let dest = target
        .dest
        .check()
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| io_status("creating", parent, e))?;
    }
    let staging = TempPath::beside(&dest);
    let root =
        Beneath::create(staging.path()).map_err(|e| io_status("creating", staging.path(), e))?;
    let mut tree = TreeWriter::new(root);
    loop {
        let Some(op) = ops.blocking_recv() else {
            return Err(Status::aborted("the export was interrupted"));
        };
        if let Op::Commit = op {
            break;
        }
        tree.apply(op)?;
    }
    tree.finish()?;
    target.staged.tree(staging, target.dest.clone());
    Ok(())
}

/// Writes entries beneath the staging root (never through a symlink, see
/// [`Beneath`]) and remembers what gets its metadata at the end.
struct TreeWriter {
    root: Beneath,
    open: HashMap<u32, (fs::File, PathBuf, Stat)>,
    /// Files and nodes: permissions and times once written.
    files: Vec<(PathBuf, Stat)>,
    links: Vec<(PathBuf, Stat)>,
    dirs: Vec<(PathBuf, Stat)>,
    skipped_devices: usize,
}

impl TreeWriter {
    fn new(root: Beneath) -> Self {
        TreeWriter {
            root,
            open: HashMap::new(),
            files: Vec::new(),
            links: Vec::new(),
            dirs: Vec::new(),
            skipped_devices: 0,
        }
    }

    fn apply(&mut self, op: Op) -> Result<(), Status> {
        let failed = |what: &str, rel: &Path, e| io_status(what, rel, e);
        match op {
            Op::Dir(rel, stat) => {
                self.root
                    .mkdir(&rel)
                    .map_err(|e| failed("creating", &rel, e))?;
                self.dirs.push((rel, stat));
            }
            Op::Symlink(rel, stat) => {
                self.root
                    .symlink(&stat.linkname, &rel)
                    .map_err(|e| failed("creating symlink", &rel, e))?;
                self.links.push((rel, stat));
            }
            Op::Node(rel, stat) => {
                let (mode, dev) = node_kind(&stat);
                match self.root.mknod(&rel, mode, dev) {
                    Ok(()) => self.files.push((rel, stat)),
                    Err(e)
                        if stat.mode & go_mode::DEVICE != 0
                            && e.kind() == std::io::ErrorKind::PermissionDenied =>
                    {
                        self.skipped_devices += 1;
                    }
                    Err(e) => return Err(failed("creating", &rel, e)),
                }
            }
            // Linked now, while its target is known to be what we made: a
            // later entry cannot redirect it.
            Op::Hardlink { path, target } => self
                .root
                .hard_link(&target, &path)
                .map_err(|e| failed("linking", &path, e))?,
            Op::Create { id, path, stat } => {
                let file = self
                    .root
                    .create_file(&path)
                    .map_err(|e| failed("creating", &path, e))?;
                self.open.insert(id, (file, path, stat));
            }
            Op::Data { id, data } => {
                let (file, path, _) = self
                    .open
                    .get_mut(&id)
                    .ok_or_else(|| Status::internal(format!("no open file {id}")))?;
                file.write_all(&data)
                    .map_err(|e| io_status("writing", path, e))?;
            }
            Op::Close { id } => {
                let (_, path, stat) = self
                    .open
                    .remove(&id)
                    .ok_or_else(|| Status::internal(format!("no open file {id}")))?;
                self.files.push((path, stat));
            }
            Op::Commit => {}
        }
        Ok(())
    }

    /// Metadata last: a read-only file or directory would refuse what came
    /// after, and any entry made in a directory changes the directory's times.
    fn finish(mut self) -> Result<(), Status> {
        if self.skipped_devices > 0 {
            tracing::warn!(
                "the local export skipped {} device nodes (creating them needs root)",
                self.skipped_devices
            );
        }
        let root = &self.root;
        let chmod = |rel: &Path, stat: &Stat| {
            root.chmod(rel, posix_permissions(stat.mode) as libc::mode_t)
                .map_err(|e| io_status("chmod", rel, e))
        };
        let times = |rel: &Path, stat: &Stat| {
            root.set_times(rel, timespec(stat))
                .map_err(|e| io_status("setting times on", rel, e))
        };
        for (rel, stat) in &self.files {
            chmod(rel, stat)?;
            times(rel, stat)?;
        }
        for (rel, stat) in &self.links {
            times(rel, stat)?;
        }
        // Deepest first: a directory's times are set after everything inside it.
        self.dirs
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, stat) in &self.dirs {
            chmod(rel, stat)?;
            times(rel, stat)?;
        }
        Ok(())
    }
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

    /// A target that may replace `dest`, and the build's staged exports.
    fn target(dest: &Path) -> (TreeTarget, StagedExports) {
        let staged = StagedExports::default();
        let dest = LocalDest {
            dir: dest.to_owned(),
            replace: true,
        };
        (TreeTarget::new(dest, staged.clone()), staged)
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
        let (target, staged) = target(&dest);
        receive_tree(target, inbound, tx).await.unwrap();
        assert!(
            dest.join("stale.txt").exists(),
            "nothing moves before commit"
        );
        staged.commit().unwrap();
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
        assert!(dest.join(super::super::staging::MARKER).exists());
        let leftovers: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no staging or old dirs left");
        crate::cleanup::remove(&dest);
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
        let err = receive_tree(target(&dest).0, inbound, tx)
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
        let err = receive_tree(target(&dest).0, inbound, tx)
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
            let err = receive_tree(target(&tmp.path().join("out")).0, inbound, tx)
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
        let err = receive_tree(target(&tmp.path().join("out")).0, inbound, tx)
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
        let (target, staged) = target(&dest);
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
        staged.commit().unwrap();
        let mut names: Vec<_> = fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [super::super::staging::MARKER, "linux_amd64", "linux_arm64"]
        );
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
            assert!(receive_tree(target(&dest).0, inbound, tx).await.is_err());
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
            let mode = fs::metadata(&outside).unwrap().mode() & 0o777;
            assert_ne!(mode, 0o777);
        }
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    /// A hard link listed before a symlink on its path, and the reverse:
    /// neither may write outside the tree nor link a host file into it.
    #[tokio::test]
    async fn hard_links_never_resolve_through_a_symlink_in_either_order() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("id_rsa"), "private").unwrap();
        let symlink_d = || {
            stat_packet(Some(Stat {
                linkname: outside.to_string_lossy().into_owned(),
                ..stat("d", go_mode::SYMLINK | 0o777)
            }))
        };
        let hardlink = |path: &str, to: &str| {
            stat_packet(Some(Stat {
                linkname: to.into(),
                ..stat(path, 0o644)
            }))
        };
        let link_first = vec![
            stat_packet(Some(stat("a", 0o644))),
            hardlink("d/x", "a"),
            symlink_d(),
        ];
        let symlink_first = vec![
            stat_packet(Some(stat("a", 0o644))),
            symlink_d(),
            hardlink("x", "d/id_rsa"),
        ];
        for (order, mut packets) in [("link first", link_first), ("symlink first", symlink_first)] {
            packets.extend([stat_packet(None), data(0, b"a"), data(0, b""), fin()]);
            let dest = tmp.path().join("out");
            let (target, staged) = target(&dest);
            let (tx, _rx) = mpsc::channel(16);
            let result = receive_tree(target, futures::stream::iter(packets), tx).await;
            let err = result.expect_err(order);
            assert!(
                err.message().contains("beneath") || err.message().contains("exists"),
                "{order}: {err:?}"
            );
            staged.commit().unwrap();
            assert!(!dest.exists(), "{order}: nothing committed");
            let names: Vec<_> = fs::read_dir(&outside)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(names, ["id_rsa"], "{order}");
            assert_eq!(
                fs::metadata(outside.join("id_rsa")).unwrap().nlink(),
                1,
                "{order}"
            );
            assert_eq!(
                fs::read_dir(tmp.path()).unwrap().count(),
                1,
                "{order}: no staging left"
            );
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn any_packet() -> impl Strategy<Value = Result<Bytes, Status>> {
            let paths = prop::sample::select(
                &["a", "d", "d/x", "d/e/f", "l", "../x", "", "/abs", "a/"][..],
            );
            let links = prop::sample::select(&["", "a", "d/x", "l", "/tmp", "../a", "d"][..]);
            let modes = prop::sample::select(
                &[
                    0o644,
                    go_mode::DIR | 0o755,
                    go_mode::SYMLINK | 0o777,
                    go_mode::NAMED_PIPE | 0o600,
                    go_mode::SOCKET,
                    go_mode::DEVICE | 0o600,
                    go_mode::DIR,
                    0,
                    u32::MAX,
                ][..],
            );
            prop_oneof![
                4 => (paths, links, modes, any::<i64>()).prop_map(|(p, l, m, t)| stat_packet(Some(Stat {
                    path: p.into(), linkname: l.into(), mode: m, mod_time: t, ..Default::default()
                }))),
                1 => Just(stat_packet(None)),
                3 => (0u32..6, prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(id, d)| data(id, &d)),
                1 => Just(fin()),
                1 => (0i32..8, any::<u32>()).prop_map(|(t, id)| Ok(Packet {
                    r#type: t, stat: None, id, data: Bytes::from_static(b"x"),
                }.encode_to_vec().into())),
                1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| Ok(Bytes::from(b))),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

            /// Any packet stream: done or an error, never a panic, and nothing
            /// ever appears outside the destination.
            #[test]
            fn packet_streams_never_panic_or_escape(packets in prop::collection::vec(any_packet(), 0..16)) {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let tmp = tempfile::tempdir().unwrap();
                let outside = tmp.path().join("outside");
                fs::create_dir(&outside).unwrap();
                let dest = tmp.path().join("out");
                rt.block_on(async {
                    let (target, staged) = target(&dest);
                    let (tx, _rx) = mpsc::channel(64);
                    if receive_tree(target, futures::stream::iter(packets), tx).await.is_ok() {
                        let _ = staged.commit();
                    }
                });
                prop_assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
                let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
                prop_assert!(left.len() <= 2, "{:?}", left);
                crate::cleanup::remove(&dest);
            }
        }
    }
}
