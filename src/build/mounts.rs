//! `mounts=` on a build's cache entries (see [`crate::mounts`]): the cache
//! mounts each job's image uses are seeded from its imports before any image
//! solves, and exported to its exports once every image using the mount has
//! finished, while the others still build ([`ExportSchedule`]; each
//! platform's mounts, for a multi-platform image). Each
//! report goes with the first image (in the plan's order) that asked for it.

use std::collections::{BTreeMap, BTreeSet};

use super::{Built, Run};
use crate::mounts::artifact::Location;
use crate::mounts::{self, MountReport, Outcome, Wanted};
use crate::options::CacheMountUse;
use crate::options::MountOptions;
use crate::solve::progress::Progress;
use crate::spec::{BuildPlan, Job};

use super::prepare::Prepared;

/// The mounts to seed: per job, the image's mounts its imports select.
pub(super) fn seeds(plan: &BuildPlan, prepared: &Prepared) -> Vec<(String, Wanted)> {
    wanted(plan, prepared, |job, mount| {
        job.cache_imports
            .iter()
            .filter_map(|i| Some((Location::of_import(i, mount), i.mounts()?)))
            .collect()
    })
}

/// When each mount export may run: once every job whose image uses the
/// mount has finished (a later image may still add to it), for the images
/// of those that solved. A mount's exports to all its locations go in one
/// batch, so one copy serves them (see `mounts::export`).
pub(super) struct ExportSchedule {
    /// Per job that asked: the mount and where it goes, in the plan's order.
    wants: Vec<(String, Wanted)>,
    /// The images that use each mount id.
    users: BTreeMap<String, BTreeSet<String>>,
    finished: BTreeSet<String>,
    solved: BTreeSet<String>,
    sent: BTreeSet<String>,
}

impl ExportSchedule {
    pub(super) fn new(plan: &BuildPlan, prepared: &Prepared) -> ExportSchedule {
        let wants = wanted(plan, prepared, |job, mount| {
            job.cache_exports
                .iter()
                .filter_map(|e| Some((Location::of_export(e, mount)?, e.mounts()?)))
                .collect()
        });
        let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for job in &plan.jobs {
            let variants = &prepared.images[&job.image].variants;
            for mount in variants.iter().flat_map(|(image, _)| &image.cache_mounts) {
                users
                    .entry(mount.id.clone())
                    .or_default()
                    .insert(job.image.clone());
            }
        }
        ExportSchedule {
            wants,
            users,
            finished: BTreeSet::new(),
            solved: BTreeSet::new(),
            sent: BTreeSet::new(),
        }
    }

    /// `image` finished (`solved`: it ran a solve); the exports now due.
    pub(super) fn finished(&mut self, image: &str, solved: bool) -> Vec<(String, Wanted)> {
        self.finished.insert(image.to_owned());
        if solved {
            self.solved.insert(image.to_owned());
        }
        let due: Vec<String> = self
            .users
            .iter()
            .filter(|(id, users)| {
                !self.sent.contains(*id) && users.iter().all(|u| self.finished.contains(u))
            })
            .map(|(id, _)| id.clone())
            .collect();
        self.sent.extend(due.iter().cloned());
        self.wants
            .iter()
            .filter(|(image, w)| due.contains(&w.mount.id) && self.solved.contains(image))
            .cloned()
            .collect()
    }
}

/// Each (mount, location) pair once, with the image that first asked for it.
fn wanted(
    plan: &BuildPlan,
    prepared: &Prepared,
    entries: impl for<'j> Fn(&'j Job, &CacheMountUse) -> Vec<(Location, &'j MountOptions)>,
) -> Vec<(String, Wanted)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for job in &plan.jobs {
        // Every platform's mounts: their ids name the platform.
        let variants = &prepared.images[&job.image].variants;
        for mount in variants.iter().flat_map(|(image, _)| &image.cache_mounts) {
            for (location, options) in entries(job, mount) {
                if !options.selects(mount) || !seen.insert((mount.id.clone(), location.to_string()))
                {
                    continue;
                }
                let w = Wanted {
                    mount: mount.clone(),
                    location,
                    max_size: options.max_size,
                };
                out.push((job.image.clone(), w));
            }
        }
    }
    out
}

impl Run<'_> {
    /// Seeds (`seed`) or exports the `wanted` mounts; a daemon that cannot
    /// be reached makes every one a warning, not an error.
    pub(super) async fn mounts(
        &self,
        seed: bool,
        wanted: &[(String, Wanted)],
        progress: &dyn Progress,
    ) -> Vec<MountReport> {
        if wanted.is_empty() {
            return Vec::new();
        }
        let list: Vec<Wanted> = wanted.iter().map(|(_, w)| w.clone()).collect();
        let client = match self.daemon.client().await {
            Ok(client) => client,
            Err(e) if seed => {
                return mounts::reports("seed", &list, Outcome::NotSeeded(e.to_string()))
            }
            Err(e) => return mounts::reports("export", &list, Outcome::Failed(e.to_string())),
        };
        match seed {
            true => mounts::seed::seed(client, self.registry, &list, progress).await,
            false => mounts::export::export(client, self.registry, &list, progress).await,
        }
    }
}

/// Gives each report to the image that asked for its mount and location.
pub(super) fn attach(built: &mut [Built], wanted: &[(String, Wanted)], reports: Vec<MountReport>) {
    for report in reports {
        let owner = wanted
            .iter()
            .find(|(_, w)| w.mount.id == report.mount && w.location.to_string() == report.location);
        let image = owner.map(|(image, _)| image.as_str());
        if let Some(b) = built.iter_mut().find(|b| Some(b.image.as_str()) == image) {
            b.mounts.push(report);
        }
    }
}
