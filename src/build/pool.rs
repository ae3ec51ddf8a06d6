//! A build over a pool ([`crate::pool`]): the nodes are probed, each image
//! of the plan is placed on one (rendezvous hashing with bounded load, keyed
//! by the spec's file name, the image's name and its platform), and each
//! node builds its images as a one-daemon build, all nodes at once.
//!
//! Failover: an image whose node is lost (the connection breaks, the node
//! stops answering) is placed again among the nodes left, and built there,
//! importing from the pool cache (`Pool::cache`) the other nodes export to
//! after each image, so the new node is not cold. One line says what moved.
//!
//! `--max-parallel N` holds per node and over the whole pool (one semaphore
//! its nodes' builds share); `--keep-storage` prunes nodes between tiers.

use std::time::Instant;

use super::{build_all_within, BuildError, Outcome};
use crate::client::{ClientError, Daemon};
use crate::options::{CacheExport, CacheImport};
use crate::pool::place::{self, Item, Slot};
use crate::pool::status::health;
use crate::pool::Pool;
use crate::solve::progress::{Claims, Progress, Renderer};
use crate::solve::SolveError;
use crate::spec::{Base, Overrides, Spec};

/// How long a node may take to answer before the build places nothing on it.
const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// One tier of a pool build: images whose parents were built in the tiers
/// before it, with how it went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TierReport {
    /// 1-based.
    pub tier: usize,
    pub images: Vec<String>,
    pub seconds: f64,
    /// Spec steps run and found cached, over the tier's images.
    pub steps_run: usize,
    pub steps_cached: usize,
    /// Bytes `--keep-storage` pruned from each node after the tier.
    pub freed: std::collections::BTreeMap<String, u64>,
}

/// Builds what `overrides` asks over `pool`, tier by tier; each built image
/// names its node.
pub async fn build_on_pool(
    pool: &Pool,
    spec: &Spec,
    overrides: &Overrides,
    progress: &dyn Progress,
) -> Result<Outcome, BuildError> {
    let plan = spec.resolve(overrides)?;
    let nodes = health(pool, PROBE_DEADLINE.min(pool.timeout)).await;
    let mut healthy: Vec<bool> = nodes.iter().map(|n| n.reachable).collect();
    let mut all = Outcome::default();
    for down in nodes.iter().filter(|n| !n.reachable) {
        all.notes.push(format!(
            "node {} is down ({}); nothing is placed on it",
            down.name,
            down.error.as_deref().unwrap_or("no answer")
        ));
    }
    let platforms: Vec<Vec<String>> = nodes.iter().map(|n| n.platforms.clone()).collect();
    let images: Vec<String> = plan.jobs.iter().map(|j| j.image.clone()).collect();
    // Placed once for the whole plan: the load bound holds over all of it.
    let first = Places {
        pool,
        spec,
        overrides,
        healthy: &healthy,
        platforms: &platforms,
    };
    let placed_all: Vec<usize> = first.of(&images)?;
    // One connection and one view per node for the whole build (every tier).
    let run = PoolBuild {
        pool,
        spec,
        overrides,
        platforms,
        daemons: pool.daemons(),
        views: pool
            .nodes
            .iter()
            .map(|node| OnNode {
                inner: progress,
                node: node.label(),
                claims: Claims::default(),
            })
            .collect(),
    };
    for (t, tier) in tiers(spec, &images).into_iter().enumerate() {
        let placed: Vec<usize> = tier
            .iter()
            .map(|i| placed_all[images.iter().position(|n| n == i).expect("a plan image")])
            .collect();
        let report = run
            .tier(t + 1, tier, placed, &mut healthy, &mut all)
            .await?;
        all.tiers.push(report);
    }
    let order = |name: &str| images.iter().position(|i| i == name);
    all.built.sort_by_key(|b| order(&b.image));
    all.failed.sort_by_key(|f| order(&f.image));
    Ok(all)
}

/// What every tier of one pool build shares.
struct PoolBuild<'a> {
    pool: &'a Pool,
    spec: &'a Spec,
    overrides: &'a Overrides,
    /// What each node builds, from the probe.
    platforms: Vec<Vec<String>>,
    daemons: Vec<Daemon>,
    views: Vec<OnNode<'a>>,
}

