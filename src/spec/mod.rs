//! strata.toml: named images, each a **base** (an image, or another image of
//! the file), **toolchain** steps (apt, pip, npm, run, env/workdir/user), and an
//! **overlay** (local files, a git checkout) applied last. See docs/spec.md.
//!
//! [`Spec::load`] parses and checks the file, naming file, line, column and key
//! in every error; [`Spec::lower`] turns an image into LLB (see `lower.rs`).

mod dockerfile;
mod locate;
mod lower;
mod model;
mod paths;
mod resolve;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::llb::Platform;
use crate::options::{CacheExport, CacheImport};
use crate::reference::ImageRef;
use crate::tools::{Tool, ToolStep};
use locate::{join, Source};
use model::{
    RawCopy, RawGit, RawImage, RawOverlay, RawSpec, RawStep, RawVars, SeqOrMap, STEP_KINDS,
};

pub use dockerfile::{Dockerfile, RunCacheMount};
pub use lower::{
    BaseImage, GitRef, ImageGraph, LayerKind, LlbImage, LowerOptions, LoweredImage, StepInfo,
    CA_MOUNT, DOCKERFILE_FRONTEND,
};
pub use paths::PathPolicy;
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

/// One step of an image's toolchain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// apt, pip, npm or run: a command with its tool's cache mounts.
    Tool(ToolStep),
    /// In file order; values may use `$NAME` / `${NAME}` of earlier ones.
    Env(Vec<(String, String)>),
    Workdir(String),
    User(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The spec's `name`, if it gives one.
    pub name: Option<String>,
    pub kind: StepKind,
}

/// Where an image starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A registry image (`docker.io/library/debian:bookworm`).
    Image(ImageRef),
    /// Another image of the same spec, wired in as its LLB state.
    From(String),
    /// `base = "scratch"`: nothing, as Dockerfile's `FROM scratch` (for an
    /// image made from a root filesystem copied in by the overlay).
    Scratch,
    /// `dockerfile = {…}`: the whole image is the Dockerfile's.
    Dockerfile(Dockerfile),
}

/// Part of the overlay, applied after the toolchain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayItem {
    Copy {
        /// Absolute directory on this machine, inside the spec's [`PathPolicy`].
        from: PathBuf,
        /// `from` relative to the spec, as step names and history show it.
        shown: String,
        /// In the image; relative to the working directory if not absolute.
        to: String,
        /// `.dockerignore` patterns.
        exclude: Vec<String>,
    },
    Git {
        url: String,
        /// Branch, tag or commit; empty for the default branch.
        reference: String,
        to: String,
    },
}

/// Image config settings of the spec (merged over the base image's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSettings {
    /// In file order.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
}

/// One `[images.NAME]` of the spec, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub base: Base,
    /// As written; `None` inherits the `from` image's, else the host's.
    pub platform: Option<Platform>,
    pub settings: ImageSettings,
    pub steps: Vec<Step>,
    /// Copies first, then git checkouts.
    pub overlay: Vec<OverlayItem>,
    pub push: Option<ImageRef>,
    pub cache_to: Vec<CacheExport>,
    pub cache_from: Vec<CacheImport>,
}

/// A parsed, checked strata.toml.
#[derive(Debug, Clone)]
pub struct Spec {
    path: PathBuf,
    /// The directory relative paths of the spec are taken from (absolute when it exists).
    dir: PathBuf,
    ca_cert: Option<PathBuf>,
    /// In file order.
    images: Vec<Image>,
}

/// Image names: `[a-z0-9][a-z0-9._-]*`.
pub fn valid_image_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// An image name from a context directory's name: lowercased, other
/// characters as `-`; `image` when nothing is left.
fn dockerfile_image_name(context: &Path) -> String {
    let base = context
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_lowercase()))
        .unwrap_or_default();
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches(['.', '_', '-']).to_owned();
    if valid_image_name(&name) {
        name
    } else {
        "image".to_owned()
    }
}

/// Where an image's checks point.
struct Positions {
    /// The image's table.
    image: usize,
    /// Its `platform` value, when it has one.
    platform: usize,
}

