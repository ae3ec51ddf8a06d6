//! Exports received during a build wait here, beside their destinations, until
//! the build has succeeded: a failed or interrupted build (even one whose
//! export stream closed cleanly) leaves earlier outputs exactly as they were,
//! and its staged files are removed with their [`TempPath`] guards.
//!
//! A local destination is *replaced*, not merged (buildctl merges): the result
//! is exactly the build's output. Because that deletes what the directory held,
//! strata replaces only a missing or empty directory or one it exported before
//! (it holds a [`MARKER`] file), unless the user says `replace=true`. A
//! directory holding the current directory, and `/`, are never replaced.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::cleanup::TempPath;

/// Left in every local export's top directory; its presence lets the next
/// export replace the directory without `replace=true`.
pub const MARKER: &str = ".strata-export";

/// Why an export could not be put in place.
#[derive(Debug, thiserror::Error)]
#[error("export to {}: {message}", dest.display())]
pub struct ExportError {
    pub dest: PathBuf,
    pub message: String,
}

impl ExportError {
    fn io(dest: &Path, what: &str, e: io::Error) -> ExportError {
        ExportError {
            dest: dest.to_owned(),
            message: format!("{what}: {e}"),
        }
    }
}

/// A local export's destination and whether the user allowed replacing
/// whatever it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDest {
    pub dir: PathBuf,
    pub replace: bool,
}

impl LocalDest {
    /// Refuses a destination strata must not replace; run before the build
    /// (to fail early) and again at commit.
    pub fn check(&self) -> Result<PathBuf, ExportError> {
        let refuse = |message: String| ExportError {
            dest: self.dir.clone(),
            message,
        };
        if self.dir.as_os_str().is_empty() {
            return Err(refuse("the destination is empty".into()));
        }
        let resolved = match fs::canonicalize(&self.dir) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return std::path::absolute(&self.dir)
                    .map_err(|e| ExportError::io(&self.dir, "resolving", e));
            }
            Err(e) => return Err(ExportError::io(&self.dir, "resolving", e)),
        };
        if resolved.parent().is_none() {
            return Err(refuse("refusing to replace / with an export".into()));
        }
        if let Ok(cwd) = std::env::current_dir().and_then(fs::canonicalize) {
            if cwd.starts_with(&resolved) {
                return Err(refuse(
                    "refusing to replace a directory that holds the current directory \
                     (local exports replace their destination; name a dedicated directory)"
                        .into(),
                ));
            }
        }
        if !self.replace && !replaceable(&resolved) {
            return Err(refuse(format!(
                "it holds files strata did not export (no {MARKER}); local exports replace \
                 their destination, so name a new directory or add replace=true"
            )));
        }
        Ok(resolved)
    }
}

/// Missing, an empty directory, or a directory strata exported before.
fn replaceable(dir: &Path) -> bool {
    match fs::symlink_metadata(dir) {
        Err(_) => true,
        Ok(m) if m.is_dir() => {
            fs::symlink_metadata(dir.join(MARKER)).is_ok_and(|m| m.is_file())
                || fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
        }
        Ok(_) => false,
    }
}

#[derive(Debug)]
enum Staged {
    File { tmp: TempPath, dest: PathBuf },
    Tree { tmp: TempPath, dest: LocalDest },
}

/// The exports of one build, staged and waiting for [`StagedExports::commit`].
#[derive(Debug, Clone, Default)]
pub struct StagedExports {
    staged: Arc<Mutex<Vec<Staged>>>,
}

impl StagedExports {
    fn push(&self, staged: Staged) {
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(staged);
    }

    /// A complete tarball at `tmp`, for `dest`.
    pub(crate) fn file(&self, tmp: TempPath, dest: PathBuf) {
        self.push(Staged::File { tmp, dest });
    }

    /// A complete tree at `tmp`, for `dest`.
    pub(crate) fn tree(&self, tmp: TempPath, dest: LocalDest) {
        self.push(Staged::Tree { tmp, dest });
    }

