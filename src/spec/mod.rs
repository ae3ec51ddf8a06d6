//! strata.toml: named images, each a **base** (an image, or another image of
//! the file), **toolchain** steps (apt, pip, npm, run, env/workdir/user), and an
//! **overlay** (local files, a git checkout) applied last. See docs/spec.md.
//!
//! One concept per file: `raw` is the TOML as written (with positions),
//! `model` the checked spec, `parse` reads one into the other (naming file,
//! line, column and key in every error: [`Spec::load`]) with the validators
//! of `checks`; `graph` answers questions about the images' `from` graph;
//! `resolve` merges the spec with the command line into a [`BuildPlan`];
//! `lower` turns images into LLB.

mod checks;
mod dockerfile;
mod graph;
mod locate;
mod lower;
mod model;
mod parse;
mod paths;
mod raw;
mod resolve;

use std::path::PathBuf;

pub use checks::MAX_LABEL;
pub use dockerfile::{Dockerfile, RunCacheMount};
pub use lower::{
    labelled, BaseImage, GitRef, ImageGraph, LayerKind, LlbImage, LowerOptions, LoweredImage,
    OnFrontend, OnFrontendError, StepInfo, CA_MOUNT, DOCKERFILE_FRONTEND,
};
pub use model::{
    valid_image_name, Base, CopyFrom, Image, ImageSettings, OverlayItem, Spec, Step, StepKind,
};
pub use paths::{LocalPath, PathPolicy, PlatformPath};
pub use resolve::{BuildPlan, Job, Overrides, DEFAULT_MAX_PARALLEL};

/// A problem with the spec, located in the file. Displays as one line:
/// `strata.toml:14:1: images.codex.toolchain[2]: unknown key "aptt" (expected one of …)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(self))]
pub struct SpecError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no one place (an unreadable file, an
    /// image named on the command line).
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `images.codex.toolchain[2]` (arrays count from 1);
    /// empty for the whole file.
    pub key: String,
    pub message: String,
}

/// Where a value is written in a spec, for a problem found after the file
/// was read (a platform's directory, looked up when lowering for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub key: String,
}

impl Place {
    pub fn error(&self, message: impl Into<String>) -> SpecError {
        SpecError {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            key: self.key.clone(),
            message: message.into(),
        }
    }
}

fn render(e: &SpecError) -> String {
    let mut out = e.file.display().to_string();
    if e.line > 0 {
        out.push_str(&format!(":{}:{}", e.line, e.column));
    }
    if !e.key.is_empty() {
        out.push_str(": ");
        out.push_str(&e.key);
    }
    out.push_str(": ");
    out.push_str(&e.message);
    out
}

#[cfg(test)]
mod tests;
