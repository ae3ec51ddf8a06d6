//! `strata llb IMAGE`: the image's LLB (`pb.Definition`) on stdout, and on
//! stderr the flags `buildctl build` needs to run the very same graph.

use std::io::{IsTerminal, Write};

use anyhow::{bail, Result};
use clap::Args;

use strata::build::CA_SECRET_ID;

use super::args::SpecArgs;

#[derive(Args)]
pub struct LlbArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// The image whose graph to print.
    #[arg(value_name = "IMAGE")]
    image: String,
}

pub async fn run(args: &LlbArgs) -> Result<()> {
    let spec = args.spec.load()?;
    let overrides = strata::spec::Overrides {
        images: vec![args.image.clone()],
        ..args.spec.overrides()
    };
    let plan = spec.resolve(&overrides)?;
    let Some(image) = strata::build::lower(&plan).await?.into_iter().next() else {
        bail!("no image {:?} in {}", args.image, args.spec.file.display());
    };
    if let strata::spec::ImageGraph::Platforms(graphs) = &image.graph {
        let platforms: Vec<String> = graphs.iter().map(|(p, _)| p.to_string()).collect();
        bail!(
            "image {:?} is built for {}: one definition holds one platform; name one with --platform",
            args.image,
            platforms.join(", ")
        );
    }
    if let strata::spec::ImageGraph::OnFrontend(_) = &image.graph {
        bail!(
            "image {:?} is built on a Dockerfile image: its LLB is made on the dockerfile frontend's graph during the solve, so there is none to write before it (build it with strata build {0})",
            args.image
        );
    }
    let Some(llb) = image.llb() else {
        bail!(
            "image {:?} is a Dockerfile image: the dockerfile frontend makes its graph on the daemon, so there is no LLB to write (build it with strata build {0})",
            args.image
        );
    };
    let mut stdout = std::io::stdout();
    if stdout.is_terminal() {
        bail!(
            "strata llb writes a binary pb.Definition; pipe it, e.g. strata llb {} | buildctl build …",
            args.image
        );
    }
    stdout.write_all(&llb.definition.to_bytes())?;
    stdout.flush()?;
    let mut flags: Vec<String> = image
        .local_dirs
        .iter()
        .map(|(name, dir)| format!("--local {name}={}", dir.path.display()))
        .collect();
    if let Some(ca) = &plan.ca_cert {
        flags.push(format!("--secret id={CA_SECRET_ID},src={}", ca.display()));
    }
    if !flags.is_empty() {
        eprintln!("buildctl build needs: {}", flags.join(" "));
    }
    Ok(())
}
