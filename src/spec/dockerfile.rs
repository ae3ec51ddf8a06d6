//! `dockerfile = { file, context, target, args }`: an image that BuildKit's
//! own Dockerfile frontend (`dockerfile.v0`) builds, with strata's session,
//! cache, outputs, keys and progress around it. Read once here: the paths
//! (inside the spec's directory unless allowed), and the registry images its
//! `FROM` lines name, which the build pins by digest as it does every base.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::dockerfile_mounts::{run_cache_mounts, RunCacheMount};
use super::locate::Source;
use super::model::RawDockerfile;
use super::paths::PathPolicy;
use super::SpecError;
use crate::reference::ImageRef;

/// A Dockerfile image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The Dockerfile itself.
    pub file: PathBuf,
    /// The build context.
    pub context: PathBuf,
    pub target: Option<String>,
    /// `--build-arg`s.
    pub args: BTreeMap<String, String>,
    /// The registry images its `FROM` lines name (with build args and `ARG`
    /// defaults substituted), as written and parsed.
    pub froms: Vec<(String, ImageRef)>,
    /// The images of the same spec its `FROM` lines name: they are built
    /// with it and handed to the frontend as named contexts.
    pub spec_froms: Vec<String>,
    /// Its `RUN --mount=type=cache` mounts that `mounts=` can carry.
    pub cache_mounts: Vec<RunCacheMount>,
}

impl Dockerfile {
    /// The directory the Dockerfile is served from, and its name there.
    pub fn dir_and_name(&self) -> (&Path, String) {
        let dir = self.file.parent().unwrap_or(Path::new("."));
        let name = self
            .file
            .file_name()
            .map_or_else(|| "Dockerfile".into(), |n| n.to_string_lossy().into_owned());
        (dir, name)
    }

    /// A Dockerfile image from the command line (`--dockerfile`).
    pub fn new(
        file: PathBuf,
        context: PathBuf,
        target: Option<String>,
        args: BTreeMap<String, String>,
    ) -> Result<Dockerfile, String> {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        // Absolute: the file's directory is served as a local of its own.
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        let (file, context) = (absolute(file), absolute(context));
        if !context.is_dir() {
            return Err(format!("{} is not a directory", context.display()));
        }
        let froms = from_images(&text, &args);
        let cache_mounts = run_cache_mounts(&text, &args, target.as_deref());
        Ok(Dockerfile {
            file,
            context,
            target,
            args,
            froms,
            spec_froms: Vec::new(),
            cache_mounts,
        })
    }

    /// Moves the `FROM`s that name images of the spec (`names`) from the
    /// registry images to `spec_froms`.
    fn with_spec_images(mut self, names: &[String]) -> Dockerfile {
        let (ours, registry): (Vec<_>, Vec<_>) =
            self.froms.into_iter().partition(|(written, _)| {
                names.contains(&written.trim_end_matches(":latest").to_owned())
            });
        self.spec_froms = ours
            .into_iter()
            .map(|(w, _)| w.trim_end_matches(":latest").to_owned())
            .collect();
        self.froms = registry;
        self
    }
}

/// Checks a spec's `dockerfile` table: `file` (default `Dockerfile` in the
/// context) and `context` (default the spec's directory) must be readable
/// under the spec's path policy.
pub(super) fn check(
    src: &Source,
    policy: &PathPolicy,
    names: &[String],
    raw: Spanned<RawDockerfile>,
    key: &str,
) -> Result<Dockerfile, SpecError> {
    let at = raw.span().start;
    let raw = raw.into_inner();
    let resolve = |value: &Option<Spanned<String>>, default: &str, name: &str| {
        let (text, at) = match value {
            Some(v) => (v.get_ref().as_str(), v.span().start),
            None => (default, at),
        };
        policy
            .resolve(text)
            .map_err(|e| src.error(at, format!("{key}.{name}"), e))
    };
    let context = resolve(&raw.context, ".", "context")?;
    let default_file = context.join("Dockerfile").to_string_lossy().into_owned();
    let file = match &raw.file {
        Some(_) => resolve(&raw.file, "", "file")?,
        None => resolve(&None, &default_file, "file")?,
    };
    Dockerfile::new(file, context, raw.target, raw.args)
        .map(|d| d.with_spec_images(names))
        .map_err(|reason| src.error(at, key.to_owned(), reason))
}

