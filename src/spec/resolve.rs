//! The spec plus what the command line adds or overrides → the plan of one
//! build. This is the only place where the two meet: a library caller and the
//! CLI get the same CA bundle, push targets, outputs and cache lists. Below
//! it everything (one-daemon builds, pools, keys, LLB, mounts) takes the
//! [`BuildPlan`]: a pool hands each node a sub-plan ([`BuildPlan::only`]),
//! and adds its cache to the jobs ([`Job::add_caches`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Base, Image, Spec, SpecError};
use crate::llb::Platforms;
use crate::options::{CacheExport, CacheImport, Output};
use crate::reference::ImageRef;

/// What a build adds to or overrides in the spec (the command line's part).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Images to build (with what they are built `from`); empty: all.
    pub images: Vec<String>,
    /// Push the (single) image there, instead of the spec's `push`.
    pub push: Option<ImageRef>,
    /// Outputs of the single image built.
    pub outputs: Vec<Output>,
    /// Cache exports and imports, added to each image's own.
    pub cache_to: Vec<CacheExport>,
    pub cache_from: Vec<CacheImport>,
    /// A CA bundle for networks that re-sign TLS, instead of the spec's.
    pub ca_cert: Option<PathBuf>,
    /// Every image's platforms (`--platform a,b`).
    pub platform: Option<Platforms>,
    /// Secret ids and the files holding them, for `run` steps.
    pub secrets: BTreeMap<String, PathBuf>,
    /// Registry hosts (`host[:port]`) reached over plain http, which may also
    /// get credentials over it; loopback registries are always plain http.
    pub insecure_registries: Vec<String>,
    /// How many images are solved at once; none: [`DEFAULT_MAX_PARALLEL`].
    pub max_parallel: Option<std::num::NonZeroUsize>,
    /// Solve even an image whose key tag says it is built (`--no-skip`).
    pub no_skip: bool,
    /// Do not push images under their key tag (`--no-key-tag`); nothing is
    /// then skipped either.
    pub no_key_tag: bool,
    /// Build every image that can be built even when one fails.
    pub keep_going: bool,
    /// Load every image into the docker daemon of this API socket (`--load`).
    pub load: Option<PathBuf>,
    /// `--provenance`: every image's, over the spec's (`Some(None)`: off).
    pub provenance: Option<Option<crate::options::ProvenanceMode>>,
    /// `--sbom`: every image's, over the spec's (`Some(None)`: off).
    pub sbom: Option<Option<crate::options::SbomGenerator>>,
    /// The generator an unnamed SBOM uses (`STRATA_SBOM_GENERATOR`); none:
    /// [`crate::options::DEFAULT_SBOM_GENERATOR`].
    pub sbom_generator: Option<ImageRef>,
    /// The spec's push targets only name the images; nothing is pushed
    /// unless `push` says so (`strata compose build` without `--push`).
    pub no_push: bool,
    /// A disk budget: after each tier of images (those whose parents are
    /// built), every builder above this many bytes is pruned down to it.
    pub keep_storage: Option<u64>,
    /// The region and credentials of `type=s3` caches without their own
    /// (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, …, read at the edge).
    pub s3: crate::options::S3Env,
}

/// Images solved at once by default: enough to overlap independent images,
/// few enough not to flood a shared daemon (BuildKit runs the steps of each
/// in parallel anyway).
pub const DEFAULT_MAX_PARALLEL: usize = 4;

/// One image to solve and where its results go.
#[derive(Debug, Clone)]
pub struct Job {
    pub image: String,
    pub outputs: Vec<Output>,
    /// The image's push target (`--push`, else the spec's), also in `outputs`.
    pub push: Option<ImageRef>,
    /// What the image is called: its push target, also when `no_push` keeps
    /// it from being pushed (the name `--load` gives it).
    pub name: Option<ImageRef>,
    pub cache_exports: Vec<CacheExport>,
    pub cache_imports: Vec<CacheImport>,
    /// The platforms it is built for (`--platform`, else the spec's, else
    /// the host's), resolved once here: more than one makes an image index.
    pub platforms: Platforms,
    /// When the job builds some platforms of an image (a pool node's part),
    /// all of the image's: a multi-platform Dockerfile image's platforms
    /// each record the whole index's key, as one frontend call labels them.
    pub part_of: Option<Platforms>,
    /// What the daemon attaches to each platform's image (`--provenance`
    /// and `--sbom`, else the spec's).
    pub attest: crate::options::Attestations,
}

