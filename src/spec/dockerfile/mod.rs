//! `dockerfile = { file, context, target, args }`: an image that BuildKit's
//! own Dockerfile frontend (`dockerfile.v0`) builds, with strata's session,
//! cache, outputs, keys and progress around it. Read once here: the paths
//! (inside the spec's directory unless allowed), and the registry images its
//! `FROM` lines name, which the build pins by digest as it does every base.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

mod mounts;
mod text;

use super::locate::Source;
use super::paths::PathPolicy;
use super::raw::RawDockerfile;
use super::SpecError;
use crate::reference::ImageRef;
use mounts::run_cache_mounts;
pub use mounts::RunCacheMount;
use text::{registry_image, stages};

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
    /// Why its content key cannot stand for it, if it cannot: a `FROM`
    /// strata cannot read without building, or a `# syntax=` frontend named
    /// by a tag. Such an image is always solved and never key-tagged.
    pub unkeyable: Option<String>,
    /// The `# syntax=` frontend image, when it names one strata can read.
    pub syntax: Option<ImageRef>,
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
        let unkeyable = unkeyable(&text, &args);
        let syntax = syntax(&text).and_then(|s| s.parse().ok());
        Ok(Dockerfile {
            file,
            context,
            target,
            args,
            froms,
            spec_froms: Vec::new(),
            cache_mounts,
            unkeyable,
            syntax,
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

/// Why a Dockerfile's key could not stand for it: a `FROM` that names
/// neither scratch, an earlier stage, nor an image strata can read (a `$`
/// the args do not fill, a form strata does not expand), or a `# syntax=`
/// frontend not pinned by digest (its tag may move: the key would not).
fn unkeyable(text: &str, args: &BTreeMap<String, String>) -> Option<String> {
    if let Some(syntax) = syntax(text).filter(|s| !s.contains("@sha256:")) {
        return Some(format!(
            "its # syntax={syntax} frontend is named by a tag (pin it by digest to key the image)"
        ));
    }
    stages(text, args)
        .into_iter()
        .filter(|s| s.from_stage.is_none() && s.from != "scratch" && !s.from.contains('@'))
        .find(|s| registry_image(&s.from).is_none())
        .map(|s| {
            format!(
                "FROM {} cannot be read without building, so it cannot be pinned",
                s.from
            )
        })
}

/// The `# syntax=` parser directive, if the Dockerfile starts with one
/// (directives are `# key=value` comments before anything else).
pub(super) fn syntax(text: &str) -> Option<String> {
    for line in text.lines() {
        let comment = line.trim().strip_prefix('#')?;
        let (key, value) = comment.split_once('=')?;
        if key.trim().eq_ignore_ascii_case("syntax") {
            return Some(value.trim().to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::text::substitute;
    use super::*;

    #[test]
    fn quoted_args_defaults_and_heredocs_are_read_as_the_frontend_reads_them() {
        let none = BTreeMap::new();
        let text = "ARG BASE='reg:5000/a:1'\nARG OTHER\nFROM ${OTHER:-reg:5000/b:2} AS b\n\
                    RUN <<EOF\nFROM reg:5000/not-a-stage:1\nEOF\nFROM $BASE\n";
        let froms: Vec<String> = from_images(text, &none)
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        assert_eq!(froms, ["reg:5000/b:2", "reg:5000/a:1"]);
        assert_eq!(
            stages(text, &none).len(),
            2,
            "a FROM in a heredoc is no stage"
        );
        assert_eq!(unkeyable(text, &none), None);
        let unread = "FROM ${BASE%:*}\n";
        assert!(unkeyable(unread, &none).unwrap().contains("cannot be read"));
        let syntax = "# syntax=docker/dockerfile:1\nFROM scratch\n";
        assert!(unkeyable(syntax, &none).unwrap().contains("syntax"));
        let pinned = format!(
            "# syntax=reg:5000/df@sha256:{}\nFROM scratch\n",
            "a".repeat(64)
        );
        assert_eq!(unkeyable(&pinned, &none), None);
        let x = BTreeMap::from([("X".to_owned(), "1".to_owned())]);
        assert_eq!(substitute("${X:+set}${Y:+set}${Y:-d}", &x, &none), "setd");
    }

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
