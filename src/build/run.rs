//! One job solved on one daemon: its key tag checked first (found built:
//! nothing solved), the solve with its options, retried once when the
//! registry refuses a pushed manifest, loading into docker, and what the
//! registry caches it exported weigh.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::StreamExt;

use crate::docker::Docker;
use crate::keys::{tags, ContentKey};
use crate::options::{CacheExport, Chosen, ExporterResponse, Output};
use crate::reference::ImageRef;
use crate::registry::Registry;
use crate::session::DockerAuth;
use crate::solve::progress::{Deduped, Progress};
use crate::solve::{
    self, Graph, GraphSource, LowerOn, PlatformGraph, SolveError, SolveOpt, Solved,
};
use crate::spec::{BuildPlan, ImageGraph, Job, LoweredImage};

use super::index::{self, Assembled};
use super::load::Loaded;
use super::prepare::{KeyedImage, Prepared};
use super::{context, load, BuildError, Built, Run, ToLoad, CA_SECRET_ID};

/// How long a default SBOM generator's registry has to answer.
const SBOM_GENERATOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

impl Run<'_> {
    /// Every job of the plan, at most `max_parallel` at once; results in the
    /// plan's order. Without `keep_going` the first failure is returned at
    /// once, and dropping the others cancels their solves.
    /// Every job, `max_parallel` at once; each one's end is sent on
    /// `finished` (its image, and whether it solved), which drops with the
    /// last.
    pub(super) async fn every_job(
        &self,
        prepared: &Prepared,
        progress: &dyn Progress,
        finished: tokio::sync::mpsc::UnboundedSender<(String, bool)>,
    ) -> Result<Vec<Result<Built, BuildError>>, BuildError> {
        let several = self.plan.jobs.len() > 1;
        let gates = context::gates(
            self.plan
                .jobs
                .iter()
                .map(|j| prepared.images[&j.image].lowered()),
        );
        let jobs = self.plan.jobs.iter().zip(gates).enumerate();
        let claims = progress.step_claims();
        let jobs = jobs.map(|(i, (job, mut gate))| {
            let keyed = &prepared.images[&job.image];
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
                let built = self.build_one(job, keyed, renderer).await;
                drop((gate, slot));
                (i, built)
            }
        });
        let mut done = futures::stream::iter(jobs).buffer_unordered(self.plan.max_parallel);
        let mut results: Vec<Option<Result<Built, BuildError>>> =
            self.plan.jobs.iter().map(|_| None).collect();
        while let Some((i, result)) = done.next().await {
            let solved = result.as_ref().is_ok_and(|b| !b.up_to_date);
            let _ = finished.send((self.plan.jobs[i].image.clone(), solved));
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
        keyed: &KeyedImage,
        mut renderer: Box<dyn crate::solve::progress::Renderer>,
    ) -> Result<Built, BuildError> {
        let key = keyed.key;
        let job = &with_key(job, &key);
        let several = keyed.variants.len() > 1;
        let image = checked(job, keyed)?;
        // What docker gets: its own platform's image (an index's first else).
        let for_docker = keyed.for_docker();
        let docker = self.docker();
        let key_tags = self.key_tags(keyed);
        let names = load::names(job, &key, key_tags);
        let present = match (&docker, self.plan.no_skip || !key_tags) {
            (Some(d), false) => self.present(d, &names).await?,
            _ => None,
        };
        // Docker holds one platform of an index: the loaded image says which.
        let docker_platform = several.then(|| for_docker.platform.clone());
        let built = |solved, up_to_date, lowered, loaded: Option<Loaded>| Built {
            image: job.image.clone(),
            pushed: job.push.clone(),
            key,
            key_tagged: key_tags && job.push.is_some(),
            up_to_date,
            solved,
            lowered,
            loaded: loaded.map(|l| l.of_platform(docker_platform.clone())),
            frontend: image.frontend().is_some()
                || matches!(image.graph, ImageGraph::OnFrontend(_)),
            mounts: Vec::new(),
            nodes: Vec::new(),
            platforms_found: Vec::new(),
            platform_keys: keyed.platform_keys(),
        };
        // What docker pulls (or is streamed): the image as pushed at `digest`.
        let pushed = |digest| ToLoad {
            job,
            digest,
            image: &for_docker,
            key: &key,
            names: &names,
        };
        let present_ref = present.as_ref();
        if let Some(found) = self.up_to_date(job, keyed, present_ref).await? {
            let loaded = match (present, &docker) {
                (Some(present), _) => Some(present),
                (None, Some(d)) => {
                    let to_load = pushed(found.image_digest());
                    Some(self.pull_or_stream(d, to_load, &mut renderer).await?)
                }
                (None, None) => None,
            };
            return Ok(built(found, true, image.steps.clone(), loaded));
        }
        // A multi-platform result goes to docker after the solve, one platform.
        let load = match (&docker, &present) {
            (Some(d), None) if !several => self.solve_load(d, job, &names),
            _ => None,
        };
        let extra = load.as_ref().map(|l| l.output.clone());
        let assembled = self
            .solve_job(job, keyed, &image, extra, renderer.as_mut())
            .await?;
        let loaded = match (present, &docker, load) {
            (Some(present), ..) => Some(present),
            (None, Some(d), Some(load)) => Some(load.finish(d, &names).await?),
            (None, Some(d), None) => {
                let to_load = pushed(assembled.solved.image_digest());
                Some(self.pull_or_stream(d, to_load, &mut renderer).await?)
            }
            (None, None, _) => None,
        };
        Ok(Built {
            platforms_found: assembled.found,
            ..built(assembled.solved, false, assembled.lowered, loaded)
        })
    }

    /// The job's image solved (with `extra` output): a multi-platform image
    /// from those of its platforms found and the others solved, else in one
    /// solve, after which each platform's manifest is key-tagged.
    async fn solve_job(
        &self,
        job: &Job,
        keyed: &KeyedImage,
        image: &LoweredImage,
        extra: Option<Output>,
        renderer: &mut dyn crate::solve::progress::Renderer,
    ) -> Result<Assembled, BuildError> {
        if let Some(assembled) = self.assemble_from_platforms(job, keyed, renderer).await? {
            return Ok(assembled);
        }
        let solved = self.solve(job, image, &keyed.key, extra, renderer).await?;
        if let (true, Some(digest)) = (keyed.variants.len() > 1, solved.image_digest()) {
            self.tag_platforms(job, keyed, digest).await;
        }
        Ok(Assembled {
            solved,
            lowered: image.steps.clone(),
            found: Vec::new(),
        })
    }

    /// Solves `job`'s image with `extra` output besides the job's own; once
    /// more if the registry refused a pushed manifest (see
    /// [`SolveError::is_manifest_refused`]; every step is cached by then,
    /// so the second solve only pushes).
    pub(super) async fn solve(
        &self,
        job: &Job,
        image: &LoweredImage,
        key: &ContentKey,
        extra: Option<Output>,
        renderer: &mut dyn crate::solve::progress::Renderer,
    ) -> Result<Solved, BuildError> {
        self.sbom_generator_reachable(job).await?;
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

    /// Whether the image found at `digest` carries the attestations `job`
    /// asks for; one built without them (or unreadable) is built again, the
    /// steps all cached, so `--sbom` on a release job is never a no-op.
    async fn attested_as_asked(&self, job: &Job, push: &ImageRef, digest: &str) -> bool {
        if !job.attest.any() {
            return true;
        }
        let found = push.with_digest(digest);
        match crate::attestations::cover(self.registry, &found, &job.attest).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(
                    "{}: {found} lacks the attestations asked for; building it with them",
                    job.image
                );
                false
            }
            Err(e) => {
                tracing::warn!("{}: the attestations of {found}: {e}; building", job.image);
                false
            }
        }
    }

    /// A default SBOM generator the registry does not answer for is an
    /// error before the solve: the daemon would hang on it or fail late.
    async fn sbom_generator_reachable(&self, job: &Job) -> Result<(), BuildError> {
        let Some(sbom) = job
            .attest
            .sbom
            .as_ref()
            .filter(|s| s.chosen == Chosen::ByDefault)
        else {
            return Ok(());
        };
        let looked = tokio::time::timeout(
            SBOM_GENERATOR_TIMEOUT,
            self.registry.manifest_digest(&sbom.generator),
        );
        let reason = match looked.await {
            Ok(Ok(Some(_))) => return Ok(()),
            Ok(Ok(None)) => "the registry has no such image".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer in {} s", SBOM_GENERATOR_TIMEOUT.as_secs()),
        };
        Err(BuildError::SbomGeneratorUnreachable {
            image: job.image.clone(),
            generator: sbom.generator.to_string(),
            reason,
        })
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
            // BuildKit's SBOM and provenance processors read the platform
            // from the result's image config, which a raw-LLB solve does
            // not return (they would take the daemon's: an arm64 image's
            // attestations labelled amd64 and dropped): through the gateway.
            ImageGraph::Llb(llb) if job.attest.any() => {
                let graphs = [PlatformGraph::llb(
                    image.platform.clone(),
                    llb.definition.clone(),
                    opt.image_config.take(),
                )];
                solve::solve(client, Graph::Platforms(&graphs), &opt, renderer).await
            }
            ImageGraph::Llb(llb) => solve::solve(client, &llb.definition, &opt, renderer).await,
            ImageGraph::Platforms(_) | ImageGraph::OnFrontend(_) => {
                let graphs = platform_graphs(&image.graph)?;
                solve::solve(client, Graph::Platforms(&graphs), &opt, renderer).await
            }
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
        keyed: &KeyedImage,
        loaded: Option<&Loaded>,
    ) -> Result<Option<Solved>, BuildError> {
        if self.plan.no_skip || !self.key_tags(keyed) {
            return Ok(None);
        }
        if job.push.is_none() {
            return Ok(loaded.and_then(|loaded| only_loaded(job, loaded)));
        }
        let Some(push) = index::only_the_push(job) else {
            return Ok(None);
        };
        let began = Instant::now();
        let (key, recorded) = (&keyed.key, &keyed.recorded());
        let Some(digest) = tags::find(self.registry, push, &job.image, key, recorded).await? else {
            return Ok(None);
        };
        if !self.attested_as_asked(job, push, &digest).await {
            return Ok(None);
        }
        tags::point(self.registry, push, &job.image, key, &digest).await?;
        Ok(Some(Solved {
            exported: ExporterResponse::found(digest, Some(push)),
            steps: Vec::new(),
            duration: began.elapsed(),
            time_to_first_step: None,
            cache: Vec::new(),
        }))
    }
}

