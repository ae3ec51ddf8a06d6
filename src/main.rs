//! The `strata` command line: parse, call the library, print.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use strata::build::{BuildOptions, Built};
use strata::client::{DaemonInfo, DiskUsage, PruneOptions, PruneReport};
use strata::spec::Spec;
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
    /// Build the images of a strata.toml (all, or the ones named) on the daemon:
    /// base, toolchain steps with cache mounts, overlay; push or export the result.
    Build(BuildArgs),
    /// Benchmark cache modes side by side (cold, warm, edit, registry-min,
    /// registry-max, local, inline): median and range per mode, steps run vs
    /// cached, per-step times; optionally the same work through buildctl.
    Bench(BenchArgs),
    /// Write an image's LLB (a pb.Definition) to stdout, e.g. to run the very
    /// same graph with `buildctl build` (see README).
    Llb(LlbArgs),
}

/// The spec file and the build-wide settings `build` and `llb` share.
#[derive(Args)]
struct SpecArgs {
    /// The spec to read.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "strata.toml"
    )]
    file: PathBuf,
    /// A CA bundle to trust inside toolchain steps (for networks that re-sign TLS);
    /// mounted as a secret, never stored in a layer. Overrides the spec's ca_cert.
    #[arg(long, value_name = "FILE", env = "STRATA_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Target platform, e.g. linux/arm64 (default: the spec's, else this machine's).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<strata::llb::Platform>,
}

#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Images to build (default: every image of the spec).
    #[arg(value_name = "IMAGE")]
    images: Vec<String>,
    /// Push the image to this reference (one image only).
    #[arg(long, value_name = "REF")]
    push: Option<String>,
    /// Export the image: type=registry,name=REF | type=image,name=REF[,push=true] |
    /// type=oci,dest=FILE | type=docker,dest=FILE | type=local,dest=DIR (repeatable).
    #[arg(short, long, value_name = "SPEC", value_parser = strata::solve::parse_output)]
    output: Vec<strata::solve::Output>,
    /// Allow plain-http registries (loopback registries always are).
    #[arg(long)]
    insecure_registry: bool,
    /// A secret for `run` steps: id=ID,src=FILE (repeatable).
    #[arg(long, value_name = "id=ID,src=FILE", value_parser = parse_secret)]
    secret: Vec<(String, PathBuf)>,
    /// Export build cache: type=registry,ref=REF[,mode=min|max] | type=local,dest=DIR |
    /// type=inline (repeatable; mode defaults to max, which keeps toolchain layers).
    #[arg(long, value_name = "SPEC", value_parser = parse_cache_to)]
    cache_to: Vec<strata::solve::CacheEntry>,
    /// Import build cache: type=registry,ref=REF | type=local,src=DIR (repeatable).
    #[arg(long, value_name = "SPEC", value_parser = parse_cache_from)]
    cache_from: Vec<strata::solve::CacheEntry>,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    progress: strata::solve::progress::ProgressMode,
    /// Write what the exporters returned (image digests, …) as JSON, by image.
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// The image to benchmark.
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Modes to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cold,warm,edit,registry-min,registry-max,local,inline"
    )]
    modes: Vec<strata::bench::Mode>,
    /// Runs per mode.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    runs: u16,
    /// Let the bench prune the daemon's whole build cache (cold and cache-import modes need it).
    #[arg(long)]
    allow_prune: bool,
    /// Repository for registry and inline cache (default: strata-bench/IMAGE on the base image's registry).
    #[arg(long, value_name = "REPO")]
    cache_repo: Option<String>,
    /// Also run every mode through BuildKit's own client, alternating, and add a ratio column.
    #[arg(long, value_name = "CLIENT", value_parser = ["buildctl"])]
    compare: Option<String>,
    /// Write the full results (per mode, per run, per step) as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the modes as an SVG bar chart (median, min-max whiskers).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

#[derive(Args)]
struct LlbArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// The image whose graph to print.
    #[arg(value_name = "IMAGE")]
    image: String,
}

fn parse_secret(value: &str) -> Result<(String, PathBuf), String> {
    let (mut id, mut src) = (None, None);
    for part in value.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_owned()),
            Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
            _ => return Err(format!("{part:?}: expected id=ID,src=FILE")),
        }
    }
    match (id, src) {
        (Some(id), Some(src)) => Ok((id, src)),
        (Some(id), None) => Ok((id.clone(), PathBuf::from(id))),
        _ => Err("missing id= (expected id=ID,src=FILE)".into()),
    }
}