impl PoolBuild<'_> {
    /// Builds `tier` where `placed` says, placing again what a lost node
    /// had until it is built or no node is left; then the disk budget.
    async fn tier(
        &self,
        number: usize,
        tier: Vec<String>,
        mut placed: Vec<usize>,
        healthy: &mut [bool],
        all: &mut Outcome,
    ) -> Result<TierReport, BuildError> {
        let began = Instant::now();
        let (pool, overrides) = (self.pool, self.overrides);
        let rebased = on_built_dockerfiles(self.spec, &all.built);
        let built_before = all.built.len();
        let mut pending = tier.clone();
        loop {
            let places = Places {
                pool,
                spec: self.spec,
                overrides,
                healthy,
                platforms: &self.platforms,
            };
            places.move_off_lost(&pending, &mut placed)?;
            let nodes = (self.daemons.as_slice(), self.views.as_slice());
            let lost =
                build_placed(pool, &rebased, overrides, nodes, &pending, &placed, all).await?;
            if lost.is_empty() {
                break;
            }
            pending = moved(pool, &mut all.notes, healthy, lost, &pending)?;
            placed = vec![usize::MAX; pending.len()];
        }
        let freed = keep_storage(pool, &self.daemons, healthy, overrides.keep_storage).await;
        let (steps_run, steps_cached) = all.built[built_before..]
            .iter()
            .map(|b| b.step_counts())
            .fold((0, 0), |(r, c), (br, bc)| (r + br, c + bc));
        Ok(TierReport {
            tier: number,
            images: tier,
            seconds: began.elapsed().as_secs_f64(),
            steps_run,
            steps_cached,
            freed,
        })
    }
}

/// `images` in tiers: an image's tier is one after its `from` parent's
/// (when the parent is built too), the first for the others.
fn tiers(spec: &Spec, images: &[String]) -> Vec<Vec<String>> {
    fn depth(spec: &Spec, images: &[String], name: &str) -> usize {
        match spec.image(name).map(|i| &i.base) {
            Some(Base::From(p)) if images.iter().any(|i| i == p) => 1 + depth(spec, images, p),
            _ => 0,
        }
    }
    let mut tiers: Vec<Vec<String>> = Vec::new();
    for name in images {
        let d = depth(spec, images, name);
        if tiers.len() <= d {
            tiers.resize(d + 1, Vec::new());
        }
        tiers[d].push(name.clone());
    }
    tiers.retain(|t| !t.is_empty());
    tiers
}

/// With a `--keep-storage` budget: each healthy node above it is pruned
/// down to it; what each gave back.
async fn keep_storage(
    pool: &Pool,
    daemons: &[Daemon],
    healthy: &[bool],
    budget: Option<u64>,
) -> std::collections::BTreeMap<String, u64> {
    let Some(budget) = budget else {
        return Default::default();
    };
    let each = daemons
        .iter()
        .zip(&pool.nodes)
        .zip(healthy)
        .filter(|(_, h)| **h)
        .map(|((daemon, node), _)| async move {
            let options = crate::client::PruneOptions {
                keep_bytes: budget,
                ..Default::default()
            };
            let freed = match daemon.client().await {
                Ok(client) => client.prune_settled(&options).await.unwrap_or(0),
                Err(_) => 0,
            };
            (node.name.clone(), freed)
        });
    futures::future::join_all(each).await.into_iter().collect()
}

