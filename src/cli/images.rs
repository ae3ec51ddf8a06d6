//! `strata images [IMAGE…]`: the key tags each image has in its registry,
//! the current one marked; `strata images prune --keep N` deletes the stale
//! ones past the newest N (the current one always stays); `strata images
//! attestations IMAGE` reads what the daemon attached to pushed images.

use anyhow::Result;
use clap::{Args, Subcommand};

use strata::docker::Docker;
use strata::keys::listing::{self, KeyTag, Pruned};
use strata::keys::ContentKey;
use strata::llb::Platform;
use strata::reference::ImageRef;
use strata::registry::Registry;

use super::args::{load_socket, SpecArgs};

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
    /// What the daemon attached to pushed images (--provenance, --sbom), per
    /// platform: the statements, the SBOM's packages, the provenance's materials.
    Attestations(super::attestations::AttestationsArgs),
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
    /// Also the key tags loaded into a docker daemon (as `build --load`; default
    /// socket: DOCKER_HOST's, else /var/run/docker.sock).
    #[arg(long, value_name = "docker://SOCKET", num_args = 0..=1, default_missing_value = "")]
    load: Option<String>,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

/// An image of the spec with its push target, its name in docker, and current key.
struct Keyed {
    image: String,
    push: Option<ImageRef>,
    loaded_as: ImageRef,
    key: ContentKey,
    /// Each platform with the key its config records (one: the image's).
    platform_keys: Vec<(Platform, ContentKey)>,
}

/// Where key tags are looked for.
struct Stores {
    registry: Registry,
    docker: Option<Docker>,
}

impl Target {
    /// The images asked for, keyed, and where their key tags are.
    async fn resolve(&self) -> Result<(Vec<Keyed>, Stores)> {
        let spec = self.spec.load()?;
        let overrides = strata::spec::Overrides {
            images: self.images.clone(),
            insecure_registries: self.insecure_registry.clone(),
            ..self.spec.overrides()
        };
        let plan = spec.resolve(&overrides)?;
        let keys = strata::build::keys(&plan).await?;
        let keyed = plan
            .jobs
            .iter()
            .zip(keys)
            .map(|(job, k)| Keyed {
                image: k.image,
                push: job.push.clone(),
                loaded_as: strata::build::load_names(job, &k.key, true).remove(0),
                key: k.key,
                platform_keys: k.platform_keys,
            })
            .collect();
        let docker = match &self.load {
            Some(value) => Some(Docker::new(load_socket(value, "")?)),
            None => None,
        };
        let stores = Stores {
            registry: strata::build::registry_from_env(&plan),
            docker,
        };
        Ok((keyed, stores))
    }
}

pub async fn run(args: &ImagesArgs) -> Result<()> {
    match &args.action {
        None => list(&args.target).await,
        Some(ImagesAction::Prune(prune)) => prune_all(prune).await,
        Some(ImagesAction::Attestations(a)) => super::attestations::run(a).await,
    }
}

async fn list(target: &Target) -> Result<()> {
    let (keyed, stores) = target.resolve().await?;
    let mut json = serde_json::Map::new();
    for k in &keyed {
        let (registry, docker) = stores.list(k).await?;
        if target.json {
            json.insert(k.image.clone(), entry(k, &registry, docker.as_deref()));
            continue;
        }
        println!("{}  current {}", k.image, k.key.tag(&k.image));
        print_tags(&k.push.as_ref().map(ImageRef::name), &registry);
        if let Some(docker) = &docker {
            print_tags(&Some(format!("docker {}", k.loaded_as.name())), docker);
        }
    }
    if target.json {
        super::print_json(&json)?;
    }
    Ok(())
}

impl Stores {
    /// `k`'s key tags in its registry (none without a push target) and in docker.
    async fn list(&self, k: &Keyed) -> Result<(Vec<KeyTag>, Option<Vec<KeyTag>>)> {
        let registry = match &k.push {
            Some(push) => {
                listing::list(&self.registry, push, &k.image, &k.key, &k.platform_keys).await?
            }
            None => Vec::new(),
        };
        let docker = match &self.docker {
            Some(d) => Some(listing::list_docker(d, &k.loaded_as, &k.image, &k.key).await?),
            None => None,
        };
        Ok((registry, docker))
    }
}

/// `  REPOSITORY`, then a line per key tag.
fn print_tags(place: &Option<String>, tags: &[KeyTag]) {
    let Some(place) = place else {
        return;
    };
    let current = if tags.iter().any(|t| t.current) {
        ""
    } else {
        "  (the current key is not there)"
    };
    println!("  {place}{current}");
    for t in tags {
        println!("    {}", tag_line(t));
    }
}

fn entry(k: &Keyed, registry: &[KeyTag], docker: Option<&[KeyTag]>) -> serde_json::Value {
    serde_json::json!({
        "repository": k.push.as_ref().map(ImageRef::name),
        "current": k.key.tag(&k.image),
        "tags": registry,
        "docker": docker,
    })
}

/// `* strata-…  sha256:…  2026-11-30T10:00:00Z` (`*` marks the current
/// one; a platform of the current index says which).
fn tag_line(t: &KeyTag) -> String {
    let platform = match &t.platform {
        Some(p) => format!("  ({p} of the current index)"),
        None => String::new(),
    };
    format!(
        "{} {}  {}  {}{platform}",
        if t.current { "*" } else { " " },
        t.reference.tag.as_deref().unwrap_or_default(),
        t.digest,
        t.created.as_deref().unwrap_or("(age unknown)")
    )
}

async fn prune_all(args: &PruneArgs) -> Result<()> {
    let (keyed, stores) = args.target.resolve().await?;
    let mut json = serde_json::Map::new();
    for k in &keyed {
        let (registry, docker) = stores.list(k).await?;
        let mut done = serde_json::Map::new();
        if let Some(push) = &k.push {
            // Each removal is said as it happens: a later error keeps the report.
            let json = args.target.json;
            let say = |t: &KeyTag| {
                if !json {
                    println!("{}: removed {} ({})", k.image, t.reference, t.digest);
                }
            };
            let pruned = listing::prune(&stores.registry, push, registry, args.keep, say).await?;
            print_pruned(&k.image, "", &pruned, args.target.json);
            done.insert("registry".into(), serde_json::to_value(&pruned)?);
        }
        if let (Some(d), Some(listed)) = (&stores.docker, docker) {
            let pruned = listing::prune_docker(d, listed, args.keep).await?;
            if !args.target.json {
                for t in &pruned.removed {
                    println!(
                        "{} (docker): removed {} ({})",
                        k.image, t.reference, t.digest
                    );
                }
            }
            print_pruned(&k.image, " (docker)", &pruned, args.target.json);
            done.insert("docker".into(), serde_json::to_value(&pruned)?);
        }
        json.insert(k.image.clone(), done.into());
    }
    if args.target.json {
        super::print_json(&json)?;
    }
    Ok(())
}

fn print_pruned(image: &str, place: &str, pruned: &Pruned, json: bool) {
    if json {
        return;
    }
    let image = format!("{image}{place}");
    for s in &pruned.shared {
        println!(
            "{image}: kept {}: its manifest is also tagged {}",
            s.tag.reference, s.also
        );
    }
    for t in &pruned.moved {
        println!(
            "{image}: kept {}: it named another manifest when checked again before the delete",
            t.reference
        );
    }
    println!(
        "{image}: {} removed, {} kept",
        pruned.removed.len(),
        pruned.kept.len() + pruned.shared.len() + pruned.moved.len()
    );
}
