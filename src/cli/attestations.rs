//! `strata images attestations IMAGE…`: what the daemon attached to pushed
//! images, per platform — the statements' types, and on asking the SBOM's
//! packages (`--sbom`) or the provenance's materials (`--provenance`) — so
//! a user can check them without other tools.

use anyhow::Result;
use clap::Args;

use strata::attestations::{self, spdx::Package, PlatformAttestations, Predicate};
use strata::reference::ImageRef;
use strata::registry::{Registry, RegistryOptions};
use strata::session::DockerAuth;

#[derive(Args)]
pub struct AttestationsArgs {
    /// Images as pushed (REGISTRY/REPO:TAG or @DIGEST).
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<ImageRef>,
    /// Print each SBOM's packages (kind, name, version, purl).
    #[arg(long)]
    sbom: bool,
    /// Print each provenance record's materials (URI and digest).
    #[arg(long)]
    provenance: bool,
    /// Reach this registry (HOST[:PORT]) over plain http (repeatable).
    #[arg(long, value_name = "HOST")]
    insecure_registry: Vec<String>,
    /// Print JSON instead of lines (everything read, by image).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: &AttestationsArgs) -> Result<()> {
    let registry = Registry::new(RegistryOptions {
        insecure: args.insecure_registry.clone(),
        auth: Some(DockerAuth::from_env().with_insecure_hosts(&args.insecure_registry)),
        timeout: None,
    });
    let mut json = serde_json::Map::new();
    for image in &args.images {
        let platforms = attestations::read(&registry, image).await?;
        if args.json {
            json.insert(image.to_string(), serde_json::to_value(&platforms)?);
        } else {
            print_image(args, image, &platforms);
        }
    }
    if args.json {
        super::print_json(&json)?;
    }
    Ok(())
}

/// `IMAGE`, then per platform its statements (and what was asked for).
fn print_image(args: &AttestationsArgs, image: &ImageRef, platforms: &[PlatformAttestations]) {
    println!("{image}");
    for p in platforms {
        let Some(manifest) = &p.manifest else {
            println!("  {}  {}  no attestations", p.platform, p.image);
            continue;
        };
        println!("  {}  {}  attestations {manifest}", p.platform, p.image);
        for s in &p.statements {
            println!("    {}: {}", s.predicate_type, s.predicate.summary());
            match &s.predicate {
                Predicate::Sbom(packages) if args.sbom => print_packages(packages),
                Predicate::Provenance(materials) if args.provenance => {
                    for m in materials {
                        let digest = m.digest.as_deref().unwrap_or("(no digest)");
                        println!("      {}  {digest}", m.uri);
                    }
                }
                _ => {}
            }
        }
    }
}

/// A table of packages: `KIND NAME VERSION PURL`.
fn print_packages(packages: &[Package]) {
    use super::table::{text, Table};
    let mut table = Table::new(vec![
        text("KIND"),
        text("NAME"),
        text("VERSION"),
        text("PURL"),
    ]);
    for p in packages {
        table.row(vec![
            p.kind().unwrap_or("-").to_owned(),
            p.name.clone(),
            p.version.clone(),
            p.purl.clone().unwrap_or_default(),
        ]);
    }
    for line in table.render().lines() {
        println!("      {line}");
    }
}
