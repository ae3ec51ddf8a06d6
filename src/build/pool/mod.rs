//! A build over a pool ([`crate::pool`]): the nodes are probed, each job
//! of the plan is placed on one (rendezvous hashing with bounded load, keyed
//! by the spec's file name, the image's name and its platform), and each
//! node builds its sub-plan ([`BuildPlan::only`]) as a one-daemon build, all
//! nodes at once.
//!
//! A multi-platform image that asks only for a push is placed platform by
//! platform ([`units`]): each platform on a node that runs it natively (a
//! node's native platform is the first its worker reports) when the pool
//! has one, else on one that emulates it; each node pushes its platforms
//! under their key tags, and the index is written after ([`assemble`]).
//!
//! Failover: an image (or platform) whose node is lost (the connection breaks, the node
//! stops answering) is placed again among the nodes left, and built there,
//! importing from the pool cache (`Pool::cache`) the other nodes export to
//! after each image, so the new node is not cold. One line says what moved.
//!
//! `--max-parallel N` holds per node and over the whole pool (one semaphore
//! its nodes' builds share); `--keep-storage` prunes nodes between tiers.

mod assemble;
mod units;

use std::collections::BTreeMap;
use std::time::Instant;

use super::{build_all_within, BuildError, Built, Outcome};
use crate::client::{ClientError, Daemon};
use crate::options::{CacheExport, CacheImport};
use crate::pool::place::{self, Item, Slot};
use crate::pool::status::health;
use crate::pool::Pool;
use crate::reference::ImageRef;
use crate::solve::progress::{Claims, Progress, Renderer};
use crate::solve::SolveError;
use crate::spec::{BuildPlan, Job};
use units::Unit;

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
    let units = units::units_of(plan, &images, pool.nodes.len());
    // Placed once for the whole plan: the load bound holds over all of it.
    let first = Places {
        pool,
        plan,
        healthy: &healthy,
        platforms: &platforms,
    };
    first.buildable(&units)?;
    let placed_all: Vec<usize> = first.of(&units)?;
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
        let (tier_units, placed): (Vec<Unit>, Vec<usize>) = units
            .iter()
            .zip(&placed_all)
            .filter(|(u, _)| tier.contains(&u.image))
            .map(|(u, &n)| (u.clone(), n))
            .unzip();
        let report = run
            .tier(t + 1, tier, tier_units, placed, &mut healthy, &mut all)
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
    /// Builds `tier` (its images as `units`) where `placed` says, placing
    /// again what a lost node had until it is built or no node is left;
    /// then the indexes of images built in parts, and the disk budget.
    async fn tier(
        &self,
        number: usize,
        tier: Vec<String>,
        units: Vec<Unit>,
        mut placed: Vec<usize>,
        healthy: &mut [bool],
        all: &mut Outcome,
    ) -> Result<TierReport, BuildError> {
        let began = Instant::now();
        let pool = self.pool;
        // A later tier's node builds on a Dockerfile image built before as
        // pushed, instead of running its steps again (to a digest of its own).
        let plan = &BuildPlan {
            pushed_dockerfiles: pinned_pushes(self.plan, &all.built),
            ..self.plan.clone()
        };
        let built_before = all.built.len();
        let mut pending = units;
        let mut parts: BTreeMap<String, Vec<Built>> = BTreeMap::new();
        loop {
            let places = Places {
                pool,
                plan,
                healthy,
                platforms: &self.platforms,
            };
            places.move_off_lost(&pending, &mut placed)?;
            let partial = partial(&pending, &placed, parts.keys());
            let nodes = (self.daemons.as_slice(), self.views.as_slice());
            let placing = Placing {
                pending: &pending,
                placed: &placed,
                partial: &partial,
            };
            let lost = build_placed(pool, plan, nodes, placing, all, &mut parts).await?;
            if lost.is_empty() {
                break;
            }
            pending = moved(pool, &mut all.notes, healthy, lost, &pending)?;
            placed = vec![usize::MAX; pending.len()];
        }
        self.assemble_parts(plan, parts, all).await?;
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

impl PoolBuild<'_> {
    /// Each image built in parts (a platform or some on each node) put
    /// together as one index; one whose part failed is not.
    async fn assemble_parts(
        &self,
        plan: &BuildPlan,
        parts: BTreeMap<String, Vec<Built>>,
        all: &mut Outcome,
    ) -> Result<(), BuildError> {
        if parts.is_empty() {
            return Ok(());
        }
        let registry = super::registry_from_env(plan);
        for (image, parts) in parts {
            if all.failed.iter().any(|f| f.image == image) {
                continue;
            }
            let job = plan.jobs.iter().find(|j| j.image == image);
            let job = job.expect("parts are of the plan's jobs");
            all.built
                .push(assemble::assemble(&registry, job, parts).await?);
        }
        Ok(())
    }
}