fn parse_cache_to(value: &str) -> Result<strata::solve::CacheEntry, String> {
    strata::solve::parse_cache_entry(value, strata::solve::Direction::Export)
}

fn parse_cache_from(value: &str) -> Result<strata::solve::CacheEntry, String> {
    strata::solve::parse_cache_entry(value, strata::solve::Direction::Import)
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
    let runtime = match strata::runtime::new() {
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
        Command::Build(args) => build_command(cli, args).await,
        Command::Llb(args) => llb_command(args).await,
        Command::Bench(args) => bench_command(cli, args).await,
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

impl SpecArgs {
    fn load(&self) -> Result<Spec> {
        Ok(Spec::load(&self.file)?)
    }

    fn options(&self, spec: &Spec) -> BuildOptions {
        BuildOptions {
            ca_cert: self
                .ca_cert
                .clone()
                .or_else(|| spec.ca_cert().map(Into::into)),
            platform: self.platform.clone(),
            ..BuildOptions::default()
        }
    }
}

/// Exit status of a build cancelled with Ctrl-C (128 + SIGINT), as shells report it.
const INTERRUPTED: i32 = 130;

async fn build_command(cli: &Cli, args: &BuildArgs) -> Result<()> {
    let spec = args.spec.load()?;
    let options = BuildOptions {
        images: args.images.clone(),
        push: args.push.clone(),
        outputs: args.output.clone(),
        insecure_registry: args.insecure_registry,
        secrets: args.secret.iter().cloned().collect(),
        cache_to: args.cache_to.clone(),
        cache_from: args.cache_from.clone(),
        progress: Some(args.progress),
        ..args.spec.options(&spec)
    };
    let client = cli.daemon.connect().await?;
    let built = tokio::select! {
        built = strata::build::build(&client, &spec, &options) => built.inspect_err(print_failed_step_logs)?,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the build cancelled its Solve calls; give the connection
            // a moment to tell the daemon, which then stops the running step.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            eprintln!("error: interrupted: the build was cancelled on the daemon");
            std::process::exit(INTERRUPTED);
        }
    };
    for b in &built {
        print_built(b);
    }
    if let Some(path) = &args.metadata_file {
        write_metadata(path, &built)?;
    }
    Ok(())
}

/// The tail of a failed step's output, above the one-line error.
fn print_failed_step_logs(err: &strata::build::BuildError) {
    use strata::solve::SolveError;
    if let strata::build::BuildError::Solve {
        source: SolveError::StepFailed { name, logs, .. },
        ..
    } = err
    {
        if !logs.is_empty() {
            eprintln!("--- last output of {name} ---");
            for line in logs {
                eprintln!("{line}");
            }
            eprintln!("---");
        }
    }
}

fn print_built(b: &Built) {
    // Counted as `strata bench` counts: the spec's steps only.
    let spec_steps: Vec<_> = b
        .solved
        .steps
        .iter()
        .filter(|s| strata::spec::is_spec_step(&s.name))
        .collect();
    let cached = spec_steps.iter().filter(|s| s.cached).count();
    let digest = b.solved.image_digest().unwrap_or("(no image exported)");
    let mut line = format!(
        "{}  {digest}  {} steps: {} run, {cached} cached, {}",
        b.image,
        spec_steps.len(),
        spec_steps.len() - cached,
        human_duration(b.solved.duration)
    );
    if let Some(pushed) = &b.pushed {
        line.push_str(&format!("  pushed {pushed}"));
    }
    println!("{line}");
    for c in &b.cache {
        let size = match (c.bytes, c.blobs) {
            (Some(bytes), Some(blobs)) => format!("{} in {blobs} blobs", human_bytes(bytes)),
            _ => "size unknown".into(),
        };
        let mode = c
            .mode
            .as_deref()
            .map(|m| format!(" mode={m}"))
            .unwrap_or_default();
        println!(
            "  cache exported: type={}{mode} to {} ({size})",
            c.kind, c.location
        );
    }
}

/// `--metadata-file`: per image, the exporters' response as the daemon gave it
/// (`containerimage.digest`, `containerimage.config.digest`, `image.name`, …)
/// plus strata's own counts. Written whole or not at all.
fn write_metadata(path: &std::path::Path, built: &[Built]) -> Result<()> {
    use anyhow::Context;
    let mut all = serde_json::Map::new();
    for b in built {
        let mut entry = serde_json::Map::new();
        for (k, v) in &b.solved.exporter_response {
            entry.insert(k.clone(), v.clone().into());
        }
        entry.insert("strata.steps".into(), b.solved.steps.len().into());
        entry.insert(
            "strata.cached".into(),
            b.solved.steps.iter().filter(|s| s.cached).count().into(),
        );
        entry.insert(
            "strata.duration_seconds".into(),
            b.solved.duration.as_secs_f64().into(),
        );
        entry.insert(
            "strata.cache_exports".into(),
            serde_json::to_value(&b.cache)?,
        );
        all.insert(b.image.clone(), entry.into());
    }
    let text = serde_json::to_string_pretty(&all)? + "\n";
    let tmp = path.with_extension("strata-tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("--metadata-file {}", path.display()))
}

async fn llb_command(args: &LlbArgs) -> Result<()> {
    use std::io::{IsTerminal, Write};
    let spec = args.spec.load()?;
    let options = args.spec.options(&spec);
    let lowered = strata::build::plan(&spec, std::slice::from_ref(&args.image), &options).await?;
    let Some(image) = lowered.into_iter().next() else {
        anyhow::bail!("no image {:?} in {}", args.image, args.spec.file.display());
    };
    let mut stdout = std::io::stdout();
    if stdout.is_terminal() {
        anyhow::bail!(
            "strata llb writes a binary pb.Definition; pipe it, e.g. strata llb {} | buildctl build …",
            args.image
        );
    }
    stdout.write_all(&image.definition.to_bytes())?;
    stdout.flush()?;
    // What buildctl needs to run the same graph.
    let mut flags: Vec<String> = image
        .local_dirs
        .iter()
        .map(|(name, dir)| format!("--local {name}={}", dir.path.display()))
        .collect();
    if let Some(ca) = &options.ca_cert {
        flags.push(format!(
            "--secret id={},src={}",
            strata::build::CA_SECRET_ID,
            ca.display()
        ));
    }
    if !flags.is_empty() {
        eprintln!("buildctl build needs: {}", flags.join(" "));
    }
    Ok(())
}

async fn bench_command(cli: &Cli, args: &BenchArgs) -> Result<()> {
    use anyhow::Context;
    let spec = args.spec.load()?;
    let cache_repo = match &args.cache_repo {
        Some(r) => r.clone(),
        None => {
            let base = spec
                .image(&args.image)
                .and_then(|i| match &i.base {
                    strata::spec::Base::Image(r) => Some(r.clone()),
                    strata::spec::Base::From(_) | strata::spec::Base::Scratch => None,
                })
                .or_else(|| spec.base_refs().into_iter().next())
                .context(
                    "--cache-repo is needed: the image has no registry base to derive it from",
                )?;
            let host = base.split('/').next().unwrap_or_default();
            format!("{host}/strata-bench/{}", args.image)
        }
    };
    let buildctl = match &args.compare {
        Some(_) => Some(
            std::env::var_os("STRATA_BUILDCTL")
                .map(PathBuf::from)
                .filter(|p| p.is_file())
                .or_else(|| find_on_path("buildctl"))
                .context(
                    "--compare buildctl: buildctl is neither in STRATA_BUILDCTL nor on PATH (scripts/daemon.sh up exports both)",
                )?,
        ),
        None => None,
    };
    let mut daemon_args = vec!["--addr".to_owned(), cli.daemon.addr.clone()];
    for (flag, value) in [
        ("--tlscacert", &cli.daemon.tlscacert),
        ("--tlscert", &cli.daemon.tlscert),
        ("--tlskey", &cli.daemon.tlskey),
    ] {
        if let Some(v) = value {
            daemon_args.extend([flag.to_owned(), v.display().to_string()]);
        }
    }
    let options = strata::bench::BenchOptions {
        image: args.image.clone(),
        modes: args.modes.clone(),
        runs: args.runs as usize,
        allow_prune: args.allow_prune,
        cache_repo,
        buildctl,
        buildctl_daemon_args: daemon_args,
        build: args.spec.options(&spec),
    };
    let client = cli.daemon.connect().await?;
    let report =
        strata::bench::run(&client, &spec, &options, &mut |line| eprintln!("{line}")).await?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("--json {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        strata::bench::chart::write_svg(&report, path).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}