impl Job {
    /// Adds `exports` and `imports` to the job's own (a pool's cache).
    pub fn add_caches(&mut self, exports: Vec<CacheExport>, imports: Vec<CacheImport>) {
        self.cache_exports.extend(exports);
        self.cache_imports.extend(imports);
    }
}

/// A whole build: the spec it was resolved from, its jobs and the settings
/// they share.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    /// The images' definitions (shared by every sub-plan of one build).
    pub spec: Arc<Spec>,
    pub jobs: Vec<Job>,
    pub ca_cert: Option<PathBuf>,
    pub platform: Option<Platforms>,
    pub secrets: BTreeMap<String, PathBuf>,
    pub insecure_registries: Vec<String>,
    /// How many jobs are solved at once on one daemon.
    pub max_parallel: usize,
    /// `--max-parallel` as given: over a pool it also bounds all nodes at once.
    pub max_parallel_given: Option<std::num::NonZeroUsize>,
    /// A pool's disk budget per node, pruned to between tiers.
    pub keep_storage: Option<u64>,
    /// Session services a library caller adds to every solve of the build.
    pub attachables: crate::session::Attachables,
    /// Solve even images found under their key tag.
    pub no_skip: bool,
    /// Push images under their key tag too (and look for it before solving).
    pub key_tags: bool,
    /// Try every image even when one fails.
    pub keep_going: bool,
    /// Load every image into the docker daemon of this API socket.
    pub load: Option<PathBuf>,
    /// Dockerfile images an earlier tier of this build pushed (a pool's),
    /// pinned by digest: the images built `from` one are solved on it as
    /// pushed, not on its frontend's graph again on another node. Their
    /// keys stay those of one solve.
    pub pushed_dockerfiles: BTreeMap<String, ImageRef>,
}

impl BuildPlan {
    /// Whether `reference`'s registry is reached over plain http.
    pub fn insecure(&self, reference: &ImageRef) -> bool {
        reference.is_loopback() || self.insecure_registries.contains(&reference.registry)
    }

    /// The images the jobs build, in order.
    pub fn images(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.image.clone()).collect()
    }

    /// The spec's definition of a job's image.
    pub fn image(&self, job: &Job) -> &Image {
        self.spec
            .image(&job.image)
            .expect("a plan's jobs name its spec's images")
    }

    /// The image a job's image is built `from`, when that is a spec image.
    pub fn parent_of(&self, name: &str) -> Option<&str> {
        match self.spec.image(name).map(|i| &i.base) {
            Some(Base::From(parent)) => Some(parent),
            _ => None,
        }
    }

    /// This plan with only the jobs of `images`.
    pub fn only(&self, images: &[String]) -> BuildPlan {
        BuildPlan {
            jobs: self
                .jobs
                .iter()
                .filter(|j| images.contains(&j.image))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }
}

impl Spec {
    /// The jobs that build `overrides.images` (or every image), with the
    /// spec's settings and the overrides merged.
    pub fn resolve(&self, overrides: &Overrides) -> Result<BuildPlan, SpecError> {
        let names = self.wanted(overrides)?;
        let mut plan = BuildPlan {
            spec: Arc::new(self.clone()),
            jobs: Vec::new(),
            ca_cert: overrides.ca_cert.clone().or_else(|| self.ca_cert.clone()),
            platform: overrides.platform.clone(),
            secrets: overrides.secrets.clone(),
            insecure_registries: overrides.insecure_registries.clone(),
            max_parallel: overrides
                .max_parallel
                .map_or(DEFAULT_MAX_PARALLEL, std::num::NonZeroUsize::get),
            max_parallel_given: overrides.max_parallel,
            keep_storage: overrides.keep_storage,
            attachables: Default::default(),
            no_skip: overrides.no_skip,
            key_tags: !overrides.no_key_tag,
            keep_going: overrides.keep_going,
            load: overrides.load.clone(),
            pushed_dockerfiles: BTreeMap::new(),
        };
        for name in names {
            let job = self.job(&plan, name, overrides)?;
            plan.jobs.push(job);
        }
        Ok(plan)
    }

