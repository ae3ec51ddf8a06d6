//! `strata compose build [SERVICE…]`: the services of compose files that have
//! a `build` section, built in one run as Dockerfile images (one progress
//! view, shared context uploads, key tags), pushed or loaded under their
//! `image` names.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::args::BuildFlags;
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
    /// A CA bundle, served as the secret strata-ca-cert (see examples/codex/Dockerfile).
    #[arg(long, value_name = "FILE", env = "STRATA_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Let compose files read contexts in DIR besides their own directory (repeatable).
    #[arg(long, value_name = "DIR")]
    allow_path: Vec<PathBuf>,
    #[command(flatten)]
    build: BuildFlags,
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
        ca_cert: args.ca_cert.clone(),
        ..strata::spec::Overrides::default()
    };
    let overrides = args.build.apply(overrides, cli)?;
    super::build::build_and_report(
        cli,
        &spec.resolve(&overrides)?,
        &args.build.progress,
        args.build.metadata_file.as_deref(),
    )
    .await
}
