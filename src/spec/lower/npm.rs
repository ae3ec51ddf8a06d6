//! `npm = [...]` (global) or `npm = { packages, dir }` (a project directory),
//! with npm's cache mounted.

use super::shell::{quote, words};
use super::Lowering;
use crate::llb::exec::presets;
use crate::llb::Run;

pub(super) fn lower(packages: &[String], dir: Option<&str>, at: &Lowering) -> (Run, String) {
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
    let run = Run::shell(&script).mounts(presets::npm(at.state.get_platform()));
    (run, what)
}
