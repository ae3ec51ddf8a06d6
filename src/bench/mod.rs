//! `strata bench`: one image built under each cache mode, N runs each, timed
//! the same way every time, so a cache strategy can be picked with numbers.
//!
//! Modes:
//! - `cold`: pruned builder, no import (a new machine);
//! - `warm`: the builder's own cache (a no-op rebuild);
//! - `edit`: one overlay file changed (the everyday case);
//! - `registry-min`, `registry-max`, `local`, `inline`: pruned builder, then
//!   import from that cache (exported once beforehand, timed and measured).
//!
//! The spec's directory is copied to a scratch directory first, so `edit`
//! never touches the user's files. Every run of every client pushes the
//! image (to its own tag of the bench repository), so each does the same
//! work with the same output. With `--compare buildctl,buildx`, every run is
//! followed by the same work through those clients (see [`external`]); each
//! is warmed up once before the modes that do not prune are timed.

pub mod chart;
pub mod external;
pub mod fresh_edit;
pub mod placement;
mod rawjson;
pub mod report;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use serde::Serialize;

use crate::build::{self, BuildError, Built};
use crate::client::{Client, ClientError, PruneOptions};
use crate::llb::Platform;
use crate::options::{CacheExport, CacheImport, CacheMode, LayerOptions};
use crate::reference::ImageRef;
use crate::solve::progress::Quiet;
use crate::spec::{OverlayItem, Overrides, Spec, SpecError};

pub use report::{ModeSummary, Report};

/// A cache mode to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Cold,
    Warm,
    Edit,
    RegistryMin,
    RegistryMax,
    Local,
    /// Pruned, then imported from an S3 bucket (`--cache-s3`), min or max.
    S3Min,
    S3Max,
    Inline,
    /// The image is found by its content key tag: nothing solved (buildctl,
    /// which has no such lookup, does its warm no-op solve).
    Hit,
    /// A fresh builder imports the cache, with and without its cache mounts,
    /// and builds the spec with one apt package and one pip requirement
    /// added (see `fresh_edit`).
    FreshEdit,
}

impl Mode {
    pub const ALL: [Mode; 11] = [
        Mode::Cold,
        Mode::Warm,
        Mode::Edit,
        Mode::RegistryMin,
        Mode::RegistryMax,
        Mode::Local,
        Mode::S3Min,
        Mode::S3Max,
        Mode::Inline,
        Mode::Hit,
        Mode::FreshEdit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Warm => "warm",
            Mode::Edit => "edit",
            Mode::RegistryMin => "registry-min",
            Mode::RegistryMax => "registry-max",
            Mode::Local => "local",
            Mode::S3Min => "s3-min",
            Mode::S3Max => "s3-max",
            Mode::Inline => "inline",
            Mode::Hit => "hit",
            Mode::FreshEdit => "fresh-edit",
        }
    }

    /// Whether the mode imports from S3 (strata's runs only: buildctl sends
    /// no credentials of its own, so it is not compared there).
    pub fn is_s3(self) -> bool {
        matches!(self, Mode::S3Min | Mode::S3Max)
    }

    /// Whether the mode starts from an empty builder.
    pub fn prunes(self) -> bool {
        !matches!(self, Mode::Warm | Mode::Edit | Mode::Hit)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!("unknown mode {s:?} (modes: {})", all.join(", "))
            })
    }
}

/// What to measure and how.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub image: String,
    pub modes: Vec<Mode>,
    pub runs: usize,
    /// The bench prunes the daemon; it refuses to without this.
    pub allow_prune: bool,
    /// Repository for registry and inline cache, e.g. `127.0.0.1:5000/strata/bench`
    /// (each mode uses a tag of its own).
    pub cache_repo: ImageRef,
    /// The bucket the s3 modes export to and import from (`--cache-s3`),
    /// its region and credentials resolved; each mode uses a name of its own.
    pub s3: Option<crate::options::S3Cache>,
    /// Other clients to run the same work through (`--compare`).
    pub compare: Vec<external::External>,
    /// Build-wide settings (CA bundle, platform, insecure registries).
    pub build: Overrides,
}

/// One measured build.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub mode: Mode,
    /// `strata`, `buildctl` or `buildx`.
    pub tool: String,
    pub run: usize,
    pub wall_seconds: f64,
    pub first_step_seconds: Option<f64>,
    pub steps_run: usize,
    pub steps_cached: usize,
    /// Time by phase, summed over the vertices of each.
    pub phases: Phases,
    pub steps: Vec<StepTime>,
}

