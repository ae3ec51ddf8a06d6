//! `strata du`: build-cache usage; with -v one line per cache record.

use anyhow::Result;
use clap::Args;

use strata::client::DiskUsage;
use strata::units::{human_bytes, human_duration};

use super::{short_id, Cli};

#[derive(Args)]
pub struct DuArgs {
    /// Only records matching a BuildKit filter, e.g. type==exec.cachemount (repeatable).
    #[arg(long, value_name = "EXPR")]
    filter: Vec<String>,
    /// Print JSON (totals and every record) instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(cli: &Cli, args: &DuArgs) -> Result<()> {
    let usage = cli.daemon.connect().await?.disk_usage(&args.filter).await?;
    if args.json {
        super::print_json(&usage)
    } else {
        print_usage(&usage, cli.verbose);
        Ok(())
    }
}

fn print_usage(usage: &DiskUsage, verbose: bool) {
    if verbose && !usage.records.is_empty() {
        println!(
            "{:<26} {:>10} {:<12} {:<16} {:>9}  DESCRIPTION",
            "ID", "SIZE", "RECLAIMABLE", "TYPE", "IDLE"
        );
        for r in &usage.records {
            let state = if r.in_use {
                "in use"
            } else if r.shared {
                "shared"
            } else {
                "yes"
            };
            let idle = r
                .idle_for()
                .map(human_duration)
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<26} {:>10} {:<12} {:<16} {:>9}  {}",
                short_id(&r.id),
                human_bytes(r.size),
                state,
                r.record_type,
                idle,
                r.summary()
            );
        }
        println!();
    }
    println!("Records:      {}", usage.records.len());
    println!("Total:        {}", human_bytes(usage.total));
    println!("Reclaimable:  {}", human_bytes(usage.reclaimable));
    println!("In use:       {}", human_bytes(usage.in_use));
    println!("Shared:       {}", human_bytes(usage.shared));
}
