//! `strata bench`: cache modes side by side (table, JSON, SVG), optionally
//! against buildctl doing the same work.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use strata::bench::external::{External, Tool};
use strata::reference::ImageRef;
use strata::spec::{Base, Spec};

use super::args::SpecArgs;
use super::Cli;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// The image to benchmark.
    #[arg(value_name = "IMAGE")]
    image: String,
    /// Modes to run, comma-separated (hit: the image found by its content key
    /// tag, nothing solved; fresh-edit, not by default: an emptied builder
    /// imports the registry cache with and without its cache mounts and
    /// builds the spec with one apt package and one pip requirement added;
    /// with --compare buildctl, buildctl builds the same edit importing the
    /// same cache; s3-min and s3-max, not by default: pruned, then imported
    /// from --cache-s3's bucket, strata's runs only).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cold,warm,edit,registry-min,registry-max,local,inline,hit"
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
    cache_repo: Option<ImageRef>,
    /// The bucket for the s3-min and s3-max modes, as a cache entry without
    /// its name (type=s3,bucket=B,region=R[,endpoint_url=URL,use_path_style=true]);
    /// credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    #[arg(long, value_name = "SPEC")]
    cache_s3: Option<strata::options::CacheImport>,
    /// Also run every mode through these clients (buildctl; buildx for a Dockerfile
    /// image), alternating, each pushing the same image, and add ratio columns.
    #[arg(long, value_name = "CLIENT,…", value_delimiter = ',')]
    compare: Vec<Tool>,
    /// Write the full results (per mode, per run, per step) as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the modes as an SVG bar chart (median, min-max whiskers).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

pub async fn run(cli: &Cli, args: &BenchArgs) -> Result<()> {
    // A benchmark of cache modes measures one daemon: a pool is refused
    // before any work.
    if cli.daemon.is_pool() {
        anyhow::bail!("strata bench measures one daemon (give one --addr); on a pool, `strata pool bench` compares placements");
    }
    let spec = args.spec.load()?;
    // buildx keeps its builder in a config directory of the bench's own.
    let buildx_config = tempfile::tempdir()?;
    let mut compare = Vec::new();
    for &tool in &args.compare {
        compare.push(external(cli, tool, buildx_config.path()).await?);
    }
    let options = strata::bench::BenchOptions {
        image: args.image.clone(),
        modes: args.modes.clone(),
        runs: args.runs as usize,
        allow_prune: args.allow_prune,
        cache_repo: match &args.cache_repo {
            Some(r) => r.clone(),
            None => default_cache_repo(&spec, &args.image)?,
        },
        s3: args.cache_s3.as_ref().map(s3_bucket).transpose()?,
        compare,
        build: args.spec.overrides(),
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

/// `--cache-s3`'s bucket, with the region and credentials of the environment.
fn s3_bucket(entry: &strata::options::CacheImport) -> Result<strata::options::S3Cache> {
    let strata::options::CacheImport::S3 { cache, .. } = entry else {
        anyhow::bail!("--cache-s3 {entry}: a type=s3 entry");
    };
    let mut cache = cache.clone();
    cache
        .resolve(&super::args::s3_env())
        .map_err(|e| anyhow::anyhow!("--cache-s3: {e}"))?;
    Ok(cache)
}

/// `strata-bench/IMAGE` on the registry of the image's base (or the spec's first).
fn default_cache_repo(spec: &Spec, image: &str) -> Result<ImageRef> {
    let base = spec
        .image(image)
        .and_then(|i| match &i.base {
            Base::Image(r) => Some(r.clone()),
            Base::Dockerfile(d) => d.froms.first().map(|(_, r)| r.clone()),
            Base::From(_) | Base::Scratch => None,
        })
        .or_else(|| spec.base_refs().into_iter().next())
        .context("--cache-repo is needed: the image has no registry base to derive it from")?;
    Ok(format!("{}/strata-bench/{image}", base.registry).parse()?)
}

/// A client to compare with, found and (buildx) given its builder.
async fn external(cli: &Cli, tool: Tool, buildx_config: &Path) -> Result<External> {
    let (variable, names) = match tool {
        Tool::Buildctl => ("STRATA_BUILDCTL", &["buildctl"][..]),
        Tool::Buildx => ("STRATA_BUILDX", &["docker-buildx", "buildx"][..]),
    };
    let exe = find_exe(variable, names).with_context(|| {
        format!(
            "--compare {}: not in {variable} nor on PATH (scripts/daemon.sh up exports it)",
            tool.name()
        )
    })?;
    if tool == Tool::Buildx {
        External::prepare_buildx(&exe, cli.daemon.addr()?, buildx_config)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    Ok(External {
        tool,
        exe,
        daemon_args: buildctl_daemon_args(cli)?,
        buildx_config: Some(buildx_config.to_owned()),
    })
}

/// `variable`'s file, else the first of `names` on PATH.
fn find_exe(variable: &str, names: &[&str]) -> Option<PathBuf> {
    let on_path = || {
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths)
            .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
            .find(|p| p.is_file())
    };
    std::env::var_os(variable)
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(on_path)
}

/// The daemon address and TLS flags, as buildctl takes them.
fn buildctl_daemon_args(cli: &Cli) -> Result<Vec<String>> {
    let mut out = vec!["--addr".to_owned(), cli.daemon.addr()?.to_owned()];
    for (flag, value) in [
        ("--tlscacert", &cli.daemon.tlscacert),
        ("--tlscert", &cli.daemon.tlscert),
        ("--tlskey", &cli.daemon.tlskey),
    ] {
        if let Some(v) = value {
            out.extend([flag.to_owned(), v.display().to_string()]);
        }
    }
    Ok(out)
}
