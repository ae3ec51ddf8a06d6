//! Cache mounts as a build uses them ([`CacheMountUse`]), and `mounts=` on a
//! cache entry: which of them travel with its cache, and `mounts-max-size=`,
//! the largest one that does.

use std::fmt;

use crate::llb::{CacheSharing, State};
use crate::tools::Tool;
use crate::units::parse_size;

/// A cache mount a toolchain step uses, as lowered: what `mounts=` on a
/// cache entry exports after a build and seeds before one (`crate::mounts`).
#[derive(Debug, Clone)]
pub struct CacheMountUse {
    /// The daemon's cache id, e.g. `strata:apt:linux/amd64:/var/cache/apt`.
    pub id: String,
    /// Where the step mounts it.
    pub target: String,
    pub sharing: CacheSharing,
    /// The tool whose step uses it.
    pub tool: Tool,
    /// The filesystem the step ran on: it has a shell (the step ran `/bin/sh`).
    pub rootfs: State,
    /// The image's base (its `from` chain's first): what a seed runs on
    /// before the build, since `rootfs` may need earlier steps built.
    pub base: State,
}

/// One name of a `mounts=` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountName {
    /// Every mount of a package manager's steps: `apt`, `pip` or `npm`.
    Tool(Tool),
    /// A `run` step's cache directory, as its `cache = [...]` names it.
    Path(String),
}

/// Which cache mounts a cache entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSelection {
    All,
    Only(Vec<MountName>),
}

/// `mounts=…` and `mounts-max-size=…` of one cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub select: MountSelection,
    /// A mount larger than this is skipped (and the build says so).
    pub max_size: Option<u64>,
}

impl MountOptions {
    /// From the attribute values; the error is the reason, for the entry's message.
    pub fn parse(list: &str, max_size: Option<&str>) -> Result<MountOptions, String> {
        let names: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        let select = if names == ["all"] {
            MountSelection::All
        } else if names.is_empty() {
            return Err("mounts= needs all, or a list of apt, pip, npm and run cache paths".into());
        } else {
            MountSelection::Only(names.into_iter().map(name).collect::<Result<_, _>>()?)
        };
        let max_size = match max_size {
            None => None,
            Some(s) => Some(parse_size(s).map_err(|e| format!("mounts-max-size: {e}"))?),
        };
        Ok(MountOptions { select, max_size })
    }

    /// Whether `mount` travels with this entry.
    pub fn selects(&self, mount: &CacheMountUse) -> bool {
        match &self.select {
            MountSelection::All => true,
            MountSelection::Only(names) => names.iter().any(|n| match n {
                MountName::Tool(tool) => *tool == mount.tool,
                MountName::Path(path) => mount.tool == Tool::Run && *path == mount.target,
            }),
        }
    }

    /// As BuildKit-style attributes, for printing an entry back.
    pub fn attrs(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("mounts", self.select.to_string())];
        if let Some(max) = self.max_size {
            out.push(("mounts-max-size", format!("{max}B")));
        }
        out
    }
}

fn name(text: &str) -> Result<MountName, String> {
    if let Some(tool) = Tool::package_manager(text) {
        return Ok(MountName::Tool(tool));
    }
    if text.starts_with('/') {
        return Ok(MountName::Path(crate::llb::clean_path(text)));
    }
    Err(format!(
        "mounts: unknown {text:?} (use all, or a list of apt, pip, npm and run cache paths like /root/.cache/go-build)"
    ))
}

impl fmt::Display for MountSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountSelection::All => f.write_str("all"),
            MountSelection::Only(names) => {
                let names: Vec<&str> = names
                    .iter()
                    .map(|n| match n {
                        MountName::Tool(t) => t.name(),
                        MountName::Path(p) => p.as_str(),
                    })
                    .collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_tools_and_paths() {
        let o = MountOptions::parse("all", None).unwrap();
        assert_eq!(o.select, MountSelection::All);
        let o = MountOptions::parse("apt,pip,/root/.cache/x/", Some("200MB")).unwrap();
        assert_eq!(
            o.select,
            MountSelection::Only(vec![
                MountName::Tool(Tool::Apt),
                MountName::Tool(Tool::Pip),
                MountName::Path("/root/.cache/x".into())
            ])
        );
        assert_eq!(o.max_size, Some(200_000_000));
        assert_eq!(o.select.to_string(), "apt,pip,/root/.cache/x");
        assert!(MountOptions::parse("apt,yum", None)
            .unwrap_err()
            .contains("unknown \"yum\""));
        assert!(MountOptions::parse("", None).is_err());
        assert!(MountOptions::parse("all", Some("lots")).is_err());
    }
}