/// What is solved of `job`'s image, once its outputs suit its platforms;
/// an image that cannot be keyed is said to be solved every time.
fn checked(job: &Job, keyed: &KeyedImage) -> Result<LoweredImage, BuildError> {
    if keyed.variants.len() > 1 {
        one_platform_outputs(job)?;
    }
    let image = keyed.solvable();
    if let Some(why) = &image.unkeyable {
        tracing::warn!("{}: not keyed, solved every time: {why}", job.image);
    }
    Ok(image)
}

/// A multi-platform job's outputs: none that holds one platform only.
fn one_platform_outputs(job: &Job) -> Result<(), BuildError> {
    for output in &job.outputs {
        let kind = match output {
            Output::Docker { .. } | Output::DockerStream { .. } => "type=docker",
            Output::Moby { .. } => "the docker daemon's image store",
            _ => continue,
        };
        return Err(BuildError::OnePlatformOutput {
            image: job.image.clone(),
            output: kind.to_owned(),
            platforms: job.platforms.to_string(),
        });
    }
    Ok(())
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
        attest: job.attest.attrs(),
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

/// Fills in the size of each registry and S3 cache export (read back from
/// where it went) and names the image carrying inline cache.
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
            CacheExport::S3 { cache, .. } => {
                if let Some((bytes, blobs)) = measure_s3(cache).await {
                    report.bytes = Some(bytes);
                    report.blobs = Some(blobs);
                }
            }
            CacheExport::Local { .. } => {}
        }
    }
}

