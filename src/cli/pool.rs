//! `strata pool status`: each node of the pool (several `--addr`, or
//! `--builders FILE`), probed at once: reachable or not, version, workers
//! and platforms, cache size, records in use, probe latency.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use strata::pool::status::{status, NodeStatus};
use strata::units::{human_bytes, parse_duration};

use super::Cli;

#[derive(Args)]
pub struct PoolArgs {
    #[command(subcommand)]
    command: PoolCommand,
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Probe every node: reachable, version, workers, platforms, cache, latency.
    Status(StatusArgs),
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

fn print_status(nodes: &[NodeStatus]) {
    println!(
        "{:<36} {:<6} {:<10} {:>7} {:<24} {:>10} {:>6} {:>8}",
        "NODE", "STATE", "VERSION", "WORKERS", "PLATFORMS", "CACHE", "IN USE", "PROBE"
    );
    for n in nodes {
        if !n.reachable {
            println!(
                "{:<36} {:<6} {}",
                n.name,
                "down",
                n.error.as_deref().unwrap_or("")
            );
            continue;
        }
        println!(
            "{:<36} {:<6} {:<10} {:>7} {:<24} {:>10} {:>6} {:>6.1}ms",
            n.name,
            "up",
            n.version.as_deref().unwrap_or("?"),
            n.workers,
            n.platforms.join(","),
            n.cache_bytes.map(human_bytes).unwrap_or_default(),
            n.records_in_use.unwrap_or(0),
            n.probe_ms.unwrap_or(0.0)
        );
    }
}