/// The images of `pending` built in parts: those whose units are placed on
/// more than one node, or of which a part is built already (`built`: a
/// platform whose node was lost goes elsewhere while the others are done).
fn partial<'a>(
    pending: &[Unit],
    placed: &[usize],
    built: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    let mut partial: Vec<String> = built.cloned().collect();
    for (unit, node) in pending.iter().zip(placed) {
        let elsewhere = pending
            .iter()
            .zip(placed)
            .any(|(other, n)| other.image == unit.image && n != node);
        if unit.platform.is_some() && elsewhere && !partial.contains(&unit.image) {
            partial.push(unit.image.clone());
        }
    }
    partial
}

/// Where a round of a tier builds what.
#[derive(Clone, Copy)]
struct Placing<'a> {
    pending: &'a [Unit],
    /// The node of each of `pending`.
    placed: &'a [usize],
    /// The images built in parts ([`partial`]).
    partial: &'a [String],
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
/// failed goes into `all` (a part of an image built in parts into `parts`).
/// Returns the units of lost nodes, by node.
async fn build_placed(
    pool: &Pool,
    plan: &BuildPlan,
    (daemons, views): (&[Daemon], &[OnNode<'_>]),
    placing: Placing<'_>,
    all: &mut Outcome,
    parts: &mut BTreeMap<String, Vec<Built>>,
) -> Result<Vec<Lost>, BuildError> {
    // --max-parallel holds per node (each node's build) and over the pool;
    // without it, each node's default alone.
    let limit = plan
        .max_parallel_given
        .map_or(tokio::sync::Semaphore::MAX_PERMITS, |n| n.get());
    let slots = &tokio::sync::Semaphore::new(limit);
    let groups = (0..pool.nodes.len()).filter_map(|n| {
        let mine: Vec<Unit> = placing
            .pending
            .iter()
            .zip(placing.placed)
            .filter(|(_, &p)| p == n)
            .map(|(u, _)| u.clone())
            .collect();
        (!mine.is_empty()).then_some((n, mine))
    });
    let builds = groups.map(|(n, mine)| {
        let daemon = &daemons[n];
        let progress = &views[n];
        let node = pool.nodes[n].name.clone();
        let sub = units::node_plan(plan, &mine, placing.partial);
        let sub = with_pool_cache(pool, sub, placing.partial);
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
                    units: mine,
                    why,
                },
                None => return Err(e),
            },
            Ok(outcome) => {
                let taken = Taken {
                    node: (n, &node),
                    mine: &mine,
                    partial: placing.partial,
                };
                taken.into(outcome, all, parts)
            }
        };
        if !gone.units.is_empty() {
            lost.push(gone);
        }
    }
    Ok(lost)
}

/// What node `node` built of `mine` (an image of `partial` being a part).
struct Taken<'a> {
    node: (usize, &'a str),
    mine: &'a [Unit],
    partial: &'a [String],
}

impl Taken<'_> {
    /// The node's outcome into `all` (parts into `parts`), marked with the
    /// node; what it failed on goes there too, unless the failure was
    /// losing the node: those units come back to be placed again.
    fn into(
        self,
        outcome: Outcome,
        all: &mut Outcome,
        parts: &mut BTreeMap<String, Vec<Built>>,
    ) -> Lost {
        let (n, node) = self.node;
        let mut gone = Lost {
            node: n,
            units: Vec::new(),
            why: String::new(),
        };
        for f in outcome.failed {
            match why_lost(&f.error) {
                Some(why) => {
                    gone.why = why;
                    let of_image = self.mine.iter().filter(|u| u.image == f.image);
                    gone.units.extend(of_image.cloned());
                }
                None => all.failed.push(f),
            }
        }
        // A node's plan holds the parents its images need; those were built
        // in an earlier tier (found there by key tag).
        let mine = |b: &Built| self.mine.iter().any(|u| u.image == b.image);
        for mut b in outcome.built.into_iter().filter(mine) {
            b.nodes = vec![node.to_owned()];
            if self.partial.contains(&b.image) {
                parts.entry(b.image.clone()).or_default().push(b);
            } else {
                all.built.push(b);
            }
        }
        gone
    }
}

