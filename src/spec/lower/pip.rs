//! `pip = [...]`: one `pip install` into the system Python, with pip's cache mounted.

use super::shell::words;
use super::Lowering;
use crate::llb::exec::presets;
use crate::llb::Run;

pub(super) fn lower(packages: &[String], at: &Lowering) -> (Run, String) {
    let script = format!(
        "python3 -m pip install --break-system-packages {}",
        words(packages)
    );
    let run = Run::shell(&script).mounts(presets::pip(at.state.get_platform()));
    (run, format!("pip install {}", packages.join(" ")))
}
