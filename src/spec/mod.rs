//! strata.toml: named images, each a **base** (an image, or another image of
//! the file), **toolchain** steps (apt, pip, npm, run, env/workdir/user), and an
//! **overlay** (local files, a git checkout) applied last. See docs/spec.md.
//!
//! [`Spec::load`] parses and checks the file, naming file, line and key in every
//! error; [`Spec::lower`] turns an image into LLB (see [`lower`]).

mod lower;
mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::llb::source::normalize_image_ref;
use crate::llb::Platform;
use model::{RawImage, RawSpec, RawStep};

pub use lower::{LocalDirSpec, LowerOptions, LoweredImage, StepInfo};

/// A problem with the spec, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no one place (e.g. an unreadable file).
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `images.codex.toolchain[2]`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SpecError {}

/// One step of an image's toolchain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    Apt(Vec<String>),
    Pip(Vec<String>),
    Npm {
        packages: Vec<String>,
        dir: Option<String>,
    },
    Run {
        script: String,
        cache: Vec<String>,
    },
    Env(Vec<(String, String)>),
    Workdir(String),
    User(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: Option<String>,
    pub kind: StepKind,
}

/// Where an image starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A registry image, normalized (`docker.io/library/debian:bookworm`).
    Image(String),
    /// Another image of the same spec, wired in as its LLB state.
    From(String),
}

/// Part of the overlay, applied after the toolchain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayItem {
    Copy {
        /// Absolute directory on this machine.
        from: PathBuf,
        to: String,
        exclude: Vec<String>,
    },
    Git {
        url: String,
        reference: String,
        to: String,
    },
}

/// Image config settings of the spec (merged over the base image's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSettings {
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub base: Base,
    pub platform: Option<Platform>,
    pub settings: ImageSettings,
    pub steps: Vec<Step>,
    pub overlay: Vec<OverlayItem>,
    pub push: Option<String>,
    pub cache_to: Vec<String>,
    pub cache_from: Vec<String>,
}

/// A parsed, checked strata.toml.
#[derive(Debug, Clone)]
pub struct Spec {
    path: PathBuf,
    ca_cert: Option<PathBuf>,
    /// In file order.
    images: Vec<Image>,
}

/// Turns byte offsets into 1-based line and column.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn at(&self, offset: usize, key: impl Into<String>, message: impl Into<String>) -> SpecError {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        SpecError {
            file: self.path.to_owned(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    /// The table header (`[images.x]`, `[[images.x.toolchain]]`) a position is under.
    fn table_at(&self, offset: usize) -> String {
        let before = &self.text[..offset.min(self.text.len())];
        before
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(['[', ']']).trim().to_owned())
            .unwrap_or_default()
    }
}

fn valid_image_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

