//! The `strata` command line: parse, call the library, print.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use strata::client::{DaemonInfo, DiskUsage, PruneOptions, PruneReport};
use strata::units::{human_bytes, human_duration, parse_duration, parse_size};
use strata::{Addr, Client, TlsOptions};

/// strata builds layered container images on a remote BuildKit daemon, talking
/// to buildkitd directly over gRPC (no docker CLI, no buildctl underneath).
#[derive(Parser)]
#[command(name = "strata", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    daemon: DaemonArgs,

    /// Show more detail: per-record listings, and the full cause chain of an error.
    #[arg(short, long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

/// How to reach the daemon; the names are buildctl's.
#[derive(Args)]
struct DaemonArgs {
    /// Daemon address: unix:///PATH, tcp://HOST:PORT or docker://[SOCKET].
    #[arg(long, env = "BUILDKIT_HOST", default_value = strata::connect::DEFAULT_ADDR, global = true)]
    addr: String,
    /// CA certificate that signed the daemon's certificate (turns TLS on for tcp://).
    #[arg(long, value_name = "FILE", global = true)]
    tlscacert: Option<PathBuf>,
    /// Client certificate, for daemons that require mutual TLS.
    #[arg(long, value_name = "FILE", global = true)]
    tlscert: Option<PathBuf>,
    /// Private key of the client certificate.
    #[arg(long, value_name = "FILE", global = true)]
    tlskey: Option<PathBuf>,
    /// Name the daemon's certificate must carry (default: the host of --addr).
    #[arg(long, value_name = "NAME", global = true)]
    tlsservername: Option<String>,
    /// Directory with ca.pem, cert.pem and key.pem, for whichever is not given alone.
    #[arg(long, value_name = "DIR", global = true)]
    tlsdir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Show the daemon's version and, per worker, its platforms, labels and GC policy.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show how much disk the build cache uses and how much of it could be reclaimed
    /// (with -v, one line per cache record).
    Du {
        /// Only records matching a BuildKit filter, e.g. type==exec.cachemount (repeatable).
        #[arg(long, value_name = "EXPR")]
        filter: Vec<String>,
        /// Print JSON (totals and every record) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Free disk by removing unused build cache, and print how much was freed.
    Prune {
        /// Remove everything unused, including internal and frontend records.
        #[arg(long)]
        all: bool,
        /// Keep this much cache, e.g. 10GB or 512MiB (a bare number is MB).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        keep_storage: Option<u64>,
        /// Keep cache used within this long, e.g. 48h or 7d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        keep_duration: Option<std::time::Duration>,
        /// Only records matching a BuildKit filter, e.g. type==exec.cachemount (repeatable).
        #[arg(long, value_name = "EXPR")]
        filter: Vec<String>,
        /// Print JSON (what was removed and the total) instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl DaemonArgs {
    fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_cert: self.tlscacert.clone(),
            cert: self.tlscert.clone(),
            key: self.tlskey.clone(),
            server_name: self.tlsservername.clone(),
            dir: self.tlsdir.clone(),
        }
    }

    async fn connect(&self) -> Result<Client> {
        let addr: Addr = self.addr.parse()?;
        Ok(Client::connect(addr, &self.tls()).await?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(&err, cli.verbose);
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: bool) {
    let default = if verbose { "strata=debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// One clear line (every library error names what failed and where); with -v,
/// the chain of causes beneath it.
fn report_error(err: &anyhow::Error, verbose: bool) {
    eprintln!("error: {err}");
    if verbose {
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
    }
}

async fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Info { json } => {
            let info = cli.daemon.connect().await?.info().await?;
            if *json {
                print_json(&info)
            } else {
                print_info(&info);
                Ok(())
            }
        }
        Command::Du { filter, json } => {
            let usage = cli.daemon.connect().await?.disk_usage(filter).await?;
            if *json {
                print_json(&usage)
            } else {
                print_usage(&usage, cli.verbose);
                Ok(())
            }
        }
        Command::Prune {
            all,
            keep_storage,
            keep_duration,
            filter,
            json,
        } => {
            let options = PruneOptions {
                all: *all,
                keep_bytes: keep_storage.unwrap_or(0),
                keep_duration: *keep_duration,
                filters: filter.clone(),
            };
            let client = cli.daemon.connect().await?;
            let verbose = cli.verbose && !json;
            let report = client
                .prune(&options, |r| {
                    if verbose {
                        println!(
                            "removed {:<28} {:>10}  {}",
                            short_id(&r.id),
                            human_bytes(r.size),
                            r.description
                        );
                    }
                })
                .await?;
            if *json {
                print_json(&report)
            } else {
                print_prune(&report);
                Ok(())
            }
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_info(info: &DaemonInfo) {
    println!("Daemon:   {}", info.address);
    println!(
        "Version:  {} {} {}",
        info.package,
        info.version,
        if info.revision.is_empty() {
            ""
        } else {
            &info.revision
        }
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

fn short_id(id: &str) -> &str {
    &id[..id.len().min(25)]
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
                r.description
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

fn print_prune(report: &PruneReport) {
    println!(
        "Freed {} ({} record{})",
        human_bytes(report.freed),
        report.records.len(),
        if report.records.len() == 1 { "" } else { "s" }
    );
}