impl Spec {
    /// Reads and checks the spec at `path`, which may read files only inside
    /// its own directory.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        Spec::load_allowing(path, &[])
    }

    /// A spec of one Dockerfile image (`strata build --dockerfile`), named
    /// after its context directory; `labels` go on the image.
    pub fn of_dockerfile(dockerfile: Dockerfile, labels: BTreeMap<String, String>) -> Spec {
        let name = dockerfile_image_name(&dockerfile.context);
        let image = Image {
            name,
            base: Base::Dockerfile(dockerfile.clone()),
            platform: None,
            settings: ImageSettings {
                labels,
                ..ImageSettings::default()
            },
            steps: Vec::new(),
            overlay: Vec::new(),
            push: None,
            cache_to: Vec::new(),
            cache_from: Vec::new(),
        };
        Spec::of_images(&dockerfile.file, &dockerfile.context, vec![image])
    }

    /// A spec made in code (`--dockerfile`, compose files): `path` is what
    /// errors name, `dir` where relative paths were taken from.
    pub fn of_images(path: &Path, dir: &Path, images: Vec<Image>) -> Spec {
        Spec {
            path: path.to_owned(),
            dir: dir.to_owned(),
            ca_cert: None,
            images,
        }
    }

    /// Reads and checks the spec at `path`, which may also read files in the
    /// directories `allow` names (`--allow-path`).
    pub fn load_allowing(path: &Path, allow: &[PathBuf]) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the spec: {e}"),
        })?;
        Spec::parse_allowing(&text, path, allow)
    }

    /// Parses and checks spec text. `path` names the file in errors, and its
    /// directory anchors relative paths (overlay dirs, `ca_cert`).
    pub fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
        Spec::parse_allowing(text, path, &[])
    }

    /// [`Spec::parse`], with the directories `allow` readable besides the spec's own.
    pub fn parse_allowing(text: &str, path: &Path, allow: &[PathBuf]) -> Result<Spec, SpecError> {
        let src = Source::new(path, text);
        let raw: RawSpec = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let policy = PathPolicy::new(&dir, allow);
        let dir = policy.dir().to_owned();

        let ca_cert = match raw.ca_cert {
            Some(c) if c.get_ref().trim().is_empty() => {
                return Err(src.error(c.span().start, "ca_cert", "must not be empty"))
            }
            Some(c) => Some(
                policy
                    .resolve(c.get_ref())
                    .map_err(|e| src.error(c.span().start, "ca_cert", e))?,
            ),
            None => None,
        };

        let mut raw_images: Vec<_> = raw.images.into_iter().collect();
        raw_images.sort_by_key(|(name, _)| name.span().start);
        if raw_images.is_empty() {
            return Err(src.error(
                0,
                "images",
                "the spec defines no image (add an [images.NAME] table)",
            ));
        }
        let names: Vec<String> = raw_images
            .iter()
            .map(|(n, _)| n.get_ref().clone())
            .collect();
        let mut images = Vec::new();
        let mut positions = Vec::new();
        for (name, image) in raw_images {
            if !valid_image_name(name.get_ref()) {
                return Err(src.error(
                    name.span().start,
                    join("images", name.get_ref()),
                    "image names are lowercase letters, digits, '.', '_' and '-', \
                     starting with a letter or digit",
                ));
            }
            positions.push(Positions {
                image: image.span().start,
                platform: image
                    .get_ref()
                    .platform
                    .as_ref()
                    .map_or(image.span().start, |p| p.span().start),
            });
            let at = image.span().start;
            images.push(check_image(
                &src,
                &policy,
                &names,
                name.into_inner(),
                at,
                image.into_inner(),
            )?);
        }
        let spec = Spec {
            path: path.to_owned(),
            dir,
            ca_cert,
            images,
        };
        spec.check_cycles(&src, &positions)?;
        spec.check_platforms(&src, &positions)?;
        spec.check_dockerfile_parents(&src, &positions)?;
        Ok(spec)
    }

    /// `image`, the image it is built `from`, that one's, and so on: the one
    /// place a `from` chain is walked. It stops at a registry base or scratch,
    /// and after as many images as the spec has (so a loop, which parse
    /// rejects, still ends).
    pub fn from_chain<'a>(&'a self, image: &'a Image) -> impl Iterator<Item = &'a Image> + 'a {
        std::iter::successors(Some(image), move |current| match &current.base {
            Base::From(parent) => self.image(parent),
            Base::Image(_) | Base::Scratch | Base::Dockerfile(_) => None,
        })
        .take(self.images.len() + 1)
    }

    /// Rejects `from` chains that loop, naming the loop.
    fn check_cycles(&self, src: &Source, positions: &[Positions]) -> Result<(), SpecError> {
        for image in &self.images {
            let chain: Vec<&str> = self.from_chain(image).map(|i| i.name.as_str()).collect();
            // The first name seen twice closes the loop.
            let repeat = (1..chain.len()).find_map(|i| {
                let first = chain[..i].iter().position(|n| *n == chain[i])?;
                Some((first, i))
            });
            let Some((start, end)) = repeat else { continue };
            let cycle = &chain[start..end];
            let first = self.index(cycle[0]);
            return Err(src.error(
                positions[first].image,
                join("images", cycle[0]),
                format!("cycle {} -> {}", cycle.join(" -> "), cycle[0]),
            ));
        }
        Ok(())
    }

    /// A Dockerfile image's graph is made by the frontend on the daemon, so
    /// an image built `from` one starts from its pushed image: it needs a
    /// push target.
    fn check_dockerfile_parents(
        &self,
        src: &Source,
        positions: &[Positions],
    ) -> Result<(), SpecError> {
        for (i, image) in self.images.iter().enumerate() {
            let Base::From(parent) = &image.base else {
                continue;
            };
            let Some(p) = self.image(parent) else {
                continue;
            };
            if matches!(p.base, Base::Dockerfile(_)) && p.push.is_none() {
                return Err(src.error(
                    positions[i].image,
                    format!("{}.from", join("images", &image.name)),
                    format!("{parent:?} is a dockerfile image without push: an image built from it starts from the pushed image, so give {parent} a push target"),
                ));
            }
        }
        Ok(())
    }

    /// The Dockerfile images that images of `names`' closure are built `from`
    /// (built first, then used by digest).
    pub fn dockerfile_parents(&self, names: &[String]) -> Result<Vec<String>, SpecError> {
        let mut parents = Vec::new();
        for name in self.closure(names)? {
            let Some(Base::From(parent)) = self.image(&name).map(|i| &i.base) else {
                continue;
            };
            let is_dockerfile = matches!(
                self.image(parent).map(|p| &p.base),
                Some(Base::Dockerfile(_))
            );
            if is_dockerfile && !parents.contains(parent) {
                parents.push(parent.clone());
            }
        }
        Ok(parents)
    }

    /// This spec with every image built `from` one of `built` starting from
    /// that image as pushed (a registry reference pinned by digest) instead.
    pub fn rebased(&self, built: &BTreeMap<String, ImageRef>) -> Spec {
        let mut spec = self.clone();
        for image in &mut spec.images {
            if let Base::From(parent) = &image.base {
                if let Some(reference) = built.get(parent) {
                    image.base = Base::Image(reference.clone());
                }
            }
        }
        spec
    }

    /// An image built `from` another runs on its platform: the two may not differ.
    fn check_platforms(&self, src: &Source, positions: &[Positions]) -> Result<(), SpecError> {
        for (i, image) in self.images.iter().enumerate() {
            let Some(own) = &image.platform else { continue };
            let differing = self
                .from_chain(image)
                .skip(1)
                .find(|parent| parent.platform.as_ref().is_some_and(|p| p != own));
            if let Some(parent) = differing {
                return Err(src.error(
                    positions[i].platform,
                    format!("{}.platform", join("images", &image.name)),
                    format!(
                        "{own} differs from {}, the platform of {} it is built from",
                        parent.platform.as_ref().expect("found by it"),
                        parent.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Position of an image known to exist (parse checked every `from`).
    fn index(&self, name: &str) -> usize {
        self.images
            .iter()
            .position(|i| i.name == name)
            .unwrap_or_default()
    }

    /// The spec file, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory relative paths are taken from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA bundle the spec asks for (relative to [`Spec::dir`]), if any.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// Every image, in file order.
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.name == name)
    }

    /// Image names in file order.
    pub fn names(&self) -> Vec<&str> {
        self.images.iter().map(|i| i.name.as_str()).collect()
    }

    /// Every registry base image the spec uses, once each (sorted).
    pub fn base_refs(&self) -> Vec<ImageRef> {
        let refs: BTreeSet<ImageRef> = self
            .images
            .iter()
            .filter_map(|i| match &i.base {
                Base::Image(r) => Some(r.clone()),
                Base::From(_) | Base::Scratch | Base::Dockerfile(_) => None,
            })
            .collect();
        refs.into_iter().collect()
    }

    /// An error about the spec as a whole (no one place in it).
    fn error(&self, message: String) -> SpecError {
        SpecError {
            file: self.path.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message,
        }
    }

    /// An image by name, or an error listing the spec's images.
    fn named(&self, name: &str) -> Result<&Image, SpecError> {
        self.image(name).ok_or_else(|| {
            self.error(format!(
                "no image named {name:?} (images: {})",
                self.names().join(", ")
            ))
        })
    }

    /// `wanted` and the images they are built `from`, dependencies first
    /// (each once); an unknown name is an error listing the spec's images.
    pub fn closure(&self, wanted: &[String]) -> Result<Vec<String>, SpecError> {
        let mut order: Vec<String> = Vec::new();
        for name in wanted {
            self.visit(self.named(name)?, &mut order, 0);
        }
        Ok(order)
    }

    /// Adds `image` to `order` after what it stands on: its `from` parent,
    /// or the spec images its Dockerfile's `FROM`s name.
    fn visit(&self, image: &Image, order: &mut Vec<String>, depth: usize) {
        if order.contains(&image.name) || depth > self.images.len() {
            return; // done, or a loop (which parse rejects)
        }
        let parents: Vec<&str> = match &image.base {
            Base::From(parent) => vec![parent.as_str()],
            Base::Dockerfile(d) => d.spec_froms.iter().map(String::as_str).collect(),
            Base::Image(_) | Base::Scratch => Vec::new(),
        };
        for parent in parents.into_iter().filter_map(|p| self.image(p)) {
            self.visit(parent, order, depth + 1);
        }
        order.push(image.name.clone());
    }
}

/// Checks one image of the spec.
fn check_image(
    src: &Source,
    dir: &PathPolicy,
    names: &[String],
    name: String,
    at: usize,
    mut raw: RawImage,
) -> Result<Image, SpecError> {
    let prefix = join("images", &name);
    let key = |k: &str| format!("{prefix}.{k}");
    let base = match raw.dockerfile.take() {
        Some(dockerfile) => {
            only_dockerfile(src, &raw, dockerfile.span().start, &prefix)?;
            let checked = dockerfile::check(src, dir, names, dockerfile, &key("dockerfile"))?;
            Base::Dockerfile(checked)
        }
        None => check_base(src, names, &prefix, at, raw.base, raw.from)?,
    };
    let platform = raw
        .platform
        .map(|p| parse_at::<Platform>(src, p, &key("platform")))
        .transpose()?;
    let env = check_vars(src, raw.env, &key("env"), at)?;
    let push = raw
        .push
        .map(|p| parse_at::<ImageRef>(src, p, &key("push")))
        .transpose()?;
    let cache_to = check_cache_entries(src, dir, raw.cache_to, &key("cache_to"))?;
    let cache_from = check_cache_entries(src, dir, raw.cache_from, &key("cache_from"))?;
    let steps = raw
        .toolchain
        .into_iter()
        .enumerate()
        .map(|(i, step)| check_step(src, &format!("{prefix}.toolchain[{}]", i + 1), step))
        .collect::<Result<Vec<_>, _>>()?;

    let overlay = match raw.overlay {
        Some(o) => check_overlay(src, dir, o.into_inner(), &key("overlay"))?,
        None => Vec::new(),
    };
    Ok(Image {
        name,
        base,
        platform,
        settings: ImageSettings {
            env,
            workdir: raw.workdir.filter(|w| !w.is_empty()),
            user: raw.user,
            entrypoint: raw.entrypoint,
            cmd: raw.cmd,
            labels: check_labels(src, raw.labels, &key("labels"))?,
        },
        steps,
        overlay,
        push,
        cache_to,
        cache_from,
    })
}

/// A Dockerfile image takes its base, steps and config from the Dockerfile:
/// an image key that would also set them is an error naming it.
fn only_dockerfile(src: &Source, raw: &RawImage, at: usize, prefix: &str) -> Result<(), SpecError> {
    let conflicting = [
        ("base", raw.base.is_some()),
        ("from", raw.from.is_some()),
        ("toolchain", !raw.toolchain.is_empty()),
        ("overlay", raw.overlay.is_some()),
        ("env", !raw.env.is_empty()),
        ("workdir", raw.workdir.is_some()),
        ("user", raw.user.is_some()),
        ("entrypoint", raw.entrypoint.is_some()),
        ("cmd", raw.cmd.is_some()),
    ];
    match conflicting.iter().find(|(_, set)| *set) {
        Some((key, _)) => Err(src.error(
            at,
            format!("{prefix}.dockerfile"),
            format!("a dockerfile image takes its base, steps and config from the Dockerfile; remove {key}"),
        )),
        None => Ok(()),
    }
}

/// A value parsed where it stands; an error names its place and key.
fn parse_at<T>(src: &Source, value: Spanned<String>, key: &str) -> Result<T, SpecError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value
        .get_ref()
        .parse()
        .map_err(|e: T::Err| src.error(value.span().start, key, e.to_string()))
}

/// Where an image starts: `base` (a reference, or `scratch`) or `from`
/// (another image of the file), exactly one of them.
fn check_base(
    src: &Source,
    names: &[String],
    prefix: &str,
    at: usize,
    base: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
) -> Result<Base, SpecError> {
    match (base, from) {
        (Some(_), Some(from)) => Err(src.error(
            from.span().start,
            prefix,
            "give either base (an image reference) or from (another image of this file), not both",
        )),
        (None, None) => Err(src.error(
            at,
            prefix,
            "needs a base (an image reference) or from (another image of this file)",
        )),
        (Some(base), None) if base.get_ref() == "scratch" => Ok(Base::Scratch),
        (Some(base), None) => Ok(Base::Image(parse_at(src, base, &format!("{prefix}.base"))?)),
        (None, Some(from)) if names.contains(from.get_ref()) => Ok(Base::From(from.into_inner())),
        (None, Some(from)) => {
            let file = src.path.file_name().map_or_else(
                || src.path.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            );
            Err(src.error(
                from.span().start,
                format!("{prefix}.from"),
                format!(
                    "no image named {:?} in {file} (images: {})",
                    from.get_ref(),
                    names.join(", ")
                ),
            ))
        }
    }
}

/// The overlay: copies first, then git checkouts.
fn check_overlay(
    src: &Source,
    dir: &PathPolicy,
    raw: RawOverlay,
    key: &str,
) -> Result<Vec<OverlayItem>, SpecError> {
    let mut overlay = Vec::new();
    for (copy, key) in numbered(raw.copy, &format!("{key}.copy")) {
        overlay.push(check_copy(src, dir, copy, &key)?);
    }
    for (git, key) in numbered(raw.git, &format!("{key}.git")) {
        overlay.push(check_git(src, git, &key)?);
    }
    Ok(overlay)
}

/// The most one label may hold: the whole image config travels in one gRPC
/// message of at most 4 MiB, and labels are for short facts.
pub const MAX_LABEL: usize = 64 << 10;

/// Labels, each within [`MAX_LABEL`] (name and value), or an error at the
/// value that is not.
fn check_labels(
    src: &Source,
    labels: BTreeMap<String, Spanned<String>>,
    key: &str,
) -> Result<BTreeMap<String, String>, SpecError> {
    labels
        .into_iter()
        .map(|(name, value)| {
            if name.len() + value.get_ref().len() > MAX_LABEL {
                return Err(src.error(
                    value.span().start,
                    format!("{key}.{name}"),
                    format!(
                        "{} bytes: a label is at most {MAX_LABEL} bytes (name and value)",
                        name.len() + value.get_ref().len()
                    ),
                ));
            }
            Ok((name, value.into_inner()))
        })
        .collect()
}

/// `cache_to` / `cache_from` entries, parsed as the command line parses them,
/// a local cache's directory under the spec's path policy (a spec must not
/// write or read caches elsewhere on the runner); an error names the entry's
/// place in the file.
fn check_cache_entries<T>(
    src: &Source,
    policy: &PathPolicy,
    entries: Vec<Spanned<String>>,
    key: &str,
) -> Result<Vec<T>, SpecError>
where
    T: std::str::FromStr<Err = crate::options::OptionError> + crate::options::LocalCachePath,
{
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let fail =
                |reason: String| src.error(e.span().start, format!("{key}[{}]", i + 1), reason);
            let mut entry = e.get_ref().parse::<T>().map_err(|err| fail(err.reason))?;
            if let Some(path) = entry.local_path() {
                *path = policy.resolve_new(&path.to_string_lossy()).map_err(fail)?;
            }
            Ok(entry)
        })
        .collect()
}

