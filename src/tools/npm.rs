//! `npm = [...]` (global) or `npm = { packages, dir }` (a project directory),
//! with npm's cache mounted.

use super::shell::{quote, words};
use super::{Context, Tool};
use crate::llb::{CacheSharing, Run};

/// npm's content-addressed cache: shared, writers do not clash.
pub(super) const CACHES: [(&str, CacheSharing); 1] = [("/root/.npm", CacheSharing::Shared)];

pub(super) fn lower(packages: &[String], dir: Option<&str>, at: &Context) -> (Run, String) {
    let (script, what) = match dir {
        Some(d) => (
            format!(
                "mkdir -p {0} && cd {0} && npm install {1}",
                quote(d),
                words(packages)
            ),
            format!("npm install {} in {d}", packages.join(" ")),
        ),
        None => (
            format!("npm install -g {}", words(packages)),
            format!("npm install -g {}", packages.join(" ")),
        ),
    };
    let run = Run::shell(&script).mounts(Tool::Npm.cache_mounts(at.platform));
    (run, what)
}
