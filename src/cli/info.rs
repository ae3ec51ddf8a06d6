//! `strata info`: the daemon's version and, per worker, platforms, labels and
//! GC policy; in a pool, every node's.

use anyhow::Result;
use clap::Args;

use strata::client::DaemonInfo;
use strata::units::{human_bytes, human_duration};

use super::Cli;

#[derive(Args)]
pub struct InfoArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(cli: &Cli, args: &InfoArgs) -> Result<()> {
    let answers = super::nodes::ask_each(cli, |_, c| async move { c.info().await }).await?;
    match (args.json, cli.daemon.is_pool()) {
        (true, true) => super::print_json(&super::nodes::answers_json(&answers, "info")?)?,
        (true, false) => {
            for a in &answers {
                if let Ok(info) = &a.answer {
                    super::print_json(info)?;
                }
            }
        }
        (false, _) => {
            for (i, a) in answers.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                match &a.answer {
                    Ok(info) => print_info(info),
                    Err(e) => eprintln!("{}: {e}", a.node.label()),
                }
            }
        }
    }
    super::nodes::fail_if_any_down(&answers)
}

fn print_info(info: &DaemonInfo) {
    println!("Daemon:   {}", info.address);
    println!(
        "Version:  {} {} {}",
        info.package, info.version, info.revision
    );
    println!("Workers:  {}", info.workers.len());
    for w in &info.workers {
        println!();
        println!("Worker {}", w.id);
        println!("  Platforms: {}", w.platforms.join(", "));
        println!("  Labels:");
        for (k, v) in &w.labels {
            println!("    {k} = {v}");
        }
        println!("  GC policy:");
        if w.gc_policy.is_empty() {
            println!("    (none: the cache grows until pruned)");
        }
        for (i, p) in w.gc_policy.iter().enumerate() {
            let keep = if p.keep_bytes > 0 {
                format!("keep {}", human_bytes(p.keep_bytes))
            } else {
                "no size limit".to_owned()
            };
            let age = p
                .keep_duration
                .map(|d| format!(", records used within {}", human_duration(d)))
                .unwrap_or_default();
            let scope = if p.all { ", all records" } else { "" };
            let filters = if p.filters.is_empty() {
                String::new()
            } else {
                format!(", filters: {}", p.filters.join(" "))
            };
            println!("    {}. {keep}{age}{scope}{filters}", i + 1);
        }
    }
}
