//! A local directory tree as fsutil lists it: the walker FileSync sends a
//! build's local dirs with and content keys digest them by, so both see the
//! same files ([`walk`]), filtered by `.dockerignore`-style [`PatternSet`]s.

mod patterns;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::wire::fsutil::types::Stat;

pub use patterns::PatternSet;

/// One entry of the listing; `source` is set for regular files the daemon may request.
#[derive(Debug)]
pub struct Entry {
    pub stat: Stat,
    pub source: Option<PathBuf>,
    /// The source file's metadata as walked (content keys stamp files with it).
    pub meta: Option<std::fs::Metadata>,
}

/// Go's `os.FileMode` type bits, which fsutil puts on the wire instead of POSIX `st_mode`.
pub mod go_mode {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
}

/// Converts a POSIX `st_mode` to Go's `os.FileMode` bits.
pub fn go_file_mode(st_mode: u32) -> u32 {
    let mut mode = st_mode & 0o777;
    match st_mode & 0o170000 {
        0o040000 => mode |= go_mode::DIR,
        0o120000 => mode |= go_mode::SYMLINK,
        0o060000 => mode |= go_mode::DEVICE,
        0o020000 => mode |= go_mode::DEVICE | go_mode::CHAR_DEVICE,
        0o010000 => mode |= go_mode::NAMED_PIPE,
        0o140000 => mode |= go_mode::SOCKET,
        _ => {}
    }
    if st_mode & 0o4000 != 0 {
        mode |= go_mode::SETUID;
    }
    if st_mode & 0o2000 != 0 {
        mode |= go_mode::SETGID;
    }
    if st_mode & 0o1000 != 0 {
        mode |= go_mode::STICKY;
    }
    mode
}

/// The POSIX permission bits (with setuid, setgid, sticky) of Go `os.FileMode` bits.
pub fn posix_permissions(go: u32) -> u32 {
    let mut mode = go & 0o777;
    if go & go_mode::SETUID != 0 {
        mode |= 0o4000;
    }
    if go & go_mode::SETGID != 0 {
        mode |= 0o2000;
    }
    if go & go_mode::STICKY != 0 {
        mode |= 0o1000;
    }
    mode
}

/// The walk's filters, from the daemon's metadata and our own excludes.
#[derive(Debug, Default)]
pub struct WalkFilter {
    pub include: PatternSet,
    pub exclude: PatternSet,
}

/// Lists `root` the way fsutil's walker does. Hardlinked files after the first
/// become links to it (size 0), as fsutil sends them.
pub fn walk(root: &Path, filter: &WalkFilter) -> std::io::Result<Vec<Entry>> {
    let meta = std::fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", root.display()),
        ));
    }
    let mut walk = Walk {
        filter,
        inodes: HashMap::new(),
        out: Vec::new(),
    };
    walk.dir(root, "")?;
    Ok(walk.out)
}

/// What the walk carries down: the filter, the inodes of files seen (for
/// hardlinks), the listing so far.
struct Walk<'a> {
    filter: &'a WalkFilter,
    inodes: HashMap<(u64, u64), String>,
    out: Vec<Entry>,
}

