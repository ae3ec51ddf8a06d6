//! A build: the jobs of a spec ([`Spec::resolve`]) lowered to LLB and solved on
//! one daemon. Images solve at once, each with its own [`SolveOpt`]; the daemon
//! merges the steps they share (an image built `from` another contains its graph).

use std::collections::BTreeMap;

use futures::StreamExt;

use crate::client::Client;
use crate::keys::{content_key, ContentKey};
use crate::llb::Platform;
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryError, RegistryOptions};
use crate::session::DockerAuth;
use crate::solve::progress::{Progress, Step};
use crate::solve::{self, CacheExport, CacheReport, SolveError, SolveOpt, Solved};
use crate::spec::{
    Base, BaseImage, BuildPlan, Job, LowerOptions, LoweredImage, Overrides, Spec, SpecError,
};

/// The secret id under which the CA bundle reaches the toolchain steps.
pub const CA_SECRET_ID: &str = "strata-ca-cert";

/// One image that was built.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: String,
    /// Where it was pushed, if it was.
    pub pushed: Option<ImageRef>,
    pub solved: Solved,
    /// The spec's steps in the image's graph, as lowered.
    pub lowered: Vec<crate::spec::StepInfo>,
}

impl Built {
    /// The spec's steps as the daemon reported them: what the build summary,
    /// `--metadata-file` and `strata bench` count (not resolving the base,
    /// sending local files or exporting, which every build does).
    pub fn spec_steps(&self) -> impl Iterator<Item = &Step> {
        self.solved
            .steps
            .iter()
            .filter(|s| self.lowered.iter().any(|l| l.digest == s.digest))
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

/// Why a build could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error("image {image}: {source}")]
    Solve {
        image: String,
        #[source]
        source: SolveError,
    },
}

/// The registry client a build reads base images and cache sizes with.
fn registry(plan: &BuildPlan, auth: &DockerAuth) -> Registry {
    Registry::new(RegistryOptions {
        insecure: plan.insecure_registries.clone(),
        auth: Some(auth.clone()),
        timeout: None,
    })
}

/// Lowers the plan's images to LLB, after fetching their base images'
/// configs (raw LLB carries no image config: the base's ENV PATH, WORKDIR…
/// come from the registry). Returns them in the order of `plan.jobs`.
pub async fn lower(spec: &Spec, plan: &BuildPlan) -> Result<Vec<LoweredImage>, BuildError> {
    let registry = registry(plan, &DockerAuth::from_env());
    lower_with(spec, plan, &registry, &plan_images(plan)).await
}

fn plan_images(plan: &BuildPlan) -> Vec<String> {
    plan.jobs.iter().map(|j| j.image.clone()).collect()
}

/// Lowers images `names` (in that order) with their bases pinned.
async fn lower_with(
    spec: &Spec,
    plan: &BuildPlan,
    registry: &Registry,
    names: &[String],
) -> Result<Vec<LoweredImage>, BuildError> {
    let bases = base_configs(spec, names, plan, registry).await?;
    let options = LowerOptions {
        ca_cert: plan.ca_cert.as_ref().map(|_| CA_SECRET_ID.to_owned()),
        platform: plan.platform.clone(),
    };
    Ok(spec.lower_all(names, &bases, &options)?)
}

/// The content key of each image the plan builds, in the plan's order. The
/// images they are built `from` are keyed too, since a child's key holds
/// its parent's. Reads the base images' manifests (to pin them), never solves.
pub async fn keys(spec: &Spec, plan: &BuildPlan) -> Result<Vec<(String, ContentKey)>, BuildError> {
    let registry = registry(plan, &DockerAuth::from_env());
    let closure = spec.closure(&plan_images(plan))?;
    let lowered = lower_with(spec, plan, &registry, &closure).await?;
    let mut keys: BTreeMap<String, ContentKey> = BTreeMap::new();
    // The closure lists parents before their children.
    for image in &lowered {
        let parent = match &spec.image(&image.name).expect("closure names images").base {
            Base::From(parent) => keys.get(parent),
            _ => None,
        };
        let key = content_key(image, parent)?;
        keys.insert(image.name.clone(), key);
    }
    Ok(plan_images(plan)
        .into_iter()
        .map(|name| {
            let key = keys[&name];
            (name, key)
        })
        .collect())
}

/// The configs of the bases `names` stand on, each for the platform it builds for.
async fn base_configs(
    spec: &Spec,
    names: &[String],
    plan: &BuildPlan,
    registry: &Registry,
) -> Result<BTreeMap<ImageRef, BaseImage>, BuildError> {
    let mut bases = BTreeMap::new();
    for name in spec.closure(names)? {
        let image = spec.image(&name).expect("closure names images");
        let Base::Image(reference) = &image.base else {
            continue;
        };
        if bases.contains_key(reference) {
            continue;
        }
        let platform = plan
            .platform
            .clone()
            .or_else(|| image.platform.clone())
            .unwrap_or_else(Platform::host);
        let (resolved, config) = registry.config(reference, &platform).await?;
        let digest = resolved.index_digest.unwrap_or(resolved.digest);
        let pinned = reference.with_digest(&digest);
        bases.insert(reference.clone(), BaseImage { pinned, config });
    }
    Ok(bases)
}

/// Builds the images `overrides` asks for (or every image of `spec`) on
/// `client`'s daemon, showing each one's progress through `progress`.
pub async fn build(
    client: &Client,
    spec: &Spec,
    overrides: &Overrides,
    progress: &dyn Progress,
) -> Result<Vec<Built>, BuildError> {
    let plan = spec.resolve(overrides)?;
    // Credentials are read once and serve the registry client and every session.
    let auth = DockerAuth::from_env().with_insecure_hosts(&plan.insecure_registries);
    let registry = registry(&plan, &auth);
    let images = lower_with(spec, &plan, &registry, &plan_images(&plan)).await?;
    let several = images.len() > 1;
    let solves = plan.jobs.iter().zip(images).map(|(job, image)| {
        let label = several.then_some(job.image.as_str());
        let mut renderer = progress.renderer(label);
        let (plan, registry, auth) = (&plan, &registry, &auth);
        async move {
            let opt = solve_opt(job, &image, plan, auth);
            let mut solved = solve::solve(client, &image.definition, &opt, renderer.as_mut())
                .await
                .map_err(|source| BuildError::Solve {
                    image: job.image.clone(),
                    source,
                })?;
            measure_registry_caches(&mut solved, &job.cache_exports, registry, job).await;
            Ok(Built {
                image: job.image.clone(),
                pushed: job.push.clone(),
                solved,
                lowered: image.steps,
            })
        }
    });
    // At most `max_parallel` at once, results in the plan's order.
    futures::stream::iter(solves)
        .buffered(plan.max_parallel)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// What the solve of `image` needs, from its job and the plan.
fn solve_opt(job: &Job, image: &LoweredImage, plan: &BuildPlan, auth: &DockerAuth) -> SolveOpt {
    let mut secrets = plan.secrets.clone();
    if let Some(ca) = &plan.ca_cert {
        secrets.insert(CA_SECRET_ID.to_owned(), ca.clone());
    }
    SolveOpt {
        exports: job.outputs.clone(),
        cache_exports: job.cache_exports.clone(),
        cache_imports: job.cache_imports.clone(),
        local_dirs: image.local_dirs.clone(),
        secrets,
        auth: Some(auth.clone()),
        image_config: Some(image.config.clone()),
        shared_key: format!("strata:{}", image.name),
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