/// Where a build's time went, from its vertices' names and durations
/// (vertices of one phase may overlap; each is summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Phases {
    /// Resolving base images (`load metadata`, `resolve …`).
    pub resolve: f64,
    /// Sending local files: the context, the Dockerfile, overlay dirs.
    pub upload: f64,
    /// The image's own steps.
    pub steps: f64,
    /// Exporting and pushing (or loading) the image, and cache exports.
    pub export: f64,
}

impl Phases {
    fn of(steps: &[StepTime]) -> Phases {
        let mut p = Phases::default();
        for s in steps {
            let Some(secs) = s.seconds else { continue };
            let name = s.name.as_str();
            let phase = if s.spec_step {
                &mut p.steps
            } else if name.starts_with("export") || name.contains("exporting") {
                &mut p.export
            } else if name.starts_with("local ")
                || name.contains("load build context")
                || name.contains("load build definition")
                || name.contains("load .dockerignore")
            {
                &mut p.upload
            } else if name.contains("load metadata") || name.starts_with("resolve") {
                &mut p.resolve
            } else {
                continue;
            };
            *phase += secs;
        }
        p
    }
}

impl RunResult {
    pub fn new(
        tool: &str,
        mode: Mode,
        run: usize,
        wall: f64,
        first_step: Option<f64>,
        steps: Vec<StepTime>,
    ) -> RunResult {
        RunResult {
            mode,
            tool: tool.to_owned(),
            run,
            wall_seconds: wall,
            first_step_seconds: first_step,
            steps_run: count(&steps, false),
            steps_cached: count(&steps, true),
            phases: Phases::of(&steps),
            steps,
        }
    }

    pub fn hit_rate(&self) -> f64 {
        let total = self.steps_run + self.steps_cached;
        if total == 0 {
            0.0
        } else {
            self.steps_cached as f64 / total as f64
        }
    }
}

/// One step of a run, from the daemon's status stream.
#[derive(Debug, Clone, Serialize)]
pub struct StepTime {
    /// Whether it is one of the spec's steps (by its op digest), which are
    /// counted as run or cached; the rest (resolving the base, sending local
    /// files, exporting) is timed only.
    pub spec_step: bool,
    pub name: String,
    pub cached: bool,
    pub seconds: Option<f64>,
}

/// A cache export made before the import modes run.
#[derive(Debug, Clone, Serialize)]
pub struct ExportResult {
    pub mode: Mode,
    pub seconds: f64,
    pub bytes: Option<u64>,
    pub blobs: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("strata bench prunes the daemon's build cache before the {0} mode(s); pass --allow-prune to let it (or choose --modes warm,edit)")]
    PruneNotAllowed(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Setup(String),
}

