//! Before a build: each selected cache mount is merged with its artifact in
//! a solve of its own, so the build's graph and cache keys stay as they are.
//! `cp -a -u` never overwrites a file the mount holds that is as new or
//! newer; the mount is then stamped with the artifact's digest. A mount
//! whose stamp names the artifact, or which holds exactly what the artifact
//! holds (the builder that made it), is left alone: checking costs one
//! probe, and nothing is pulled.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::artifact::{Artifact, Location};
use super::probe::{self, Probed, STAMP};
use super::{MountError, MountReport, Outcome, Wanted};
use crate::client::Client;
use crate::llb::{source, Mount, Run, State};
use crate::registry::Registry;
use crate::solve::progress::Progress;
use crate::solve::{self, SolveOpt};
use crate::spec::CacheMountUse;

/// The store id under which a seed serves a local layout's artifact.
const STORE: &str = "strata-mounts";

/// Seeds every `wanted` mount that does not hold its artifact yet.
pub async fn seed(
    client: &Client,
    registry: &Registry,
    wanted: &[Wanted],
    progress: &dyn Progress,
) -> Vec<MountReport> {
    let mut reports = Vec::new();
    let mut found = Vec::new();
    for w in wanted {
        match w.location.find(registry, &w.mount).await {
            Ok(artifact) => found.push((w, artifact)),
            Err(e) => {
                reports.push(MountReport::new("seed", w, 0).with(Outcome::NotSeeded(e.to_string())))
            }
        }
    }
    // A mount seeds from the first import that has its artifact.
    let mut seen = BTreeSet::new();
    found.retain(|(w, _)| seen.insert(w.mount.id.clone()));
    if found.is_empty() {
        return reports;
    }
    let mounts: Vec<&CacheMountUse> = found.iter().map(|(w, _)| &w.mount).collect();
    let mut renderer = progress.renderer(Some("cache mounts"));
    let checking = Instant::now();
    let probed = match probe::probe(client, &mounts, &mounts[0].base, renderer.as_mut()).await {
        Ok(probed) => probed,
        Err(e) => {
            let list: Vec<Wanted> = found.iter().map(|(w, _)| (*w).clone()).collect();
            reports.extend(super::reports(
                "seed",
                &list,
                Outcome::NotSeeded(e.to_string()),
            ));
            return reports;
        }
    };
    // The check is the one probe: it counts in every mount's time.
    let checked = checking.elapsed();
    let each = found
        .iter()
        .zip(&probed)
        .map(|((w, artifact), probed)| async move {
            let began = Instant::now()
                .checked_sub(checked)
                .unwrap_or_else(Instant::now);
            let outcome = seed_one(client, w, artifact, probed, progress).await;
            let mut report = MountReport::new("seed", w, artifact.bytes()).with(outcome);
            report.digest = Some(artifact.digest.clone());
            report.seconds = began.elapsed().as_secs_f64();
            report
        });
    reports.extend(futures::future::join_all(each).await);
    reports
}

async fn seed_one(
    client: &Client,
    w: &Wanted,
    artifact: &Artifact,
    probed: &Probed,
    progress: &dyn Progress,
) -> Outcome {
    if probed.stamp.as_deref() == Some(artifact.digest.as_str())
        || probed.fingerprint == artifact.fingerprint
    {
        return Outcome::Held;
    }
    if let Some(max) = w.max_size.filter(|max| artifact.bytes() > *max) {
        return Outcome::TooLarge { max };
    }
    let (from, oci_layouts) = artifact_state(&w.location, &w.mount, &artifact.digest);
    let definition = graph(&w.mount, from, &artifact.digest).marshal();
    let opt = SolveOpt {
        oci_layouts,
        ..SolveOpt::default()
    };
    let mut renderer = progress.renderer(Some("cache mounts"));
    match solve::solve(client, &definition, &opt, renderer.as_mut()).await {
        Ok(_) => Outcome::Seeded {
            pulled: artifact.bytes(),
        },
        Err(e) => Outcome::NotSeeded(MountError::from(e).to_string()),
    }
}

/// The artifact as a filesystem the daemon pulls, and the layouts it reads.
fn artifact_state(
    location: &Location,
    mount: &CacheMountUse,
    digest: &str,
) -> (State, BTreeMap<String, std::path::PathBuf>) {
    let platform = mount.base.get_platform();
    match location {
        Location::Registry { reference, .. } => (
            source::image_for(&reference.with_digest(digest), platform, None),
            BTreeMap::new(),
        ),
        Location::Local { dir, .. } => (
            source::oci_layout(STORE, digest, platform),
            BTreeMap::from([(STORE.to_owned(), dir.clone())]),
        ),
    }
}

/// The merge of `from` into the mount, then the stamp.
fn graph(mount: &CacheMountUse, from: State, digest: &str) -> State {
    let script = format!(
        "set -e\ncp -a -u /strata/seed/. /strata/m/\nprintf '%s' '{digest}' > /strata/m/{STAMP}\n"
    );
    let run = Run::shell(&script)
        .mount(Mount::cache("/strata/m", &mount.id, mount.sharing))
        .mount(Mount::ReadOnly {
            target: "/strata/seed".into(),
            source: from,
            selector: String::new(),
        })
        .named(&format!("seed cache mount {}", mount.target))
        .env("STRATA_RUN", &crate::session::random_id());
    mount.base.run(run)
}