/// A node lost during a build: the units it had not finished, and why.
struct Lost {
    node: usize,
    units: Vec<Unit>,
    why: String,
}

/// Marks the lost nodes down and says, in one line each, where their units go.
fn moved(
    pool: &Pool,
    notes: &mut Vec<String>,
    healthy: &mut [bool],
    lost: Vec<Lost>,
    pending: &[Unit],
) -> Result<Vec<Unit>, BuildError> {
    let mut again = Vec::new();
    for Lost { node, units, why } in lost {
        healthy[node] = false;
        let cache = match pool.cache {
            Some(_) => ", importing the pool cache",
            None => "",
        };
        let labels: Vec<String> = units.iter().map(Unit::label).collect();
        notes.push(format!(
            "node {} was lost during the build ({why}): {} placed again on the nodes left{cache}",
            pool.nodes[node].name,
            labels.join(", "),
        ));
        again.extend(units);
    }
    if !healthy.iter().any(|h| *h) {
        let labels: Vec<String> = again.iter().map(Unit::label).collect();
        return Err(BuildError::Place(place::PlaceError::NoNode {
            key: labels.join(", "),
        }));
    }
    // In the plan's order, so parents are placed before their children.
    Ok(pending
        .iter()
        .filter(|u| again.contains(u))
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
/// own tag of it and imports its own and its parent's. A job of `partial`
/// (some platforms of its image) has a tag per platform list, so nodes
/// building an image's platforms side by side do not overwrite each other's.
fn with_pool_cache(pool: &Pool, mut plan: BuildPlan, partial: &[String]) -> BuildPlan {
    let Some(cache) = &pool.cache else {
        return plan;
    };
    let prefix = cache.tag.as_deref().unwrap_or("pool");
    let tag = |name: &str| cache.with_tag(&format!("{prefix}-{name}"));
    let mut jobs = std::mem::take(&mut plan.jobs);
    for job in &mut jobs {
        let own = match partial.contains(&job.image) {
            true => format!("{}-{}", job.image, job.platforms).replace(['/', ','], "-"),
            false => job.image.clone(),
        };
        let export = CacheExport::Registry {
            reference: tag(&own),
            options: Default::default(),
            insecure: cache.is_loopback(),
            mounts: None,
        };
        let imports = std::iter::once(own.as_str())
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
    /// Places again each of `units` whose node (in `placed`) is down or unknown.
    fn move_off_lost(&self, units: &[Unit], placed: &mut [usize]) -> Result<(), BuildError> {
        let off: Vec<usize> = (0..units.len())
            .filter(|&i| !self.healthy.get(placed[i]).copied().unwrap_or(false))
            .collect();
        if off.is_empty() {
            return Ok(());
        }
        let again: Vec<Unit> = off.iter().map(|&i| units[i].clone()).collect();
        for (i, node) in off.into_iter().zip(self.of(&again)?) {
            placed[i] = node;
        }
        Ok(())
    }

    /// Every unit has a healthy node that builds its platforms; else one
    /// line naming it and every node with its platforms, before anything
    /// is solved.
    fn buildable(&self, units: &[Unit]) -> Result<(), BuildError> {
        for unit in units {
            let job = self.job(&unit.image);
            let builds = |n: usize| self.healthy[n] && self.builds(n, &wanted(unit, job));
            if !(0..self.pool.nodes.len()).any(builds) {
                let nodes: Vec<String> = (0..self.pool.nodes.len())
                    .map(|n| {
                        let name = &self.pool.nodes[n].name;
                        match (self.healthy[n], self.platforms[n].is_empty()) {
                            (false, _) => format!("{name} (down)"),
                            (true, true) => format!("{name} (platforms unknown)"),
                            (true, false) => format!("{name} ({})", self.platforms[n].join(", ")),
                        }
                    })
                    .collect();
                return Err(BuildError::NoNodeBuilds {
                    image: unit.image.clone(),
                    platforms: wanted(unit, job).join(","),
                    nodes: nodes.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Whether node `n` builds every one of `platforms` (a node whose
    /// platforms are unknown is taken to).
    fn builds(&self, n: usize, platforms: &[String]) -> bool {
        let listed = &self.platforms[n];
        listed.is_empty() || platforms.iter().all(|p| listed.contains(p))
    }

    /// The node index of each of `units`.
    fn of(&self, units: &[Unit]) -> Result<Vec<usize>, BuildError> {
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
        let items: Vec<Item> = units
            .iter()
            .map(|unit| self.item(&spec_name, units, unit))
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

    /// `unit` as placement sees it: its stable key, its parent among
    /// `units` (on the same platform, or on all), the nodes that build its
    /// platforms — for one platform, those that run it natively when a
    /// healthy one does.
    fn item(&self, spec_name: &str, units: &[Unit], unit: &Unit) -> Item {
        let job = self.job(&unit.image);
        let wanted = wanted(unit, job);
        let parent = self.plan.parent_of(&unit.image).and_then(|p| {
            units
                .iter()
                .position(|u| u.image == p && (u.platform == unit.platform || u.platform.is_none()))
        });
        let nodes = 0..self.pool.nodes.len();
        let fits: Vec<bool> = nodes.clone().map(|n| self.builds(n, &wanted)).collect();
        let native: Vec<bool> = nodes
            .map(|n| unit.platform.is_some() && self.platforms[n].first() == wanted.first())
            .collect();
        let any_native = native.iter().zip(self.healthy).any(|(n, h)| *n && *h);
        Item {
            key: format!("{spec_name}#{}@{}", unit.image, wanted.join(",")),
            parent,
            fits: if any_native { native } else { fits },
        }
    }
}

/// The platforms `unit` builds: its one, or all its job's.
fn wanted(unit: &Unit, job: &Job) -> Vec<String> {
    match &unit.platform {
        Some(p) => vec![p.to_string()],
        None => job.platforms.iter().map(ToString::to_string).collect(),
    }
}

/// The Dockerfile images of `built` as pushed, pinned by digest (see
/// [`BuildPlan::pushed_dockerfiles`]).
fn pinned_pushes(plan: &BuildPlan, built: &[Built]) -> BTreeMap<String, ImageRef> {
    let dockerfile = |b: &&Built| {
        let image = plan.spec.image(&b.image);
        image.is_some_and(|i| matches!(i.base, crate::spec::Base::Dockerfile(_)))
    };
    built
        .iter()
        .filter(dockerfile)
        .filter_map(|b| Some((b.image.clone(), pinned_push(b)?)))
        .collect()
}

/// Where a built image can be pulled from by digest: its key tag (as
/// `strata key` finds it) or push target, pinned to what was pushed.
fn pinned_push(built: &Built) -> Option<ImageRef> {
    let digest = built.solved.image_digest()?;
    let pushed = built.pushed.as_ref()?;
    let named = if built.key_tagged {
        crate::keys::tags::key_ref(pushed, &built.image, &built.key)
    } else {
        pushed.clone()
    };
    Some(named.with_digest(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(image: &str, platform: Option<&str>) -> Unit {
        Unit {
            image: image.into(),
            platform: platform.map(|p| p.parse().unwrap()),
        }
    }

    #[test]
    fn an_image_is_built_in_parts_when_its_platforms_part_ways() {
        let pending = [
            unit("apart", Some("linux/amd64")),
            unit("apart", Some("linux/arm64")),
            unit("together", Some("linux/amd64")),
            unit("together", Some("linux/arm64")),
            unit("whole", None),
        ];
        let placed = [0, 1, 1, 1, 0];
        let none: [String; 0] = [];
        assert_eq!(partial(&pending, &placed, none.iter()), ["apart"]);
        // A platform moved after a node was lost: its image stays in parts.
        let built = ["together".to_owned()];
        let moved = partial(&pending[2..3], &placed[2..3], built.iter());
        assert_eq!(moved, ["together"]);
    }
}
