//! Spec → LLB. Each toolchain step is one exec op (one layer) with the cache
//! mounts of its package manager; the overlay comes last, from local sources
//! whose LLB does not depend on file contents, so editing the overlay never
//! changes a toolchain op's digest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_spec::image::ImageConfiguration;
use serde_json::{json, Value};

use super::{Base, Image, OverlayItem, Spec, SpecError, StepKind};
use crate::llb::exec::{presets, DEFAULT_PATH};
use crate::llb::source::{self, LocalOptions};
use crate::llb::{Copy, Definition, FileAction, Mount, Platform, Run, State};

/// Where the CA bundle is mounted in toolchain steps (a secret: never in a layer).
pub const CA_MOUNT: &str = "/run/secrets/strata-ca.crt";

/// The variables that make apt, pip, npm, curl, git and Python trust [`CA_MOUNT`].
const CA_ENV: &[&str] = &[
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "npm_config_cafile",
    "GIT_SSL_CAINFO",
];

/// Build-wide settings that shape the LLB.
#[derive(Debug, Clone, Default)]
pub struct LowerOptions {
    /// Secret id of a CA bundle to trust in every toolchain step.
    pub ca_cert: Option<String>,
    /// Overrides every image's platform.
    pub platform: Option<Platform>,
}

/// A local directory the session must serve for this image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDirSpec {
    pub path: PathBuf,
    pub exclude: Vec<String>,
}

/// One step as the spec names it (for reports and benchmarks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInfo {
    /// The name progress shows, e.g. `[codex 2/6] apt install git curl`.
    pub name: String,
    /// `apt`, `pip`, `npm`, `run`, `overlay`, `git`.
    pub kind: &'static str,
}

/// An image of the spec as LLB, with what its solve needs.
#[derive(Debug, Clone)]
pub struct LoweredImage {
    pub name: String,
    pub state: State,
    pub definition: Definition,
    /// The OCI image config (`application/vnd.oci.image.config.v1+json`) the
    /// image exporter writes: the base's config with the spec's env, workdir,
    /// user, entrypoint, cmd and labels over it; `architecture`/`os`/`variant`
    /// from the platform; empty `rootfs.diff_ids` (the daemon fills them).
    /// Deserializes as an `oci_spec::image::ImageConfiguration`.
    pub config: Value,
    /// `local://NAME` sources → directories.
    pub local_dirs: BTreeMap<String, LocalDirSpec>,
    pub push: Option<String>,
    pub cache_to: Vec<String>,
    pub cache_from: Vec<String>,
    pub steps: Vec<StepInfo>,
}

