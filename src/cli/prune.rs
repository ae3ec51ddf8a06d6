//! `strata prune`: free disk by removing unused build cache.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use strata::client::{PruneOptions, PruneReport};
use strata::units::{human_bytes, parse_duration, parse_size};

use super::{short_id, Cli};

#[derive(Args)]
pub struct PruneArgs {
    /// Remove everything unused, including internal and frontend records.
    #[arg(long)]
    all: bool,
    /// Keep this much cache, e.g. 10GB or 512MiB (a bare number is MB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_storage: Option<u64>,
    /// Keep cache used within this long, e.g. 48h or 7d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_duration: Option<Duration>,
    /// Only records matching a BuildKit filter, e.g. type==exec.cachemount (repeatable).
    #[arg(long, value_name = "EXPR")]
    filter: Vec<String>,
    /// Print JSON (what was removed and the total) instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(cli: &Cli, args: &PruneArgs) -> Result<()> {
    let options = PruneOptions {
        all: args.all,
        keep_bytes: args.keep_storage.unwrap_or(0),
        keep_duration: args.keep_duration,
        filters: args.filter.clone(),
    };
    let client = cli.daemon.connect().await?;
    let verbose = cli.verbose && !args.json;
    let report = client
        .prune(&options, |r| {
            if verbose {
                println!(
                    "removed {:<28} {:>10}  {}",
                    short_id(&r.id),
                    human_bytes(r.size),
                    r.summary()
                );
            }
        })
        .await?;
    if args.json {
        super::print_json(&report)
    } else {
        print_prune(&report);
        Ok(())
    }
}

fn print_prune(report: &PruneReport) {
    println!(
        "Freed {} ({} record{})",
        human_bytes(report.freed),
        report.records.len(),
        if report.records.len() == 1 { "" } else { "s" }
    );
}
