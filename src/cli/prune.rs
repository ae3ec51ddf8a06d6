//! `strata prune`: free disk by removing unused build cache (in a pool, on
//! every node at once).

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use strata::client::{PruneOptions, PruneReport};
use strata::units::{human_bytes, parse_duration, parse_size};

use super::nodes::Answer;
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
    let verbose = cli.verbose && !args.json;
    let pool = cli.daemon.is_pool();
    let options = &options;
    let answers = super::nodes::ask_each(cli, |node, c| {
        let by = if pool {
            format!("{}: ", node.label())
        } else {
            String::new()
        };
        async move {
            let shown = |r: &strata::client::UsageRecord| {
                if verbose {
                    println!(
                        "{by}removed {:<28} {:>10}  {}",
                        short_id(&r.id),
                        human_bytes(r.size),
                        r.summary()
                    );
                }
            };
            c.prune(options, shown).await
        }
    })
    .await?;
    match (args.json, pool) {
        (true, true) => super::print_json(&super::nodes::answers_json(&answers, "pruned")?)?,
        (true, false) => {
            for report in answers.iter().filter_map(|a| a.answer.as_ref().ok()) {
                super::print_json(report)?;
            }
        }
        (false, _) => print_each(&answers, pool),
    }
    super::nodes::fail_if_any_down(&answers)
}

/// What each node freed (in a pool, a line per node and the sum).
fn print_each(answers: &[Answer<PruneReport>], pool: bool) {
    let mut all = PruneReport::default();
    for a in answers {
        match &a.answer {
            Ok(report) if pool => {
                print!("{}: ", a.node.label());
                print_prune(report);
                all.freed += report.freed;
                all.records.extend(report.records.iter().cloned());
            }
            Ok(report) => print_prune(report),
            Err(e) => eprintln!("{}: {e}", a.node.label()),
        }
    }
    if pool {
        print!("all nodes: ");
        print_prune(&all);
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
