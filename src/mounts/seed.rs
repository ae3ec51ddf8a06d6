//! Before a build: each selected cache mount is merged with its artifact in
//! a solve of its own, so the build's graph and cache keys stay as they are.
//! `cp -a -u` never overwrites a file the mount holds that is as new or
//! newer; the mount is then stamped with the artifact's digest. A mount
//! whose stamp names the artifact, or which holds exactly what the artifact
//! holds (the builder that made it), is left alone: checking costs one
//! probe, and nothing is pulled.

use std::collections::BTreeMap;
use std::time::Instant;

use super::artifact::{Artifact, Location};
use super::probe::{self, STAMP};
use super::records::{self, Memory};
use super::s3;
use super::Probed;
use super::{MountError, MountReport, Outcome, Wanted};
use crate::client::Client;
use crate::llb::{source, Mount, Run, State};
use crate::options::CacheMountUse;
use crate::registry::Registry;
use crate::solve::progress::Progress;
use crate::solve::{self, SolveOpt};

/// The store id under which a seed serves a local layout's artifact.
const STORE: &str = "strata-mounts";

/// Seeds every `wanted` mount that does not hold its artifact yet.
pub async fn seed(
    client: &Client,
    registry: &Registry,
    wanted: &[Wanted],
    progress: &dyn Progress,
) -> Vec<MountReport> {
    let checking = Instant::now();
    let (mut reports, found) = find(registry, wanted).await;
    if found.is_empty() {
        return reports;
    }
    let mut memory = Memory::load();
    let records = records::current(client).await.unwrap_or_default();
    let (known, rest): (Vec<_>, Vec<_>) = found.iter().partition(|(w, a)| {
        records
            .get(&w.mount.id)
            .is_some_and(|r| memory.holds(r, &a.digest))
    });
    for (w, artifact) in known {
        let mut report = MountReport::new("seed", w, artifact.bytes()).with(Outcome::Held);
        report.digest = Some(artifact.digest.clone());
        report.seconds = checking.elapsed().as_secs_f64();
        reports.push(report);
    }
    if !rest.is_empty() {
        reports.extend(seed_rest(client, &rest, &mut memory, progress, checking).await);
    }
    memory.save();
    reports
}

/// Each wanted mount's artifact, where found (each mount from the first
/// import that has it); a report for each one that is not.
async fn find<'w>(
    registry: &Registry,
    wanted: &'w [Wanted],
) -> (Vec<MountReport>, Vec<(&'w Wanted, Artifact)>) {
    let mut reports = Vec::new();
    let mut found: Vec<(&Wanted, Artifact)> = Vec::new();
    for w in wanted {
        if found.iter().any(|(f, _)| f.mount.id == w.mount.id) {
            continue;
        }
        match w.location.find(registry, &w.mount).await {
            Ok(artifact) => found.push((w, artifact)),
            Err(e) => {
                reports.push(MountReport::new("seed", w, 0).with(Outcome::NotSeeded(e.to_string())))
            }
        }
    }
    (reports, found)
}

/// The mounts the memory could not vouch for: probed, then seeded where
/// they do not hold their artifact; the memory learns the outcome.
async fn seed_rest(
    client: &Client,
    rest: &[&(&Wanted, Artifact)],
    memory: &mut Memory,
    progress: &dyn Progress,
    checking: Instant,
) -> Vec<MountReport> {
    let mounts: Vec<&CacheMountUse> = rest.iter().map(|(w, _)| &w.mount).collect();
    let mut renderer = progress.renderer(Some("cache mounts"));
    let held =
        match probe::what_they_hold(client, &mounts, &mounts[0].base, memory, renderer.as_mut())
            .await
        {
            Ok(held) => held,
            Err(e) => {
                let list: Vec<Wanted> = rest.iter().map(|(w, _)| (*w).clone()).collect();
                return super::reports("seed", &list, Outcome::NotSeeded(e.to_string()));
            }
        };
    let checked = checking.elapsed();
    let each = rest.iter().map(|(w, artifact)| {
        let probed = &held[&w.mount.id];
        async move {
            let began = Instant::now()
                .checked_sub(checked)
                .unwrap_or_else(Instant::now);
            let outcome = seed_one(client, w, artifact, probed, progress).await;
            let mut report = MountReport::new("seed", w, artifact.bytes()).with(outcome);
            report.digest = Some(artifact.digest.clone());
            report.seconds = began.elapsed().as_secs_f64();
            report
        }
    });
    let reports = futures::future::join_all(each).await;
    let records = records::current(client).await.unwrap_or_default();
    for ((w, artifact), report) in rest.iter().zip(&reports) {
        let (Some(record), Some(probed)) = (records.get(&w.mount.id), held.get(&w.mount.id)) else {
            continue;
        };
        match report.outcome {
            Outcome::Held => memory.remember(record, Some(probed), Some(&artifact.digest)),
            Outcome::Seeded { .. } => memory.remember(record, None, Some(&artifact.digest)),
            _ => {}
        }
    }
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
    let staged = match staged_from_s3(&w.location, artifact).await {
        Ok(staged) => staged,
        Err(e) => return Outcome::NotSeeded(e.to_string()),
    };
    let (from, oci_layouts) =
        artifact_state(&w.location, staged.as_ref(), &w.mount, &artifact.digest);
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

/// An S3 artifact downloaded into a layout of its own (none elsewhere).
async fn staged_from_s3(
    location: &Location,
    artifact: &Artifact,
) -> Result<Option<s3::Staged>, s3::S3ArtifactError> {
    let Location::S3 { cache, .. } = location else {
        return Ok(None);
    };
    Ok(Some(s3::download(cache, &artifact.digest).await?))
}

/// The artifact as a filesystem the daemon pulls, and the layouts it reads
/// (an S3 artifact's: `staged`).
fn artifact_state(
    location: &Location,
    staged: Option<&s3::Staged>,
    mount: &CacheMountUse,
    digest: &str,
) -> (State, BTreeMap<String, std::path::PathBuf>) {
    let layout = |dir: &std::path::Path| {
        (
            source::oci_layout(STORE, digest, mount.base.get_platform()),
            BTreeMap::from([(STORE.to_owned(), dir.to_path_buf())]),
        )
    };
    let platform = mount.base.get_platform();
    match location {
        Location::Registry { reference, .. } => (
            source::image_for(&reference.with_digest(digest), platform, None),
            BTreeMap::new(),
        ),
        Location::Local { dir, .. } => layout(dir),
        Location::S3 { .. } => layout(staged.expect("an S3 artifact is staged").dir()),
    }
}

/// The merge of `from` into the mount, then the stamp.
fn graph(mount: &CacheMountUse, from: State, digest: &str) -> State {
    let script = format!(
        "# strata: seed cache mount {target}\nset -e\ncp -a -u /strata/seed/. /strata/m/\n\
         printf '%s' '{digest}' > /strata/m/{STAMP}\n",
        target = mount.target
    );
    let run = Run::shell(&script)
        .mount(Mount::cache("/strata/m", &mount.id, mount.sharing))
        .mount(Mount::ReadOnly {
            target: "/strata/seed".into(),
            source: from,
            selector: String::new(),
        })
        .named(&format!("seed cache mount {}", mount.target))
        .env("STRATA_RUN", &crate::ids::random_id());
    mount.base.run(run)
}
