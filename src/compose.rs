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
    /// The platforms to build for (compose's `build.platforms`).
    #[serde(default)]
    platforms: Vec<String>,
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
    /// Build args: one without a value (`B`, `B:`) takes the variable's
    /// value, as compose does, and is left out when it is unset (the
    /// Dockerfile's default then holds, never an empty string over it).
    fn into_args(self, vars: &Vars) -> BTreeMap<String, String> {
        let given = match self {
            Pairs::None => Vec::new(),
            Pairs::Map(map) => map.into_iter().collect(),
            Pairs::List(list) => list
                .into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (kv, None),
                })
                .collect(),
        };
        given
            .into_iter()
            .filter_map(|(k, v)| {
                let v = v.or_else(|| vars.get(&k))?;
                Some((k, v))
            })
            .collect()
    }

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

/// A compose file strata reads at most this large, and its flow collections
/// (`[`, `{`) at most this deep: both checked before parsing.
const MAX_FILE: u64 = 1 << 20;
const MAX_DEPTH: usize = 64;

/// The variables a compose file is interpolated with: the environment's,
/// then those of the `.env` file beside the first compose file (the
/// environment wins, as compose has it).
pub struct Vars {
    dotenv: BTreeMap<String, String>,
}

impl Vars {
    fn load(dir: &Path) -> Result<Vars, ComposeError> {
        let file = dir.join(".env");
        let mut dotenv = BTreeMap::new();
        if file.exists() {
            let fail = |message: String| ComposeError {
                file: file.clone(),
                line: None,
                message,
            };
            for item in dotenvy::from_path_iter(&file).map_err(|e| fail(e.to_string()))? {
                let (k, v) = item.map_err(|e| fail(e.to_string()))?;
                dotenv.insert(k, v);
            }
        }
        Ok(Vars { dotenv })
    }

    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.dotenv.get(name).cloned())
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
    let vars = Vars::load(dir)?;
    let mut notes = Vec::new();
    let services = read_services(files, &vars, &mut notes)?;
    let mut images: Vec<Image> = Vec::new();
    for (name, (file, service)) in services {
        if let Some(build) = service.build {
            let service = Service {
                name: &name,
                file: &file,
                image: service.image,
            };
            let image = service_image(&service, build, &policy, &vars, &mut notes)?;
            if images.iter().any(|i| i.name == image.name) {
                return Err(ComposeError {
                    file: file.clone(),
                    line: None,
                    message: format!(
                        "services.{name}: another service also becomes image {} \
                         (image names are lowercase): rename one",
                        image.name
                    ),
                });
            }
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
    vars: &Vars,
    notes: &mut Vec<String>,
) -> Result<BTreeMap<String, (PathBuf, RawService)>, ComposeError> {
    let mut services: BTreeMap<String, (PathBuf, RawService)> = BTreeMap::new();
    for file in files {
        let raw = read_file(file, vars)?;
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

/// One compose file, read within its caps, parsed, interpolated.
fn read_file(file: &Path, vars: &Vars) -> Result<RawCompose, ComposeError> {
    let fail = |line: Option<usize>, message: String| ComposeError {
        file: file.to_owned(),
        line,
        message,
    };
    let size = std::fs::metadata(file)
        .map_err(|e| fail(None, format!("cannot read it: {e}")))?
        .len();
    if size > MAX_FILE {
        return Err(fail(
            None,
            format!("{size} bytes: a compose file strata reads is at most {MAX_FILE}"),
        ));
    }
    let text =
        std::fs::read_to_string(file).map_err(|e| fail(None, format!("cannot read it: {e}")))?;
    if let Some(line) = too_deep(&text) {
        return Err(fail(
            Some(line),
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| fail(e.location().map(|l| l.line()), e.to_string()))?;
    interpolate_all(&mut value, vars).map_err(|message| fail(None, message))?;
    serde_yaml_ng::from_value(value).map_err(|e| fail(None, e.to_string()))
}

/// The line where flow collections (`[`, `{`) first nest past [`MAX_DEPTH`]
/// outside quotes and comments, if they do.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        let mut quote = None;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') => break,
                (None, '[' | '{') => depth += 1,
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_DEPTH {
                return Some(n + 1);
            }
        }
    }
    None
}

/// Every string of `value` interpolated ([`interpolate`]).
fn interpolate_all(value: &mut serde_yaml_ng::Value, vars: &Vars) -> Result<(), String> {
    use serde_yaml_ng::Value;
    match value {
        Value::String(s) => *s = interpolate(s, &|name| vars.get(name))?,
        Value::Sequence(items) => {
            for item in items {
                interpolate_all(item, vars)?;
            }
        }
        Value::Mapping(map) => {
            for (_, item) in map.iter_mut() {
                interpolate_all(item, vars)?;
            }
        }
        Value::Tagged(tagged) => interpolate_all(&mut tagged.value, vars)?,
        _ => {}
    }
    Ok(())
}

/// `text` with `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` filled as
/// the compose spec says, and `$$` a literal `$`. Anything else with a `$`
/// is an error, never passed on half-read.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (expr, tail) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("{text:?}: a ${{ without its }}"))?;
                (&braced[..end], &braced[end + 1..])
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        out.push_str(&expand(expr, lookup).map_err(|e| format!("{text:?}: {e}"))?);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// One `${…}` body expanded.
fn expand(expr: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let name_end = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, op) = expr.split_at(name_end);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "${{{expr}}} does not name a variable (write $$ for a $)"
        ));
    }
    let value = lookup(name);
    let set_nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let (kind, word) = [":-", ":?", ":+", "-", "?", "+"]
        .iter()
        .find_map(|k| op.strip_prefix(k).map(|w| (*k, w)))
        .unwrap_or(("", op));
    Ok(match kind {
        "" if word.is_empty() => value.unwrap_or_default(),
        ":-" if set_nonempty => value.unwrap_or_default(),
        "-" if value.is_some() => value.unwrap_or_default(),
        ":-" | "-" => word.to_owned(),
        ":?" if !set_nonempty => return Err(format!("{name}: {word}")),
        "?" if value.is_none() => return Err(format!("{name}: {word}")),
        ":?" | "?" => value.unwrap_or_default(),
        ":+" if set_nonempty => word.to_owned(),
        "+" if value.is_some() => word.to_owned(),
        ":+" | "+" => String::new(),
        _ => {
            return Err(format!(
                "${{{expr}}}: strata reads only :-, -, :?, ?, :+ and + here"
            ))
        }
    })
}