/// The size of an S3 cache, from its manifest (BuildKit's cache config:
/// each layer's size in its annotations) read back from the bucket.
async fn measure_s3(cache: &crate::options::S3Cache) -> Option<(u64, usize)> {
    let bucket = crate::objectstore::Bucket::open(cache).ok()?;
    let manifest = bucket.cache_manifest().await.ok()??;
    let json: serde_json::Value = serde_json::from_slice(&manifest).ok()?;
    let layers = json["layers"].as_array()?;
    let sizes = layers
        .iter()
        .filter_map(|l| l["annotations"]["size"].as_u64());
    Some((manifest.len() as u64 + sizes.sum::<u64>(), layers.len() + 1))
}

/// The gateway's graphs of an image solved per platform (or on a frontend's
/// result): each platform's LLB, or what is lowered on its frontend's answer
/// (on the Dockerfile image as pushed, when an earlier tier pushed it).
fn platform_graphs(graph: &ImageGraph) -> Result<Vec<PlatformGraph>, BuildError> {
    let llb = |platform: &crate::llb::Platform, llb: &crate::spec::LlbImage| {
        PlatformGraph::llb(
            platform.clone(),
            llb.definition.clone(),
            Some(llb.config.clone()),
        )
    };
    match graph {
        ImageGraph::Platforms(graphs) => Ok(graphs.iter().map(|(p, l)| llb(p, l)).collect()),
        ImageGraph::OnFrontend(graphs) => graphs
            .iter()
            .map(|(platform, on)| {
                if let Some(pushed) = on.on_pushed()? {
                    return Ok(llb(platform, &pushed));
                }
                let on = std::sync::Arc::new(on.clone());
                let frontend = on.frontend.clone();
                let lower: LowerOn = std::sync::Arc::new(move |base, config| {
                    let llb = on.lower_on(base, config).map_err(|e| e.to_string())?;
                    Ok((llb.definition, llb.config))
                });
                Ok(PlatformGraph {
                    platform: platform.clone(),
                    source: GraphSource::OnFrontend { frontend, lower },
                })
            })
            .collect(),
        ImageGraph::Llb(_) | ImageGraph::Frontend(_) => Ok(Vec::new()),
    }
}