/// Quotes a word for `/bin/sh` (package names, versions, paths).
fn quote(word: &str) -> String {
    // `~` is only special at the start of a word (tilde expansion).
    let plain = !word.is_empty()
        && !word.starts_with('~')
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-~^".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn words(list: &[String]) -> String {
    list.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// Expands `$NAME` and `${NAME}` from `state`'s environment (unknown: empty).
fn expand(value: &str, state: &State) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(state.get_env(name).unwrap_or(""));
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

fn first_line(script: &str, max: usize) -> String {
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// An image's state so far, with what later images built `from` it inherit.
struct Lowering {
    state: State,
    config: Value,
    /// The image's history: the base's, then one entry per layer a step adds.
    /// Giving it to the exporter keeps the image identical when its layers
    /// come from imported cache (BuildKit would otherwise describe them as
    /// "imported sha256:…", which changes the config and the image digest).
    history: Vec<Value>,
    local_dirs: BTreeMap<String, LocalDirSpec>,
    steps: Vec<StepInfo>,
}

/// The history of a base image (every entry, empty layers included).
fn base_history(config: Option<&ImageConfiguration>) -> Vec<Value> {
    config
        .and_then(|c| serde_json::to_value(c).ok())
        .and_then(|v| v.get("history").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// A history entry for a layer a step of the spec adds.
fn step_history(name: &str) -> Value {
    json!({"created_by": name, "comment": "strata"})
}

/// The image config of a base image, as JSON we can merge into.
fn base_config(config: Option<&ImageConfiguration>) -> Value {
    config
        .and_then(|c| serde_json::to_value(c).ok())
        .and_then(|v| v.get("config").cloned())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// The start of an image's lowering: `state` (its base) with the base
/// config's environment, working directory and user applied.
fn starting_from(mut state: State, base: Option<&ImageConfiguration>) -> Lowering {
    let config = base_config(base);
    for kv in config["Env"].as_array().into_iter().flatten() {
        if let Some((k, v)) = kv.as_str().and_then(|s| s.split_once('=')) {
            state = state.env(k, v);
        }
    }
    // As Dockerfiles do: an image without PATH gets the default one,
    // so `PATH = "/x:$PATH"` extends it rather than replacing it.
    if state.get_env("PATH").is_none() {
        state = state.env("PATH", DEFAULT_PATH);
    }
    if let Some(w) = config["WorkingDir"].as_str().filter(|w| !w.is_empty()) {
        state = state.dir(w);
    }
    if let Some(u) = config["User"].as_str().filter(|u| !u.is_empty()) {
        state = state.user(u);
    }
    Lowering {
        state,
        config,
        history: base_history(base),
        local_dirs: BTreeMap::new(),
        steps: Vec::new(),
    }
}

impl Spec {
    /// The platform an image builds for: `--platform`, else its own, else the
    /// one of the image it is built `from`, else the host's.
    fn platform_of(&self, image: &Image, options: &LowerOptions) -> Platform {
        if let Some(p) = options.platform.clone().or_else(|| image.platform.clone()) {
            return p;
        }
        let mut current = image;
        // Parse rejected cycles; the bound keeps this certain to end.
        for _ in 0..self.images.len() {
            let Base::From(parent) = &current.base else {
                break;
            };
            let Some(parent) = self.image(parent) else {
                break;
            };
            if let Some(p) = &parent.platform {
                return p.clone();
            }
            current = parent;
        }
        Platform::host()
    }

    /// Lowers image `name` (and what it is built `from`) to LLB. `bases` holds
    /// the configs of the registry base images ([`Spec::base_refs`]); a missing
    /// one is treated as empty (the daemon's default PATH still applies).
    pub fn lower(
        &self,
        name: &str,
        bases: &BTreeMap<String, ImageConfiguration>,
        options: &LowerOptions,
    ) -> Result<LoweredImage, SpecError> {
        let image = self.named(name)?;
        let lowered = self.lower_image(image, bases, options, 0)?;
        let platform = lowered.state.get_platform().clone();
        let mut config = json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "config": lowered.config,
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": lowered.history,
        });
        if !platform.variant.is_empty() {
            config["variant"] = json!(platform.variant);
        }
        Ok(LoweredImage {
            name: image.name.clone(),
            definition: lowered.state.marshal(),
            state: lowered.state,
            config,
            local_dirs: lowered.local_dirs,
            push: image.push.clone(),
            cache_to: image.cache_to.clone(),
            cache_from: image.cache_from.clone(),
            steps: lowered.steps,
        })
    }

    fn lower_image(
        &self,
        image: &Image,
        bases: &BTreeMap<String, ImageConfiguration>,
        options: &LowerOptions,
        depth: usize,
    ) -> Result<Lowering, SpecError> {
        let platform = self.platform_of(image, options);
        let mut at = match &image.base {
            Base::From(parent) if depth <= self.images.len() => {
                self.lower_image(self.named(parent)?, bases, options, depth + 1)?
            }
            Base::From(parent) => {
                return Err(SpecError {
                    file: self.path.clone(),
                    line: 0,
                    column: 0,
                    key: String::new(),
                    message: format!(
                        "image {}: the from chain through {parent} loops",
                        image.name
                    ),
                })
            }
            Base::Image(reference) => starting_from(
                source::image_for(reference, &platform, Some(&format!("base {reference}"))),
                bases.get(reference),
            ),
            Base::Scratch => starting_from(State::scratch(), None),
        };
        at.state = at.state.platform(platform.clone());
        let s = &image.settings;
        for (k, v) in &s.env {
            let value = expand(v, &at.state);
            at.state = at.state.env(k, &value);
        }
        if let Some(w) = &s.workdir {
            at.state = at.state.dir(w);
        }
        if let Some(u) = &s.user {
            at.state = at.state.user(u);
        }

        let total = image
            .steps
            .iter()
            .filter(|st| {
                !matches!(
                    st.kind,
                    StepKind::Env(_) | StepKind::Workdir(_) | StepKind::User(_)
                )
            })
            .count()
            + image.overlay.len();
        let mut number = 0;
        // Keep in step with `is_spec_step`.
        let mut label = |what: &str, custom: &Option<String>| {
            number += 1;
            let what = custom.as_deref().unwrap_or(what);
            format!("[{} {number}/{total}] {what}", image.name)
        };
        for step in &image.steps {
            let (run, kind, name) = match &step.kind {
                StepKind::Env(vars) => {
                    for (k, v) in vars {
                        let value = expand(v, &at.state);
                        at.state = at.state.env(k, &value);
                    }
                    continue;
                }
                StepKind::Workdir(w) => {
                    at.state = at.state.dir(w);
                    continue;
                }
                StepKind::User(u) => {
                    at.state = at.state.user(u);
                    continue;
                }
                StepKind::Apt(packages) => {
                    let ca = if options.ca_cert.is_some() {
                        format!(" -o Acquire::https::CAInfo={CA_MOUNT}")
                    } else {
                        String::new()
                    };
                    // Debian images delete downloaded .debs after each install
                    // (docker-clean); keep them, in the cache mount.
                    let script = format!(
                        "set -e; rm -f /etc/apt/apt.conf.d/docker-clean; \
                         echo 'Binary::apt::APT::Keep-Downloaded-Packages \"true\";' > /etc/apt/apt.conf.d/keep-cache; \
                         apt-get{ca} update; \
                         DEBIAN_FRONTEND=noninteractive apt-get{ca} install -y --no-install-recommends {}",
                        words(packages)
                    );
                    let name = label(&format!("apt install {}", packages.join(" ")), &step.name);
                    (
                        Run::shell(&script).mounts(presets::apt(&platform)),
                        "apt",
                        name,
                    )
                }
                StepKind::Pip(packages) => {
                    let script = format!(
                        "python3 -m pip install --break-system-packages {}",
                        words(packages)
                    );
                    let name = label(&format!("pip install {}", packages.join(" ")), &step.name);
                    (
                        Run::shell(&script).mounts(presets::pip(&platform)),
                        "pip",
                        name,
                    )
                }
                StepKind::Npm { packages, dir } => {
                    let (script, what) = match dir {
                        Some(d) => (
                            format!(
                                "mkdir -p {0} && cd {0} && npm install {1}",
                                quote(d),
                                words(packages)
                            ),
                            format!("npm install {} in {d}", packages.join(" ")),
                        ),
                        None => (
                            format!("npm install -g {}", words(packages)),
                            format!("npm install -g {}", packages.join(" ")),
                        ),
                    };
                    let name = label(&what, &step.name);
                    (
                        Run::shell(&script).mounts(presets::npm(&platform)),
                        "npm",
                        name,
                    )
                }
                StepKind::Run { script, cache } => {
                    let name = label(&format!("run: {}", first_line(script, 60)), &step.name);
                    let mounts = cache.iter().map(|c| presets::custom(c, &platform));
                    (Run::shell(script).mounts(mounts), "run", name)
                }
            };
            let mut run = run.named(&name);
            if let Some(id) = &options.ca_cert {
                // World-readable: steps after `user = "app"` need it too. A
                // certificate bundle is public; what matters is that it is a
                // mount, so it never lands in a layer.
                run = run.mount(Mount::Secret {
                    target: CA_MOUNT.to_owned(),
                    id: id.clone(),
                    mode: 0o444,
                    optional: false,
                });
                for var in CA_ENV {
                    run = run.env(var, CA_MOUNT);
                }
            }
            at.state = at.state.run(run);
            at.history.push(step_history(&name));
            at.steps.push(StepInfo { name, kind });
        }

        for (i, item) in image.overlay.iter().enumerate() {
            match item {
                OverlayItem::Copy { from, to, exclude } => {
                    // Named by position, not content: the LLB stays the same
                    // whatever the directory holds.
                    let local_name = format!("{}-overlay-{i}", image.name);
                    let local = source::local(
                        &local_name,
                        &LocalOptions {
                            exclude: exclude.clone(),
                            shared_key_hint: Some(from.display().to_string()),
                            name: Some(format!("local {}", from.display())),
                            ..LocalOptions::default()
                        },
                    );
                    let name = label(&format!("overlay {} -> {to}", from.display()), &None);
                    at.state = at.state.file(
                        vec![FileAction::copy(Copy::new(&local, "/", to))],
                        Some(&name),
                    );
                    at.local_dirs.insert(
                        local_name,
                        LocalDirSpec {
                            path: from.clone(),
                            exclude: exclude.clone(),
                        },
                    );
                    at.history.push(step_history(&name));
                    at.steps.push(StepInfo {
                        name,
                        kind: "overlay",
                    });
                }
                OverlayItem::Git { url, reference, to } => {
                    let checkout =
                        source::git(url, reference, Some(&format!("git {url} {reference}")));
                    let name = label(&format!("overlay git {url} -> {to}"), &None);
                    at.state = at.state.file(
                        vec![FileAction::copy(Copy::new(&checkout, "/", to))],
                        Some(&name),
                    );
                    at.history.push(step_history(&name));
                    at.history.push(step_history(&name));
                    at.steps.push(StepInfo { name, kind: "git" });
                }
            }
        }

        // The image config: the base's, with the spec's settings and the env,
        // working directory and user the steps left.
        if !at.config.is_object() {
            at.config = json!({});
        }
        let env: Vec<Value> = at
            .state
            .env_list()
            .iter()
            .map(|(k, v)| json!(format!("{k}={v}")))
            .collect();
        let config = &mut at.config;
        if !env.is_empty() {
            config["Env"] = json!(env);
        }
        if at.state.get_dir() != "/" || config.get("WorkingDir").is_some() {
            config["WorkingDir"] = json!(at.state.get_dir());
        }
        if !at.state.get_user().is_empty() {
            config["User"] = json!(at.state.get_user());
        }
        if let Some(e) = &s.entrypoint {
            config["Entrypoint"] = json!(e);
            // As in Dockerfiles: a new entrypoint drops the inherited command.
            if s.cmd.is_none() {
                if let Some(c) = config.as_object_mut() {
                    c.remove("Cmd");
                }
            }
        }
        if let Some(c) = &s.cmd {
            config["Cmd"] = json!(c);
        }
        if !s.labels.is_empty() {
            if !config["Labels"].is_object() {
                config["Labels"] = json!({});
            }
            for (k, v) in &s.labels {
                config["Labels"][k] = json!(v);
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
pub(super) fn quote_for_test(word: &str) -> String {
    quote(word)
}

/// Whether a progress step is one of a spec's own (named `[IMAGE n/N] …`
/// when lowered), rather than what every build does around them: resolving
/// the base, sending local files, exporting.
pub fn is_spec_step(name: &str) -> bool {
    name.starts_with('[') && !name.starts_with("[internal]")
}
