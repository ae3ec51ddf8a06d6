//! After a build: each selected cache mount whose contents changed since its
//! artifact was made is copied into an output and exported as that artifact.
//!
//! The copy runs on the filesystem the step that used the mount ran on (it
//! has a shell), the cache mounted read-only. What travels is copied with
//! its owners, modes and file mtimes (a seed merges by mtime); directories
//! get a fixed mtime. With BuildKit's `source-date-epoch=0` for the image's
//! dates, unchanged contents give the same layer and manifest digests, so a
//! registry already holding the blob is sent nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use oci_spec::image::{
    ConfigBuilder, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, RootFsBuilder,
};

use super::artifact::{self, Artifact, ArtifactError, Location};
use super::probe::{self, select_fn};
use super::records::{self, Memory};
use super::s3;
use super::Probed;
use super::{MountError, MountReport, Outcome, Wanted};
use crate::client::Client;
use crate::llb::{Mount, Run, State};
use crate::ocilayout::OciLayout;
use crate::options::CacheMountUse;
use crate::options::Output;
use crate::registry::Registry;
use crate::solve::progress::Progress;
use crate::solve::{self, SolveOpt};

/// Exports every `wanted` mount that changed; one report each.
pub async fn export(
    client: &Client,
    registry: &Registry,
    wanted: &[Wanted],
    progress: &dyn Progress,
) -> Vec<MountReport> {
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut memory = Memory::load();
    let mounts = distinct_mounts(wanted);
    let on = &mounts[0].rootfs;
    let mut renderer = progress.renderer(Some("cache mounts"));
    let held =
        match probe::what_they_hold(client, &mounts, on, &mut memory, renderer.as_mut()).await {
            Ok(held) => held,
            Err(e) => return super::reports("export", wanted, Outcome::Failed(e.to_string())),
        };
    let held = &held;
    let (primaries, sharing) = shared(wanted);
    let each_lane = lanes(&primaries).into_values().map(|lane| async move {
        let mut done = Vec::new();
        for (i, w) in lane {
            let probed = &held[&w.mount.id];
            done.push((i, report_one(client, registry, w, probed, progress).await));
        }
        done
    });
    let mut reports: Vec<(usize, MountReport)> = futures::future::join_all(each_lane)
        .await
        .into_iter()
        .flatten()
        .collect();
    for (i, w, primary) in sharing {
        let from = reports
            .iter()
            .find(|(j, _)| *j == primary)
            .map(|(_, r)| r.clone());
        let probed = &held[&w.mount.id];
        let report = match from {
            Some(from) => share_one(registry, w, &wanted[primary], &from, probed).await,
            None => report_one(client, registry, w, probed, progress).await,
        };
        reports.push((i, report));
    }
    reports.sort_by_key(|(i, _)| *i);
    let reports: Vec<MountReport> = reports.into_iter().map(|(_, r)| r).collect();
    remember_exports(client, &mut memory, wanted, held, &reports).await;
    memory.save();
    reports
}

/// Exports one mount; what became of it, as a report.
async fn report_one(
    client: &Client,
    registry: &Registry,
    w: &Wanted,
    probed: &Probed,
    progress: &dyn Progress,
) -> MountReport {
    let began = Instant::now();
    let outcome = match export_one(client, registry, w, probed, progress).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e.to_string()),
    };
    let mut report = MountReport::new("export", w, probed.size).with(outcome);
    report.seconds = began.elapsed().as_secs_f64();
    report
}

/// An export that takes another's artifact: its place in `wanted`, it, and
/// the place of the export it shares.
type Sharing<'w> = (usize, &'w Wanted, usize);