impl Walk<'_> {
    /// Lists `dir` (at `rel` below the root), names in byte order.
    fn dir(&mut self, dir: &Path, rel: &str) -> std::io::Result<()> {
        let mut names: Vec<_> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in names {
            let Some(name) = name.to_str() else {
                continue; // fsutil paths are strings; skip names that are not UTF-8
            };
            let path = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let abs = dir.join(name);
            let meta = std::fs::symlink_metadata(&abs)?;
            if meta.is_dir() {
                self.subdir(&abs, path, &meta)?;
            } else {
                self.file(abs, path, meta)?;
            }
        }
        Ok(())
    }

    /// A directory: its entry if shown, then what it holds. One only walked
    /// for what it holds still gets its entry when something below it is
    /// sent (parents before children).
    fn subdir(
        &mut self,
        abs: &Path,
        path: String,
        meta: &std::fs::Metadata,
    ) -> std::io::Result<()> {
        let excluded = self.filter.exclude.matches(&path);
        let included = self.filter.include.is_empty() || self.filter.include.matches(&path);
        let descend = (!excluded || self.filter.exclude.may_reinclude_below(&path))
            && (included || self.filter.include.may_match_below(&path));
        if !descend {
            return Ok(());
        }
        let entry = || Entry {
            stat: stat_of(&path, meta, String::new()),
            source: None,
            meta: None,
        };
        let at = self.out.len();
        let show = !excluded && included;
        if show {
            self.out.push(entry());
        }
        let before = self.out.len();
        self.dir(abs, &path)?;
        if !show && self.out.len() > before {
            self.out.insert(at, entry());
        }
        Ok(())
    }

    /// A file, symlink or special file, unless filtered out. Hardlinked
    /// files after the first become links to it, with no data of their own.
    fn file(&mut self, abs: PathBuf, path: String, meta: std::fs::Metadata) -> std::io::Result<()> {
        let excluded = self.filter.exclude.matches(&path);
        let included = self.filter.include.is_empty() || self.filter.include.matches(&path);
        if excluded || !included {
            return Ok(());
        }
        let mut linkname = String::new();
        let mut source = None;
        if meta.file_type().is_symlink() {
            linkname = std::fs::read_link(&abs)?.to_string_lossy().into_owned();
        } else if meta.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = self.inodes.get(&(meta.dev(), meta.ino())) {
                    linkname = first.clone();
                } else {
                    self.inodes.insert((meta.dev(), meta.ino()), path.clone());
                }
            }
            if linkname.is_empty() {
                source = Some(abs);
            }
        }
        let mut stat = stat_of(&path, &meta, linkname);
        if source.is_none() && meta.is_file() {
            stat.size = 0;
        }
        let meta = source.is_some().then_some(meta);
        self.out.push(Entry { stat, source, meta });
        Ok(())
    }
}

fn stat_of(path: &str, meta: &std::fs::Metadata, linkname: String) -> Stat {
    let rdev = meta.rdev();
    Stat {
        path: path.to_owned(),
        mode: go_file_mode(meta.mode()),
        uid: meta.uid(),
        gid: meta.gid(),
        size: if meta.is_file() {
            meta.size() as i64
        } else {
            0
        },
        mod_time: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        linkname,
        devmajor: libc_major(rdev),
        devminor: libc_minor(rdev),
        xattrs: Default::default(),
    }
}

fn libc_major(dev: u64) -> i64 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as i64
}

fn libc_minor(dev: u64) -> i64 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_modes() {
        assert_eq!(go_file_mode(0o100644), 0o644);
        assert_eq!(go_file_mode(0o040755), go_mode::DIR | 0o755);
        assert_eq!(go_file_mode(0o120777), go_mode::SYMLINK | 0o777);
        assert_eq!(go_file_mode(0o104755), go_mode::SETUID | 0o755);
        assert_eq!(
            go_file_mode(0o041777),
            go_mode::DIR | go_mode::STICKY | 0o777
        );
    }

    #[test]
    fn walk_is_sorted_parents_first_with_separator_lowest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), "x").unwrap();
        std::fs::write(root.join("a-c"), "yy").unwrap();
        std::fs::write(root.join("Z"), "").unwrap();
        std::fs::write(root.join("skip.log"), "").unwrap();
        std::fs::hard_link(root.join("a-c"), root.join("hard")).unwrap();
        std::os::unix::fs::symlink("a-c", root.join("link")).unwrap();
        let filter = WalkFilter {
            include: PatternSet::default(),
            exclude: PatternSet::new(&["*.log"]),
        };
        let entries = walk(root, &filter).unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.stat.path.as_str()).collect();
        assert_eq!(paths, ["Z", "a", "a/b", "a/b/f", "a-c", "hard", "link"]);
        let hard = &entries[5];
        assert_eq!(hard.stat.linkname, "a-c");
        assert_eq!(hard.stat.size, 0);
        assert!(hard.source.is_none());
        assert_eq!(entries[4].stat.size, 2);
        assert_eq!(entries[6].stat.linkname, "a-c");
        assert_eq!(entries[6].stat.mode & go_mode::SYMLINK, go_mode::SYMLINK);
        assert_eq!(entries[1].stat.mode & go_mode::DIR, go_mode::DIR);
    }

    #[test]
    fn excluded_dir_is_walked_only_for_reincluded_children() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("docs/keep.md"), "k").unwrap();
        std::fs::write(root.join("docs/drop.md"), "d").unwrap();
        let filter = WalkFilter {
            include: PatternSet::default(),
            exclude: PatternSet::new(&["docs", "!docs/keep.md"]),
        };
        let paths: Vec<_> = walk(root, &filter)
            .unwrap()
            .into_iter()
            .map(|e| e.stat.path)
            .collect();
        assert_eq!(paths, ["docs", "docs/keep.md"]);
    }
}
