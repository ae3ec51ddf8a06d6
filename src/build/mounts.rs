//! `mounts=` on a build's cache entries (see [`crate::mounts`]): the cache
//! mounts each job's image uses are seeded from its imports before any image
//! solves, and exported to its exports after the images that solved (each
//! platform's mounts, for a multi-platform image). Each
//! report goes with the first image (in the plan's order) that asked for it.

use std::collections::BTreeSet;

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

/// The mounts to export: per job that solved, the image's mounts its exports select.
pub(super) fn exports(
    plan: &BuildPlan,
    prepared: &Prepared,
    built: &[Built],
) -> Vec<(String, Wanted)> {
    let solved: BTreeSet<&str> = built
        .iter()
        .filter(|b| !b.up_to_date)
        .map(|b| b.image.as_str())
        .collect();
    let mut wanted = wanted(plan, prepared, |job, mount| {
        job.cache_exports
            .iter()
            .filter_map(|e| Some((Location::of_export(e, mount)?, e.mounts()?)))
            .collect()
    });
    wanted.retain(|(image, _)| solved.contains(image.as_str()));
    wanted
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
