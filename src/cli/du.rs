//! `strata du`: build-cache usage; with -v one line per cache record; in a
//! pool, a line per node and the pool's totals.

use anyhow::Result;
use clap::Args;

use strata::client::DiskUsage;
use strata::units::{human_bytes, human_duration};

use super::nodes::Answer;
use super::table::{number, text, Table};
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
    let filter = &args.filter;
    let answers =
        super::nodes::ask_each(cli, |_, c| async move { c.disk_usage(filter).await }).await?;
    if !cli.daemon.is_pool() {
        for a in &answers {
            if let Ok(usage) = &a.answer {
                match args.json {
                    true => super::print_json(usage)?,
                    false => print_usage(usage, cli.verbose),
                }
            }
        }
        return Ok(());
    }
    match args.json {
        true => super::print_json(&super::nodes::answers_json(&answers, "usage")?)?,
        false => print_pool_usage(&answers, cli.verbose),
    }
    super::nodes::fail_if_any_down(&answers)
}

/// Per node (with -v its records first), then the pool's totals.
fn print_pool_usage(answers: &[Answer<DiskUsage>], verbose: bool) {
    if verbose {
        for a in answers {
            if let Ok(usage) = &a.answer {
                println!("{}:", a.node.label());
                print_records(usage);
            }
        }
    }
    let mut table = Table::new(vec![
        text("NODE"),
        number("RECORDS"),
        number("TOTAL"),
        number("RECLAIMABLE"),
        number("IN USE"),
        number("SHARED"),
    ]);
    let row = |name: String, records: usize, u: &DiskUsage| {
        let sizes = [u.total, u.reclaimable, u.in_use, u.shared].map(human_bytes);
        [vec![name, records.to_string()], sizes.to_vec()].concat()
    };
    let (mut sum, mut records) = (DiskUsage::default(), 0);
    for a in answers {
        match &a.answer {
            Ok(u) => {
                table.row(row(a.node.label(), u.records.len(), u));
                sum.total += u.total;
                sum.reclaimable += u.reclaimable;
                sum.in_use += u.in_use;
                sum.shared += u.shared;
                records += u.records.len();
            }
            Err(e) => eprintln!("{}: {e}", a.node.label()),
        }
    }
    let up = answers.iter().filter(|a| a.answer.is_ok()).count();
    table.row(row(format!("all ({up} nodes)"), records, &sum));
    print!("{}", table.render());
}

fn print_usage(usage: &DiskUsage, verbose: bool) {
    if verbose {
        print_records(usage);
    }
    println!("Records:      {}", usage.records.len());
    println!("Total:        {}", human_bytes(usage.total));
    println!("Reclaimable:  {}", human_bytes(usage.reclaimable));
    println!("In use:       {}", human_bytes(usage.in_use));
    println!("Shared:       {}", human_bytes(usage.shared));
}

/// One line per record, largest first, then a blank line.
fn print_records(usage: &DiskUsage) {
    if !usage.records.is_empty() {
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
}