/// The items of a "table or array of tables" key, with the key path of each.
fn numbered<T>(value: Option<SeqOrMap<Vec<T>, T>>, key: &str) -> Vec<(T, String)> {
    match value {
        None => Vec::new(),
        Some(SeqOrMap::Map(one)) => vec![(one, key.to_owned())],
        Some(SeqOrMap::Seq(many)) => many
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, format!("{key}[{}]", i + 1)))
            .collect(),
    }
}

/// Environment variables in file order, with valid names.
fn check_vars(
    src: &Source,
    vars: RawVars,
    key: &str,
    at: usize,
) -> Result<Vec<(String, String)>, SpecError> {
    let mut vars: Vec<(Spanned<String>, String)> = vars.into_iter().collect();
    vars.sort_by_key(|(k, _)| k.span().start);
    vars.into_iter()
        .map(|(name, value)| {
            let n = name.get_ref();
            if n.is_empty() || n.contains('=') || n.contains('\0') {
                let at = if name.span().is_empty() {
                    at
                } else {
                    name.span().start
                };
                Err(src.error(
                    at,
                    key,
                    format!("{n:?} is not a variable name (no '=', not empty)"),
                ))
            } else {
                Ok((name.into_inner(), value))
            }
        })
        .collect()
}

/// A package list, as its tool checks it, located in the file.
fn check_packages(
    src: &Source,
    list: Spanned<Vec<String>>,
    tool: Tool,
    key: &str,
) -> Result<Vec<String>, SpecError> {
    let at = list.span().start;
    let list = list.into_inner();
    crate::tools::check_packages(tool, &list).map_err(|why| src.error(at, key, why))?;
    Ok(list)
}

