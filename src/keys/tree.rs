//! The digest of a local directory as a build sees it: the entries FileSync
//! would send (same walk, same excludes), each by path, mode, symlink or
//! hard-link target and, for files, a sha256 of the content. Owners and times
//! are left out: they do not decide what a build makes of the files.
//!
//! File digests come from the [`StatCache`] when `stat` says the file is
//! unchanged; the rest are read in parallel.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::statcache::{Stamp, StatCache};
use crate::localtree::{walk, PatternSet, WalkFilter};
use crate::options::LocalDir;

/// A file to read: its index among the entries, where it is, its stamp.
type Miss = (usize, PathBuf, Stamp);

/// The digest of `dir` after its excludes, with stat caches in `cache_dir`
/// (none: every file is read).
pub fn tree_digest(dir: &LocalDir, cache_dir: Option<&Path>) -> io::Result<[u8; 32]> {
    let filter = WalkFilter {
        include: PatternSet::default(),
        exclude: PatternSet::new(&dir.excludes),
    };
    let entries = walk(&dir.path, &filter)?;
    let mut cache = StatCache::open(cache_dir, &dir.path);
    let mut digests: Vec<Option<[u8; 32]>> = vec![None; entries.len()];
    let mut misses: Vec<Miss> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let (Some(source), Some(meta)) = (&entry.source, &entry.meta) else {
            continue;
        };
        let stamp = Stamp::of(meta);
        match cache.get(&entry.stat.path, &stamp) {
            Some(digest) => digests[i] = Some(digest),
            None => misses.push((i, source.clone(), stamp)),
        }
    }
    for ((i, _, stamp), digest) in misses.iter().zip(hash_files(&misses)?) {
        cache.put(&entries[*i].stat.path, *stamp, digest);
        digests[*i] = Some(digest);
    }
    let present: HashSet<&str> = entries.iter().map(|e| e.stat.path.as_str()).collect();
    cache.retain(&present);
    cache.save();

    let mut tree = Sha256::new();
    for (entry, digest) in entries.iter().zip(&digests) {
        tree.update(entry.stat.path.as_bytes());
        tree.update([0]);
        tree.update(entry.stat.mode.to_le_bytes());
        tree.update(entry.stat.linkname.as_bytes());
        tree.update([0]);
        match digest {
            Some(d) => {
                tree.update([1]);
                tree.update(d);
            }
            None => tree.update([0]),
        }
    }
    Ok(tree.finalize().into())
}

/// The sha256 of each file, in order, read by a few threads at once.
fn hash_files(files: &[Miss]) -> io::Result<Vec<[u8; 32]>> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
        .min(files.len().max(1));
    let mut out = vec![[0u8; 32]; files.len()];
    std::thread::scope(|scope| -> io::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> io::Result<Vec<(usize, [u8; 32])>> {
                    let mut buf = vec![0u8; 1 << 16];
                    let mut done = Vec::new();
                    for (n, (_, path, _)) in files.iter().enumerate().skip(t).step_by(threads) {
                        done.push((n, hash_file(path, &mut buf)?));
                    }
                    Ok(done)
                })
            })
            .collect();
        for worker in workers {
            let done = worker
                .join()
                .map_err(|_| io::Error::other("a hashing thread panicked"))??;
            for (n, digest) in done {
                out[n] = digest;
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn hash_file(path: &std::path::Path, buf: &mut [u8]) -> io::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("src/deep")).unwrap();
        fs::write(root.join("src/a.py"), "print(1)\n").unwrap();
        fs::write(root.join("src/deep/b.txt"), "b").unwrap();
        fs::write(root.join("skip.log"), "noise").unwrap();
        std::os::unix::fs::symlink("src/a.py", root.join("link")).unwrap();
    }

    fn digest(root: &Path, cache: Option<&Path>) -> [u8; 32] {
        let dir = LocalDir {
            path: root.to_owned(),
            excludes: vec!["*.log".into()],
        };
        tree_digest(&dir, cache).unwrap()
    }

    #[test]
    fn the_digest_follows_content_not_location_or_times() {
        let tmp = tempfile::tempdir().unwrap();
        let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
        tree(&one);
        tree(&two);
        let base = digest(&one, None);
        assert_eq!(digest(&two, None), base, "same content elsewhere");
        fs::write(two.join("skip.log"), "other noise").unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(two.join("src/a.py"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(
            digest(&two, None),
            base,
            "excluded files and times do not count"
        );

        let changes: [&dyn Fn(&Path); 4] = [
            &|r| fs::write(r.join("src/deep/b.txt"), "c").unwrap(),
            &|r| {
                fs::set_permissions(r.join("src/a.py"), fs::Permissions::from_mode(0o755)).unwrap()
            },
            &|r| {
                fs::remove_file(r.join("link")).unwrap();
                std::os::unix::fs::symlink("src/deep/b.txt", r.join("link")).unwrap();
            },
            &|r| fs::write(r.join("new"), "").unwrap(),
        ];
        for (i, change) in changes.iter().enumerate() {
            let dir = tmp.path().join(format!("changed-{i}"));
            tree(&dir);
            change(&dir);
            assert_ne!(digest(&dir, None), base, "change {i}");
        }
    }

    #[test]
    fn unchanged_files_come_from_the_stat_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, cache) = (tmp.path().join("tree"), tmp.path().join("cache"));
        tree(&root);
        // Files changed in the last two seconds are never cached.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let truth = digest(&root, Some(&cache));
        let file = fs::read_dir(&cache)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(
            text.lines().count(),
            2,
            "two files, the excluded one not read:\n{text}"
        );
        // A cached digest is believed while stat says the file is unchanged…
        let forged: String = text
            .lines()
            .map(|l| {
                let mut parts: Vec<&str> = l.splitn(6, ' ').collect();
                if parts[5] == "src/deep/b.txt" {
                    parts[4] = "0000000000000000000000000000000000000000000000000000000000000000";
                }
                parts.join(" ") + "\n"
            })
            .collect();
        fs::write(&file, forged).unwrap();
        assert_ne!(
            digest(&root, Some(&cache)),
            truth,
            "the cache was consulted"
        );
        // …and not once it changed.
        fs::write(root.join("src/deep/b.txt"), "b").unwrap();
        assert_eq!(digest(&root, Some(&cache)), truth);
    }
}
