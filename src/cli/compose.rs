//! `strata compose build [SERVICE…]`: the services of compose files that have
//! a `build` section, built in one run as Dockerfile images (one progress
//! view, shared context uploads, key tags), pushed or loaded under their
//! `image` names.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use strata::options::{CacheExport, CacheImport};

use super::progress::ProgressMode;
use super::Cli;

#[derive(Args)]
pub struct ComposeArgs {
    #[command(subcommand)]
    action: ComposeAction,
}

#[derive(Subcommand)]
enum ComposeAction {
    /// Build the services that have a build section (all, or those named).
    Build(ComposeBuildArgs),
}

#[derive(Args)]
struct ComposeBuildArgs {
    /// Compose files, later ones overriding earlier (default: compose.yaml).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Services to build (default: every service with a build section).
    #[arg(value_name = "SERVICE")]
    services: Vec<String>,
    /// Push each service to its `image` name (and its key tag).
    #[arg(long)]
    push: bool,
    /// Load each service into a docker daemon under its `image` name, skipping
    /// what it already has (see `strata build --load`).
    #[arg(long, value_name = "docker://SOCKET", num_args = 0..=1, default_missing_value = "")]
    load: Option<String>,
    /// Export build cache (as `strata build --cache-to`; repeatable).
    #[arg(long, value_name = "SPEC")]
    cache_to: Vec<CacheExport>,
    /// Import build cache (as `strata build --cache-from`; repeatable).
    #[arg(long, value_name = "SPEC")]
    cache_from: Vec<CacheImport>,
    /// Solve even services whose key tag says they are built.
    #[arg(long)]
    no_skip: bool,
    /// Do not also push services under their key tag (nor look for it first).
    #[arg(long)]
    no_key_tag: bool,
    /// A secret the Dockerfiles mount (`RUN --mount=type=secret,id=ID`):
    /// id=ID,src=FILE (repeatable).
    #[arg(long, value_name = "id=ID,src=FILE", value_parser = strata::values::parse_secret)]
    secret: Vec<(String, PathBuf)>,
    /// A CA bundle, served as the secret strata-ca-cert (see examples/codex/Dockerfile).
    #[arg(long, value_name = "FILE", env = "STRATA_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Reach this registry (HOST[:PORT]) over plain http (repeatable).
    #[arg(long, value_name = "HOST")]
    insecure_registry: Vec<String>,
    /// Solve at most N services at once (default 4).
    #[arg(long, value_name = "N")]
    max_parallel: Option<std::num::NonZeroUsize>,
    /// Build every service that can be built even when one fails.
    #[arg(long)]
    keep_going: bool,
    /// Let compose files read contexts in DIR besides their own directory (repeatable).
    #[arg(long, value_name = "DIR")]
    allow_path: Vec<PathBuf>,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Write what was built, per service, as JSON (as `strata build`).
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
}

pub async fn run(cli: &Cli, args: &ComposeArgs) -> Result<()> {
    let ComposeAction::Build(args) = &args.action;
    let files = if args.files.is_empty() {
        vec![PathBuf::from("compose.yaml")]
    } else {
        args.files.clone()
    };
    let (spec, notes) = strata::compose::load(&files, &args.allow_path)?;
    for note in notes {
        eprintln!("note: {note}");
    }
    let overrides = strata::spec::Overrides {
        images: args
            .services
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        no_push: !args.push,
        cache_to: args.cache_to.clone(),
        cache_from: args.cache_from.clone(),
        no_skip: args.no_skip,
        no_key_tag: args.no_key_tag,
        secrets: args.secret.iter().cloned().collect(),
        ca_cert: args.ca_cert.clone(),
        insecure_registries: args.insecure_registry.clone(),
        max_parallel: args.max_parallel,
        keep_going: args.keep_going,
        load: super::args::load_flag(args.load.as_deref(), cli)?,
        ..strata::spec::Overrides::default()
    };
    super::build::build_and_report(
        cli,
        &spec.resolve(&overrides)?,
        &args.progress,
        args.metadata_file.as_deref(),
    )
    .await
}
