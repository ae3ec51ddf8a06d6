//! The package tools a toolchain step runs — apt, pip, npm, and `run`'s own
//! cache directories — one module each. A tool owns its name, its cache
//! mounts and how they are shared, the check of its packages, its lowering
//! to a [`Run`], and what of its caches travels with portable mounts
//! (`mounts=`, see `crate::mounts`). Nothing above names a tool by string,
//! and the LLB builder below knows no package manager.
//!
//! A new tool is a file here plus its arm in [`Tool`] and [`ToolStep`] (and
//! its TOML key in `spec/model.rs`).

use std::fmt;

use crate::llb::{CacheSharing, Mount, Platform, Run};

pub mod apt;
pub mod npm;
pub mod pip;
pub mod run;
mod shell;

#[cfg(test)]
pub(crate) use shell::quote;

/// A tool whose steps get cache mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Apt,
    Pip,
    Npm,
    /// A `run` step's (or a Dockerfile RUN's) own cache directories.
    Run,
}

impl Tool {
    /// Every tool, in the order the spec documents them.
    pub const ALL: [Tool; 4] = [Tool::Apt, Tool::Pip, Tool::Npm, Tool::Run];

    /// The tools whose cache mounts are fixed (`mounts=apt,pip,npm`); `run`'s
    /// are named by their paths.
    pub const PACKAGE_MANAGERS: [Tool; 3] = [Tool::Apt, Tool::Pip, Tool::Npm];

    /// Its name in a spec, a `mounts=` list, a cache id and an artifact tag.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Apt => "apt",
            Tool::Pip => "pip",
            Tool::Npm => "npm",
            Tool::Run => "run",
        }
    }

    /// The package manager named `name`.
    pub fn package_manager(name: &str) -> Option<Tool> {
        Tool::PACKAGE_MANAGERS
            .into_iter()
            .find(|t| t.name() == name)
    }

    /// The cache mounts every step of the tool gets (none for `run`, whose
    /// directories the step names: [`run::cache_mount`]).
    pub fn cache_mounts(self, platform: &Platform) -> Vec<Mount> {
        let dirs: &[(&str, CacheSharing)] = match self {
            Tool::Apt => &apt::CACHES,
            Tool::Pip => &pip::CACHES,
            Tool::Npm => &npm::CACHES,
            Tool::Run => &[],
        };
        dirs.iter()
            .map(|(target, sharing)| self.cache_mount(target, *sharing, platform))
            .collect()
    }

    /// The tool's cache mount at `target`, under its stable id.
    fn cache_mount(self, target: &str, sharing: CacheSharing, platform: &Platform) -> Mount {
        Mount::cache(target, &cache_id(self, target, platform), sharing)
    }

    /// The tool a cache mount at `target` belongs to, for a mount some other
    /// step made (a Dockerfile's `RUN --mount=type=cache`): one at a
    /// directory of a package manager is that tool's (and travels as its
    /// does); any other is a `run` cache, travelling whole.
    pub fn of_cache_dir(target: &str) -> Tool {
        let target = crate::llb::clean_path(target);
        if apt::CACHES.iter().any(|(dir, _)| *dir == target) {
            Tool::Apt
        } else if target.ends_with("/.cache/pip") {
            Tool::Pip
        } else if target.ends_with("/.npm") {
            Tool::Npm
        } else {
            Tool::Run
        }
    }

    /// A shell `find` printing, with `-printf "$1"`, the files of the tool's
    /// cache at `target` that travel with portable mounts, run in it.
    pub fn travelling_files(self, target: &str, stamp: &str) -> String {
        match self {
            Tool::Apt => apt::travelling_files(target),
            Tool::Pip | Tool::Npm | Tool::Run => None,
        }
        .unwrap_or_else(|| {
            format!("find . -mindepth 1 -path ./{stamp} -prune -o ! -type d -printf \"$1\"")
        })
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stable id of a cache mount: the same tool, directory and platform share
/// one cache across images; two platforms never clash.
pub fn cache_id(tool: Tool, target: &str, platform: &Platform) -> String {
    format!(
        "strata:{}:{platform}:{}",
        tool.name(),
        crate::llb::clean_path(target)
    )
}

/// One toolchain step of a tool, as the spec states it (checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolStep {
    Apt(Vec<String>),
    Pip(Vec<String>),
    Npm {
        packages: Vec<String>,
        /// `None`: a global install (`npm install -g`).
        dir: Option<String>,
    },
    Run {
        script: String,
        /// Absolute paths mounted as caches.
        cache: Vec<String>,
    },
}

/// What a tool's lowering needs of the image so far.
pub struct Context<'a> {
    pub platform: &'a Platform,
    /// Where the CA bundle is mounted, when the step should trust one.
    pub ca_file: Option<&'a str>,
}

impl ToolStep {
    pub fn tool(&self) -> Tool {
        match self {
            ToolStep::Apt(_) => Tool::Apt,
            ToolStep::Pip(_) => Tool::Pip,
            ToolStep::Npm { .. } => Tool::Npm,
            ToolStep::Run { .. } => Tool::Run,
        }
    }

    /// The step as a command with its cache mounts, and what progress calls it.
    pub fn lower(&self, at: &Context) -> (Run, String) {
        match self {
            ToolStep::Apt(packages) => apt::lower(packages, at),
            ToolStep::Pip(packages) => pip::lower(packages, at),
            ToolStep::Npm { packages, dir } => npm::lower(packages, dir.as_deref(), at),
            ToolStep::Run { script, cache } => run::lower(script, cache, at),
        }
    }
}

/// Why a package list is not one.
pub fn check_packages(tool: Tool, packages: &[String]) -> Result<(), String> {
    if packages.is_empty() {
        return Err(format!("{tool} needs at least one package"));
    }
    if packages.iter().any(|p| p.trim().is_empty()) {
        return Err("a package name is empty".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dirs_name_their_tool_and_ids_keep_platforms_apart() {
        assert_eq!(Tool::of_cache_dir("/var/cache/apt/"), Tool::Apt);
        assert_eq!(Tool::of_cache_dir("/var/lib/apt"), Tool::Apt);
        assert_eq!(Tool::of_cache_dir("/home/u/.cache/pip"), Tool::Pip);
        assert_eq!(Tool::of_cache_dir("/root/.npm"), Tool::Npm);
        assert_eq!(Tool::of_cache_dir("/root/.cargo"), Tool::Run);
        let (amd, arm) = (
            "linux/amd64".parse::<Platform>().unwrap(),
            "linux/arm64".parse::<Platform>().unwrap(),
        );
        assert_ne!(
            cache_id(Tool::Pip, "/root/.cache/pip", &amd),
            cache_id(Tool::Pip, "/root/.cache/pip", &arm)
        );
        assert_eq!(
            cache_id(Tool::Run, "/x/", &amd),
            "strata:run:linux/amd64:/x"
        );
        assert_eq!(Tool::Apt.cache_mounts(&amd).len(), 2);
        assert!(Tool::Run.cache_mounts(&amd).is_empty());
        assert_eq!(Tool::package_manager("npm"), Some(Tool::Npm));
        assert_eq!(Tool::package_manager("run"), None);
    }

    #[test]
    fn package_lists_are_checked() {
        assert!(check_packages(Tool::Apt, &[])
            .unwrap_err()
            .contains("apt needs"));
        assert!(check_packages(Tool::Pip, &[" ".into()]).is_err());
        assert!(check_packages(Tool::Npm, &["x".into()]).is_ok());
    }
}
