//! `strata pool bench`: placement policies compared on the same nodes over
//! the same sequence of edits. For each policy every node is emptied, the
//! spec is built cold over the pool, then rebuilt `rounds` times, each after
//! one overlay file of one image changed (the leaf images with an overlay,
//! in turn). Reported per policy: the cold build's time and its
//! busiest node, the rebuilds' total time and their cache hit rate.
//!
//! A policy that sends an image back to the node holding its cache hits on
//! every step but the edited one; one that moves images misses where they
//! land cold.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::{edit_file, empty_builder, scratch_copy, write_file, BenchError};
use crate::build::{build_on_pool, Outcome};
use crate::pool::place::Placement;
use crate::pool::Pool;
use crate::reference::ImageRef;
use crate::solve::progress::Quiet;
use crate::spec::{Base, Overrides, Spec};

/// What to compare and how long.
#[derive(Debug, Clone)]
pub struct PlacementOptions {
    pub placements: Vec<Placement>,
    /// Rebuilds after the cold build, one edit each.
    pub rounds: usize,
    /// The bench empties every node before each policy; it must be allowed.
    pub allow_prune: bool,
    /// Build-wide settings (CA, platform, --max-parallel).
    pub build: Overrides,
}

/// One policy's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct PlacementResult {
    pub placement: String,
    pub images: usize,
    pub cold_seconds: f64,
    /// Most images the cold build put on one node.
    pub busiest: usize,
    pub rebuild_seconds: f64,
    /// Spec steps over the rebuilds, and how many came from the cache.
    pub steps: usize,
    pub cached: usize,
    pub hit_rate: f64,
}

/// Every policy of `options`, in turn, on `pool`; `say` hears progress.
pub async fn run(
    pool: &Pool,
    spec: &Spec,
    options: &PlacementOptions,
    say: &mut dyn FnMut(&str),
) -> Result<Vec<PlacementResult>, BenchError> {
    if !options.allow_prune {
        return Err(BenchError::Setup(
            "strata pool bench empties every node before each placement; pass --allow-prune to let it"
                .into(),
        ));
    }
    let mut results = Vec::new();
    for &placement in &options.placements {
        let scratch = tempfile::tempdir()
            .map_err(|e| BenchError::Setup(format!("a scratch directory: {e}")))?;
        let copy = scratch_copy(spec, scratch.path())?;
        let edits = edit_files(&copy)?;
        let pool = Pool {
            placement,
            cache: pool.cache.as_ref().map(|c| cache_of_its_own(c, placement)),
            ..pool.clone()
        };
        say(&format!(
            "{}: emptying {} nodes",
            placement.name(),
            pool.nodes.len()
        ));
        empty_every_node(&pool).await?;
        results.push(one_policy(&pool, &copy, options, &edits, say).await?);
    }
    Ok(results)
}

/// A pool cache tag of this run and placement's own: a policy's cold build
/// must not import what an earlier one (or an earlier bench) exported.
fn cache_of_its_own(cache: &ImageRef, placement: Placement) -> ImageRef {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let prefix = cache.tag.as_deref().unwrap_or("pool");
    cache.with_tag(&format!("{prefix}-{}-{run:x}", placement.name()))
}

/// The cold build, then `rounds` edits and rebuilds, under `pool`'s placement.
async fn one_policy(
    pool: &Pool,
    spec: &Spec,
    options: &PlacementOptions,
    edits: &[PathBuf],
    say: &mut dyn FnMut(&str),
) -> Result<PlacementResult, BenchError> {
    let name = pool.placement.name();
    say(&format!("{name}: cold build"));
    let (cold_seconds, cold) = timed_build(pool, spec, &options.build).await?;
    let mut result = PlacementResult {
        placement: name.to_owned(),
        images: cold.built.len(),
        cold_seconds,
        busiest: cold.images_per_node().into_values().max().unwrap_or(0),
        rebuild_seconds: 0.0,
        steps: 0,
        cached: 0,
        hit_rate: 0.0,
    };
    for round in 0..options.rounds {
        let file = &edits[round % edits.len()];
        let mut bytes = std::fs::read(file)
            .map_err(|e| BenchError::Setup(format!("reading {}: {e}", file.display())))?;
        bytes.extend(format!("\n# strata pool bench edit {round}\n").bytes());
        write_file(file, &bytes)?;
        say(&format!(
            "{name}: rebuild {} of {}",
            round + 1,
            options.rounds
        ));
        let (seconds, outcome) = timed_build(pool, spec, &options.build).await?;
        result.rebuild_seconds += seconds;
        for b in &outcome.built {
            let (run, cached) = b.step_counts();
            result.steps += run + cached;
            result.cached += cached;
        }
    }
    result.hit_rate = crate::build::hit_rate(result.steps - result.cached, result.cached);
    Ok(result)
}

/// One build over the pool that always solves, quietly; failures are errors.
async fn timed_build(
    pool: &Pool,
    spec: &Spec,
    build: &Overrides,
) -> Result<(f64, Outcome), BenchError> {
    let overrides = Overrides {
        no_skip: true,
        ..build.clone()
    };
    let began = Instant::now();
    let outcome = build_on_pool(pool, &spec.resolve(&overrides)?, &Quiet).await?;
    if let Some(f) = outcome.failed.first() {
        return Err(BenchError::Setup(format!("{}: {}", f.image, f.error)));
    }
    Ok((began.elapsed().as_secs_f64(), outcome))
}

/// Every node's whole build cache pruned, at once.
async fn empty_every_node(pool: &Pool) -> Result<(), BenchError> {
    let emptied = pool
        .each(|_, client| async move { empty_builder(&client).await })
        .await;
    for (_, answer) in emptied {
        answer?;
    }
    Ok(())
}

/// The files the rounds edit, in turn: the first overlay file of each leaf
/// image (one no other is built from: a service, the everyday edit) that
/// has one; of every image when no leaf has.
fn edit_files(spec: &Spec) -> Result<Vec<PathBuf>, BenchError> {
    let is_parent = |name: &str| {
        spec.images()
            .iter()
            .any(|i| matches!(&i.base, Base::From(p) if p == name))
    };
    let files_of = |leaves_only: bool| -> Vec<PathBuf> {
        spec.images()
            .iter()
            .filter(|i| !(leaves_only && is_parent(&i.name)))
            .filter_map(|i| edit_file(spec, &i.name).ok())
            .collect()
    };
    let files = Some(files_of(true))
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| files_of(false));
    match files.is_empty() {
        true => Err(BenchError::Setup(
            "pool bench edits overlays: no image of the spec has an overlay copy with a file"
                .into(),
        )),
        false => Ok(files),
    }
}
