//! Spec → LLB, one module per step kind (as BuildKit's `client/llb` has one
//! file per op): a tool's step (apt, pip, npm, run: `crate::tools`) makes one
//! exec op (one layer) with its tool's cache mounts; `settings` (env, workdir,
//! user) changes what later steps inherit; `overlay_copy` and `overlay_git`
//! come last, from sources whose LLB does not depend on file contents, so
//! editing the overlay never changes a toolchain op's digest. `config` writes
//! the image config, `ca` wires a CA bundle into every toolchain step.
//!
//! Every layer is recorded in one place ([`Lowering::layer`]): its history
//! entry and its [`StepInfo`] with the op's digest, which is what progress,
//! the build summary, `--metadata-file` and `strata bench` count.

mod ca;
mod config;
mod dockerfile;
mod on_frontend;
mod overlay_copy;
mod overlay_git;
mod settings;

use std::collections::BTreeMap;

use oci_spec::image::{Config, History, ImageConfiguration};

use super::{Base, Image, OverlayItem, Spec, SpecError, StepKind};
use crate::llb::exec::DEFAULT_PATH;
use crate::llb::source;
use crate::llb::{Definition, Mount, Platform, Platforms, Run, State};
use crate::options::CacheMountUse;
use crate::options::LocalDir;
use crate::reference::ImageRef;
use crate::tools::{self, Tool};

pub use ca::CA_MOUNT;
pub use dockerfile::DOCKERFILE_FRONTEND;
pub use on_frontend::{OnFrontend, OnFrontendError};

/// A registry base image as resolved before lowering.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The reference pinned to the digest that was resolved (the index's, for
    /// a multi-platform image).
    pub pinned: ImageRef,
    /// Its config for the platform built (ENV PATH, WORKDIR, …).
    pub config: ImageConfiguration,
    /// The same config as the registry served it: what a Dockerfile
    /// frontend is handed for the `FROM` (so it resolves nothing itself, and
    /// fields `config` does not model reach the image).
    pub config_bytes: bytes::Bytes,
}

impl LoweredImage {
    /// Its own LLB, unless a frontend makes it.
    pub fn llb(&self) -> Option<&LlbImage> {
        match &self.graph {
            ImageGraph::Llb(llb) => Some(llb),
            _ => None,
        }
    }

    /// The frontend that makes it, if one does.
    pub fn frontend(&self) -> Option<&crate::options::Frontend> {
        match &self.graph {
            ImageGraph::Frontend(frontend) => Some(frontend),
            _ => None,
        }
    }
}

/// `config` with `labels` added to its own.
pub fn labelled(config: &mut ImageConfiguration, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    let mut inner = config.config().clone().unwrap_or_default();
    let mut all = inner.labels().clone().unwrap_or_default();
    all.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    inner.set_labels(Some(all));
    config.set_config(Some(inner));
}

/// Build-wide settings that shape the LLB.
#[derive(Debug, Clone, Default)]
pub struct LowerOptions {
    /// Secret id of a CA bundle to trust in every toolchain step.
    pub ca_cert: Option<String>,
    /// The one platform every image is lowered for (a build lowers a
    /// multi-platform image once per platform); none: each image's first.
    pub platform: Option<Platform>,
    /// The commit each git overlay's ref names, resolved before lowering
    /// (`build::git`): the LLB then names the commit, and so does the key.
    pub git_commits: BTreeMap<GitRef, String>,
    /// Dockerfile images pushed earlier in this build, by name, as their
    /// references in the bases (see `BuildPlan::pushed_dockerfiles`).
    pub pushed_dockerfiles: BTreeMap<String, ImageRef>,
}

/// A git overlay's repository and ref, as the spec names them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GitRef {
    pub url: String,
    pub reference: String,
}

/// What made a layer of the spec: a tool's step, an overlay copy or a checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    Tool(Tool),
    Overlay,
    Git,
}

impl std::fmt::Display for LayerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerKind::Tool(tool) => f.write_str(tool.name()),
            LayerKind::Overlay => f.write_str("overlay"),
            LayerKind::Git => f.write_str("git"),
        }
    }
}

impl serde::Serialize for LayerKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One step of the spec that adds a layer, as lowered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepInfo {
    /// The name progress shows, e.g. `[codex 2/6] apt install git curl`.
    pub name: String,
    pub kind: LayerKind,
    /// The digest of its op: the vertex the daemon reports it as.
    pub digest: String,
    /// What it runs (`/bin/sh -c …`), for a toolchain step: a runner falling
    /// back to an ancestor image (`--keep-going`) runs these itself. Empty
    /// for overlay copies and checkouts.
    pub command: Vec<String>,
}

