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
    /// `x-` extensions, `networks`, `volumes`…: nothing strata builds.
    #[serde(flatten)]
    other: BTreeMap<String, serde_yaml_ng::Value>,
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
    let mut notes = Vec::new();
    let services = read_services(files, &mut notes)?;
    let mut images = Vec::new();
    for (name, (file, service)) in services {
        if let Some(build) = service.build {
            let image = service_image(&name, &file, build, service.image, &policy, &mut notes)?;
            images.push(image);
        }
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

/// Every service of `files`, a later file's `build` and `image` replacing
/// an earlier one's, with the file that said it last.
fn read_services(
    files: &[PathBuf],
    notes: &mut Vec<String>,
) -> Result<BTreeMap<String, (PathBuf, RawService)>, ComposeError> {
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
        for key in raw.other.keys().filter(|k| k.starts_with("x-")) {
            notes.push(format!("{}: extension {key} is ignored", file.display()));
        }
        for (name, service) in raw.services {
            let empty = RawService {
                build: None,
                image: None,
            };
            let entry = services
                .entry(name)
                .or_insert_with(|| (file.clone(), empty));
            entry.0 = file.clone();
            if service.build.is_some() {
                entry.1.build = service.build;
            }
            if service.image.is_some() {
                entry.1.image = service.image;
            }
        }
    }
    Ok(services)
}

/// Service `name` (of `file`) as a Dockerfile image of the spec.
fn service_image(
    name: &str,
    file: &Path,
    build: RawBuild,
    image: Option<String>,
    policy: &PathPolicy,
    notes: &mut Vec<String>,
) -> Result<Image, ComposeError> {
    let fail = |message: String| ComposeError {
        file: file.to_owned(),
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
    // The Dockerfile is read and its directory served: the same policy.
    let dockerfile = context.join(section.dockerfile.as_deref().unwrap_or("Dockerfile"));
    let dockerfile = policy
        .resolve(&dockerfile.to_string_lossy())
        .map_err(|e| fail(format!("dockerfile: {e}")))?;
    let dockerfile = Dockerfile::new(dockerfile, context, section.target, section.args.into_map())
        .map_err(fail)?;
    let push = image
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
    Ok(Image {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_services_become_dockerfile_images() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["web", "api"] {
            std::fs::create_dir(root.join(d)).unwrap();
            std::fs::write(root.join(d).join("Dockerfile"), "FROM scratch\n").unwrap();
        }
        std::fs::write(root.join("api/Other.dockerfile"), "FROM scratch\n").unwrap();
        let compose = root.join("compose.yaml");
        std::fs::write(
            &compose,
            "x-shared: {}\nservices:\n  Web:\n    build: ./web\n    image: reg:5000/web:1\n\
             \x20 api:\n    build:\n      context: api\n      dockerfile: Other.dockerfile\n\
             \x20     args: [A=1, B]\n      target: prod\n      cache_from: [x]\n\
             \x20     labels: {l: v}\n  db:\n    image: postgres\n",
        )
        .unwrap();
        let (spec, notes) = load(std::slice::from_ref(&compose), &[]).unwrap();
        assert_eq!(spec.names(), ["web", "api"]);
        let Base::Dockerfile(api) = &spec.image("api").unwrap().base else {
            panic!("a dockerfile image")
        };
        assert!(api.file.ends_with("api/Other.dockerfile"));
        assert_eq!(api.target.as_deref(), Some("prod"));
        assert_eq!(api.args["A"], "1");
        assert_eq!(api.args["B"], "");
        assert_eq!(spec.image("api").unwrap().settings.labels["l"], "v");
        assert_eq!(
            spec.image("web")
                .unwrap()
                .push
                .as_ref()
                .unwrap()
                .to_string(),
            "reg:5000/web:1"
        );
        assert!(
            notes.iter().any(|n| n.contains("extension x-shared")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("services.api.build.cache_from")),
            "{notes:?}"
        );

        std::fs::write(
            &compose,
            "services:\n  a:\n    build:\n      context: [1, 2\n",
        )
        .unwrap();
        let e = load(std::slice::from_ref(&compose), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("compose.yaml:5:") && e.contains("line 4"), "{e}");
    }
}
