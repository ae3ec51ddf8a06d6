//! `pip = [...]`: one `pip install` into the system Python, from wheels kept
//! in pip's cache mount.
//!
//! pip's own HTTP cache keeps only responses the index marks cacheable (a
//! mirror or proxy that does not says so leaves it empty), so the step keeps
//! its own wheelhouse in the mount: `pip wheel` puts every wheel the
//! requirements need there, downloading only those it does not hold ("File
//! was already downloaded"), building wheels of sdists once; then `pip
//! install` takes them from there alone. Whatever the index's headers, a
//! seeded mount (`mounts=`, see `crate::mounts`) means no wheel travels twice.

use super::shell::words;
use super::{Context, Tool};
use crate::llb::{CacheSharing, Run};

/// pip's cache directory.
pub const CACHE: &str = "/root/.cache/pip";
/// The wheelhouse, inside pip's cache mount.
pub const WHEELS: &str = "/root/.cache/pip/strata-wheels";

/// Locked: `pip wheel` copies wheels into the wheelhouse in place, not atomically.
pub(super) const CACHES: [(&str, CacheSharing); 1] = [(CACHE, CacheSharing::Locked)];

pub(super) fn lower(packages: &[String], at: &Context) -> (Run, String) {
    let packages_words = words(packages);
    let script = format!(
        "set -e; python3 -m pip wheel --wheel-dir {WHEELS} --find-links {WHEELS} {packages_words}; \
         python3 -m pip install --break-system-packages --no-index --find-links {WHEELS} {packages_words}"
    );
    let run = Run::shell(&script).mounts(Tool::Pip.cache_mounts(at.platform));
    (run, format!("pip install {}", packages.join(" ")))
}
