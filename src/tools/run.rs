//! `run = "..."`: a shell script, with the cache mounts its `cache = [...]` names.

use super::shell::first_line;
use super::{cache_id, Context, Tool};
use crate::llb::{CacheSharing, Mount, Platform, Run};

pub(super) fn lower(script: &str, cache: &[String], at: &Context) -> (Run, String) {
    let mounts = cache.iter().map(|c| cache_mount(c, at.platform));
    let run = Run::shell(script).mounts(mounts);
    (run, format!("run: {}", first_line(script, 60)))
}

/// A user-declared cache directory of a `run` step: shared, as the step's
/// own tools decide how to share it.
pub fn cache_mount(target: &str, platform: &Platform) -> Mount {
    Mount::cache(
        target,
        &cache_id(Tool::Run, target, platform),
        CacheSharing::Shared,
    )
}
