//! A build over a pool ([`crate::pool`]): the nodes are probed, each job
//! of the plan is placed on one (rendezvous hashing with bounded load, keyed
//! by the spec's file name, the image's name and its platform), and each
//! node builds its sub-plan ([`BuildPlan::only`]) as a one-daemon build, all
//! nodes at once.
//!
//! Failover: an image whose node is lost (the connection breaks, the node
//! stops answering) is placed again among the nodes left, and built there,
//! importing from the pool cache (`Pool::cache`) the other nodes export to
//! after each image, so the new node is not cold. One line says what moved.
//!
//! `--max-parallel N` holds per node and over the whole pool (one semaphore
//! its nodes' builds share); `--keep-storage` prunes nodes between tiers.

use std::time::Instant;

use super::{build_all_within, pinned_pushes, BuildError, Outcome};
use crate::client::{ClientError, Daemon};
use crate::options::{CacheExport, CacheImport};
use crate::pool::place::{self, Item, Slot};
use crate::pool::status::health;
use crate::pool::Pool;
use crate::solve::progress::{Claims, Progress, Renderer};
use crate::solve::SolveError;
use crate::spec::{BuildPlan, Job};

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

/// Builds `plan` over `pool`, tier by tier; each built image names its node.
pub async fn build_on_pool(
    pool: &Pool,
    plan: &BuildPlan,
    progress: &dyn Progress,
) -> Result<Outcome, BuildError> {
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
    let images = plan.images();
    // Placed once for the whole plan: the load bound holds over all of it.
    let first = Places {
        pool,
        plan,
        healthy: &healthy,
        platforms: &platforms,
    };
    let placed_all: Vec<usize> = first.of(&images)?;
    // One connection and one view per node for the whole build (every tier).
    let run = PoolBuild {
        pool,
        plan,
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
    for (t, tier) in tiers(plan).into_iter().enumerate() {
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
    plan: &'a BuildPlan,
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
        let pool = self.pool;
        // A later tier's node pulls a Dockerfile parent built before as
        // pushed, instead of building it again (to a digest of its own).
        let rebased = self.plan.rebase_on(&pinned_pushes(&all.built));
        let built_before = all.built.len();
        let mut pending = tier.clone();
        loop {
            let places = Places {
                pool,
                plan: &rebased,
                healthy,
                platforms: &self.platforms,
            };
            places.move_off_lost(&pending, &mut placed)?;
            let nodes = (self.daemons.as_slice(), self.views.as_slice());
            let lost = build_placed(pool, &rebased, nodes, &pending, &placed, all).await?;
            if lost.is_empty() {
                break;
            }
            pending = moved(pool, &mut all.notes, healthy, lost, &pending)?;
            placed = vec![usize::MAX; pending.len()];
        }
        let freed = keep_storage(pool, &self.daemons, healthy, self.plan.keep_storage).await;
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

/// The plan's images in tiers: an image's tier is one after its `from`
/// parent's (when the parent is built too), the first for the others.
fn tiers(plan: &BuildPlan) -> Vec<Vec<String>> {
    let images = plan.images();
    let depth = |name: &str| {
        let mut depth = 0;
        let mut at = name;
        while let Some(parent) = plan.parent_of(at).filter(|p| images.iter().any(|i| i == p)) {
            depth += 1;
            at = parent;
        }
        depth
    };
    let mut tiers: Vec<Vec<String>> = Vec::new();
    for name in &images {
        let d = depth(name);
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
    plan: &BuildPlan,
    (daemons, views): (&[Daemon], &[OnNode<'_>]),
    pending: &[String],
    placed: &[usize],
    all: &mut Outcome,
) -> Result<Vec<Lost>, BuildError> {
    // --max-parallel holds per node (each node's build) and over the pool;
    // without it, each node's default alone.
    let limit = plan
        .max_parallel_given
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
        let sub = with_pool_cache(pool, plan.only(&mine));
        async move {
            let outcome = build_all_within(daemon, &sub, progress, Some(slots)).await;
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

/// `plan` with the pool cache added to each job: it exports to its image's
/// own tag of it and imports its own and its parent's.
fn with_pool_cache(pool: &Pool, mut plan: BuildPlan) -> BuildPlan {
    let Some(cache) = &pool.cache else {
        return plan;
    };
    let prefix = cache.tag.as_deref().unwrap_or("pool");
    let tag = |image: &str| cache.with_tag(&format!("{prefix}-{image}"));
    let mut jobs = std::mem::take(&mut plan.jobs);
    for job in &mut jobs {
        let export = CacheExport::Registry {
            reference: tag(&job.image),
            options: Default::default(),
            insecure: cache.is_loopback(),
            mounts: None,
        };
        let imports = std::iter::once(job.image.as_str())
            .chain(plan.parent_of(&job.image))
            .map(|from| CacheImport::Registry {
                reference: tag(from),
                insecure: cache.is_loopback(),
                mounts: None,
            })
            .collect();
        job.add_caches(vec![export], imports);
    }
    plan.jobs = jobs;
    plan
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
    plan: &'a BuildPlan,
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
            .plan
            .spec
            .path()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let items: Vec<Item> = images
            .iter()
            .map(|name| self.item(&spec_name, images, self.job(name)))
            .collect();
        let context = self
            .plan
            .spec
            .path()
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        place::place_by(self.pool.placement, &items, &slots, &context).map_err(BuildError::Place)
    }

    /// The plan's job of image `name`.
    fn job(&self, name: &str) -> &Job {
        self.plan
            .jobs
            .iter()
            .find(|j| j.image == name)
            .expect("placed images are the plan's")
    }

    /// Job `job` as placement sees it: its stable key, its parent among
    /// `images`, the nodes that build all its platforms (one solve builds
    /// them together).
    fn item(&self, spec_name: &str, images: &[String], job: &Job) -> Item {
        let wanted: Vec<String> = job.platforms.iter().map(ToString::to_string).collect();
        let parent = self
            .plan
            .parent_of(&job.image)
            .and_then(|p| images.iter().position(|i| i == p));
        Item {
            key: format!("{spec_name}#{}@{}", job.image, job.platforms),
            parent,
            fits: self
                .platforms
                .iter()
                .map(|p| p.is_empty() || wanted.iter().all(|w| p.contains(w)))
                .collect(),
        }
    }
}