/// The exports split into those solved (each with its place in `wanted`)
/// and those that take the artifact of an earlier one: the same mount to
/// another repository of the same registry, where a tag of the first
/// artifact (its blobs mounted across, no bytes sent) is the whole export.
/// A tree of images whose cache entries each name the same apt mount
/// copies it once, not once per image.
fn shared(wanted: &[Wanted]) -> (Vec<(usize, &Wanted)>, Vec<Sharing<'_>>) {
    let mut primaries: Vec<(usize, &Wanted)> = Vec::new();
    let mut sharing = Vec::new();
    for (i, w) in wanted.iter().enumerate() {
        let first = primaries
            .iter()
            .find(|(_, p)| p.mount.id == w.mount.id && same_registry(&p.location, &w.location));
        match first {
            Some((p, _)) => sharing.push((i, w, *p)),
            None => primaries.push((i, w)),
        }
    }
    (primaries, sharing)
}

fn same_registry(a: &Location, b: &Location) -> bool {
    matches!(
        (a, b),
        (Location::Registry { reference: x, .. }, Location::Registry { reference: y, .. })
            if x.registry == y.registry
    )
}

/// `w` as a tag of the artifact `from` exported for `primary` (or as that
/// export ended, when it made none).
async fn share_one(
    registry: &Registry,
    w: &Wanted,
    primary: &Wanted,
    from: &MountReport,
    probed: &Probed,
) -> MountReport {
    let began = Instant::now();
    let report = |outcome| MountReport::new("export", w, probed.size).with(outcome);
    let (
        Some(digest),
        Location::Registry {
            reference: source, ..
        },
    ) = (&from.digest, &primary.location)
    else {
        return report(from.outcome.clone());
    };
    let Location::Registry { reference, .. } = &w.location else {
        return report(from.outcome.clone());
    };
    let outcome = match w.location.find(registry, &w.mount).await {
        Ok(found) if found.digest == *digest => Outcome::Unchanged {
            digest: digest.clone(),
        },
        _ => match registry.tag(&source.with_digest(digest), reference).await {
            Ok(_) => Outcome::Shared {
                digest: digest.clone(),
                with: primary.location.to_string(),
            },
            Err(e) => Outcome::Failed(e.to_string()),
        },
    };
    let mut report = report(outcome);
    report.seconds = began.elapsed().as_secs_f64();
    report
}

/// The exports grouped into lanes that run side by side, each lane one
/// export at a time, with each export's place in `wanted`. Exports into one
/// registry repository share a lane: Debian's docker-registry (distribution
/// 2.8) can refuse a manifest whose blobs another push into the same
/// repository is committing at that moment ("manifest blob unknown"), and
/// mount artifacts share blobs (an empty bucket's layer, often). A local
/// layout serializes its own index updates, so each local export has a lane.
fn lanes<'w>(wanted: &[(usize, &'w Wanted)]) -> BTreeMap<String, Vec<(usize, &'w Wanted)>> {
    let mut lanes: BTreeMap<String, Vec<(usize, &Wanted)>> = BTreeMap::new();
    for &(i, w) in wanted {
        let lane = match &w.location {
            Location::Registry { reference, .. } => reference.name(),
            Location::Local { .. } => format!("local {i}"),
            // Each S3 export uploads from a layout of its own.
            Location::S3 { .. } => format!("s3 {i}"),
        };
        lanes.entry(lane).or_default().push((i, w));
    }
    lanes
}

/// The memory learns which artifact each mount now holds (its records'
/// use counts moved if it was copied).
async fn remember_exports(
    client: &Client,
    memory: &mut Memory,
    wanted: &[Wanted],
    held: &BTreeMap<String, Probed>,
    reports: &[MountReport],
) {
    let records = records::current(client).await.unwrap_or_default();
    for (w, report) in wanted.iter().zip(reports) {
        let (Some(record), Some(digest)) = (records.get(&w.mount.id), &report.digest) else {
            continue;
        };
        memory.remember(record, held.get(&w.mount.id), Some(digest));
    }
}

/// Each mount of `wanted` once, in order.
fn distinct_mounts(wanted: &[Wanted]) -> Vec<&CacheMountUse> {
    let mut seen = BTreeSet::new();
    wanted
        .iter()
        .map(|w| &w.mount)
        .filter(|m| seen.insert(m.id.clone()))
        .collect()
}

