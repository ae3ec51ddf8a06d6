//! `strata key [IMAGE…]`: each image's content key — a digest of everything
//! that decides it (steps, pinned base, config, overlay contents, parent) —
//! and the tag it is pushed under. Reads base manifests; never solves.

use std::time::Instant;

use anyhow::Result;
use clap::Args;

use strata::units::human_duration;

use super::args::SpecArgs;

#[derive(Args)]
pub struct KeyArgs {
    #[command(flatten)]
    spec: SpecArgs,
    /// Images to key (default: every image of the spec).
    #[arg(value_name = "IMAGE")]
    images: Vec<String>,
    /// Print `{"IMAGE": {"key": …, "tag": …}}` instead of lines.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: &KeyArgs) -> Result<()> {
    let began = Instant::now();
    let spec = args.spec.load()?;
    let overrides = strata::spec::Overrides {
        images: args.images.clone(),
        ..args.spec.overrides()
    };
    let plan = spec.resolve(&overrides)?;
    let keys = strata::build::keys(&plan).await?;
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|k| {
                let entry = serde_json::json!({
                    "key": k.key.to_string(),
                    "tag": k.key.tag(&k.image),
                    "unkeyable": k.unkeyable,
                });
                (k.image.clone(), entry)
            })
            .collect();
        return super::print_json(&map);
    }
    for k in &keys {
        match &k.unkeyable {
            None => println!("{}  {}  {}", k.image, k.key, k.key.tag(&k.image)),
            Some(why) => println!("{}  {}  unkeyable: {why}", k.image, k.key),
        }
    }
    tracing::debug!("keyed in {}", human_duration(began.elapsed()));
    Ok(())
}
