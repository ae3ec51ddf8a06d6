//! What a build returns: each image built (or found built), the failures
//! with their fallbacks, a pool build's notes and tiers, and why a build
//! could not run.

use std::collections::BTreeMap;

use crate::keys::ContentKey;
use crate::options::CacheReport;
use crate::reference::ImageRef;
use crate::registry::RegistryError;
use crate::solve::progress::Step;
use crate::solve::{SolveError, Solved};
use crate::spec::SpecError;

use super::{fallback::Failed, git, load::Loaded, pool};

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
    /// Its steps are a frontend's, named as it names them: a Dockerfile
    /// image, or an image built on one (whose own steps are named alike).
    pub frontend: bool,
    /// Its cache mounts seeded before the build and exported after (`mounts=`).
    pub mounts: Vec<crate::mounts::MountReport>,
    /// The pool nodes that built it, in a build over a pool: one, or each
    /// that built some of its platforms.
    pub nodes: Vec<String>,
    /// A multi-platform image's platforms found built under their key tags
    /// (the others were solved, and the index written from them all).
    pub platforms_found: Vec<crate::llb::Platform>,
    /// Each platform it was built for, with that platform's key (what its
    /// manifest's config records).
    pub platform_keys: Vec<(crate::llb::Platform, ContentKey)>,
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
    #[error("image {image}: {output} holds one platform, and the image is built for {platforms}: ask for one with --platform, or push the index (--push) or write it as type=oci")]
    OnePlatformOutput {
        image: String,
        output: String,
        platforms: String,
    },
    #[error(transparent)]
    Place(#[from] crate::pool::place::PlaceError),
    #[error("image {image}: no node of the pool builds {platforms}: {nodes}")]
    NoNodeBuilds {
        image: String,
        platforms: String,
        /// Every node, with its platforms (or down).
        nodes: String,
    },
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error("image {image}: the SBOM generator {generator} cannot be reached ({reason}): name one with --sbom=generator=IMAGE or the spec's sbom = {{ generator = \"IMAGE\" }}, or set STRATA_SBOM_GENERATOR (scripts/daemon.sh builds examples/sbom-generator, which needs no Docker Hub)")]
    SbomGeneratorUnreachable {
        image: String,
        generator: String,
        reason: String,
    },
    #[error("image {image}: {source}")]
    Solve {
        image: String,
        #[source]
        source: SolveError,
    },
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
        for node in self.built.iter().flat_map(|b| &b.nodes) {
            *per_node.entry(node.clone()).or_default() += 1;
        }
        per_node
    }
}