/// A service being read: its name, the file that said it last, its `image`.
struct Service<'a> {
    name: &'a str,
    file: &'a Path,
    image: Option<String>,
}

/// `service` as a Dockerfile image of the spec.
fn service_image(
    service: &Service,
    build: RawBuild,
    policy: &PathPolicy,
    vars: &Vars,
    notes: &mut Vec<String>,
) -> Result<Image, ComposeError> {
    let Service { name, file, .. } = *service;
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
    let platform = match section.platforms.is_empty() {
        true => None,
        false => Some(
            section
                .platforms
                .join(",")
                .parse::<crate::llb::Platforms>()
                .map_err(|e| fail(format!("build.platforms: {e}")))?,
        ),
    };
    let args = section.args.into_args(vars);
    let dockerfile = Dockerfile::new(dockerfile, context, section.target, args).map_err(fail)?;
    let push = service
        .image
        .clone()
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
        platform,
        settings: ImageSettings {
            labels: section.labels.into_map(),
            ..ImageSettings::default()
        },
        steps: Vec::new(),
        overlay: Vec::new(),
        push,
        cache_to: Vec::new(),
        cache_from: Vec::new(),
        provenance: None,
        sbom: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_as_the_compose_spec_says() {
        let vars = |name: &str| match name {
            "SET" => Some("v".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let cases = [
            ("a$SET-${SET}", "av-v"),
            ("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", "d d  d"),
            ("${SET:+alt}${EMPTY:+alt}${EMPTY+alt}", "altalt"),
            ("$$SET costs $$5", "$SET costs $5"),
        ];
        for (text, want) in cases {
            assert_eq!(interpolate(text, &vars).unwrap(), want, "{text}");
        }
        for bad in [
            "${UNSET:?needed}",
            "${EMPTY:?needed}",
            "${SET",
            "${1X}",
            "${SET/a/b}",
            "$",
        ] {
            assert!(interpolate(bad, &vars).is_err(), "{bad}");
        }
        assert_eq!(interpolate("${SET?x}", &vars).unwrap(), "v");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing_and_names_collide() {
        let deep = format!("services: {}\n", "[".repeat(MAX_DEPTH + 1));
        assert_eq!(too_deep(&deep), Some(1));
        assert_eq!(too_deep("a: \"[[[[\" # [[[[\n"), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let compose = dir.path().join("compose.yaml");
        std::fs::write(
            &compose,
            "services:\n  Web: {build: .}\n  web: {build: .}\n",
        )
        .unwrap();
        let e = load(std::slice::from_ref(&compose), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("also becomes image web"), "{e}");
        std::fs::write(&compose, deep).unwrap();
        let e = load(std::slice::from_ref(&compose), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("compose.yaml:1: nested deeper than 64"), "{e}");
    }

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
        assert!(!api.args.contains_key("B"), "unset, so left out");
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
    }

    #[test]
    fn a_broken_compose_file_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let compose = dir.path().join("compose.yaml");
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