/// A toolchain table names exactly one step kind.
fn check_one_kind(src: &Source, key: &str, at: usize, raw: &RawStep) -> Result<(), SpecError> {
    let present: Vec<(&str, usize)> = [
        raw.apt.as_ref().map(|v| v.span().start),
        raw.pip.as_ref().map(|v| v.span().start),
        raw.npm.as_ref().map(|v| v.span().start),
        raw.run.as_ref().map(|v| v.span().start),
        raw.env.as_ref().map(|v| v.span().start),
        raw.workdir.as_ref().map(|v| v.span().start),
        raw.user.as_ref().map(|v| v.span().start),
    ]
    .into_iter()
    .zip(STEP_KINDS)
    .filter_map(|(at, kind)| at.map(|at| (kind, at)))
    .collect();
    match present.as_slice() {
        [] => Err(src.error(
            at,
            key,
            format!("a step needs one of {}", STEP_KINDS.join(", ")),
        )),
        [_] => Ok(()),
        [.., (_, second_at)] => {
            let kinds: Vec<&str> = present.iter().map(|(k, _)| *k).collect();
            Err(src.error(
                *second_at,
                key,
                format!(
                    "a step has exactly one of {}; this one has {} (split it into several steps)",
                    STEP_KINDS.join(", "),
                    kinds.join(" and ")
                ),
            ))
        }
    }
}