/// The registry images `FROM` lines name: not `scratch`, not an earlier
/// stage, not already pinned by digest, and only where build args and `ARG`
/// defaults leave no `$` unresolved.
pub fn from_images(text: &str, args: &BTreeMap<String, String>) -> Vec<(String, ImageRef)> {
    stages(text, args)
        .into_iter()
        .filter(|s| s.from_stage.is_none() && !s.from.contains('@'))
        .filter_map(|s| Some((s.from.clone(), registry_image(&s.from)?)))
        .collect()
}

/// `from` as a registry image, unless it is `scratch` or has a `$` left.
pub(super) fn registry_image(from: &str) -> Option<ImageRef> {
    if from == "scratch" || from.contains('$') {
        return None;
    }
    from.parse().ok()
}

/// One stage of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stage {
    /// Its `AS` name, lowercased; empty without one.
    pub name: String,
    /// What its `FROM` names, build args and global `ARG` defaults substituted.
    pub from: String,
    /// The earlier stage `from` names, if it names one.
    pub from_stage: Option<usize>,
    /// Its instructions after the `FROM`, one logical line each.
    pub lines: Vec<String>,
}

/// The stages of a Dockerfile, in order.
pub(super) fn stages(text: &str, args: &BTreeMap<String, String>) -> Vec<Stage> {
    let mut defaults: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical_lines(text) {
        let mut words = line.split_whitespace();
        let Some(instruction) = words.next() else {
            continue;
        };
        if instruction.eq_ignore_ascii_case("FROM") {
            let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
            let from = substitute(rest.first().copied().unwrap_or(""), args, &defaults);
            let name = match rest.as_slice() {
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("AS") => name.to_ascii_lowercase(),
                _ => String::new(),
            };
            let from_stage = stages
                .iter()
                .position(|s| !s.name.is_empty() && s.name == from.to_ascii_lowercase());
            stages.push(Stage {
                name,
                from,
                from_stage,
                lines: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.lines.push(line);
        } else if instruction.eq_ignore_ascii_case("ARG") {
            for decl in words {
                let (name, value) = decl.split_once('=').unwrap_or((decl, ""));
                defaults.insert(name.to_owned(), value.trim_matches('"').to_owned());
            }
        }
    }
    stages
}

/// Lines with `\` continuations joined; comments and blank lines dropped.
pub(super) fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.starts_with('#') || trimmed.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// `$NAME` and `${NAME}` replaced by the build arg, else the `ARG` default.
pub(super) fn substitute(
    word: &str,
    args: &BTreeMap<String, String>,
    defaults: &BTreeMap<String, String>,
) -> String {
    let lookup = |name: &str| args.get(name).or_else(|| defaults.get(name)).cloned();
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => return format!("{out}${after}"),
            },
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        match lookup(name) {
            Some(value) => out.push_str(&value),
            None => {
                out.push('$');
                out.push_str(name);
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_lines_name_registry_images_but_not_stages_or_scratch() {
        let text = "# syntax comment\nARG BASE=debian:bookworm\nARG TAG\n\
                    FROM --platform=$BUILDPLATFORM ${BASE} AS build\nRUN make \\\n  all\n\
                    FROM build AS test\nFROM scratch\nFROM reg:5000/x/y:$TAG\n\
                    from alpine@sha256:abc\nFROM $NOPE\n";
        let args = BTreeMap::from([("TAG".to_owned(), "v2".to_owned())]);
        let froms: Vec<String> = from_images(text, &args)
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        assert_eq!(froms, ["debian:bookworm", "reg:5000/x/y:v2"]);
    }

    #[test]
    fn substitution_leaves_unknown_names() {
        let none = BTreeMap::new();
        assert_eq!(substitute("a${X}b$Y", &none, &none), "a$Xb$Y");
        let x = BTreeMap::from([("X".to_owned(), "1".to_owned())]);
        assert_eq!(substitute("a${X}b$X-c", &x, &none), "a1b1-c");
    }
}
