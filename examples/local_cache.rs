//! strata as a library, without the spec or the CLI: build a small graph with
//! the `llb` module, solve it on a daemon exporting its build cache to a
//! local directory, then solve it again importing that cache.
//!
//! ```sh
//! eval "$(scripts/daemon.sh up)"
//! cargo run --example local_cache -- "$STRATA_BASE_IMAGE" /tmp/strata-example-cache
//! # add --prune-between to empty the daemon's build cache between the two
//! # solves (the second then restores the step from the local cache)
//! ```
//!
//! The daemon address comes from `BUILDKIT_HOST` (default: the local socket).

use std::path::PathBuf;

use strata::client::PruneOptions;
use strata::llb::{source, Platform, Run, State};
use strata::options::{CacheExport, CacheImport};
use strata::solve::progress::Quiet;
use strata::solve::{self, SolveOpt, Solved};
use strata::{Addr, Client, TlsOptions};

/// What the example shows: whether the step came from the cache each time.
#[derive(Debug)]
pub struct Outcome {
    pub first_cached: bool,
    pub second_cached: bool,
    /// Bytes the export wrote, as the solve measured them.
    pub exported_bytes: Option<u64>,
}

/// The graph: the base image plus one step whose output depends on `marker`.
pub fn graph(base: &str, marker: &str) -> State {
    let base = base.parse().expect("a valid image reference");
    source::image_for(&base, &Platform::host(), Some("base"))
        .run(Run::shell(&format!("echo {marker} > /marker")).named("write the marker"))
}

fn step_cached(solved: &Solved) -> bool {
    solved
        .steps
        .iter()
        .any(|s| s.name == "write the marker" && s.cached)
}

/// Solves `graph(base, marker)` twice: exporting cache to `dir`, then
/// importing it (emptying the daemon's cache in between if `prune_between`).
pub async fn run(
    client: &Client,
    base: &str,
    marker: &str,
    dir: PathBuf,
    prune_between: bool,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let definition = graph(base, marker).marshal();
    let export: CacheExport = format!("type=local,dest={}", dir.display()).parse()?;
    let first = solve::solve(
        client,
        &definition,
        &SolveOpt {
            cache_exports: vec![export],
            ..SolveOpt::default()
        },
        &mut Quiet,
    )
    .await?;
    if prune_between {
        let all = PruneOptions {
            all: true,
            ..PruneOptions::default()
        };
        client.prune(&all, |_| {}).await?;
    }
    let import: CacheImport = format!("type=local,src={}", dir.display()).parse()?;
    let second = solve::solve(
        client,
        &definition,
        &SolveOpt {
            cache_imports: vec![import],
            ..SolveOpt::default()
        },
        &mut Quiet,
    )
    .await?;
    Ok(Outcome {
        first_cached: step_cached(&first),
        second_cached: step_cached(&second),
        exported_bytes: first.cache.first().and_then(|c| c.bytes),
    })
}

#[allow(dead_code)] // a test includes this file for `run`, not `main`
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let prune_between = args.iter().any(|a| a == "--prune-between");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [base, dir] = positional[..] else {
        return Err("usage: local_cache BASE_IMAGE CACHE_DIR [--prune-between]".into());
    };
    let addr: Addr = std::env::var("BUILDKIT_HOST")
        .unwrap_or_else(|_| strata::connect::DEFAULT_ADDR.to_owned())
        .parse()?;
    let client = Client::connect(addr, &TlsOptions::default()).await?;
    let marker = strata::ids::random_id();
    let outcome = run(&client, base, &marker, PathBuf::from(dir), prune_between).await?;
    println!(
        "exported {} bytes to {dir}; the step was {} the second time",
        outcome.exported_bytes.unwrap_or(0),
        if outcome.second_cached {
            "restored from the cache"
        } else {
            "run again"
        }
    );
    Ok(())
}