/// Exports one mount unless its artifact already holds what it holds.
async fn export_one(
    client: &Client,
    registry: &Registry,
    w: &Wanted,
    probed: &Probed,
    progress: &dyn Progress,
) -> Result<Outcome, MountError> {
    let before = match w.location.find(registry, &w.mount).await {
        Ok(found) => Some(found),
        Err(ArtifactError::Missing(_) | ArtifactError::Foreign { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(found) = before
        .as_ref()
        .filter(|f| f.fingerprint == probed.fingerprint)
    {
        return Ok(Outcome::Unchanged {
            digest: found.digest.clone(),
        });
    }
    if let Some(max) = w.max_size.filter(|max| probed.size > *max) {
        return Ok(Outcome::TooLarge { max });
    }
    let had = LocalBlobs::before(&w.location);
    let staged = match &w.location {
        Location::S3 { .. } => Some(s3::Staged::new().map_err(|e| MountError::Local {
            dir: std::env::temp_dir().display().to_string(),
            message: e.to_string(),
        })?),
        _ => None,
    };
    let definition = graph(&w.mount).marshal();
    let opt = SolveOpt {
        exports: vec![output(
            &w.location,
            staged.as_ref(),
            &w.mount,
            &probed.fingerprint,
        )],
        image_config: Some(config(&w.mount)),
        ..SolveOpt::default()
    };
    let mut renderer = progress.renderer(Some("cache mounts"));
    let solved = solve::solve(client, &definition, &opt, renderer.as_mut()).await?;
    let digest = solved
        .image_digest()
        .ok_or_else(|| MountError::Tools("the exporter named no digest".into()))?
        .to_owned();
    let sent = match (&w.location, &staged) {
        (Location::S3 { cache, name }, Some(staged)) => {
            let sent = s3::upload(cache, staged, &digest, name).await;
            Some(sent.map_err(super::artifact::ArtifactError::from)?)
        }
        _ => None,
    };
    let after = finish(
        &w.location,
        &w.mount,
        &digest,
        &probed.fingerprint,
        registry,
    )
    .await?;
    Ok(Outcome::Exported {
        uploaded: sent.unwrap_or_else(|| had.new_bytes(before.as_ref(), &after)),
        digest,
    })
}

/// Layers of an artifact: what travels is spread over them by a hash of each
/// path, so adding a file changes one layer and only that one is uploaded again.
pub const LAYERS: u32 = 16;

/// The copy of what travels of `mount` into an output of its own: a chain of
/// [`LAYERS`] steps, each adding the files of its hash bucket (a layer each).
fn graph(mount: &CacheMountUse) -> State {
    let mut out = State::scratch();
    for bucket in 0..LAYERS {
        let run = Run::shell(&bucket_script(mount, bucket))
            .mount(Mount::cache("/strata/m", &mount.id, mount.sharing).read_only())
            .mount(Mount::output_on("/strata/out", &out))
            .named(&format!(
                "copy cache mount {} ({}/{LAYERS})",
                mount.target,
                bucket + 1
            ))
            .env("STRATA_RUN", &crate::ids::random_id());
        out = mount
            .rootfs
            .exec(run)
            .mount("/strata/out")
            .expect("the copy has an output mount");
    }
    out
}

/// Copies the files of `bucket` (a hash of the path, mod [`LAYERS`]) with
/// their owners, modes and mtimes; directories get mtime 0, so the same
/// files give the same layer.
fn bucket_script(mount: &CacheMountUse, bucket: u32) -> String {
    format!(
        "# strata: copy cache mount {} ({}/{LAYERS})\nset -e\n{}\ncd /strata/m\n\
         sel '%p\\n' | awk -v k={bucket} -v n={LAYERS} '\
           BEGIN {{ for (i = 32; i < 127; i++) ord[sprintf(\"%c\", i)] = i }}\
           {{ h = 0; for (i = 1; i <= length($0); i++) h = (h * 31 + ord[substr($0, i, 1)]) % 65521;\
              if (h % n == k) print }}' \
         | tar --no-recursion --verbatim-files-from -T - -cf - | tar -C /strata/out -xpf -\n\
         find /strata/out -mindepth 1 -type d -exec touch -h -d @0 {{}} +\n",
        mount.target,
        bucket + 1,
        select_fn("sel", mount)
    )
}

/// The exporter of the artifact, annotated with the mount's id and
/// fingerprint, its dates fixed (zstd: fast, and BuildKit's is deterministic).
/// An S3 artifact goes to `staged` first (uploaded after the solve).
fn output(
    location: &Location,
    staged: Option<&s3::Staged>,
    mount: &CacheMountUse,
    fingerprint: &str,
) -> Output {
    let attrs = BTreeMap::from([
        (
            format!("annotation-manifest.{}", artifact::ID),
            mount.id.clone(),
        ),
        (
            format!("annotation-manifest.{}", artifact::FINGERPRINT),
            fingerprint.to_owned(),
        ),
        ("oci-mediatypes".to_owned(), "true".to_owned()),
        ("compression".to_owned(), "zstd".to_owned()),
        ("source-date-epoch".to_owned(), "0".to_owned()),
    ]);
    match location {
        Location::Registry {
            reference,
            insecure,
        } => Output::Image {
            also: Vec::new(),
            name: reference.clone(),
            push: true,
            insecure: *insecure,
            attrs,
        },
        Location::Local { dir, .. } => Output::OciDir {
            dir: dir.clone(),
            attrs,
        },
        Location::S3 { .. } => Output::OciDir {
            dir: staged.expect("an S3 export is staged").dir().to_path_buf(),
            attrs,
        },
    }
}

/// The artifact's image config: the mount's platform, fixed dates.
fn config(mount: &CacheMountUse) -> ImageConfiguration {
    let platform = mount.rootfs.get_platform();
    let epoch = "1970-01-01T00:00:00Z".to_owned();
    let history = HistoryBuilder::default()
        .created(epoch.clone())
        .created_by(format!("strata cache mount {}", mount.id))
        .build()
        .expect("a history entry");
    ImageConfigurationBuilder::default()
        .architecture(platform.architecture.as_str())
        .os(platform.os.as_str())
        .created(epoch)
        .config(ConfigBuilder::default().build().expect("an empty config"))
        .rootfs(RootFsBuilder::default().build().expect("an empty rootfs"))
        .history(vec![history])
        .build()
        .expect("an image config")
}

/// After the solve: a local layout's entry is named and annotated (BuildKit
/// leaves `index.json` to the client); the new artifact, read back.
async fn finish(
    location: &Location,
    mount: &CacheMountUse,
    digest: &str,
    fingerprint: &str,
    registry: &Registry,
) -> Result<Artifact, MountError> {
    if let Location::Local { dir, name } = location {
        let failed = |e: std::io::Error| MountError::Local {
            dir: dir.display().to_string(),
            message: e.to_string(),
        };
        let layout = OciLayout::new(dir);
        let size = std::fs::metadata(layout.blob_path(digest).map_err(failed)?)
            .map_err(failed)?
            .len();
        let descriptor = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": { artifact::ID: mount.id, artifact::FINGERPRINT: fingerprint },
        });
        layout.put_tag(name, descriptor).map_err(failed)?;
    }
    Ok(location.find(registry, mount).await?)
}

/// The blobs a local layout held before an export, to tell what it added.
struct LocalBlobs(Option<BTreeSet<String>>);

impl LocalBlobs {
    fn before(location: &Location) -> LocalBlobs {
        let Location::Local { dir, .. } = location else {
            return LocalBlobs(None);
        };
        let names = std::fs::read_dir(dir.join("blobs/sha256"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
            .collect();
        LocalBlobs(Some(names))
    }

    /// Bytes of `after`'s layers that were not there before: in a layout,
    /// blobs it did not hold; in a registry, layers the previous artifact
    /// did not have (the daemon sends no blob the repository holds).
    fn new_bytes(&self, before: Option<&Artifact>, after: &Artifact) -> u64 {
        let held = |digest: &String| match &self.0 {
            Some(blobs) => blobs.contains(digest),
            None => before.is_some_and(|b| b.layers.iter().any(|(d, _)| d == digest)),
        };
        after
            .layers
            .iter()
            .filter(|(d, _)| !held(d))
            .map(|(_, s)| s)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llb::CacheSharing;
    use crate::tools::Tool;

    fn mount(tool: Tool, target: &str) -> CacheMountUse {
        CacheMountUse {
            id: format!("strata:{tool}:linux/amd64:{target}"),
            target: target.into(),
            sharing: CacheSharing::Shared,
            tool,
            rootfs: State::scratch(),
            base: State::scratch(),
        }
    }

    /// The buckets' scripts, run here on a directory, copy each file once.
    #[test]
    fn buckets_split_the_files_between_them() {
        let from = tempfile::tempdir().unwrap();
        for i in 0..40 {
            let dir = from.path().join(format!("d{}", i % 3));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("f{i}.whl")), i.to_string()).unwrap();
        }
        let to = tempfile::tempdir().unwrap();
        let m = mount(Tool::Pip, "/root/.cache/pip");
        let mut layers = Vec::new();
        for bucket in 0..LAYERS {
            let out = to.path().join(bucket.to_string());
            std::fs::create_dir(&out).unwrap();
            let script = bucket_script(&m, bucket)
                .replace("/strata/m", &from.path().display().to_string())
                .replace("/strata/out", &out.display().to_string());
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .status();
            assert!(status.unwrap().success(), "{script}");
            let files = walk(&out);
            layers.push(files);
        }
        let all: usize = layers.iter().map(Vec::len).sum();
        assert_eq!(all, 40, "each file in exactly one bucket: {layers:?}");
        assert!(
            layers.iter().filter(|l| !l.is_empty()).count() > 4,
            "{layers:?}"
        );
    }

    /// Exports into one repository wait for each other; other repositories
    /// and local layouts go side by side; every export keeps its place.
    #[test]
    fn one_repository_is_one_lane() {
        let at = |reference: &str| Location::Registry {
            reference: reference.parse().unwrap(),
            insecure: true,
        };
        let local = Location::Local {
            dir: "/tmp/cache".into(),
            name: "m".into(),
        };
        let wanted: Vec<Wanted> = [
            at("127.0.0.1:5000/a:cache-mount-apt-1"),
            local.clone(),
            at("127.0.0.1:5000/b:cache-mount-apt-1"),
            at("127.0.0.1:5000/a:cache-mount-pip-2"),
            local,
        ]
        .into_iter()
        .map(|location| Wanted {
            mount: mount(Tool::Apt, "/var/cache/apt"),
            location,
            max_size: None,
        })
        .collect();
        let all: Vec<(usize, &Wanted)> = wanted.iter().enumerate().collect();
        let lanes: Vec<Vec<usize>> = lanes(&all)
            .into_values()
            .map(|lane| lane.into_iter().map(|(i, _)| i).collect())
            .collect();
        assert_eq!(lanes, vec![vec![0, 3], vec![2], vec![1], vec![4]]);

        // One mount to three repositories of one registry and to a layout:
        // solved for the first repository and the layout, tagged for the others.
        let (primaries, sharing) = shared(&wanted);
        let solved: Vec<usize> = primaries.iter().map(|(i, _)| *i).collect();
        assert_eq!(solved, [0, 1, 4], "a layout's export is its own");
        let tagged: Vec<(usize, usize)> = sharing.iter().map(|(i, _, p)| (*i, *p)).collect();
        assert_eq!(tagged, [(2, 0), (3, 0)]);
        let other = Wanted {
            mount: mount(Tool::Pip, "/root/.cache/pip"),
            ..wanted[2].clone()
        };
        let two = [wanted[0].clone(), other];
        let (primaries, _) = shared(&two);
        assert_eq!(primaries.len(), 2, "another mount is another export");
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                files.extend(walk(&entry.path()));
            } else {
                files.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        files
    }
}
