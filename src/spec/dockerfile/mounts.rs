//! A Dockerfile's `RUN --mount=type=cache,…` mounts, so that `mounts=` on a
//! Dockerfile image's cache entries carries them as it does a spec's own
//! (see `crate::mounts`). The ids are the frontend's: BuildKit's Dockerfile
//! frontend names a cache mount `NS/ID`, where ID is the mount's `id=` or
//! else its cleaned target, and NS the `BUILDKIT_CACHE_MOUNT_NS` build arg
//! (empty by default). Only what can be read for sure is taken: a mount
//! whose values keep a `$`, that starts `from=` another image or stage (its
//! key then includes that input), or whose target is relative, is left out;
//! so are stages after `--target`, and stages that do not start from a
//! registry image (a seed and an export need a shell to run on).

use std::collections::BTreeMap;

use super::text::{registry_image, stages, substitute, Stage};
use crate::llb::CacheSharing;
use crate::reference::ImageRef;

/// One `RUN --mount=type=cache` of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCacheMount {
    /// The daemon's cache id, as the frontend names it.
    pub id: String,
    /// Where the `RUN` mounts it (absolute, cleaned).
    pub target: String,
    pub sharing: CacheSharing,
    /// The registry image the mount's stage starts from (through earlier
    /// stages): what a seed or an export of the mount runs on.
    pub image: ImageRef,
}

/// The cache mounts of the stages a build of `target` (else the last stage)
/// may run, each id once.
pub fn run_cache_mounts(
    text: &str,
    args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> Vec<RunCacheMount> {
    let stages = stages(text, args);
    let last = target
        .and_then(|t| stages.iter().position(|s| s.name == t.to_ascii_lowercase()))
        .unwrap_or(stages.len().saturating_sub(1));
    let namespace = args
        .get("BUILDKIT_CACHE_MOUNT_NS")
        .cloned()
        .unwrap_or_default();
    let mut mounts: Vec<RunCacheMount> = Vec::new();
    for (i, stage) in stages.iter().enumerate().take(last + 1) {
        let Some(image) = root_image(&stages, i) else {
            continue;
        };
        for line in &stage.lines {
            for flags in run_mount_flags(line) {
                let Some(mount) = cache_mount(flags, args, &namespace, &image) else {
                    continue;
                };
                if !mounts.iter().any(|m| m.id == mount.id) {
                    mounts.push(mount);
                }
            }
        }
    }
    mounts
}

/// The registry image stage `i` starts from, through the stages it names.
fn root_image(stages: &[Stage], mut i: usize) -> Option<ImageRef> {
    while let Some(earlier) = stages[i].from_stage {
        i = earlier;
    }
    registry_image(&stages[i].from)
}

/// The values of a `RUN` line's `--mount=` flags (the flags come first).
fn run_mount_flags(line: &str) -> Vec<&str> {
    let mut words = line.split_whitespace();
    if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("RUN")) {
        return Vec::new();
    }
    words
        .take_while(|w| w.starts_with("--"))
        .filter_map(|w| w.strip_prefix("--mount="))
        .collect()
}

/// One `--mount=` value, if it is a cache mount strata can carry.
fn cache_mount(
    flags: &str,
    args: &BTreeMap<String, String>,
    namespace: &str,
    image: &ImageRef,
) -> Option<RunCacheMount> {
    let none = BTreeMap::new();
    let fields: BTreeMap<String, String> = flags
        .split(',')
        .map(|field| {
            let (key, value) = field.split_once('=').unwrap_or((field, ""));
            let value = substitute(value.trim_matches('"'), args, &none);
            (key.to_ascii_lowercase(), value)
        })
        .collect();
    let field = |names: &[&str]| names.iter().find_map(|n| fields.get(*n)).cloned();
    if field(&["type"]).as_deref() != Some("cache") || fields.contains_key("from") {
        return None;
    }
    let target = field(&["target", "dst", "destination"])?;
    let id = field(&["id"]).unwrap_or_else(|| crate::llb::clean_path(&target));
    if !target.starts_with('/') || target.contains('$') || id.contains('$') {
        return None;
    }
    let sharing = match field(&["sharing"]).as_deref() {
        Some("locked") => CacheSharing::Locked,
        Some("private") => CacheSharing::Private,
        _ => CacheSharing::Shared,
    };
    Some(RunCacheMount {
        id: format!("{namespace}/{id}"),
        target: crate::llb::clean_path(&target),
        sharing,
        image: image.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "ARG BASE=reg:5000/debian:bookworm\n\
        FROM ${BASE} AS deps\n\
        RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n\
            --mount=type=cache,target=/var/lib/apt/,sharing=locked apt-get install -y tree\n\
        RUN --mount=type=secret,id=tok --mount=type=cache,id=pip,target=/root/.cache/pip pip install x\n\
        FROM deps AS app\n\
        RUN --mount=type=cache,target=/root/.npm,from=deps npm ci\n\
        RUN --mount=type=cache,target=$HOME/.cache npm ci\n\
        RUN --mount=type=cache,target=/work/cache echo --mount=type=cache,target=/nope\n\
        FROM scratch AS last\n\
        RUN --mount=type=cache,target=/other true\n";

    #[test]
    fn cache_mounts_are_named_as_the_frontend_names_them() {
        let args = BTreeMap::new();
        let mounts = run_cache_mounts(TEXT, &args, Some("app"));
        let got: Vec<(&str, &str, CacheSharing)> = mounts
            .iter()
            .map(|m| (m.id.as_str(), m.target.as_str(), m.sharing))
            .collect();
        assert_eq!(
            got,
            [
                ("//var/cache/apt", "/var/cache/apt", CacheSharing::Locked),
                ("//var/lib/apt", "/var/lib/apt", CacheSharing::Locked),
                ("/pip", "/root/.cache/pip", CacheSharing::Shared),
                ("//work/cache", "/work/cache", CacheSharing::Shared),
            ]
        );
        // The `app` stage starts from `deps`, which starts from the base.
        assert!(mounts
            .iter()
            .all(|m| m.image.to_string() == "reg:5000/debian:bookworm"));
    }

    #[test]
    fn the_namespace_arg_and_the_last_stage() {
        let args = BTreeMap::from([("BUILDKIT_CACHE_MOUNT_NS".to_owned(), "ns".to_owned())]);
        let mounts = run_cache_mounts(TEXT, &args, None);
        // The last stage starts from scratch: nothing of it; the others are taken.
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[0].id, "ns//var/cache/apt");
    }
}
