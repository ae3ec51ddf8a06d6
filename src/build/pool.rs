//! A build over a pool ([`crate::pool`]): the nodes are probed, each image
//! of the plan is placed on one (rendezvous hashing with bounded load, keyed
//! by the spec's file name, the image's name and its platform), and each
//! node builds its images as a one-daemon build, all nodes at once.
//!
//! Not yet: re-placing a lost node's images (failover with a pool cache),
//! an overall `--max-parallel` (it is per node), disk budgets per tier, one
//! progress view deduplicating shared steps across nodes.

use super::{build_all, BuildError, Outcome};
use crate::pool::place::{self, Item, Slot};
use crate::pool::status::{status, NodeStatus};
use crate::pool::Pool;
use crate::solve::progress::Progress;
use crate::spec::{Base, Overrides, Spec};

/// How long a node may take to answer before the build places nothing on it.
const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Builds what `overrides` asks over `pool`; each built image names its node.
pub async fn build_on_pool(
    pool: &Pool,
    spec: &Spec,
    overrides: &Overrides,
    progress: &dyn Progress,
) -> Result<Outcome, BuildError> {
    let plan = spec.resolve(overrides)?;
    let nodes = status(pool, PROBE_DEADLINE.min(pool.timeout)).await;
    for down in nodes.iter().filter(|n| !n.reachable) {
        tracing::warn!(
            "node {} is down ({}); nothing is placed on it",
            down.name,
            down.error.as_deref().unwrap_or("no answer")
        );
    }
    let images: Vec<String> = plan.jobs.iter().map(|j| j.image.clone()).collect();
    let placed = placement(pool, spec, &images, &nodes, overrides)?;
    let daemons = pool.daemons();
    let groups = (0..pool.nodes.len()).filter_map(|n| {
        let mine: Vec<String> = images
            .iter()
            .zip(&placed)
            .filter(|(_, &p)| p == n)
            .map(|(i, _)| i.clone())
            .collect();
        (!mine.is_empty()).then_some((n, mine))
    });
    let builds = groups.map(|(n, mine)| {
        let daemon = &daemons[n];
        let node = pool.nodes[n].name.clone();
        let mine = Overrides {
            images: mine,
            ..overrides.clone()
        };
        async move {
            let mut outcome = build_all(daemon, spec, &mine, progress).await?;
            for b in &mut outcome.built {
                b.node = Some(node.clone());
            }
            Ok::<_, BuildError>(outcome)
        }
    });
    let mut all = Outcome {
        built: Vec::new(),
        failed: Vec::new(),
    };
    for outcome in futures::future::join_all(builds).await {
        let outcome = outcome?;
        all.built.extend(outcome.built);
        all.failed.extend(outcome.failed);
    }
    let order = |name: &str| images.iter().position(|i| i == name);
    all.built.sort_by_key(|b| order(&b.image));
    all.failed.sort_by_key(|f| order(&f.image));
    Ok(all)
}

/// The node index of each of `images`.
fn placement(
    pool: &Pool,
    spec: &Spec,
    images: &[String],
    nodes: &[NodeStatus],
    overrides: &Overrides,
) -> Result<Vec<usize>, BuildError> {
    let slots: Vec<Slot> = pool
        .nodes
        .iter()
        .zip(nodes)
        .map(|(node, status)| Slot {
            name: node.name.clone(),
            weight: node.weight,
            healthy: status.reachable,
        })
        .collect();
    let spec_name = spec
        .path()
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let items: Vec<Item> = images
        .iter()
        .map(|name| {
            let image = spec.image(name).expect("the plan's images are the spec's");
            let platform = spec.platform_for(image, overrides.platform.as_ref());
            let parent = match &image.base {
                Base::From(p) => images.iter().position(|i| i == p),
                _ => None,
            };
            let wanted = platform.to_string();
            Item {
                key: format!("{spec_name}#{name}@{wanted}"),
                parent,
                fits: nodes
                    .iter()
                    .map(|n| n.platforms.is_empty() || n.platforms.contains(&wanted))
                    .collect(),
            }
        })
        .collect();
    let context = spec
        .path()
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    place::place_by(pool.placement, &items, &slots, &context).map_err(BuildError::Place)
}
