//! `strata pool`: `status` probes each node of the pool (several `--addr`,
//! or `--builders FILE`) at once: reachable or not, version, workers and
//! platforms, cache size, builds in flight, probe latency; `bench` compares
//! placements on it ([`strata::bench::placement`]).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use strata::pool::status::{status, NodeStatus};
use strata::units::{human_bytes, parse_duration};

use super::args::SpecArgs;
use super::Cli;

#[derive(Args)]
pub struct PoolArgs {
    #[command(subcommand)]
    command: PoolCommand,
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Probe every node: reachable, version, workers, platforms, cache,
    /// builds in flight, latency.
    Status(StatusArgs),
    /// Compare placements on this pool: for each, every node emptied, the
    /// spec built cold, then rebuilt after each of --rounds overlay edits;
    /// cold time, busiest node, rebuild time and cache hit rate.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Rebuilds after the cold build, each after one overlay file changed.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Placements to compare, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "rendezvous,context-path,random"
    )]
    placements: Vec<strata::pool::place::Placement>,
    /// Let the bench prune every node's whole build cache (it must).
    #[arg(long)]
    allow_prune: bool,
    /// Solve at most N images at once, per node and over the pool.
    #[arg(long, value_name = "N")]
    max_parallel: Option<std::num::NonZeroUsize>,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct StatusArgs {
    /// How long a node may take to answer before it is reported down.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    deadline: Duration,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(cli: &Cli, args: &PoolArgs) -> Result<()> {
    match &args.command {
        PoolCommand::Bench(b) => bench(cli, b).await,
        PoolCommand::Status(s) => {
            let pool = cli.daemon.pool()?;
            let nodes = status(&pool, s.deadline).await;
            if s.json {
                super::print_json(&nodes)?;
            } else {
                print_status(&nodes);
            }
            let down = nodes.iter().filter(|n| !n.reachable).count();
            if down > 0 {
                anyhow::bail!("{down} of {} nodes are down", nodes.len());
            }
            Ok(())
        }
    }
}

async fn bench(cli: &Cli, args: &BenchArgs) -> Result<()> {
    use strata::bench::placement::{run, PlacementOptions};
    let pool = cli.daemon.pool()?;
    let spec = args.spec.load()?;
    let options = PlacementOptions {
        placements: args.placements.clone(),
        rounds: args.rounds,
        allow_prune: args.allow_prune,
        build: strata::spec::Overrides {
            max_parallel: args.max_parallel,
            ..args.spec.overrides()
        },
    };
    let results = run(&pool, &spec, &options, &mut |line| eprintln!("{line}")).await?;
    use super::table::{number, text, Table};
    let mut table = Table::new(vec![
        text("PLACEMENT"),
        number("COLD"),
        number("BUSIEST NODE"),
        number("REBUILDS"),
        number("HIT"),
    ]);
    for r in &results {
        table.row(vec![
            r.placement.clone(),
            format!("{:.1}s", r.cold_seconds),
            format!("{} of {}", r.busiest, r.images),
            format!("{:.1}s", r.rebuild_seconds),
            format!("{:.0}%", 100.0 * r.hit_rate),
        ]);
    }
    print!("{}", table.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)? + "\n")
            .with_context(|| format!("--json {}", path.display()))?;
    }
    Ok(())
}

fn print_status(nodes: &[NodeStatus]) {
    use super::table::{number, text, Table};
    let mut table = Table::new(vec![
        text("NODE"),
        text("STATE"),
        text("VERSION"),
        number("WORKERS"),
        text("PLATFORMS"),
        number("CACHE"),
        number("BUILDS"),
        number("PROBE"),
    ]);
    for n in nodes {
        let name = strata::pool::label(&n.name);
        if !n.reachable {
            let error = n.error.clone().unwrap_or_default();
            table.row(vec![name, "down".into(), error]);
            continue;
        }
        table.row(vec![
            name,
            "up".into(),
            n.version.clone().unwrap_or_else(|| "?".into()),
            n.workers.to_string(),
            n.platforms.join(","),
            n.cache_bytes.map(human_bytes).unwrap_or_default(),
            n.builds_in_flight.map_or("?".into(), |b| b.to_string()),
            format!("{:.1}ms", n.probe_ms.unwrap_or(0.0)),
        ]);
    }
    print!("{}", table.render());
}
