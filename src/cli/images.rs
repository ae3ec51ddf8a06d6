//! `strata images [IMAGE…]`: the key tags each image has in its registry,
//! the current one marked; `strata images prune --keep N` deletes the stale
//! ones past the newest N (the current one always stays).

use anyhow::Result;
use clap::{Args, Subcommand};

use strata::keys::listing::{self, KeyTag, Pruned};
use strata::keys::ContentKey;
use strata::llb::Platform;
use strata::reference::ImageRef;
use strata::registry::Registry;

use super::args::SpecArgs;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ImagesArgs {
    #[command(subcommand)]
    action: Option<ImagesAction>,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand)]
enum ImagesAction {
    /// Delete stale key tags (a manifest DELETE each; the registry must allow
    /// deletes), keeping the current one and the newest N in all.
    Prune(PruneArgs),
}

#[derive(Args)]
struct PruneArgs {
    /// How many key tags to keep per image, newest first (the current one counts).
    #[arg(long, value_name = "N")]
    keep: usize,
    #[command(flatten)]
    target: Target,
}

/// Which images, and how to print.
#[derive(Args)]
struct Target {
    #[command(flatten)]
    spec: SpecArgs,
    /// Images to look at (default: every image of the spec that is pushed).
    #[arg(value_name = "IMAGE")]
    images: Vec<String>,
    /// Reach this registry (HOST[:PORT]) over plain http (repeatable).
    #[arg(long, value_name = "HOST")]
    insecure_registry: Vec<String>,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

/// An image of the spec with its push target and current key.
struct Keyed {
    image: String,
    push: ImageRef,
    key: ContentKey,
}

impl Target {
    /// The images asked for that have a push target, keyed; and a registry client.
    async fn resolve(&self) -> Result<(Vec<Keyed>, Registry, Platform)> {
        let spec = self.spec.load()?;
        let overrides = strata::spec::Overrides {
            images: self.images.clone(),
            insecure_registries: self.insecure_registry.clone(),
            ..self.spec.overrides()
        };
        let plan = spec.resolve(&overrides)?;
        let keys = strata::build::keys(&spec, &plan).await?;
        let keyed = plan
            .jobs
            .iter()
            .zip(keys)
            .filter_map(|(job, (image, key))| {
                let push = job.push.clone()?;
                Some(Keyed { image, push, key })
            })
            .collect();
        let platform = plan.platform.clone().unwrap_or_else(Platform::host);
        Ok((keyed, strata::build::registry_from_env(&plan), platform))
    }
}

pub async fn run(args: &ImagesArgs) -> Result<()> {
    match &args.action {
        None => list(&args.target).await,
        Some(ImagesAction::Prune(prune)) => prune_all(prune).await,
    }
}

async fn list(target: &Target) -> Result<()> {
    let (keyed, registry, platform) = target.resolve().await?;
    let mut json = serde_json::Map::new();
    for k in &keyed {
        let tags = listing::list(&registry, &k.push, &k.key, &platform).await?;
        if target.json {
            json.insert(k.image.clone(), entry(k, &tags));
            continue;
        }
        println!("{}  {}  current {}", k.image, k.push.name(), k.key.tag());
        if !tags.iter().any(|t| t.current) {
            println!("  (the current key is not built yet)");
        }
        for t in &tags {
            println!("  {}", tag_line(t));
        }
    }
    if target.json {
        super::print_json(&json)?;
    }
    Ok(())
}

fn entry(k: &Keyed, tags: &[KeyTag]) -> serde_json::Value {
    serde_json::json!({
        "repository": k.push.name(),
        "current": k.key.tag(),
        "tags": tags,
    })
}

/// `* strata-…  sha256:…  2026-11-30T10:00:00Z` (`*` marks the current one).
fn tag_line(t: &KeyTag) -> String {
    format!(
        "{} {}  {}  {}",
        if t.current { "*" } else { " " },
        t.reference.tag.as_deref().unwrap_or_default(),
        t.digest,
        t.created.as_deref().unwrap_or("(age unknown)")
    )
}

async fn prune_all(args: &PruneArgs) -> Result<()> {
    let (keyed, registry, platform) = args.target.resolve().await?;
    let mut json = serde_json::Map::new();
    for k in &keyed {
        let tags = listing::list(&registry, &k.push, &k.key, &platform).await?;
        let pruned = listing::prune(&registry, &k.push, tags, args.keep).await?;
        if args.target.json {
            json.insert(k.image.clone(), serde_json::to_value(&pruned)?);
        } else {
            print_pruned(&k.image, &pruned);
        }
    }
    if args.target.json {
        super::print_json(&json)?;
    }
    Ok(())
}

fn print_pruned(image: &str, pruned: &Pruned) {
    for t in &pruned.removed {
        println!("{image}: removed {} ({})", t.reference, t.digest);
    }
    for s in &pruned.shared {
        println!(
            "{image}: kept {}: its manifest is also tagged {}",
            s.tag.reference, s.also
        );
    }
    println!(
        "{image}: {} removed, {} kept",
        pruned.removed.len(),
        pruned.kept.len() + pruned.shared.len()
    );
}
