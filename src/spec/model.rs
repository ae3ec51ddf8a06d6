//! The checked spec: images with their base, toolchain steps, overlay,
//! settings and caches, as `parse` makes them (or code does: `--dockerfile`,
//! compose files).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::paths::{LocalPath, PlatformPath};
use super::{Dockerfile, Place, SpecError};
use crate::llb::{Platform, Platforms};
use crate::options::{CacheExport, CacheImport};
use crate::reference::ImageRef;
use crate::tools::ToolStep;

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
    /// `platforms = [..]`: the step runs only when the image is built for
    /// one of these; `None` runs it for every platform.
    pub platforms: Option<Platforms>,
}

impl Step {
    /// Whether an image built for `platform` runs this step.
    pub fn runs_for(&self, platform: &Platform) -> bool {
        self.platforms.as_ref().is_none_or(|p| p.contains(platform))
    }
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
        from: CopyFrom,
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

/// Where an overlay copy reads: one directory, or one per platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFrom {
    Dir(LocalPath),
    /// `from` names the platform (`rootfs/{arch}`): each platform's
    /// directory is checked when the image is lowered for it, and a missing
    /// one is an error at `at`.
    PerPlatform {
        path: PlatformPath,
        at: Place,
    },
}

impl CopyFrom {
    /// The directory an image built for `platform` copies.
    pub fn dir_for(&self, platform: &Platform) -> Result<LocalPath, SpecError> {
        match self {
            CopyFrom::Dir(dir) => Ok(dir.clone()),
            CopyFrom::PerPlatform { path, at } => path.dir_for(platform).map_err(|e| at.error(e)),
        }
    }
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
    pub platform: Option<Platforms>,
    pub settings: ImageSettings,
    pub steps: Vec<Step>,
    /// Copies first, then git checkouts.
    pub overlay: Vec<OverlayItem>,
    pub push: Option<ImageRef>,
    pub cache_to: Vec<CacheExport>,
    pub cache_from: Vec<CacheImport>,
    /// SLSA provenance the daemon attaches to each platform (none: off).
    pub provenance: Option<crate::options::ProvenanceMode>,
    /// The SBOM generator the daemon runs for each platform (none: no SBOM).
    pub sbom: Option<crate::options::SbomGenerator>,
}

/// A parsed, checked strata.toml.
#[derive(Debug, Clone)]
pub struct Spec {
    pub(super) path: PathBuf,
    /// The directory relative paths of the spec are taken from (absolute when it exists).
    pub(super) dir: PathBuf,
    pub(super) ca_cert: Option<PathBuf>,
    /// In file order.
    pub(super) images: Vec<Image>,
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

impl Spec {
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
            provenance: None,
            sbom: None,
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
    pub(super) fn error(&self, message: String) -> SpecError {
        SpecError {
            file: self.path.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message,
        }
    }

    /// An image by name, or an error listing the spec's images.
    pub(super) fn named(&self, name: &str) -> Result<&Image, SpecError> {
        self.image(name).ok_or_else(|| {
            self.error(format!(
                "no image named {name:?} (images: {})",
                self.names().join(", ")
            ))
        })
    }
}
