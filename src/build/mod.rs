//! A build: the jobs of a plan ([`crate::spec::Spec::resolve`]) lowered to LLB and solved on
//! one daemon. Images solve at once, each with its own [`SolveOpt`]; the daemon
//! merges the steps they share (an image built `from` another contains its graph).

use std::collections::BTreeMap;

use std::time::Instant;

use futures::StreamExt;

use crate::client::Daemon;
use crate::keys::{tags, ContentKey};
use crate::options::{CacheExport, CacheReport, ExporterResponse, Output};
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryError};
use crate::session::DockerAuth;
use crate::solve::progress::{Deduped, Progress, Step};
use crate::solve::{self, SolveError, SolveOpt, Solved};
use crate::spec::{BuildPlan, ImageGraph, Job, LoweredImage, SpecError};

mod context;
mod fallback;
pub mod git;
mod load;
mod mounts;
mod pool;
mod prepare;
mod registries;
mod summary;

use crate::docker::Docker;
pub use fallback::{Failed, Fallback};
pub use load::{names as load_names, LoadPath, Loaded};
pub use pool::{build_on_pool, TierReport};
use prepare::Prepared;
pub use prepare::{keys, lower, registry_from_env, ImageKey};
pub use summary::{hit_rate, ImageSummary, Summary, TierSummary};

/// The secret id under which the CA bundle reaches the toolchain steps.
pub const CA_SECRET_ID: &str = "strata-ca-cert";

/// One image that was built (or found built).
#[derive(Debug, Clone)]
pub struct Built {
    pub image: String,
    /// Where it was pushed, if it was.
    pub pushed: Option<ImageRef>,
    /// Its content key ([`crate::keys`]).
    pub key: ContentKey,
    /// Its push also went out under its key tag (key tags on, and the image
    /// keyable: see `LoweredImage::unkeyable`).
    pub key_tagged: bool,
    /// Found already built under its key tag: nothing was solved, and
    /// `solved` holds only the digest and how long the check took.
    pub up_to_date: bool,
    pub solved: Solved,
    /// The spec's steps in the image's graph, as lowered.
    pub lowered: Vec<crate::spec::StepInfo>,
    /// How it got into the docker daemon `--load` named.
    pub loaded: Option<Loaded>,
    /// It was made by a frontend (a Dockerfile image).
    pub frontend: bool,
    /// Its cache mounts seeded before the build and exported after (`mounts=`).
    pub mounts: Vec<crate::mounts::MountReport>,
    /// The pool node that built it, in a build over a pool.
    pub node: Option<String>,
}

impl Built {
    /// The spec's steps as the daemon reported them: what the build summary,
    /// `--metadata-file` and `strata bench` count (not resolving the base,
    /// sending local files or exporting, which every build does).
    pub fn spec_steps(&self) -> impl Iterator<Item = &Step> {
        let frontend = self.frontend;
        self.solved.steps.iter().filter(move |s| {
            if frontend {
                return is_dockerfile_step(&s.name);
            }
            self.lowered.iter().any(|l| l.digest == s.digest)
        })
    }

    /// (run, cached) among [`Built::spec_steps`].
    pub fn step_counts(&self) -> (usize, usize) {
        let cached = self.spec_steps().filter(|s| s.cached).count();
        (self.spec_steps().count() - cached, cached)
    }

    /// What each cache export wrote.
    pub fn cache(&self) -> &[CacheReport] {
        &self.solved.cache
    }
}

/// A Dockerfile's own steps as the frontend names them (`[stage 2/5] RUN …`),
/// not its context loading, `FROM` resolution or named contexts.
pub(crate) fn is_dockerfile_step(name: &str) -> bool {
    name.starts_with('[')
        && !name.starts_with("[internal]")
        && !name.starts_with("[context ")
        && !name.contains("] FROM ")
}