/// Builds `pending` where `placed` says, all nodes at once; what was built or
/// failed goes into `all`. Returns the images of lost nodes, by node.
async fn build_placed(
    pool: &Pool,
    spec: &Spec,
    overrides: &Overrides,
    (daemons, views): (&[Daemon], &[OnNode<'_>]),
    pending: &[String],
    placed: &[usize],
    all: &mut Outcome,
) -> Result<Vec<Lost>, BuildError> {
    // --max-parallel holds per node (each node's build) and over the pool;
    // without it, each node's default alone.
    let limit = overrides
        .max_parallel
        .map_or(tokio::sync::Semaphore::MAX_PERMITS, |n| n.get());
    let slots = &tokio::sync::Semaphore::new(limit);
    let groups = (0..pool.nodes.len()).filter_map(|n| {
        let mine: Vec<String> = pending
            .iter()
            .zip(placed)
            .filter(|(_, &p)| p == n)
            .map(|(i, _)| i.clone())
            .collect();
        (!mine.is_empty()).then_some((n, mine))
    });
    let builds = groups.map(|(n, mine)| {
        let daemon = &daemons[n];
        let progress = &views[n];
        let node = pool.nodes[n].name.clone();
        let spec = with_pool_cache(pool, spec, &mine);
        let wanted = Overrides {
            images: mine.clone(),
            ..overrides.clone()
        };
        async move {
            let outcome = build_all_within(daemon, &spec, &wanted, progress, Some(slots)).await;
            (n, node, mine, outcome)
        }
    });
    let mut lost = Vec::new();
    for (n, node, mine, outcome) in futures::future::join_all(builds).await {
        let gone = match outcome {
            Err(e) => match why_lost(&e) {
                Some(why) => Lost {
                    node: n,
                    images: mine,
                    why,
                },
                None => return Err(e),
            },
            Ok(outcome) => take_node_outcome(n, &node, &mine, outcome, all),
        };
        if !gone.images.is_empty() {
            lost.push(gone);
        }
    }
    Ok(lost)
}

/// What node `n` built of `mine` goes into `all`, marked with the node;
/// what it failed on goes there too, unless the failure was losing the node:
/// those images come back to be placed again.
fn take_node_outcome(
    n: usize,
    node: &str,
    mine: &[String],
    outcome: Outcome,
    all: &mut Outcome,
) -> Lost {
    let mut gone = Lost {
        node: n,
        images: Vec::new(),
        why: String::new(),
    };
    for f in outcome.failed {
        match why_lost(&f.error) {
            Some(why) => {
                gone.why = why;
                gone.images.push(f.image);
            }
            None => all.failed.push(f),
        }
    }
    // A node's plan holds the parents its images need; those were built in
    // an earlier tier (found there by key tag).
    for mut b in outcome
        .built
        .into_iter()
        .filter(|b| mine.contains(&b.image))
    {
        b.node = Some(node.to_owned());
        all.built.push(b);
    }
    gone
}

/// `spec` with each image `from` a Dockerfile image built in an earlier tier
/// based on that image as pushed, by digest, as a one-daemon build does: a
/// later tier's node pulls it instead of building it again (to a digest of
/// its own).
fn on_built_dockerfiles(spec: &Spec, built: &[super::Built]) -> Spec {
    let pushed = built
        .iter()
        .filter(|b| b.frontend)
        .filter_map(|b| Some((b.image.clone(), super::pinned_push(b)?)))
        .collect();
    spec.rebased(&pushed)
}

/// A node lost during a build: the images it had not finished, and why.
struct Lost {
    node: usize,
    images: Vec<String>,
    why: String,
}

/// Marks the lost nodes down and says, in one line each, where their images go.
fn moved(
    pool: &Pool,
    notes: &mut Vec<String>,
    healthy: &mut [bool],
    lost: Vec<Lost>,
    pending: &[String],
) -> Result<Vec<String>, BuildError> {
    let mut again = Vec::new();
    for Lost { node, images, why } in lost {
        healthy[node] = false;
        let cache = match pool.cache {
            Some(_) => ", importing the pool cache",
            None => "",
        };
        notes.push(format!(
            "node {} was lost during the build ({why}): {} placed again on the nodes left{cache}",
            pool.nodes[node].name,
            images.join(", "),
        ));
        again.extend(images);
    }
    if !healthy.iter().any(|h| *h) {
        return Err(BuildError::Place(place::PlaceError::NoNode {
            key: again.join(", "),
        }));
    }
    // In the plan's order, so parents are placed before their children.
    Ok(pending
        .iter()
        .filter(|i| again.contains(i))
        .cloned()
        .collect())
}

/// Why the node went away, if `e` says it did (not that the build failed on it).
fn why_lost(e: &BuildError) -> Option<String> {
    let BuildError::Solve { source, .. } = e else {
        return None;
    };
    let lost = match source {
        SolveError::ConnectionLost { detail, .. } => {
            return Some(format!("connection lost: {detail}"))
        }
        SolveError::StoppedAnswering { silent, .. } => {
            return Some(format!(
                "no progress for {}s and no answer to a probe",
                silent.as_secs()
            ))
        }
        SolveError::Client(ClientError::Connect(_) | ClientError::NoAnswer { .. }) => true,
        SolveError::Client(ClientError::Rpc { status, .. }) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ),
        _ => false,
    };
    lost.then(|| source.to_string())
}

/// `spec` with the pool cache on each of `images`: each exports to its own
/// tag of it and imports its own and its parent's.
fn with_pool_cache(pool: &Pool, spec: &Spec, images: &[String]) -> Spec {
    let Some(cache) = &pool.cache else {
        return spec.clone();
    };
    let prefix = cache.tag.as_deref().unwrap_or("pool");
    let tag = |image: &str| cache.with_tag(&format!("{prefix}-{image}"));
    let caches = images
        .iter()
        .map(|image| {
            let export = CacheExport::Registry {
                reference: tag(image),
                options: Default::default(),
                insecure: cache.is_loopback(),
                mounts: None,
            };
            let parent = match spec.image(image).map(|i| &i.base) {
                Some(Base::From(p)) => Some(p.as_str()),
                _ => None,
            };
            let imports = std::iter::once(image.as_str())
                .chain(parent)
                .map(|from| CacheImport::Registry {
                    reference: tag(from),
                    insecure: cache.is_loopback(),
                    mounts: None,
                })
                .collect();
            (image.clone(), (vec![export], imports))
        })
        .collect();
    spec.with_caches(&caches)
}

/// A node's part of the one progress view: its lines carry the node, and
/// a step is shown once per node (each node runs it), over all tiers.
struct OnNode<'a> {
    inner: &'a dyn Progress,
    node: String,
    claims: Claims,
}