/// A `run` step: a script, and absolute cache paths.
fn check_run(
    src: &Source,
    key: &str,
    script: Spanned<String>,
    cache: Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<StepKind, SpecError> {
    if script.get_ref().trim().is_empty() {
        return Err(src.error(
            script.span().start,
            format!("{key}.run"),
            "run needs a script",
        ));
    }
    let mut paths = Vec::new();
    for path in cache.map(Spanned::into_inner).unwrap_or_default() {
        if !path.get_ref().starts_with('/') {
            return Err(src.error(
                path.span().start,
                format!("{key}.cache"),
                format!("cache paths are absolute; {:?} is not", path.get_ref()),
            ));
        }
        paths.push(path.into_inner());
    }
    Ok(StepKind::Tool(ToolStep::Run {
        script: script.into_inner(),
        cache: paths,
    }))
}

/// One toolchain table: exactly one kind, `cache` only with `run`, no empty lists.
fn check_step(src: &Source, key: &str, step: Spanned<RawStep>) -> Result<Step, SpecError> {
    let step_at = step.span().start;
    let raw = step.into_inner();
    let field = |k: &str| format!("{key}.{k}");
    check_one_kind(src, key, step_at, &raw)?;
    if let (Some(cache), None) = (&raw.cache, &raw.run) {
        return Err(src.error(
            cache.span().start,
            field("cache"),
            "cache is only valid with run (apt, pip and npm steps get their cache mounts already)",
        ));
    }
    let name = raw.name.filter(|n| !n.trim().is_empty());
    let kind = if let Some(list) = raw.apt {
        StepKind::Tool(ToolStep::Apt(check_packages(
            src,
            list,
            Tool::Apt,
            &field("apt"),
        )?))
    } else if let Some(list) = raw.pip {
        StepKind::Tool(ToolStep::Pip(check_packages(
            src,
            list,
            Tool::Pip,
            &field("pip"),
        )?))
    } else if let Some(npm) = raw.npm {
        let span = npm.span();
        let (packages, dir) = match npm.into_inner() {
            SeqOrMap::Seq(packages) => (packages, None),
            SeqOrMap::Map(d) => (d.packages, d.dir),
        };
        if dir.as_deref().is_some_and(|d| d.trim().is_empty()) {
            return Err(src.error(span.start, field("npm.dir"), "must not be empty"));
        }
        let packages = check_packages(src, Spanned::new(span, packages), Tool::Npm, &field("npm"))?;
        StepKind::Tool(ToolStep::Npm { packages, dir })
    } else if let Some(script) = raw.run {
        check_run(src, key, script, raw.cache)?
    } else if let Some(env) = raw.env {
        let at = env.span().start;
        let vars = check_vars(src, env.into_inner(), &field("env"), at)?;
        if vars.is_empty() {
            return Err(src.error(at, field("env"), "env needs at least one variable"));
        }
        StepKind::Env(vars)
    } else if let Some(w) = raw.workdir {
        if w.get_ref().trim().is_empty() {
            return Err(src.error(w.span().start, field("workdir"), "must not be empty"));
        }
        StepKind::Workdir(w.into_inner())
    } else if let Some(u) = raw.user {
        if u.get_ref().trim().is_empty() {
            return Err(src.error(u.span().start, field("user"), "must not be empty"));
        }
        StepKind::User(u.into_inner())
    } else {
        // `present` held exactly one kind.
        return Err(src.error(step_at, key, "a step needs a kind"));
    };
    Ok(Step { name, kind })
}

fn check_copy(
    src: &Source,
    policy: &PathPolicy,
    copy: RawCopy,
    key: &str,
) -> Result<OverlayItem, SpecError> {
    let from = copy.from.get_ref();
    let at = copy.from.span().start;
    if from.trim().is_empty() {
        return Err(src.error(at, format!("{key}.from"), "must not be empty"));
    }
    let path = policy
        .resolve(from)
        .map_err(|e| src.error(at, format!("{key}.from"), e))?;
    if !path.is_dir() {
        return Err(src.error(
            at,
            format!("{key}.from"),
            format!("{from:?} is not a directory ({})", path.display()),
        ));
    }
    if copy.to.get_ref().trim().is_empty() {
        return Err(src.error(
            copy.to.span().start,
            format!("{key}.to"),
            "must not be empty",
        ));
    }
    Ok(OverlayItem::Copy {
        shown: policy.shown(&path),
        from: path,
        to: copy.to.into_inner(),
        exclude: copy.exclude,
    })
}

fn check_git(src: &Source, git: RawGit, key: &str) -> Result<OverlayItem, SpecError> {
    if git.url.get_ref().trim().is_empty() {
        return Err(src.error(
            git.url.span().start,
            format!("{key}.url"),
            "must not be empty",
        ));
    }
    if url_has_credentials(git.url.get_ref()) {
        return Err(src.error(
            git.url.span().start,
            format!("{key}.url"),
            "the URL carries credentials, which would be kept in the image's history and \
             the daemon's cache keys; give a token as a secret instead: \
             --secret id=GIT_AUTH_TOKEN,src=FILE",
        ));
    }
    if git.to.get_ref().trim().is_empty() {
        return Err(src.error(
            git.to.span().start,
            format!("{key}.to"),
            "must not be empty",
        ));
    }
    Ok(OverlayItem::Git {
        url: git.url.into_inner(),
        reference: git.reference,
        to: git.to.into_inner(),
    })
}

/// `scheme://user[:token]@host/…`: credentials in the URL's authority (not
/// `git@host:path`, the ssh form, whose user is no secret).
fn url_has_credentials(url: &str) -> bool {
    url.split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(rest))
        .is_some_and(|authority| authority.contains('@'))
}

#[cfg(test)]
mod tests;
