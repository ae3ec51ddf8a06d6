//! A build: the jobs of a plan ([`crate::spec::Spec::resolve`]) lowered to LLB and solved on
//! one daemon. Images solve at once, each with its own [`SolveOpt`]; the daemon
//! merges the steps they share (an image built `from` another contains its graph).

use crate::client::Daemon;
use crate::keys::ContentKey;
use crate::reference::ImageRef;
use crate::registry::Registry;
use crate::session::DockerAuth;
use crate::solve::progress::Progress;
use crate::spec::{BuildPlan, Job, LoweredImage};

mod context;
mod fallback;
pub mod git;
mod index;
mod load;
mod mounts;
mod pool;
mod prepare;
mod registries;
mod result;
mod run;
mod summary;

pub use fallback::{Failed, Fallback};
pub use load::{names as load_names, LoadPath, Loaded};
pub use pool::{build_on_pool, TierReport};
pub use prepare::{keys, lower, registry_from_env, ImageKey};
pub(crate) use result::is_dockerfile_step;
pub use result::{BuildError, Built, Outcome};
pub use summary::{hit_rate, ImageSummary, Summary, TierSummary};

/// The secret id under which the CA bundle reaches the toolchain steps.
pub const CA_SECRET_ID: &str = "strata-ca-cert";
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
    build_plan(daemon, plan, progress, slots).await
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
    let (finished, mut finishing) = tokio::sync::mpsc::unbounded_channel::<(String, bool)>();
    let mut schedule = mounts::ExportSchedule::new(plan, &prepared);
    // Mount exports run as the images that use them finish, beside the
    // images still building; one batch at a time (they share a memory file).
    let exporting = async {
        let (mut exports, mut exported) = (Vec::new(), Vec::new());
        while let Some((image, solved)) = finishing.recv().await {
            let due = schedule.finished(&image, solved);
            exported.extend(run.mounts(false, &due, progress).await);
            exports.extend(due);
        }
        (exports, exported)
    };
    let (results, (exports, exported)) =
        tokio::join!(run.every_job(&prepared, progress, finished), exporting);
    let results = results?;
    let (mut built, mut errors) = (Vec::new(), Vec::new());
    for (job, result) in plan.jobs.iter().zip(results) {
        match result {
            Ok(b) => built.push(b),
            Err(e) => errors.push((job.image.clone(), e)),
        }
    }
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
            key: prepared.images[&image].key,
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

/// A pushed image to load into docker: pulled by `digest` (what this build
/// pushed), else `image` solved once more into a tarball.
pub(super) struct ToLoad<'a> {
    job: &'a Job,
    digest: Option<&'a str>,
    image: &'a LoweredImage,
    key: &'a ContentKey,
    names: &'a [ImageRef],
}

/// What every job of one build shares.
pub(super) struct Run<'a> {
    daemon: &'a Daemon,
    plan: &'a BuildPlan,
    registry: &'a Registry,
    auth: &'a DockerAuth,
    /// Solves across builds at once (a pool's overall limit), if limited.
    slots: Option<&'a tokio::sync::Semaphore>,
}