impl Spec {
    /// Reads and checks the spec at `path`.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the spec: {e}"),
        })?;
        Spec::parse(&text, path)
    }

    /// Parses and checks spec text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
        let loc = Locator { path, text };
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let message = e.message().trim().replace('\n', " ");
            loc.at(offset, loc.table_at(offset), message)
        })?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);

        let ca_cert = raw.ca_cert.map(|c| dir.join(c.into_inner()));
        let mut raw_images: Vec<_> = raw.images.into_iter().collect();
        raw_images.sort_by_key(|(name, _)| name.span().start);
        let names: Vec<String> = raw_images
            .iter()
            .map(|(n, _)| n.get_ref().clone())
            .collect();
        if names.is_empty() {
            return Err(loc.at(
                0,
                "images",
                "the spec defines no image (add an [images.NAME] table)",
            ));
        }
        let mut images = Vec::new();
        for (name, image) in raw_images {
            let key = format!("images.{}", name.get_ref());
            if !valid_image_name(name.get_ref()) {
                return Err(loc.at(
                    name.span().start,
                    key,
                    "image names are lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
                ));
            }
            let start = image.span().start;
            images.push(check_image(
                &loc,
                &dir,
                &names,
                name.into_inner(),
                start,
                image.into_inner(),
            )?);
        }
        let spec = Spec {
            path: path.to_owned(),
            ca_cert,
            images,
        };
        spec.check_cycles(&loc, text)?;
        Ok(spec)
    }

    /// Rejects `from` chains that loop, naming the loop.
    fn check_cycles(&self, loc: &Locator, text: &str) -> Result<(), SpecError> {
        for image in &self.images {
            let mut chain = vec![image.name.as_str()];
            let mut current = image;
            while let Base::From(parent) = &current.base {
                if chain.contains(&parent.as_str()) {
                    chain.push(parent);
                    let header = format!("[images.{}]", image.name);
                    let offset = text.find(&header).unwrap_or(0);
                    return Err(loc.at(
                        offset,
                        format!("images.{}.from", image.name),
                        format!("cycle {}", chain.join(" -> ")),
                    ));
                }
                chain.push(parent);
                current = self.image(parent).expect("checked: from names an image");
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The CA bundle the spec asks for (absolute), if any.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

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

    /// Every registry base image the spec uses, normalized, once each.
    pub fn base_refs(&self) -> Vec<String> {
        let refs: BTreeSet<String> = self
            .images
            .iter()
            .filter_map(|i| match &i.base {
                Base::Image(r) => Some(r.clone()),
                Base::From(_) => None,
            })
            .collect();
        refs.into_iter().collect()
    }

    /// `wanted` and the images they are built `from`, dependencies first.
    pub fn closure(&self, wanted: &[String]) -> Result<Vec<String>, SpecError> {
        let mut order: Vec<String> = Vec::new();
        for name in wanted {
            let mut chain = Vec::new();
            let mut current = self.image(name).ok_or_else(|| SpecError {
                file: self.path.clone(),
                line: 0,
                column: 0,
                key: String::new(),
                message: format!(
                    "no image named {name:?} (images: {})",
                    self.names().join(", ")
                ),
            })?;
            loop {
                chain.push(current.name.clone());
                match &current.base {
                    Base::From(parent) => {
                        current = self.image(parent).expect("checked: from names an image")
                    }
                    Base::Image(_) => break,
                }
            }
            for name in chain.into_iter().rev() {
                if !order.contains(&name) {
                    order.push(name);
                }
            }
        }
        Ok(order)
    }
}

const STEP_KINDS: &str = "apt, pip, npm, run, env, workdir, user";

fn check_image(
    loc: &Locator,
    dir: &Path,
    names: &[String],
    name: String,
    start: usize,
    raw: RawImage,
) -> Result<Image, SpecError> {
    let prefix = format!("images.{name}");
    let key = |k: &str| format!("{prefix}.{k}");
    let base = match (raw.base, raw.from) {
        (Some(_), Some(from)) => {
            return Err(loc.at(
                from.span().start,
                key("from"),
                "give either base or from, not both",
            ))
        }
        (None, None) => {
            return Err(loc.at(
                start,
                format!("images.{name}"),
                "needs a base (an image reference) or from (another image of this file)",
            ))
        }
        (Some(base), None) => {
            let normalized = normalize_image_ref(base.get_ref())
                .map_err(|e| loc.at(base.span().start, key("base"), e))?;
            Base::Image(normalized)
        }
        (None, Some(from)) => {
            if !names.contains(from.get_ref()) {
                return Err(loc.at(
                    from.span().start,
                    key("from"),
                    format!(
                        "no image named {:?} in this file (images: {})",
                        from.get_ref(),
                        names.join(", ")
                    ),
                ));
            }
            if from.get_ref() == &name {
                return Err(loc.at(
                    from.span().start,
                    key("from"),
                    format!("cycle {name} -> {name}"),
                ));
            }
            Base::From(from.into_inner())
        }
    };
    let platform = match raw.platform {
        Some(p) => Some(
            p.get_ref()
                .parse::<Platform>()
                .map_err(|e| loc.at(p.span().start, key("platform"), e.to_string()))?,
        ),
        None => None,
    };
    let mut steps = Vec::new();
    for (i, step) in raw.toolchain.into_iter().enumerate() {
        let at = step.span().start;
        steps.push(
            check_step(step.into_inner())
                .map_err(|m| loc.at(at, format!("images.{name}.toolchain[{}]", i + 1), m))?,
        );
    }
    let mut overlay = Vec::new();
    if let Some(raw_overlay) = raw.overlay {
        let overlay_at = raw_overlay.span().start;
        let raw_overlay = raw_overlay.into_inner();
        for copy in raw_overlay.copy.map(|c| c.into_vec()).unwrap_or_default() {
            let from = dir.join(&copy.from);
            if !from.is_dir() {
                // Point at the quoted path itself when it can be found.
                let quoted = format!("\"{}\"", copy.from);
                let at = loc.text[overlay_at..]
                    .find(&quoted)
                    .map_or(overlay_at, |i| overlay_at + i);
                return Err(loc.at(
                    at,
                    key("overlay.copy.from"),
                    format!("{} is not a directory", from.display()),
                ));
            }
            overlay.push(OverlayItem::Copy {
                from: std::fs::canonicalize(&from).unwrap_or(from),
                to: absolute(&copy.to),
                exclude: copy.exclude,
            });
        }
        if let Some(git) = raw_overlay.git {
            let at = git.span().start;
            let git = git.into_inner();
            if git.url.trim().is_empty() {
                return Err(loc.at(at, key("overlay.git.url"), "must not be empty"));
            }
            overlay.push(OverlayItem::Git {
                url: git.url,
                reference: git.reference,
                to: absolute(&git.to),
            });
        }
    }
    Ok(Image {
        name,
        base,
        platform,
        settings: ImageSettings {
            env: raw.env.into_iter().collect(),
            workdir: raw.workdir.map(|w| absolute(&w)),
            user: raw.user,
            entrypoint: raw.entrypoint,
            cmd: raw.cmd,
            labels: raw.labels,
        },
        steps,
        overlay,
        push: match raw.push {
            Some(p) => Some(
                normalize_image_ref(p.get_ref())
                    .map(|_| p.get_ref().clone())
                    .map_err(|e| loc.at(p.span().start, key("push"), e))?,
            ),
            None => None,
        },
        cache_to: raw.cache_to,
        cache_from: raw.cache_from,
    })
}

fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// One toolchain table: exactly one kind, `cache` only with `run`, no empty lists.
fn check_step(raw: RawStep) -> Result<Step, String> {
    let non_empty = |kind: &str, list: Vec<String>| {
        if list.is_empty() || list.iter().any(|p| p.trim().is_empty()) {
            Err(format!(
                "{kind} needs at least one package, and no empty names"
            ))
        } else {
            Ok(list)
        }
    };
    let mut kinds = Vec::new();
    if let Some(p) = raw.apt {
        kinds.push(StepKind::Apt(non_empty("apt", p)?));
    }
    if let Some(p) = raw.pip {
        kinds.push(StepKind::Pip(non_empty("pip", p)?));
    }
    if let Some(npm) = raw.npm {
        let (packages, dir) = match npm {
            model::RawNpm::Global(p) => (p, None),
            model::RawNpm::Into(d) => (d.packages, d.dir.map(|d| absolute(&d))),
        };
        kinds.push(StepKind::Npm {
            packages: non_empty("npm", packages)?,
            dir,
        });
    }
    let cache = raw.cache;
    if let Some(script) = raw.run {
        if script.trim().is_empty() {
            return Err("run needs a script".into());
        }
        let cache = cache.clone().unwrap_or_default();
        if let Some(bad) = cache.iter().find(|c| !c.starts_with('/')) {
            return Err(format!("cache paths are absolute; {bad:?} is not"));
        }
        kinds.push(StepKind::Run { script, cache });
    } else if cache.is_some() {
        return Err(
            "cache is only valid with run (apt, pip and npm get their caches automatically)".into(),
        );
    }
    if let Some(env) = raw.env {
        kinds.push(StepKind::Env(env.into_iter().collect()));
    }
    if let Some(w) = raw.workdir {
        kinds.push(StepKind::Workdir(absolute(&w)));
    }
    if let Some(u) = raw.user {
        kinds.push(StepKind::User(u));
    }
    match kinds.len() {
        1 => Ok(Step {
            name: raw.name,
            kind: kinds.pop().expect("one"),
        }),
        0 => Err(format!("a step needs one of {STEP_KINDS}")),
        _ => Err(format!(
            "a step has exactly one of {STEP_KINDS}; split it into several steps"
        )),
    }
}

#[cfg(test)]
mod tests;
