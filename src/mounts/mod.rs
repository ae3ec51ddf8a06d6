//! Portable cache mounts: the contents of a build's cache mounts (apt's
//! downloaded packages and lists, pip's and npm's caches, `run` steps'
//! cache directories) travel with its build cache to a fresh builder.
//! BuildKit never exports cache mounts (moby/buildkit#1474), so strata does
//! it with its own small solves, leaving the build's LLB untouched:
//!
//! - [`probe`]: one exec mounting each selected cache read-only reports what
//!   it holds (a fingerprint of what travels, its size, the stamp of the
//!   artifact it was last seeded from);
//! - [`export`]: after a build, each changed mount is copied into an output
//!   and exported as its own image-shaped artifact beside the cache
//!   ([`artifact`] names and finds them);
//! - [`seed`]: before a build, each mount whose artifact it does not hold yet
//!   is merged with it (never overwriting newer files), and stamped.
//!
//! Each of these execs gets a fresh `STRATA_RUN` value so it always runs
//! (the same graph may find different contents). Not BuildKit's ignore-cache:
//! that also drops every cache mount the exec names.
//!
//! Nothing here fails a build: a missing, corrupt or foreign artifact, or a
//! base without the tools the scripts need, is one warning line.

pub mod artifact;
pub mod export;
pub mod probe;
pub mod records;
pub mod s3;
pub mod seed;

use crate::solve::SolveError;

/// What one mount holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probed {
    /// sha256 of the listing of what travels (see the module docs).
    pub fingerprint: String,
    /// Bytes of what travels.
    pub size: u64,
    /// The digest of the artifact it was last seeded from, if any.
    pub stamp: Option<String>,
}

/// Why a cache mount could not be probed, seeded or exported. Never fails a
/// build: it becomes a warning line.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{}", brief(.0))]
    Solve(#[from] SolveError),
    #[error("reading the probe's answer: {0}")]
    Answer(#[source] std::io::Error),
    #[error("cannot look inside the cache mounts: {0}")]
    Tools(String),
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    #[error("local cache {dir}: {message}")]
    Local { dir: String, message: String },
}

/// A failed solve in one line: a failed step's name and its last words
/// (the scripts are long; the warning is one line).
fn brief(e: &SolveError) -> String {
    match e {
        SolveError::StepFailed { name, error, logs } => {
            let why = logs
                .iter()
                .rev()
                .map(|l| l.trim())
                .find(|l| !l.is_empty())
                .unwrap_or_else(|| error.rsplit(": ").next().unwrap_or(error));
            format!("{name} failed: {why}")
        }
        other => other.to_string(),
    }
}

/// One mount to seed or export, and from or to where.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub mount: crate::options::CacheMountUse,
    pub location: artifact::Location,
    /// `mounts-max-size=`: a larger mount is skipped.
    pub max_size: Option<u64>,
}

/// What became of one mount's seed or export.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "detail")]
pub enum Outcome {
    /// Exported: a new artifact, of which `uploaded` bytes were new.
    Exported { digest: String, uploaded: u64 },
    /// Its artifact already holds what the mount holds: nothing was sent.
    Unchanged { digest: String },
    /// Tagged as the artifact exported to `with` (same registry): nothing sent.
    Shared { digest: String, with: String },
    /// Merged with its artifact, `pulled` bytes.
    Seeded { pulled: u64 },
    /// The mount already holds its artifact: nothing was pulled.
    Held,
    /// Above `mounts-max-size`.
    TooLarge { max: u64 },
    /// No usable artifact (missing, foreign, unreadable): the mount starts as it is.
    NotSeeded(String),
    /// The export failed; the build did not.
    Failed(String),
}

/// One line of the build summary and one entry of `strata.mounts` in
/// `--metadata-file`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MountReport {
    /// `seed` or `export`.
    pub action: &'static str,
    /// The cache id.
    pub mount: String,
    pub tool: crate::tools::Tool,
    pub target: String,
    pub location: String,
    /// Bytes of what travels (the mount's, for an export; the artifact's
    /// layers, for a seed).
    pub size: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The artifact's digest, when there is one.
    pub digest: Option<String>,
    pub seconds: f64,
}

impl MountReport {
    fn new(action: &'static str, w: &Wanted, size: u64) -> MountReport {
        MountReport {
            action,
            mount: w.mount.id.clone(),
            tool: w.mount.tool,
            target: w.mount.target.clone(),
            location: w.location.to_string(),
            size,
            outcome: Outcome::Held,
            digest: None,
            seconds: 0.0,
        }
    }

    fn with(mut self, outcome: Outcome) -> MountReport {
        if let Outcome::Exported { digest, .. }
        | Outcome::Unchanged { digest }
        | Outcome::Shared { digest, .. } = &outcome
        {
            self.digest = Some(digest.clone());
        }
        self.outcome = outcome;
        self
    }

    /// Whether it deserves a warning (the build went on without it).
    pub fn is_warning(&self) -> bool {
        matches!(self.outcome, Outcome::NotSeeded(_) | Outcome::Failed(_))
    }
}

/// The same `outcome` for every one of `wanted` (e.g. the daemon was not reached).
pub fn reports(action: &'static str, wanted: &[Wanted], outcome: Outcome) -> Vec<MountReport> {
    wanted
        .iter()
        .map(|w| MountReport::new(action, w, 0).with(outcome.clone()))
        .collect()
}

impl std::fmt::Display for MountReport {
    /// `mount apt /var/cache/apt: 212 MB, unchanged, 0 B uploaded`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::units::{human_bytes, human_duration};
        let took = human_duration(std::time::Duration::from_secs_f64(self.seconds));
        write!(f, "mount {} {}: ", self.tool, self.target)?;
        let size = human_bytes(self.size);
        match &self.outcome {
            Outcome::Exported { uploaded, .. } => {
                write!(
                    f,
                    "{size}, exported, {} uploaded in {took}",
                    human_bytes(*uploaded)
                )
            }
            Outcome::Unchanged { .. } => write!(f, "{size}, unchanged, 0 B uploaded"),
            Outcome::Shared { with, .. } => {
                write!(f, "{size}, the artifact exported to {with}, 0 B uploaded")
            }
            Outcome::Seeded { pulled } => {
                write!(
                    f,
                    "seeded from {}, {} pulled in {took}",
                    self.location,
                    human_bytes(*pulled)
                )
            }
            Outcome::Held => write!(
                f,
                "already holds {}, nothing pulled (checked in {took})",
                self.location
            ),
            Outcome::TooLarge { max } => write!(
                f,
                "{size} is above mounts-max-size {}: skipped",
                human_bytes(*max)
            ),
            Outcome::NotSeeded(why) => write!(f, "not seeded ({why}); it starts as it is"),
            Outcome::Failed(why) => write!(f, "not exported: {why}"),
        }
    }
}