/// Why a build could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Docker(#[from] crate::docker::DockerError),
    #[error("dockerfile image {parent}, which others are built from, is not built for these inputs yet ({reference} not found): build it first")]
    ParentNotBuilt { parent: String, reference: String },
    #[error(transparent)]
    Place(#[from] crate::pool::place::PlaceError),
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error("image {image}: {source}")]
    Solve {
        image: String,
        #[source]
        source: SolveError,
    },
}

/// Builds the jobs of `plan` on `daemon`, showing each one's progress through `progress`. An image pushed
/// to a repository that already holds its key tag is not solved: the push
/// target is pointed at it (unless `no_skip`); only when some image needs
/// solving is the daemon connected to. The first image that fails is the error.
pub async fn build(
    daemon: &Daemon,
    plan: &BuildPlan,
    progress: &dyn Progress,
) -> Result<Vec<Built>, BuildError> {
    let outcome = build_all(daemon, plan, progress).await?;
    match outcome.failed.into_iter().next() {
        Some(failed) => Err(failed.error),
        None => Ok(outcome.built),
    }
}

/// Every image a build tried, in the plan's order: built (or found built), or failed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub built: Vec<Built>,
    pub failed: Vec<Failed>,
    /// What the user should know besides (a pool node lost, images moved).
    pub notes: Vec<String>,
    /// A pool build's tiers, in order.
    pub tiers: Vec<pool::TierReport>,
}

impl Outcome {
    /// How many images each pool node built (empty for one daemon).
    pub fn images_per_node(&self) -> BTreeMap<String, usize> {
        let mut per_node = BTreeMap::new();
        for node in self.built.iter().filter_map(|b| b.node.as_ref()) {
            *per_node.entry(node.clone()).or_default() += 1;
        }
        per_node
    }
}

/// [`build`], reporting each image. With `plan.keep_going` every image
/// is tried and each failure comes back with its [`Fallback`]; without it
/// the first failure cancels the images still solving and is the error.
pub async fn build_all(
    daemon: &Daemon,
    plan: &BuildPlan,
    progress: &dyn Progress,
) -> Result<Outcome, BuildError> {
    build_all_within(daemon, plan, progress, None).await
}

/// [`build_all`], each solve also holding one of `slots` (a pool's overall
/// `--max-parallel`, shared by its nodes' builds).
pub(crate) async fn build_all_within(
    daemon: &Daemon,
    plan: &BuildPlan,
    progress: &dyn Progress,
    slots: Option<&tokio::sync::Semaphore>,
) -> Result<Outcome, BuildError> {
    if plan.parents.is_empty() {
        return build_plan(daemon, plan, progress, slots).await;
    }
    // First the Dockerfile images others are built from (their graphs are
    // the frontend's), then the rest on top of them as pushed.
    let mut outcome = build_plan(daemon, &plan.parents_first(), progress, slots).await?;
    if !outcome.failed.is_empty() && !plan.keep_going {
        return Ok(outcome);
    }
    // Images built from a Dockerfile image that failed are not attempted.
    let failed: Vec<String> = outcome.failed.iter().map(|f| f.image.clone()).collect();
    let stands_on_failed = |name: &String| {
        plan.spec
            .closure(std::slice::from_ref(name))
            .map(|c| c.iter().any(|n| failed.contains(n)))
            .unwrap_or(true)
    };
    let first: Vec<String> = plan.parents.iter().map(|p| p.image.clone()).collect();
    let rest: Vec<String> = plan
        .images()
        .into_iter()
        .filter(|name| !first.contains(name) && !stands_on_failed(name))
        .collect();
    if rest.is_empty() {
        return Ok(outcome);
    }
    let rest = plan.rebase_on(&pinned_pushes(&outcome.built)).only(&rest);
    let then = build_plan(daemon, &rest, progress, slots).await?;
    outcome.built.extend(then.built);
    outcome.failed.extend(then.failed);
    outcome.notes.extend(then.notes);
    Ok(outcome)
}