/// Copies the spec's directory (overlays included) to `to` and loads the copy.
fn scratch_copy(spec: &Spec, to: &Path) -> Result<Spec, BenchError> {
    let from = spec
        .path()
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    copy_tree(from, to).map_err(|e| {
        BenchError::Setup(format!(
            "copying {} to a scratch directory: {e}",
            from.display()
        ))
    })?;
    let name = spec.path().file_name().unwrap_or_default();
    Ok(Spec::load(&to.join(name))?)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The file the edit mode changes: the first file of the image's overlay;
/// of a Dockerfile image, the first file in the first directory of its
/// context (what a COPY usually takes), else the context's first file.
fn edit_file(spec: &Spec, image: &str) -> Result<PathBuf, BenchError> {
    if let Some(crate::spec::Base::Dockerfile(d)) = spec.image(image).map(|i| &i.base) {
        let first_dir = sorted_entries(&d.context)
            .into_iter()
            .find(|p| p.is_dir() && !is_hidden(p));
        return first_dir
            .and_then(|dir| first_file(&dir))
            .or_else(|| first_file(&d.context))
            .ok_or_else(|| {
                BenchError::Setup(format!(
                    "the edit mode needs a file in {}",
                    d.context.display()
                ))
            });
    }
    let dir = spec
        .image(image)
        .and_then(|i| {
            i.overlay.iter().find_map(|o| match o {
                // The host platform's directory, for a per-platform one.
                OverlayItem::Copy { from, .. } => from.dir_for(&Platform::host()).ok(),
                OverlayItem::Git { .. } => None,
            })
        })
        .ok_or_else(|| {
            BenchError::Setup(format!(
                "the edit mode needs an overlay copy in image {image}"
            ))
        })?;
    first_file(&dir.path).ok_or_else(|| {
        BenchError::Setup(format!(
            "the edit mode needs a file in {}",
            dir.path.display()
        ))
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BenchError> {
    std::fs::write(path, bytes)
        .map_err(|e| BenchError::Setup(format!("editing {}: {e}", path.display())))
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    entries
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn first_file(dir: &Path) -> Option<PathBuf> {
    let entries = sorted_entries(dir);
    entries.iter().find(|p| p.is_file()).cloned().or_else(|| {
        entries
            .iter()
            .filter(|p| p.is_dir())
            .find_map(|d| first_file(d))
    })
}

/// Where each cache mode exports to and imports from.
struct CachePlan {
    local_dir: PathBuf,
    repo: ImageRef,
    s3: Option<crate::options::S3Cache>,
}

impl CachePlan {
    fn registry(&self, tag: &str, mode: CacheMode) -> CacheExport {
        CacheExport::Registry {
            reference: self.repo.with_tag(tag),
            options: LayerOptions {
                mode,
                ..LayerOptions::default()
            },
            insecure: false,
            mounts: None,
        }
    }

    fn export(&self, mode: Mode) -> Option<CacheExport> {
        Some(match mode {
            Mode::RegistryMin => self.registry("min", CacheMode::Min),
            Mode::RegistryMax => self.registry("max", CacheMode::Max),
            Mode::Local => CacheExport::Local {
                dest: self.local_dir.clone(),
                tag: "latest".into(),
                options: LayerOptions::default(),
                mounts: None,
            },
            Mode::S3Min | Mode::S3Max => CacheExport::S3 {
                cache: self.s3_cache(mode)?,
                mode: if mode == Mode::S3Min {
                    CacheMode::Min
                } else {
                    CacheMode::Max
                },
                ignore_error: false,
                mounts: None,
            },
            Mode::Inline => CacheExport::Inline { mode: None },
            _ => return None,
        })
    }

    /// The bucket's cache for `mode`: a name of the mode's own.
    fn s3_cache(&self, mode: Mode) -> Option<crate::options::S3Cache> {
        let name = format!("strata-bench-{mode}");
        self.s3.as_ref().map(|c| c.named(&name))
    }

    fn import(&self, mode: Mode) -> Option<CacheImport> {
        let registry = |tag: &str| CacheImport::Registry {
            reference: self.repo.with_tag(tag),
            insecure: false,
            mounts: None,
        };
        Some(match mode {
            Mode::RegistryMin => registry("min"),
            Mode::RegistryMax => registry("max"),
            Mode::Local => CacheImport::Local {
                src: self.local_dir.clone(),
                tag: "latest".into(),
                digest: None,
                mounts: None,
            },
            Mode::S3Min | Mode::S3Max => CacheImport::S3 {
                cache: self.s3_cache(mode)?,
                mounts: None,
            },
            Mode::Inline => registry("inline"),
            _ => return None,
        })
    }

    /// Where `tool`'s runs push the image.
    fn output(&self, tool: &str) -> ImageRef {
        self.repo.with_tag(&format!("out-{tool}"))
    }

    /// The image the hit mode finds by its key tag.
    fn hit_image(&self) -> ImageRef {
        self.repo.with_tag("hit")
    }

    /// The image pushed with inline cache (the inline mode imports from it).
    fn inline_image(&self) -> ImageRef {
        self.repo.with_tag("inline")
    }
}

/// Runs the benchmark, reporting what it is doing through `say`.
pub async fn run(
    client: &Client,
    spec: &Spec,
    options: &BenchOptions,
    say: &mut dyn FnMut(&str),
) -> Result<Report, BenchError> {
    let pruning: Vec<&str> = options
        .modes
        .iter()
        .filter(|m| m.prunes())
        .map(|m| m.name())
        .collect();
    if !pruning.is_empty() && !options.allow_prune {
        return Err(BenchError::PruneNotAllowed(pruning.join(", ")));
    }
    if let (Some(mode), None) = (options.modes.iter().find(|m| m.is_s3()), &options.s3) {
        return Err(BenchError::Setup(format!(
            "mode {mode} needs a bucket: --cache-s3 type=s3,bucket=…,region=…"
        )));
    }
    spec.closure(std::slice::from_ref(&options.image))?;
    let scratch = tempfile::tempdir()
        .map_err(|e| BenchError::Setup(format!("creating a scratch directory: {e}")))?;
    let spec = scratch_copy(spec, &scratch.path().join("spec"))?;
    if !pruning.is_empty() {
        say(&format!(
            "strata bench prunes this daemon's whole build cache before each run of: {}",
            pruning.join(", ")
        ));
    }
    let runner = Runner::prepare(client, &spec, options, scratch.path(), say).await?;
    let began = Instant::now();
    let mut runs = Vec::new();
    for &mode in options.modes.iter().filter(|m| **m != Mode::FreshEdit) {
        // The edit mode changes one file per run and puts it back after, so
        // the modes after it still match the caches exported.
        let edit = match mode {
            Mode::Edit => Some(read_edit_file(&spec, &options.image)?),
            _ => None,
        };
        if !mode.prunes() {
            // Every client starts the mode from its own warm state.
            for tool in runner.tools(mode) {
                say(&format!("{mode}: warming up {tool} (not timed)"));
                runner.measure(tool, Mode::Warm, 0).await?;
            }
        }
        for run in 1..=options.runs {
            for tool in runner.tools(mode) {
                say(&format!(
                    "[{:>5.0}s] {mode} run {run}/{} ({tool})",
                    began.elapsed().as_secs_f64(),
                    options.runs
                ));
                reset_for(client, mode, edit.as_ref(), &format!("{tool}-{run}")).await?;
                runs.push(runner.measure(tool, mode, run).await?);
            }
        }
        if let Some((file, original)) = &edit {
            write_file(file, original)?;
        }
    }
    let fresh_edit = if options.modes.contains(&Mode::FreshEdit) {
        fresh_edit::run(&runner, spec.path(), say).await?
    } else {
        Vec::new()
    };
    let mut report = Report::new(&options.image, runs, runner.exports);
    report.fresh_edit = fresh_edit;
    Ok(report)
}

/// What every measured run shares: the spec's copy, the build settings, the
/// caches exported beforehand and, for a comparison, the work the other
/// clients are given.
struct Runner<'a> {
    client: &'a Client,
    spec: &'a Spec,
    options: &'a BenchOptions,
    base: Overrides,
    cache: CachePlan,
    exports: Vec<ExportResult>,
    /// The very graph strata builds, lowered once (its LLB in `llb_file`).
    image: crate::spec::LoweredImage,
    llb_file: PathBuf,
    /// The CA bundle the builds trust: --ca-cert, else the spec's.
    ca_cert: Option<PathBuf>,
}

impl<'a> Runner<'a> {
    /// Warms the builder, exports the caches the import modes need and
    /// writes the graph the other clients are given.
    async fn prepare(
        client: &'a Client,
        spec: &'a Spec,
        options: &'a BenchOptions,
        scratch: &Path,
        say: &mut dyn FnMut(&str),
    ) -> Result<Runner<'a>, BenchError> {
        let cache = CachePlan {
            local_dir: scratch.join("local-cache"),
            repo: options.cache_repo.clone(),
            s3: options.s3.clone(),
        };
        // Every strata run pushes, as every other client does; one push (no
        // key tag) per run, as they make.
        let base = Overrides {
            images: vec![options.image.clone()],
            push: Some(cache.output("strata")),
            no_key_tag: true,
            ..options.build.clone()
        };
        say("preparing: one build to warm the builder");
        built_by_solving(client, spec, &base).await?;
        let exports = export_caches(client, spec, &base, &cache, &options.modes, say).await?;
        if options.modes.contains(&Mode::Hit) {
            say("preparing: pushing the image under its key tag");
            let push = Overrides {
                push: Some(cache.hit_image()),
                no_key_tag: false,
                ..base.clone()
            };
            built_by_solving(client, spec, &push).await?;
        }
        let llb_file = scratch.join("image.llb");
        let (image, ca_cert) = lowered(spec, &base, &llb_file).await?;
        Ok(Runner {
            client,
            spec,
            options,
            base,
            cache,
            exports,
            image,
            llb_file,
            ca_cert,
        })
    }

    /// `strata`, then the clients compared in `mode`.
    fn tools(&self, mode: Mode) -> Vec<&'static str> {
        let mut tools = vec!["strata"];
        if !mode.is_s3() {
            tools.extend(self.options.compare.iter().map(|e| e.tool.name()));
        }
        tools
    }

    /// One timed build of the image by `tool`, importing `mode`'s cache.
    async fn measure(&self, tool: &str, mode: Mode, run: usize) -> Result<RunResult, BenchError> {
        let import = self.cache.import(mode);
        let Some(external) = self.options.compare.iter().find(|e| e.tool.name() == tool) else {
            return self.measure_strata(mode, run, import).await;
        };
        let dockerfile = match &self.spec.image(&self.options.image).map(|i| &i.base) {
            Some(crate::spec::Base::Dockerfile(d)) => Some(d),
            _ => None,
        };
        let work = external::Work {
            image: &self.image,
            dockerfile,
            llb_file: &self.llb_file,
            ca_cert: self.ca_cert.as_deref(),
            output: self.cache.output(tool),
        };
        external
            .run(&work, external_import(import).as_ref(), mode, run)
            .await
            .map_err(BenchError::Setup)
    }

    async fn measure_strata(
        &self,
        mode: Mode,
        run: usize,
        import: Option<CacheImport>,
    ) -> Result<RunResult, BenchError> {
        let t = Instant::now();
        let built = if mode == Mode::Hit {
            let opts = Overrides {
                push: Some(self.cache.hit_image()),
                no_key_tag: false,
                ..self.base.clone()
            };
            let daemon = crate::client::Daemon::from(self.client.clone());
            build::build(&daemon, &self.spec.resolve(&opts)?, &Quiet).await?
        } else {
            let opts = Overrides {
                cache_from: import.into_iter().collect(),
                ..self.base.clone()
            };
            built_by_solving(self.client, self.spec, &opts).await?
        };
        Ok(measured(mode, run, t.elapsed().as_secs_f64(), &built))
    }
}

/// The image `base` selects, lowered, with its LLB written to `llb_file`
/// (the other clients' stdin) and the CA bundle its build trusts.
async fn lowered(
    spec: &Spec,
    base: &Overrides,
    llb_file: &Path,
) -> Result<(crate::spec::LoweredImage, Option<PathBuf>), BenchError> {
    let plan = spec.resolve(base)?;
    let image = build::lower(&plan).await?.remove(0);
    // A Dockerfile image has no LLB of strata's: the other clients run its
    // frontend (an empty file is theirs to ignore).
    let definition = image
        .llb()
        .map(|l| l.definition.to_bytes())
        .unwrap_or_default();
    std::fs::write(llb_file, definition)
        .map_err(|e| BenchError::Setup(format!("writing {}: {e}", llb_file.display())))?;
    Ok((image, plan.ca_cert))
}

/// An import as other clients need it said: strata marks loopback
/// registries insecure itself, they need it in the flag.
fn external_import(import: Option<CacheImport>) -> Option<CacheImport> {
    match import {
        Some(CacheImport::Registry {
            reference, mounts, ..
        }) => Some(CacheImport::Registry {
            insecure: reference.is_loopback(),
            reference,
            mounts,
        }),
        other => other,
    }
}

/// The file the edit mode changes, and what it holds before.
fn read_edit_file(spec: &Spec, image: &str) -> Result<(PathBuf, Vec<u8>), BenchError> {
    let file = edit_file(spec, image)?;
    let original = std::fs::read(&file)
        .map_err(|e| BenchError::Setup(format!("reading {}: {e}", file.display())))?;
    Ok((file, original))
}

/// Exports every cache the import modes need, one export per mode so each
/// one's own time and size are known.
async fn export_caches(
    client: &Client,
    spec: &Spec,
    base: &Overrides,
    plan: &CachePlan,
    modes: &[Mode],
    say: &mut dyn FnMut(&str),
) -> Result<Vec<ExportResult>, BenchError> {
    let mut exports = Vec::new();
    for &mode in modes {
        let Some(export) = plan.export(mode) else {
            continue;
        };
        say(&format!("preparing: exporting {mode} cache"));
        let with_export = Overrides {
            cache_to: vec![export],
            push: (mode == Mode::Inline).then(|| plan.inline_image()),
            ..base.clone()
        };
        let t = Instant::now();
        let built = built_by_solving(client, spec, &with_export).await?;
        let report = built.first().and_then(|b| b.cache().first());
        exports.push(ExportResult {
            mode,
            seconds: t.elapsed().as_secs_f64(),
            bytes: report.and_then(|r| r.bytes),
            blobs: report.and_then(|r| r.blobs),
        });
    }
    Ok(exports)
}

/// A build that always solves (a benchmark measures solves, never a key-tag
/// hit), quietly.
async fn built_by_solving(
    client: &Client,
    spec: &Spec,
    overrides: &Overrides,
) -> Result<Vec<build::Built>, BenchError> {
    built_showing(client, spec, overrides, &Quiet).await
}

/// [`built_by_solving`], its progress shown to `progress`.
async fn built_showing(
    client: &Client,
    spec: &Spec,
    overrides: &Overrides,
    progress: &dyn crate::solve::progress::Progress,
) -> Result<Vec<build::Built>, BenchError> {
    let overrides = Overrides {
        no_skip: true,
        ..overrides.clone()
    };
    let daemon = crate::client::Daemon::from(client.clone());
    Ok(build::build(&daemon, &spec.resolve(&overrides)?, progress).await?)
}

/// Brings the builder to the state `mode` starts from, whichever client runs
/// next: as it is (warm), one overlay file changed (edit, marked `tag`), or
/// pruned (every mode that starts from an empty builder).
async fn reset_for(
    client: &Client,
    mode: Mode,
    edit: Option<&(PathBuf, Vec<u8>)>,
    tag: &str,
) -> Result<(), BenchError> {
    if mode == Mode::Edit {
        let (file, original) = edit.expect("read when edit is asked");
        let mut changed = original.clone();
        changed.extend(format!("\n# strata bench edit {tag}\n").bytes());
        write_file(file, &changed)?;
    } else if mode.prunes() {
        empty_builder(client).await?;
    }
    Ok(())
}

/// Prunes the whole build cache, until no record is left in use.
async fn empty_builder(client: &Client) -> Result<(), ClientError> {
    let all = PruneOptions {
        all: true,
        ..PruneOptions::default()
    };
    client.prune_settled(&all).await?;
    Ok(())
}

fn measured(mode: Mode, run: usize, wall: f64, built: &[Built]) -> RunResult {
    let steps: Vec<StepTime> = built
        .iter()
        .flat_map(|b| {
            let ours: Vec<&str> = b.spec_steps().map(|s| s.digest.as_str()).collect();
            b.solved.steps.iter().map(move |s| StepTime {
                spec_step: ours.contains(&s.digest.as_str()),
                name: s.name.clone(),
                cached: s.cached,
                seconds: s.duration().map(|d| d.as_secs_f64()),
            })
        })
        .collect();
    let first_step = built
        .first()
        .and_then(|b| b.solved.time_to_first_step)
        .map(|d| d.as_secs_f64());
    RunResult::new("strata", mode, run, wall, first_step, steps)
}

/// Steps of the spec that ran, or came from the cache. Resolving the base,
/// sending local files and exporting happen on every build and are timed per
/// step, but are not counted as run or cached.
pub(crate) fn count(steps: &[StepTime], cached: bool) -> usize {
    steps
        .iter()
        .filter(|s| s.spec_step)
        .filter(|s| {
            if cached {
                s.cached
            } else {
                !s.cached && s.seconds.is_some()
            }
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_say_whether_they_prune() {
        assert_eq!("registry-max".parse::<Mode>().unwrap(), Mode::RegistryMax);
        assert!("hot"
            .parse::<Mode>()
            .unwrap_err()
            .contains("modes: cold, warm"));
        assert!(Mode::Cold.prunes() && Mode::Local.prunes());
        assert!(!Mode::Warm.prunes() && !Mode::Edit.prunes() && !Mode::Hit.prunes());
    }

    #[test]
    fn cache_plan_pairs_exports_with_imports() {
        let s3 = "type=s3,bucket=b,region=r".parse::<CacheImport>().unwrap();
        let CacheImport::S3 { cache, .. } = s3 else {
            unreachable!()
        };
        let plan = CachePlan {
            local_dir: "/tmp/c".into(),
            repo: "127.0.0.1:5000/b".parse().unwrap(),
            s3: Some(cache),
        };
        assert_eq!(
            plan.export(Mode::RegistryMin).unwrap().to_string(),
            "type=registry,ref=127.0.0.1:5000/b:min,mode=min"
        );
        assert_eq!(
            plan.import(Mode::Inline).unwrap().to_string(),
            "type=registry,ref=127.0.0.1:5000/b:inline"
        );
        assert!(plan.export(Mode::Warm).is_none());
        assert_eq!(
            plan.export(Mode::S3Min).unwrap().to_string(),
            "type=s3,bucket=b,region=r,name=strata-bench-s3-min,mode=min"
        );
        assert_eq!(
            plan.import(Mode::S3Max).unwrap().to_string(),
            "type=s3,bucket=b,region=r,name=strata-bench-s3-max"
        );
    }
}