/// What makes an image's filesystem: strata's own LLB, or a frontend.
#[derive(Debug, Clone)]
pub enum ImageGraph {
    /// Boxed: an image config is large beside a frontend's name and options.
    Llb(Box<LlbImage>),
    /// A frontend makes the graph on the daemon (a Dockerfile image); the
    /// image config is the frontend's too.
    Frontend(crate::options::Frontend),
    /// One LLB image per platform, solved together into one image index
    /// (an image lowered once per platform it is built for).
    Platforms(Vec<(Platform, LlbImage)>),
    /// Built `from` a Dockerfile image, in the same solve: per platform (one
    /// or several, one index), its steps lowered on the frontend's result.
    OnFrontend(Vec<(Platform, OnFrontend)>),
}

/// An image strata lowered to LLB itself.
#[derive(Debug, Clone)]
pub struct LlbImage {
    pub state: State,
    pub definition: Definition,
    /// The OCI image config the image exporter writes (see `config`).
    pub config: ImageConfiguration,
}

/// An image of the spec lowered, with what its solve needs.
#[derive(Debug, Clone)]
pub struct LoweredImage {
    pub name: String,
    pub graph: ImageGraph,
    /// `local://NAME` sources → directories.
    pub local_dirs: BTreeMap<String, LocalDir>,
    /// Every step of the image's graph, its `from` images' first.
    pub steps: Vec<StepInfo>,
    /// The cache mounts its steps use (its `from` images' too), each id once.
    pub cache_mounts: Vec<CacheMountUse>,
    /// The platform it is built for, resolved once here.
    pub platform: Platform,
    /// Why its content key cannot stand for it (see `Dockerfile::unkeyable`;
    /// an image built `from` such an image inherits it): it is then always
    /// solved and never key-tagged.
    pub unkeyable: Option<String>,
}

/// An image's state so far, with what images built `from` it inherit.
#[derive(Debug, Clone)]
pub(super) struct Lowering {
    state: State,
    config: Config,
    history: Vec<History>,
    local_dirs: BTreeMap<String, LocalDir>,
    steps: Vec<StepInfo>,
    /// The secret id of the CA bundle toolchain steps trust, if any.
    ca_secret: Option<String>,
    /// Where the image (its `from` chain) started.
    base: State,
    cache_mounts: Vec<CacheMountUse>,
}

impl Lowering {
    /// The start of an image: `state` (its base) with the base config's
    /// environment, working directory and user applied.
    fn starting_from(
        state: State,
        base: Option<&ImageConfiguration>,
        options: &LowerOptions,
    ) -> Lowering {
        let config = config::of_base(base);
        let mut state = config
            .env()
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('='))
            .fold(state, |s, (k, v)| s.env(k, v));
        // As Dockerfiles do: an image without PATH gets the default one,
        // so `PATH = "/x:$PATH"` extends it rather than replacing it.
        if state.get_env("PATH").is_none() {
            state = state.env("PATH", DEFAULT_PATH);
        }
        if let Some(w) = config.working_dir().as_deref().filter(|w| !w.is_empty()) {
            state = state.dir(w);
        }
        if let Some(u) = config.user().as_deref().filter(|u| !u.is_empty()) {
            state = state.user(u);
        }
        Lowering {
            base: state.clone(),
            state,
            config,
            history: config::history_of_base(base),
            local_dirs: BTreeMap::new(),
            steps: Vec::new(),
            ca_secret: options.ca_cert.clone(),
            cache_mounts: Vec::new(),
        }
    }

    /// Records a layer: `state` becomes current, with its history entry and step.
    fn layer(&mut self, state: State, name: String, kind: LayerKind, command: Vec<String>) {
        self.history.push(config::step_history(&name));
        self.steps.push(StepInfo {
            digest: state.digest().unwrap_or_default(),
            name,
            kind,
            command,
        });
        self.state = state;
    }

    /// Runs a toolchain step named `name` (with the CA bundle, if any).
    fn run(&mut self, run: Run, name: String, kind: LayerKind) {
        let mut run = run.named(&name);
        if let Some(id) = &self.ca_secret {
            run = ca::trust(run, id);
        }
        let command = run.command().to_vec();
        self.record_cache_mounts(&run, kind);
        let state = self.state.run(run);
        self.layer(state, name, kind, command);
    }
}