/// The Dockerfile images of `built` as pushed, pinned by digest: what the
/// images built `from` them start from ([`BuildPlan::rebase_on`]).
pub(crate) fn pinned_pushes(built: &[Built]) -> BTreeMap<String, ImageRef> {
    built
        .iter()
        .filter(|b| b.frontend)
        .filter_map(|b| Some((b.image.clone(), pinned_push(b)?)))
        .collect()
}

/// Where a built image can be pulled from by digest: its key tag (as
/// `strata key` finds it) or push target, pinned to what was pushed.
fn pinned_push(built: &Built) -> Option<ImageRef> {
    let digest = built.solved.image_digest()?;
    let pushed = built.pushed.as_ref()?;
    let named = if built.key_tagged {
        tags::key_ref(pushed, &built.image, &built.key)
    } else {
        pushed.clone()
    };
    Some(named.with_digest(digest))
}

/// Builds the jobs of `plan` (see [`build_all`]).
async fn build_plan(
    daemon: &Daemon,
    plan: &BuildPlan,
    progress: &dyn Progress,
    slots: Option<&tokio::sync::Semaphore>,
) -> Result<Outcome, BuildError> {
    // Credentials are read once and serve the registry client and every
    // session, for the registries this build uses and no other.
    let auth = DockerAuth::from_env()
        .with_insecure_hosts(&plan.insecure_registries)
        .only_for(registries::of_plan(plan));
    let registry = prepare::registry(plan, &auth);
    let prepared = prepare::prepare(plan, &registry).await?;
    let run = Run {
        daemon,
        plan,
        registry: &registry,
        auth: &auth,
        slots,
    };
    let seeds = mounts::seeds(plan, &prepared);
    let seeded = run.mounts(true, &seeds, progress).await;
    let results = run.every_job(&prepared, progress).await?;
    let (mut built, mut errors) = (Vec::new(), Vec::new());
    for (job, result) in plan.jobs.iter().zip(results) {
        match result {
            Ok(b) => built.push(b),
            Err(e) => errors.push((job.image.clone(), e)),
        }
    }
    let exports = mounts::exports(plan, &prepared, &built);
    let exported = run.mounts(false, &exports, progress).await;
    mounts::attach(&mut built, &seeds, seeded);
    mounts::attach(&mut built, &exports, exported);
    let failed_names: Vec<String> = errors.iter().map(|(name, _)| name.clone()).collect();
    let known = fallback::Known {
        spec: &plan.spec,
        registry: &registry,
        prepared: &prepared,
        built: built.iter().map(|b| (b.image.as_str(), b)).collect(),
        failed: failed_names.iter().map(String::as_str).collect(),
        key_tags: plan.key_tags,
    };
    let mut failed = Vec::new();
    for (image, error) in errors {
        failed.push(Failed {
            fallback: known.fallback(&image).await,
            key: prepared.images[&image].1,
            image,
            error,
        });
    }
    Ok(Outcome {
        built,
        failed,
        ..Outcome::default()
    })
}

/// `job` with every `{key}` tag (push target, image outputs) filled in.
fn with_key(job: &Job, key: &ContentKey) -> Job {
    let tag = key.tag(&job.image);
    let mut job = job.clone();
    job.push = job.push.map(|p| p.with_key_tag(&tag));
    job.name = job.name.map(|n| n.with_key_tag(&tag));
    for output in &mut job.outputs {
        if let Output::Image { name, .. } = output {
            *name = name.with_key_tag(&tag);
        }
    }
    job
}

/// A pushed image to load into docker: pulled by `digest` (what this build
/// pushed), else `image` solved once more into a tarball.
struct ToLoad<'a> {
    job: &'a Job,
    digest: Option<&'a str>,
    image: &'a LoweredImage,
    key: &'a ContentKey,
    names: &'a [ImageRef],
}

/// What every job of one build shares.
struct Run<'a> {
    daemon: &'a Daemon,
    plan: &'a BuildPlan,
    registry: &'a Registry,
    auth: &'a DockerAuth,
    /// Solves across builds at once (a pool's overall limit), if limited.
    slots: Option<&'a tokio::sync::Semaphore>,
}