impl Progress for OnNode<'_> {
    fn renderer(&self, label: Option<&str>) -> Box<dyn Renderer> {
        let label = match label {
            Some(image) => format!("{} {image}", self.node),
            None => self.node.clone(),
        };
        self.inner.renderer(Some(&label))
    }

    fn step_claims(&self) -> Option<Claims> {
        self.inner.step_claims().map(|_| self.claims.clone())
    }
}

/// What placing needs to know of the pool now.
struct Places<'a> {
    pool: &'a Pool,
    spec: &'a Spec,
    overrides: &'a Overrides,
    healthy: &'a [bool],
    platforms: &'a [Vec<String>],
}

impl Places<'_> {
    /// Places again each of `images` whose node (in `placed`) is down or unknown.
    fn move_off_lost(&self, images: &[String], placed: &mut [usize]) -> Result<(), BuildError> {
        let off: Vec<usize> = (0..images.len())
            .filter(|&i| !self.healthy.get(placed[i]).copied().unwrap_or(false))
            .collect();
        if off.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = off.iter().map(|&i| images[i].clone()).collect();
        for (i, node) in off.into_iter().zip(self.of(&names)?) {
            placed[i] = node;
        }
        Ok(())
    }

    /// The node index of each of `images`.
    fn of(&self, images: &[String]) -> Result<Vec<usize>, BuildError> {
        let slots: Vec<Slot> = self
            .pool
            .nodes
            .iter()
            .zip(self.healthy)
            .map(|(node, healthy)| Slot {
                name: node.name.clone(),
                weight: node.weight,
                healthy: *healthy,
            })
            .collect();
        let spec_name = self
            .spec
            .path()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let items: Vec<Item> = images
            .iter()
            .map(|name| self.item(&spec_name, images, name))
            .collect();
        let context = self
            .spec
            .path()
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        place::place_by(self.pool.placement, &items, &slots, &context).map_err(BuildError::Place)
    }

    /// Image `name` as placement sees it: its stable key, its parent among
    /// `images`, the nodes that build its platform.
    fn item(&self, spec_name: &str, images: &[String], name: &str) -> Item {
        let image = self
            .spec
            .image(name)
            .expect("the plan's images are the spec's");
        let platform = self
            .spec
            .platform_for(image, self.overrides.platform.as_ref())
            .to_string();
        let parent = match &image.base {
            Base::From(p) => images.iter().position(|i| i == p),
            _ => None,
        };
        Item {
            key: format!("{spec_name}#{name}@{platform}"),
            parent,
            fits: self
                .platforms
                .iter()
                .map(|p| p.is_empty() || p.contains(&platform))
                .collect(),
        }
    }
}