impl Lowering {
    /// Notes the cache mounts of `run` (a step of kind `kind`), each id once.
    fn record_cache_mounts(&mut self, run: &Run, kind: LayerKind) {
        let LayerKind::Tool(tool) = kind else {
            return;
        };
        for mount in run.get_mounts() {
            let Mount::Cache {
                id,
                target,
                sharing,
                ..
            } = mount
            else {
                continue;
            };
            if self.cache_mounts.iter().any(|m| m.id == *id) {
                continue;
            }
            self.cache_mounts.push(CacheMountUse {
                id: id.clone(),
                target: target.clone(),
                sharing: *sharing,
                tool,
                rootfs: self.state.clone(),
                base: self.base.clone(),
            });
        }
    }
}

/// Numbers an image's layer-adding steps: `[IMAGE n/N] what`.
struct Labels<'a> {
    image: &'a str,
    number: usize,
    total: usize,
}

impl Labels<'_> {
    fn next(&mut self, what: &str, custom: Option<&str>) -> String {
        self.number += 1;
        let what = custom.unwrap_or(what);
        format!("[{} {}/{}] {what}", self.image, self.number, self.total)
    }
}

impl Image {
    /// How many steps add a layer on `platform` (the `N` of `[IMAGE n/N]`).
    fn layer_count(&self, platform: &Platform) -> usize {
        let adds_layer = |st: &&super::Step| {
            st.runs_for(platform)
                && !matches!(
                    st.kind,
                    StepKind::Env(_) | StepKind::Workdir(_) | StepKind::User(_)
                )
        };
        self.steps.iter().filter(adds_layer).count() + self.overlay.len()
    }
}

impl Spec {
    /// The platform an image builds for: `--platform`, else its own, else the
    /// one of the nearest image of its `from` chain that names one, else the host's.
    fn platform_of(&self, image: &Image, options: &LowerOptions) -> Platform {
        match &options.platform {
            Some(forced) => forced.clone(),
            None => self.platforms_for(image, None).first().clone(),
        }
    }

    /// [`Spec::platform_of`] with the `--platform` override given alone.
    pub fn platforms_for(&self, image: &Image, forced: Option<&Platforms>) -> Platforms {
        forced
            .cloned()
            .or_else(|| self.from_chain(image).find_map(|i| i.platform.clone()))
            .unwrap_or_else(|| Platforms::one(Platform::host()))
    }

    /// Lowers image `name` (and what it is built `from`) to LLB. `bases` holds
    /// the configs of the registry base images ([`Spec::base_refs`]); a missing
    /// one is treated as empty (the daemon's default PATH still applies).
    pub fn lower(
        &self,
        name: &str,
        bases: &BTreeMap<ImageRef, BaseImage>,
        options: &LowerOptions,
    ) -> Result<LoweredImage, SpecError> {
        let mut all = self.lower_all(&[name.to_owned()], bases, options)?;
        Ok(all.remove(0))
    }

    /// Lowers the images `names`, each image of their `from` chains once: an
    /// image's lowering is where the images built from it start.
    pub fn lower_all(
        &self,
        names: &[String],
        bases: &BTreeMap<ImageRef, BaseImage>,
        options: &LowerOptions,
    ) -> Result<Vec<LoweredImage>, SpecError> {
        let mut done: BTreeMap<String, Lowering> = BTreeMap::new();
        for name in self.closure(names)? {
            let image = self.named(&name)?;
            let start = match &image.base {
                Base::From(parent) => done[parent].clone(),
                Base::Image(reference) => {
                    let platform = self.platform_of(image, options);
                    let label = format!("base {reference}");
                    let base = bases.get(reference);
                    // Pulled by the digest its config was read from: a tag
                    // that moves cannot mix one image's config with another's layers.
                    let pulled = base.map_or(reference, |b| &b.pinned);
                    let state = source::image_for(pulled, &platform, Some(&label));
                    Lowering::starting_from(state, base.map(|b| &b.config), options)
                }
                Base::Scratch | Base::Dockerfile(_) => {
                    Lowering::starting_from(State::scratch(), None, options)
                }
            };
            let lowered = self.lower_image(image, start, options)?;
            done.insert(name, lowered);
        }
        names
            .iter()
            .map(|name| self.lowered(name, &done, bases, options))
            .collect()
    }