impl Run<'_> {
    /// Every job of the plan, at most `max_parallel` at once; results in the
    /// plan's order. Without `keep_going` the first failure is returned at
    /// once, and dropping the others cancels their solves.
    async fn every_job(
        &self,
        prepared: &Prepared,
        progress: &dyn Progress,
    ) -> Result<Vec<Result<Built, BuildError>>, BuildError> {
        let several = self.plan.jobs.len() > 1;
        let gates = context::gates(self.plan.jobs.iter().map(|j| &prepared.images[&j.image].0));
        let jobs = self.plan.jobs.iter().zip(gates).enumerate();
        let claims = progress.step_claims();
        let jobs = jobs.map(|(i, (job, mut gate))| {
            let (image, key) = prepared.images[&job.image].clone();
            let label = several.then_some(job.image.as_str());
            let mut renderer = progress.renderer(label);
            if let Some(claims) = &claims {
                renderer = Box::new(Deduped::new(renderer, label, claims));
            }
            async move {
                // Images of one context directory go in turn (see `context`).
                gate.pass().await;
                let slot = match self.slots {
                    Some(slots) => slots.acquire().await.ok(),
                    None => None,
                };
                let built = self.build_one(job, image, key, renderer).await;
                drop((gate, slot));
                (i, built)
            }
        });
        let mut done = futures::stream::iter(jobs).buffer_unordered(self.plan.max_parallel);
        let mut results: Vec<Option<Result<Built, BuildError>>> =
            self.plan.jobs.iter().map(|_| None).collect();
        while let Some((i, result)) = done.next().await {
            match result {
                Err(e) if !self.plan.keep_going => return Err(e),
                result => results[i] = Some(result),
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// One image: found under its key tag, or solved (and key-tagged).
    async fn build_one(
        &self,
        job: &Job,
        image: LoweredImage,
        key: ContentKey,
        mut renderer: Box<dyn crate::solve::progress::Renderer>,
    ) -> Result<Built, BuildError> {
        let job = &with_key(job, &key);
        let image = prepare::recording_key(image, &key);
        if let Some(why) = &image.unkeyable {
            tracing::warn!("{}: not keyed, solved every time: {why}", job.image);
        }
        let docker = self.docker();
        let keyed = self.plan.key_tags && image.unkeyable.is_none();
        let names = load::names(job, &key, keyed);
        let present = match (&docker, self.plan.no_skip || !keyed) {
            (Some(d), false) => self.present(d, &names).await?,
            _ => None,
        };
        let built = |solved, up_to_date, loaded| Built {
            image: job.image.clone(),
            pushed: job.push.clone(),
            key,
            key_tagged: keyed && job.push.is_some(),
            up_to_date,
            solved,
            lowered: image.steps.clone(),
            loaded,
            frontend: image.frontend().is_some(),
            mounts: Vec::new(),
            node: None,
        };
        let present_ref = present.as_ref();
        if let Some(found) = self.up_to_date(job, &image, &key, present_ref).await? {
            let loaded = match (present, &docker) {
                (Some(present), _) => Some(present),
                (None, Some(d)) => {
                    let to_load = ToLoad {
                        job,
                        digest: found.image_digest(),
                        image: &image,
                        key: &key,
                        names: &names,
                    };
                    Some(self.pull_or_stream(d, to_load, &mut renderer).await?)
                }
                (None, None) => None,
            };
            return Ok(built(found, true, loaded));
        }
        let load = match (&docker, &present) {
            (Some(d), None) => self.solve_load(d, job, &names),
            _ => None,
        };
        let extra = load.as_ref().map(|l| l.output.clone());
        let solved = self
            .solve(job, &image, &key, extra, renderer.as_mut())
            .await?;
        let loaded = match (present, &docker, load) {
            (Some(present), ..) => Some(present),
            (None, Some(d), Some(load)) => Some(load.finish(d, &names).await?),
            (None, Some(d), None) => {
                let to_load = ToLoad {
                    job,
                    digest: solved.image_digest(),
                    image: &image,
                    key: &key,
                    names: &names,
                };
                Some(self.pull_or_stream(d, to_load, &mut renderer).await?)
            }
            (None, None, _) => None,
        };
        Ok(built(solved, false, loaded))
    }

    /// Solves `job`'s image with `extra` output besides the job's own; once
    /// more if the registry refused a pushed manifest (see
    /// [`SolveError::is_manifest_refused`]; every step is cached by then,
    /// so the second solve only pushes).
    async fn solve(
        &self,
        job: &Job,
        image: &LoweredImage,
        key: &ContentKey,
        extra: Option<Output>,
        renderer: &mut dyn crate::solve::progress::Renderer,
    ) -> Result<Solved, BuildError> {
        // A tarball stream cannot be sent twice: no second solve with one.
        let again = extra.is_none();
        let solved = self.solve_once(job, image, key, extra, renderer).await;
        match solved {
            Err(BuildError::Solve { source, .. }) if again && source.is_manifest_refused() => {
                tracing::warn!(
                    "{}: the registry refused a pushed manifest ({source}); pushing once more",
                    job.image
                );
                self.solve_once(job, image, key, None, renderer).await
            }
            other => other,
        }
    }

    async fn solve_once(
        &self,
        job: &Job,
        image: &LoweredImage,
        key: &ContentKey,
        extra: Option<Output>,
        renderer: &mut dyn crate::solve::progress::Renderer,
    ) -> Result<Solved, BuildError> {
        let failed = |source| BuildError::Solve {
            image: job.image.clone(),
            source,
        };
        let client = self
            .daemon
            .client()
            .await
            .map_err(|e| failed(SolveError::Client(e)))?;
        let mut opt = solve_opt(job, image, self.plan, self.auth, key);
        opt.exports.extend(extra);
        let solved = match &image.graph {
            ImageGraph::Frontend(frontend) => solve::solve(client, frontend, &opt, renderer).await,
            ImageGraph::Llb(llb) => solve::solve(client, &llb.definition, &opt, renderer).await,
        };
        // A tarball stream that was never sent ends with the options holding it.
        drop(opt);
        let mut solved = solved.map_err(failed)?;
        measure_registry_caches(&mut solved, &job.cache_exports, self.registry, job).await;
        Ok(solved)
    }

    /// Loads a pushed image: the docker daemon pulls it; if it cannot reach
    /// the registry, the image (all cached now) is solved again into a
    /// tarball streamed to it.
    async fn pull_or_stream(
        &self,
        docker: &Docker,
        to_load: ToLoad<'_>,
        renderer: &mut Box<dyn crate::solve::progress::Renderer>,
    ) -> Result<Loaded, BuildError> {
        let ToLoad {
            job,
            digest,
            image,
            key,
            names,
        } = to_load;
        match self.pull(docker, job, digest, names).await {
            Ok(loaded) => return Ok(loaded),
            Err(e) => tracing::warn!(
                "{}: the docker daemon could not pull it ({e}); streaming a tarball instead",
                job.image
            ),
        }
        let load = load::tarball(docker, names);
        let only_the_load = Job {
            outputs: Vec::new(),
            push: None,
            cache_exports: Vec::new(),
            ..job.clone()
        };
        self.solve(
            &only_the_load,
            image,
            key,
            Some(load.output.clone()),
            renderer.as_mut(),
        )
        .await?;
        Ok(load.finish(docker, names).await?)
    }

    /// The job's image found under its key tag (and its push target pointed
    /// at it): a `Solved` with its digest and how long the check took. Only
    /// when the push is all the job asks for: cache exports and other
    /// outputs are made by a solve.
    async fn up_to_date(
        &self,
        job: &Job,
        image: &LoweredImage,
        key: &ContentKey,
        loaded: Option<&Loaded>,
    ) -> Result<Option<Solved>, BuildError> {
        if self.plan.no_skip || !self.plan.key_tags || image.unkeyable.is_some() {
            return Ok(None);
        }
        let Some(push) = &job.push else {
            return Ok(loaded.and_then(|loaded| only_loaded(job, loaded)));
        };
        let only_the_push = job.cache_exports.is_empty()
            && job
                .outputs
                .iter()
                .all(|o| matches!(o, Output::Image { name, .. } if name == push));
        if !only_the_push {
            return Ok(None);
        }
        let began = Instant::now();
        let Some(digest) =
            tags::reuse(self.registry, push, &job.image, key, &image.platform).await?
        else {
            return Ok(None);
        };
        Ok(Some(Solved {
            exported: ExporterResponse::found(digest, Some(push)),
            steps: Vec::new(),
            duration: began.elapsed(),
            time_to_first_step: None,
            cache: Vec::new(),
        }))
    }
}

/// A job that asks only for `--load`, found loaded: its `Solved`.
fn only_loaded(job: &Job, loaded: &Loaded) -> Option<Solved> {
    if !job.outputs.is_empty() || !job.cache_exports.is_empty() {
        return None;
    }
    let id = loaded.image_id.clone()?;
    Some(Solved {
        exported: ExporterResponse::found(id, None),
        steps: Vec::new(),
        duration: loaded.duration,
        time_to_first_step: None,
        cache: Vec::new(),
    })
}

/// What the solve of `image` needs, from its job and the plan.
fn solve_opt(
    job: &Job,
    image: &LoweredImage,
    plan: &BuildPlan,
    auth: &DockerAuth,
    key: &ContentKey,
) -> SolveOpt {
    let mut secrets = plan.secrets.clone();
    if let Some(ca) = &plan.ca_cert {
        secrets.insert(CA_SECRET_ID.to_owned(), ca.clone());
    }
    let mut exports = job.outputs.clone();
    let key_tags = plan.key_tags && image.unkeyable.is_none();
    if let (Some(push), true) = (&job.push, key_tags) {
        // The push also goes out under the key tag.
        let key_ref = tags::key_ref(push, &job.image, key);
        for output in &mut exports {
            if let Output::Image { name, also, .. } = output {
                if name == push && *name != key_ref {
                    also.push(key_ref.clone());
                }
            }
        }
    }
    SolveOpt {
        exports,
        cache_exports: job.cache_exports.clone(),
        cache_imports: job.cache_imports.clone(),
        local_dirs: image.local_dirs.clone(),
        secrets,
        auth: Some(auth.clone()),
        // A frontend writes its own image config.
        image_config: image.llb().map(|llb| llb.config.clone()),
        shared_key: shared_key(image),
        oci_layouts: BTreeMap::new(),
        attachables: plan.attachables.clone(),
    }
}

/// What lets the daemon reuse earlier uploads of this image's local dirs:
/// the image's name; for a Dockerfile image, its context directory, so
/// images built from one context share the daemon's record of it (a later
/// upload sends only what changed; see [`context`] for images of one build).
fn shared_key(image: &LoweredImage) -> String {
    match (image.frontend(), image.local_dirs.get("context")) {
        (Some(_), Some(context)) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(context.path.as_os_str().as_encoded_bytes());
            let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
            format!("strata:context:{hex}")
        }
        _ => format!("strata:{}", image.name),
    }
}

/// Fills in the size of each registry cache export (read back from the
/// registry) and names the image carrying inline cache.
async fn measure_registry_caches(
    solved: &mut Solved,
    exports: &[CacheExport],
    registry: &Registry,
    job: &Job,
) {
    for (report, export) in solved.cache.iter_mut().zip(exports) {
        match export {
            CacheExport::Registry { reference, .. } => {
                if let Ok((_, size, json)) = registry.artifact(reference).await {
                    *report = report.clone().measured(&json, size);
                }
            }
            CacheExport::Inline { .. } => {
                if let Some(image) = &job.push {
                    report.location = format!("inline in {image}");
                }
            }
            CacheExport::Local { .. } => {}
        }
    }
}