    /// The job that builds image `name` with `overrides`.
    fn job(&self, plan: &BuildPlan, name: String, overrides: &Overrides) -> Result<Job, SpecError> {
        let image = self.named(&name)?;
        let named = overrides.push.clone().or_else(|| image.push.clone());
        let push = named
            .clone()
            .filter(|_| overrides.push.is_some() || !overrides.no_push);
        let mut job = Job {
            image: name,
            outputs: overrides.outputs.clone(),
            push: push.clone(),
            name: named,
            cache_exports: overrides.cache_to.clone(),
            cache_imports: overrides.cache_from.clone(),
            platforms: self.platforms_for(image, overrides.platform.as_ref()),
            part_of: None,
            attest: attestations(image, overrides),
        };
        job.outputs.extend(push.map(|name| Output::Image {
            also: Vec::new(),
            name,
            push: true,
            insecure: false,
            attrs: BTreeMap::new(),
        }));
        job.cache_exports.extend(image.cache_to.iter().cloned());
        job.cache_imports.extend(image.cache_from.iter().cloned());
        self.resolve_s3(&mut job, overrides)?;
        plan.mark_insecure(&mut job);
        Ok(job)
    }

    /// Gives the job's S3 caches the environment's region and credentials;
    /// one still without a region is an error naming its flag or spec key.
    fn resolve_s3(&self, job: &mut Job, overrides: &Overrides) -> Result<(), SpecError> {
        let key = |flag: &str, spec_key: &str, i: usize, given: usize| match i < given {
            true => flag.to_owned(),
            false => format!("images.{}.{spec_key}", job.image),
        };
        let mut failures = Vec::new();
        let given = overrides.cache_to.len();
        for (i, export) in job.cache_exports.iter_mut().enumerate() {
            if let Some(Err(e)) = export.s3_mut().map(|c| c.resolve(&overrides.s3)) {
                failures.push(format!("{}: {e}", key("--cache-to", "cache_to", i, given)));
            }
        }
        let given = overrides.cache_from.len();
        for (i, import) in job.cache_imports.iter_mut().enumerate() {
            if let Some(Err(e)) = import.s3_mut().map(|c| c.resolve(&overrides.s3)) {
                failures.push(format!(
                    "{}: {e}",
                    key("--cache-from", "cache_from", i, given)
                ));
            }
        }
        match failures.into_iter().next() {
            Some(first) => Err(self.error(first)),
            None => Ok(()),
        }
    }

    /// The images a build solves: the ones asked for, or every image.
    fn wanted(&self, overrides: &Overrides) -> Result<Vec<String>, SpecError> {
        let names = if overrides.images.is_empty() {
            self.names().into_iter().map(str::to_owned).collect()
        } else {
            // Checks the names (and the graph) even though only they are
            // solved: the graphs of their `from` images are inside theirs.
            self.closure(&overrides.images)?;
            overrides.images.clone()
        };
        let one_image_only = overrides.push.is_some() || !overrides.outputs.is_empty();
        if one_image_only && names.len() != 1 {
            return Err(self.error(format!(
                "--push and --output apply to one image; name it (images: {})",
                self.names().join(", ")
            )));
        }
        Ok(names)
    }
}

/// What the daemon attaches to `image`: the flags' choices over the spec's,
/// an unnamed SBOM generator resolved to the plan's default once, here.
fn attestations(image: &Image, overrides: &Overrides) -> crate::options::Attestations {
    let sbom = overrides.sbom.clone().unwrap_or_else(|| image.sbom.clone());
    let default = || {
        overrides.sbom_generator.clone().unwrap_or_else(|| {
            crate::options::DEFAULT_SBOM_GENERATOR
                .parse()
                .expect("the default SBOM generator is a valid reference")
        })
    };
    crate::options::Attestations {
        provenance: overrides.provenance.unwrap_or(image.provenance),
        sbom: sbom.map(|generator| generator.resolve(&default())),
    }
}

impl BuildPlan {
    /// Marks the job's registry outputs and caches for plain http where the
    /// registry is on the loopback or `--insecure-registry` was given.
    fn mark_insecure(&self, job: &mut Job) {
        for output in &mut job.outputs {
            if let Output::Image { name, insecure, .. } = output {
                *insecure |= self.insecure(name);
            }
        }
        for export in &mut job.cache_exports {
            if let CacheExport::Registry {
                reference,
                insecure,
                ..
            } = export
            {
                *insecure |= self.insecure(reference);
            }
        }
        for import in &mut job.cache_imports {
            if let CacheImport::Registry {
                reference,
                insecure,
                ..
            } = import
            {
                *insecure |= self.insecure(reference);
            }
        }
    }
}
