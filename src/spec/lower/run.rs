//! `run = "..."`: a shell script, with the cache mounts its `cache = [...]` names.

use super::shell::first_line;
use super::Lowering;
use crate::llb::exec::presets;
use crate::llb::Run;

pub(super) fn lower(script: &str, cache: &[String], at: &Lowering) -> (Run, String) {
    let platform = at.state.get_platform();
    let mounts = cache.iter().map(|c| presets::custom(c, platform));
    let run = Run::shell(script).mounts(mounts);
    (run, format!("run: {}", first_line(script, 60)))
}
