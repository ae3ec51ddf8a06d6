//! Temporary files and directories strata creates (staged exports, ingest
//! files, index and metadata temp files), removed when their guard drops —
//! and all at once by [`remove_all`] when a signal ends the process before the
//! guards can run, or at exit for files that reappeared after their guard
//! dropped. A guard that is [`TempPath::keep`]-ed was moved into place and is
//! forgotten.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

fn registry() -> MutexGuard<'static, HashSet<PathBuf>> {
    static LIVE: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Paths removed on drop that may come back: a task cancelled while a
/// blocking `open` of its path was in flight (tokio runs file operations on
/// other threads) drops its guard first, and the file appears after.
/// [`remove_all`] removes these again once those threads are done.
fn dropped() -> MutexGuard<'static, VecDeque<PathBuf>> {
    static DROPPED: OnceLock<Mutex<VecDeque<PathBuf>>> = OnceLock::new();
    DROPPED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How many dropped paths are remembered (a long-lived library process
/// never calls `remove_all`; this bounds what it keeps).
const DROPPED_REMEMBERED: usize = 1024;

/// A path strata is about to create, removed (file or whole tree) on drop
/// unless kept.
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
    kept: bool,
}

impl TempPath {
    /// Registers `path` before it is created, so a signal arriving between
    /// creation and registration cannot leak it.
    pub fn new(path: PathBuf) -> TempPath {
        registry().insert(path.clone());
        TempPath { path, kept: false }
    }

    /// A fresh hidden name beside `dest`: `.NAME.strata-ID`.
    pub fn beside(dest: &Path) -> TempPath {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "strata".into());
        let id = crate::ids::random_id();
        TempPath::new(dest.with_file_name(format!(".{name}.strata-{}", &id[..16])))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path was renamed into place (or is otherwise no longer ours).
    pub fn keep(&mut self) {
        self.kept = true;
        registry().remove(&self.path);
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.kept {
            remove(&self.path);
            registry().remove(&self.path);
            let mut dropped = dropped();
            if dropped.len() == DROPPED_REMEMBERED {
                dropped.pop_front();
            }
            dropped.push_back(self.path.clone());
        }
    }
}

/// Removes every temporary path still registered, and any dropped one that
/// came back; for a process about to exit (after its runtime has shut down).
/// Returns how many were still registered.
pub fn remove_all() -> usize {
    let paths: Vec<PathBuf> = registry().drain().collect();
    for path in paths
        .iter()
        .chain(dropped().drain(..).collect::<Vec<_>>().iter())
    {
        remove(path);
    }
    paths.len()
}

/// Removes a file or a tree, making read-only directories in it writable first
/// if needed. Never follows a symlink.
pub fn remove(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        let _ = std::fs::remove_file(path);
        return;
    }
    if std::fs::remove_dir_all(path).is_err() {
        make_writable(path);
        let _ = std::fs::remove_dir_all(path);
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_paths_go_kept_paths_stay_leaked_paths_stay_registered() {
        let tmp = tempfile::tempdir().unwrap();
        let dropped = TempPath::beside(&tmp.path().join("a"));
        std::fs::create_dir_all(dropped.path().join("x/y")).unwrap();
        let mut kept = TempPath::beside(&tmp.path().join("b"));
        std::fs::write(kept.path(), "k").unwrap();
        let kept_path = kept.path().to_owned();
        kept.keep();
        let path = dropped.path().to_owned();
        drop(dropped);
        assert!(!path.exists());
        assert!(kept_path.exists());
        // A cancelled blocking open can make it come back: remembered for remove_all.
        assert!(super::dropped().contains(&path));

        let leaked = TempPath::beside(&tmp.path().join("c"));
        std::fs::write(leaked.path(), "l").unwrap();
        let leaked_path = leaked.path().to_owned();
        std::mem::forget(leaked);
        // What remove_all sweeps (not called here: tests run in parallel).
        assert!(registry().contains(&leaked_path));
        remove(&leaked_path);
        registry().remove(&leaked_path);
    }
}