    /// Moves every staged export into place, in the order received. Several
    /// trees for one destination (one per platform): the first replaces it,
    /// the rest merge into it.
    pub fn commit(&self) -> Result<(), ExportError> {
        let staged = std::mem::take(&mut *self.staged.lock().unwrap_or_else(|p| p.into_inner()));
        let mut replaced: HashSet<PathBuf> = HashSet::new();
        for s in staged {
            match s {
                Staged::File { mut tmp, dest } => {
                    fs::rename(tmp.path(), &dest)
                        .map_err(|e| ExportError::io(&dest, "moving the export in place", e))?;
                    tmp.keep();
                }
                Staged::Tree { mut tmp, dest } => {
                    let resolved = dest.check()?;
                    if replaced.insert(resolved.clone()) {
                        mark(tmp.path()).map_err(|e| ExportError::io(&dest.dir, "marking", e))?;
                        swap_in(tmp.path(), &resolved)?;
                        tmp.keep();
                    } else {
                        merge_into(tmp.path(), &resolved)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn mark(tree: &Path) -> io::Result<()> {
    let marker = tree.join(MARKER);
    crate::cleanup::remove(&marker);
    fs::write(
        marker,
        "This directory is a strata export: the next export to it replaces it whole.\n",
    )
}

/// Replaces `dest` with `staging`: the old tree is moved aside first and
/// removed only after the new one is in place.
fn swap_in(staging: &Path, dest: &Path) -> Result<(), ExportError> {
    use std::os::unix::fs::PermissionsExt;
    let existing = fs::symlink_metadata(dest).ok();
    // The new tree keeps the permissions the destination had.
    let mode = match &existing {
        Some(m) if m.is_dir() => m.permissions(),
        _ => fs::Permissions::from_mode(0o755),
    };
    fs::set_permissions(staging, mode).map_err(|e| ExportError::io(dest, "chmod", e))?;
    let old = existing.as_ref().map(|_| TempPath::beside(dest));
    if let Some(old) = &old {
        fs::rename(dest, old.path()).map_err(|e| ExportError::io(dest, "moving aside", e))?;
    }
    if let Err(e) = fs::rename(staging, dest) {
        if let Some(mut old) = old {
            if fs::rename(old.path(), dest).is_ok() {
                old.keep();
            }
        }
        return Err(ExportError::io(dest, "moving the export in place", e));
    }
    Ok(())
}

/// Moves everything in `from` into `into`, descending where both have a directory.
fn merge_into(from: &Path, into: &Path) -> Result<(), ExportError> {
    let failed = |what: &str, e| ExportError::io(into, what, e);
    for entry in fs::read_dir(from).map_err(|e| failed("reading", e))? {
        let entry = entry.map_err(|e| failed("reading", e))?;
        let src = entry.path();
        let dst = into.join(entry.file_name());
        let src_is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        match fs::symlink_metadata(&dst).ok() {
            Some(m) if m.is_dir() && src_is_dir => merge_into(&src, &dst)?,
            Some(m) if m.is_dir() => {
                crate::cleanup::remove(&dst);
                fs::rename(&src, &dst).map_err(|e| failed("moving", e))?;
            }
            _ => fs::rename(&src, &dst).map_err(|e| failed("moving", e))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged_tree(parent: &Path, file: &str) -> TempPath {
        let tmp = TempPath::beside(&parent.join("x"));
        fs::create_dir(tmp.path()).unwrap();
        fs::write(tmp.path().join(file), file).unwrap();
        tmp
    }

    #[test]
    fn a_foreign_directory_is_replaced_only_when_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let dest = |replace| LocalDest {
            dir: dir.clone(),
            replace,
        };
        assert!(dest(false).check().is_ok(), "missing");
        fs::create_dir(&dir).unwrap();
        assert!(dest(false).check().is_ok(), "empty");
        fs::write(dir.join("precious"), "p").unwrap();
        let err = dest(false).check().unwrap_err().to_string();
        assert!(err.contains("replace=true"), "{err}");
        assert!(dest(true).check().is_ok());
        fs::write(dir.join(MARKER), "").unwrap();
        assert!(dest(false).check().is_ok(), "a previous export");
    }

    #[test]
    fn commit_replaces_then_merges_and_a_dropped_stage_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        fs::create_dir(&dir).unwrap();
        let dest = LocalDest {
            dir: dir.clone(),
            replace: true,
        };
        let staged = StagedExports::default();
        staged.tree(staged_tree(tmp.path(), "amd64"), dest.clone());
        staged.tree(staged_tree(tmp.path(), "arm64"), dest.clone());
        let tar = TempPath::beside(&tmp.path().join("out.tar"));
        fs::write(tar.path(), "tar").unwrap();
        staged.file(tar, tmp.path().join("out.tar"));
        staged.commit().unwrap();
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [MARKER, "amd64", "arm64"]);
        assert_eq!(
            fs::read_to_string(tmp.path().join("out.tar")).unwrap(),
            "tar"
        );

        let failed = StagedExports::default();
        failed.tree(staged_tree(tmp.path(), "new"), dest);
        drop(failed);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2, "out, out.tar");
        assert!(!dir.join("new").exists());
    }
}