    /// Image `name` as solved, from the lowerings of its `from` chain.
    fn lowered(
        &self,
        name: &str,
        done: &BTreeMap<String, Lowering>,
        bases: &BTreeMap<ImageRef, BaseImage>,
        options: &LowerOptions,
    ) -> Result<LoweredImage, SpecError> {
        let at = &done[name];
        let image = self.named(name)?;
        let platform = self.platform_of(image, options);
        if let Base::Dockerfile(d) = &image.base {
            return Ok(self.dockerfile(image, d, &platform, done, bases));
        }
        let llb = LlbImage {
            definition: at.state.marshal(),
            state: at.state.clone(),
            config: config::finish(at, &image.settings),
        };
        let mut lowered = LoweredImage {
            name: name.to_owned(),
            graph: ImageGraph::Llb(Box::new(llb.clone())),
            local_dirs: at.local_dirs.clone(),
            steps: at.steps.clone(),
            cache_mounts: at.cache_mounts.clone(),
            platform: platform.clone(),
            unkeyable: None,
        };
        let mut chain: Vec<String> = Vec::new();
        for parent in self.from_chain(image) {
            let Base::Dockerfile(d) = &parent.base else {
                chain.insert(0, parent.name.clone());
                continue;
            };
            // Solved with the Dockerfile image it stands on.
            let on = self.dockerfile(parent, d, &platform, done, bases);
            lowered.unkeyable = on
                .unkeyable
                .as_ref()
                .map(|why| format!("it is built from {}, whose {why}", parent.name));
            lowered.local_dirs.extend(on.local_dirs);
            // Its own steps' cache mounts would be seeded and exported on a
            // rootfs that exists only during the solve: the Dockerfile's travel.
            lowered.cache_mounts = on.cache_mounts;
            let ImageGraph::Frontend(frontend) = on.graph else {
                unreachable!("a Dockerfile image is lowered to its frontend")
            };
            let mut on_frontend = OnFrontend::new(frontend, llb, self, chain, (&platform, options));
            on_frontend.pushed = options
                .pushed_dockerfiles
                .get(&parent.name)
                .and_then(|reference| bases.get(reference))
                .cloned();
            lowered.graph = ImageGraph::OnFrontend(vec![(platform, on_frontend)]);
            break;
        }
        Ok(lowered)
    }

    /// Dockerfile image `image`, with the images of the spec it names in
    /// `FROM` handed to the frontend.
    fn dockerfile(
        &self,
        image: &Image,
        d: &super::Dockerfile,
        platform: &Platform,
        done: &BTreeMap<String, Lowering>,
        bases: &BTreeMap<ImageRef, BaseImage>,
    ) -> LoweredImage {
        let inputs = d
            .spec_froms
            .iter()
            .filter_map(|p| Some((p, done.get(p)?, self.image(p)?)))
            .map(|(p, at, parent)| dockerfile::Input {
                name: p.clone(),
                definition: at.state.marshal(),
                config: config::finish(at, &parent.settings),
                local_dirs: at.local_dirs.clone(),
            })
            .collect();
        dockerfile::lower(image, d, platform, bases, inputs)
    }

    /// `image`'s own settings, toolchain and overlay, on top of `at`.
    fn lower_image(
        &self,
        image: &Image,
        mut at: Lowering,
        options: &LowerOptions,
    ) -> Result<Lowering, SpecError> {
        let platform = self.platform_of(image, options);
        at.state = settings::target_platform(at.state.platform(platform.clone()), &platform);
        let s = &image.settings;
        at.state = settings::env(at.state, &s.env);
        if let Some(w) = &s.workdir {
            at.state = at.state.dir(w);
        }
        if let Some(u) = &s.user {
            at.state = at.state.user(u);
        }
        let mut labels = Labels {
            image: &image.name,
            number: 0,
            total: image.layer_count(&platform),
        };
        for step in image.steps.iter().filter(|step| step.runs_for(&platform)) {
            let (run, what, kind) = match &step.kind {
                StepKind::Env(vars) => {
                    at.state = settings::env(at.state, vars);
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
                StepKind::Tool(step) => {
                    let context = tools::Context {
                        platform: at.state.get_platform(),
                        ca_file: at.ca_secret.as_ref().map(|_| CA_MOUNT),
                    };
                    let (run, what) = step.lower(&context);
                    (run, what, LayerKind::Tool(step.tool()))
                }
            };
            let name = labels.next(&what, step.name.as_deref());
            at.run(run, name, kind);
        }
        for (i, item) in image.overlay.iter().enumerate() {
            let ((action, what), kind) = match item {
                OverlayItem::Copy { from, to, exclude } => (
                    overlay_copy::lower((&image.name, i), (from, &platform), to, exclude, &mut at)?,
                    LayerKind::Overlay,
                ),
                OverlayItem::Git { url, reference, to } => {
                    let wanted = GitRef {
                        url: url.clone(),
                        reference: reference.clone(),
                    };
                    let commit = options.git_commits.get(&wanted).map(String::as_str);
                    (
                        overlay_git::lower(url, reference, commit, to),
                        LayerKind::Git,
                    )
                }
            };
            let name = labels.next(&what, None);
            let state = at.state.file(vec![action], Some(&name));
            at.layer(state, name, kind, Vec::new());
        }
        Ok(at)
    }
}
