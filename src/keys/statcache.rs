//! Remembers file digests by what `stat` says about the file, so an unchanged
//! tree is hashed without reading it: one small text file per tree under the
//! user's cache directory (`$XDG_CACHE_HOME/strata/stat-cache/`, else
//! `~/.cache/strata/stat-cache/`), one line per file:
//! `SIZE MTIME_NS CTIME_NS INODE HEX PATH`.
//!
//! A file is taken from the cache only when size, mtime, ctime and inode all
//! match; a file changed within the last two seconds is never cached (its
//! mtime could still be rewritten within the same tick, as git's "racy"
//! entries). A missing or unreadable cache just means hashing again.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cleanup::TempPath;

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
}

impl Stamp {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            inode: meta.ino(),
        }
    }

    /// Too recent to trust: it may change again within the same timestamp.
    fn is_racy(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        now - self.mtime_ns.max(self.ctime_ns) < 2_000_000_000
    }
}

/// The digests of one tree's files, by path relative to the tree.
#[derive(Debug, Default)]
pub(crate) struct StatCache {
    file: Option<PathBuf>,
    known: HashMap<String, (Stamp, [u8; 32])>,
    dirty: bool,
}

/// Where stat caches live; none when there is no home to put them in.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    Some(strata_cache_dir()?.join("stat-cache"))
}

/// strata's directory in the user's cache (`$XDG_CACHE_HOME/strata`, else
/// `~/.cache/strata`); none when there is no home to put it in.
pub(crate) fn strata_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("strata"))
}

impl StatCache {
    /// The cache of tree `root` (by its absolute path) in `dir`, empty if
    /// none yet; no `dir`: a cache that remembers nothing.
    pub(crate) fn open(dir: Option<&Path>, root: &Path) -> StatCache {
        let Some(dir) = dir else {
            return StatCache::default();
        };
        let name: String = Sha256::digest(root.as_os_str().as_encoded_bytes())
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let file = dir.join(name);
        let known = std::fs::read_to_string(&file)
            .map(|text| text.lines().filter_map(parse_line).collect())
            .unwrap_or_default();
        StatCache {
            file: Some(file),
            known,
            dirty: false,
        }
    }

    pub(crate) fn get(&self, rel: &str, stamp: &Stamp) -> Option<[u8; 32]> {
        match self.known.get(rel) {
            Some((known, digest)) if known == stamp => Some(*digest),
            _ => None,
        }
    }

    pub(crate) fn put(&mut self, rel: &str, stamp: Stamp, digest: [u8; 32]) {
        if !stamp.is_racy() && self.get(rel, &stamp) != Some(digest) {
            self.known.insert(rel.to_owned(), (stamp, digest));
            self.dirty = true;
        }
    }

    /// Forgets files no longer in the tree.
    pub(crate) fn retain(&mut self, present: &std::collections::HashSet<&str>) {
        let before = self.known.len();
        self.known.retain(|path, _| present.contains(path.as_str()));
        self.dirty |= self.known.len() != before;
    }

    /// Writes the cache if it changed (atomically; failures only cost speed).
    pub(crate) fn save(&self) {
        let (Some(file), true) = (&self.file, self.dirty) else {
            return;
        };
        let mut text = String::with_capacity(self.known.len() * 120);
        for (path, (s, digest)) in &self.known {
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            text.push_str(&format!(
                "{} {} {} {} {hex} {path}\n",
                s.size, s.mtime_ns, s.ctime_ns, s.inode
            ));
        }
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let mut tmp = TempPath::beside(file);
                std::fs::write(tmp.path(), text)?;
                std::fs::rename(tmp.path(), file)?;
                tmp.keep();
                Ok(())
            });
        if let Err(e) = written {
            tracing::debug!("stat cache {}: {e}", file.display());
        }
    }
}

fn parse_line(line: &str) -> Option<(String, (Stamp, [u8; 32]))> {
    let mut parts = line.splitn(6, ' ');
    let stamp = Stamp {
        size: parts.next()?.parse().ok()?,
        mtime_ns: parts.next()?.parse().ok()?,
        ctime_ns: parts.next()?.parse().ok()?,
        inode: parts.next()?.parse().ok()?,
    };
    let hex = parts.next()?;
    let mut digest = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some((parts.next()?.to_owned(), (stamp, digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_bad_lines_are_skipped() {
        let line = format!(
            "12 1700000000000000000 1700000000000000001 42 {} dir/a b.txt",
            "ab".repeat(32)
        );
        let (path, (stamp, digest)) = parse_line(&line).unwrap();
        assert_eq!(path, "dir/a b.txt");
        assert_eq!(stamp.size, 12);
        assert_eq!(stamp.inode, 42);
        assert_eq!(digest, [0xab; 32]);
        for bad in [
            "",
            "1 2 3",
            "x 1 2 3 ab p",
            &format!("1 2 3 4 {} ", "zz".repeat(32)),
        ] {
            assert!(parse_line(bad).is_none(), "{bad}");
        }
    }
}
