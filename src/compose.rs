//! Compose files' services that have a `build` section, as Dockerfile
//! images of one spec (`strata compose build`): context, dockerfile, args,
//! target, labels, and `image` as the name they are pushed or loaded under.
//! Services without `build` are left out; `x-` extension keys are ignored
//! and so, with a note, are build keys strata does not use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::reference::ImageRef;
use crate::spec::{Base, Dockerfile, Image, ImageSettings, PathPolicy, Spec};

/// A compose file that cannot be used, with where.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ComposeError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Deserialize)]
struct RawCompose {
    #[serde(default)]
    services: BTreeMap<String, RawService>,
}

#[derive(Deserialize)]
struct RawService {
    build: Option<RawBuild>,
    image: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawBuild {
    Context(String),
    Section(BuildSection),
}

#[derive(Deserialize, Default)]
struct BuildSection {
    context: Option<String>,
    dockerfile: Option<String>,
    #[serde(default)]
    args: Pairs,
    target: Option<String>,
    #[serde(default)]
    labels: Pairs,
    #[serde(flatten)]
    other: BTreeMap<String, serde_yaml_ng::Value>,
}

/// A map, or a list of `KEY=VALUE` (compose allows both).
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Pairs {
    #[default]
    None,
    Map(BTreeMap<String, Option<String>>),
    List(Vec<String>),
}

impl Pairs {
    fn into_map(self) -> BTreeMap<String, String> {
        match self {
            Pairs::None => BTreeMap::new(),
            Pairs::Map(map) => map
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect(),
            Pairs::List(list) => list
                .into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (kv, String::new()),
                })
                .collect(),
        }
    }
}

/// The compose files `files` (later ones override a service's build and
/// image) as a spec, with notes on what was ignored. Paths are read only
/// inside the first file's directory unless `allow` lets more in.
pub fn load(files: &[PathBuf], allow: &[PathBuf]) -> Result<(Spec, Vec<String>), ComposeError> {
    let first = files
        .first()
        .cloned()
        .unwrap_or_else(|| "compose.yaml".into());
    let dir = first
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let policy = PathPolicy::new(dir, allow);
    let mut services: BTreeMap<String, (PathBuf, RawService)> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| ComposeError {
            file: file.clone(),
            line: None,
            message: format!("cannot read it: {e}"),
        })?;
        let raw: RawCompose = serde_yaml_ng::from_str(&text).map_err(|e| ComposeError {
            file: file.clone(),
            line: e.location().map(|l| l.line()),
            message: e.to_string(),
        })?;
        for (name, service) in raw.services {
            let entry = services.entry(name).or_insert_with(|| {
                (
                    file.clone(),
                    RawService {
                        build: None,
                        image: None,
                    },
                )
            });
            entry.0 = file.clone();
            if service.build.is_some() {
                entry.1.build = service.build;
            }
            if service.image.is_some() {
                entry.1.image = service.image;
            }
        }
    }
    let mut notes = Vec::new();
    let mut images = Vec::new();
    for (name, (file, service)) in services {
        let Some(build) = service.build else { continue };
        let fail = |message: String| ComposeError {
            file: file.clone(),
            line: None,
            message: format!("services.{name}: {message}"),
        };
        let section = match build {
            RawBuild::Context(context) => BuildSection {
                context: Some(context),
                ..BuildSection::default()
            },
            RawBuild::Section(section) => section,
        };
        for key in section.other.keys().filter(|k| !k.starts_with("x-")) {
            notes.push(format!(
                "{}: services.{name}.build.{key} is ignored",
                file.display()
            ));
        }
        let context = policy
            .resolve(section.context.as_deref().unwrap_or("."))
            .map_err(fail)?;
        let dockerfile = context.join(section.dockerfile.as_deref().unwrap_or("Dockerfile"));
        let dockerfile =
            Dockerfile::new(dockerfile, context, section.target, section.args.into_map())
                .map_err(fail)?;
        let push = service
            .image
            .map(|i| {
                i.parse::<ImageRef>()
                    .map_err(|e| fail(format!("image: {e}")))
            })
            .transpose()?;
        let image_name = name.to_ascii_lowercase();
        if !crate::spec::valid_image_name(&image_name) {
            return Err(fail(
                "a service name strata can use is [a-z0-9][a-z0-9._-]*".into(),
            ));
        }
        images.push(Image {
            name: image_name,
            base: Base::Dockerfile(dockerfile),
            platform: None,
            settings: ImageSettings {
                labels: section.labels.into_map(),
                ..ImageSettings::default()
            },
            steps: Vec::new(),
            overlay: Vec::new(),
            push,
            cache_to: Vec::new(),
            cache_from: Vec::new(),
        });
    }
    if images.is_empty() {
        return Err(ComposeError {
            file: first,
            line: None,
            message: "no service has a build section".into(),
        });
    }
    Ok((Spec::of_images(&first, dir, images), notes))
}
