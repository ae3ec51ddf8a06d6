//! Build cache export and import against the real daemon: a builder emptied
//! with `strata prune --all` (and, for the registry, a brand-new buildkitd)
//! gets the codex example back from registry (min and max), local and inline
//! cache with every step cached and the same image digest; what min and max
//! export and restore; a failed export (a refused registry, a registry killed
//! mid-upload, an unwritable directory) leaves the previous local cache intact;
//! a registry cache of a two-platform image restores both platforms.
//!
//! The tests prune the shared daemon, so they run one at a time.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use common::project::{rand_suffix, Build, Project};
use common::{repo_root, stack, strata};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn prune_all() {
    strata(["--addr", &stack().buildkit_host, "prune", "--all"]).ok();
}

/// A brand-new builder: buildkitd restarted on an empty root directory.
fn fresh_builder() {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/daemon.sh"))
        .args(["restart-buildkitd", "--fresh"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restart-buildkitd --fresh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn digest(b: &Build) -> String {
    b.meta("codex", "containerimage.digest")
}

/// Every step of the spec came from the cache (cache mounts aside, which are
/// never exported: those steps just don't run).
fn assert_all_cached(b: &Build, how: &str) {
    b.ok();
    assert_eq!(
        b.ran(),
        Vec::<String>::new(),
        "{how}: every spec step is cached"
    );
}

fn index_json(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("index.json")).unwrap()
}

#[test]
fn every_cache_mode_restores_a_pruned_builder() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = stack();
    let p = Project::codex();
    let run = rand_suffix();
    let image = format!("{}/strata/cache-test:{run}", s.registry);
    // Repositories of their own: two exports writing the same blobs into one
    // repository at once can make docker-registry refuse a manifest (400).
    let min = format!("{}/strata/cache-test-min:{run}", s.registry);
    let max = format!("{}/strata/cache-test-max:{run}", s.registry);
    let local = p.path("cache-dir");
    let local_to = format!("type=local,dest={}", local.display());
    let local_from = format!("type=local,src={}", local.display());

    // One build exports every kind at once.
    prune_all();
    let first = p.build(
        &s.buildkit_host,
        &[
            "codex",
            "--push",
            &image,
            "--cache-to",
            &format!("type=registry,ref={min},mode=min"),
            "--cache-to",
            &format!("type=registry,ref={max},mode=max"),
            "--cache-to",
            &local_to,
        ],
    );
    first.ok();
    let want = digest(&first);
    let reports = first.metadata.as_ref().unwrap()["codex"]["strata.cache_exports"].clone();
    let reports = reports.as_array().unwrap().clone();
    assert_eq!(reports.len(), 3, "{reports:?}");
    for r in &reports {
        assert!(r["bytes"].as_u64().unwrap() > 1_000_000, "{r}");
        assert!(r["blobs"].as_u64().unwrap() > 3, "{r}");
    }
    assert!(
        first.run.stdout.contains("cache exported: type=local"),
        "{}",
        first.run.stdout
    );
    assert!(index_json(&local).contains("sha256:"));

    let cases: Vec<(&str, String, bool)> = vec![
        (
            "registry mode=max, brand-new builder",
            format!("type=registry,ref={max}"),
            true,
        ),
        (
            "registry mode=min",
            format!("type=registry,ref={min}"),
            false,
        ),
        ("local", local_from.clone(), false),
    ];
    for (how, from, brand_new) in cases {
        if brand_new {
            fresh_builder();
        } else {
            prune_all();
        }
        let again = p.build(
            &s.buildkit_host,
            &[
                "codex",
                "--push",
                &image,
                "--cache-from",
                &from,
                "--no-skip",
            ],
        );
        assert_all_cached(&again, how);
        assert_eq!(digest(&again), want, "{how}: the same image");
    }

    // Inline cache lives in the image's config, so the image that carries it
    // is compared with its own rebuild (which embeds the same cache again).
    let inline_image = format!("{}/strata/cache-test:inline-{run}", s.registry);
    let inline = [
        "codex",
        "--push",
        &inline_image,
        "--cache-to",
        "type=inline",
    ];
    let carrier = p.build(&s.buildkit_host, &inline);
    carrier.ok();
    prune_all();
    let from_inline = format!("type=registry,ref={inline_image}");
    let mut args = inline.to_vec();
    args.extend(["--cache-from", &from_inline, "--no-skip"]);
    let again = p.build(&s.buildkit_host, &args);
    assert_all_cached(&again, "inline");
    assert_eq!(digest(&again), digest(&carrier), "inline: the same image");

    // An overlay edit after a prune: max brings the toolchain back and only
    // the overlay runs. min exports the final image's chain, every layer under
    // its step's cache key, and leaves out only results that are not layers of
    // the image. A strata image is one chain in which every step is a layer,
    // so min restores the toolchain just as well, and (measured with BuildKit
    // 0.13) exports the same blobs. Both facts are checked, so a change in
    // BuildKit's behaviour shows here.
    let agents = p.path("overlay/AGENTS.md");
    let mut text = std::fs::read_to_string(&agents).unwrap();
    text.push_str(&format!("\nedited {run}\n"));
    std::fs::write(&agents, text).unwrap();
    for (mode, reference) in [("max", &max), ("min", &min)] {
        prune_all();
        let b = p.build(
            &s.buildkit_host,
            &[
                "codex",
                "--cache-from",
                &format!("type=registry,ref={reference}"),
            ],
        );
        b.ok();
        let ran = b.ran();
        assert_eq!(ran.len(), 1, "{mode}: only the overlay runs: {ran:?}");
        assert!(ran[0].contains("overlay"), "{ran:?}");
    }
    let blobs = |mode: &str| {
        reports
            .iter()
            .find(|r| r["mode"] == mode && r["kind"] == "registry")
            .and_then(|r| r["blobs"].as_u64())
            .unwrap()
    };
    assert!(
        blobs("max") >= blobs("min"),
        "max exports at least what min does: {reports:?}"
    );
}

#[test]
fn a_failed_export_leaves_the_local_cache_as_it_was() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = stack();
    let run = rand_suffix();
    let extra = format!("[[images.keep.toolchain]]\nrun = \"echo {run} > /run-id\"\n");
    let p = Project::new(&common::project::small_spec("keep", &extra));
    let local = p.path("cache");
    let local_to = format!("type=local,dest={}", local.display());
    p.build(&s.buildkit_host, &["keep", "--cache-to", &local_to])
        .ok();
    let before = index_json(&local);

    // Change the image, then export to the same directory and to a registry
    // that refuses connections: the build fails and names the export.
    std::fs::write(p.path("overlay/hello.txt"), format!("changed {run}\n")).unwrap();
    let refused = "type=registry,ref=127.0.0.1:1/strata/nowhere:cache";
    let failed = p.build(
        &s.buildkit_host,
        &["keep", "--cache-to", &local_to, "--cache-to", refused],
    );
    assert_fails_naming(&failed, "127.0.0.1:1");
    assert_cache_kept(&p, "keep", &local, &before);

    // With ignore-error=true the same failure is only a warning.
    let tolerant = p.build(
        &s.buildkit_host,
        &[
            "keep",
            "--cache-to",
            &format!("{refused},ignore-error=true"),
        ],
    );
    tolerant.ok();
}

#[test]
fn a_registry_stopped_mid_upload_leaves_the_local_cache_as_it_was() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = stack();
    let run = rand_suffix();
    // A layer big enough (96 MB of noise) that its upload lasts a while.
    let extra = format!(
        "[[images.midway.toolchain]]\nrun = \"head -c 96000000 /dev/urandom > /noise.bin && echo {run}\"\n"
    );
    let p = Project::new(&common::project::small_spec("midway", &extra));
    let local = p.path("cache");
    let local_to = format!("type=local,dest={}", local.display());
    p.build(&s.buildkit_host, &["midway", "--cache-to", &local_to])
        .ok();
    let before = index_json(&local);

    // Change the image, export to the same directory and to a registry that
    // is killed as soon as the first blob upload to it has begun.
    let mut registry = common::ScratchRegistry::start();
    std::fs::write(p.path("overlay/hello.txt"), format!("changed {run}\n")).unwrap();
    let to_registry = format!("type=registry,ref={}/strata/midway:cache", registry.addr);
    let mut building = p.spawn_build(
        &s.buildkit_host,
        &[
            "midway",
            "--cache-to",
            &local_to,
            "--cache-to",
            &to_registry,
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !registry.uploading("strata/midway") {
        assert!(
            !building.finished(),
            "the build ended before an upload to the registry was seen"
        );
        assert!(std::time::Instant::now() < deadline, "no upload began");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    registry.kill();
    let failed = building.wait();
    assert_fails_naming(&failed, &registry.addr);
    assert_cache_kept(&p, "midway", &local, &before);
}

/// The build failed cleanly, its last line one `error:` naming `what`.
fn assert_fails_naming(failed: &Build, what: &str) {
    assert_eq!(failed.run.code, Some(1), "{:#?}", failed.run);
    let stderr = &failed.run.stderr;
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{last}");
    assert!(last.contains(what), "the error names {what}: {last}");
}

/// After a failed build, the local cache `local` is the one exported before
/// it (`before` its index.json), whole, and restores a pruned builder.
fn assert_cache_kept(p: &Project, image: &str, local: &Path, before: &str) {
    assert_eq!(index_json(local), before, "index.json untouched");
    assert_blobs_complete(local);
    prune_all();
    std::fs::write(p.path("overlay/hello.txt"), "hello\n").unwrap();
    let restored = p.build(
        &stack().buildkit_host,
        &[
            image,
            "--cache-from",
            &format!("type=local,src={}", local.display()),
        ],
    );
    restored.ok();
    assert_eq!(
        restored.ran(),
        Vec::<String>::new(),
        "restored from the old cache"
    );
}

/// Every blob the layout's index reaches (manifests, configs, layers) exists
/// with its size.
fn assert_blobs_complete(layout: &Path) {
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value = serde_json::from_str(&index_json(layout)).unwrap();
    let mut pending: Vec<serde_json::Value> = index["manifests"].as_array().unwrap().clone();
    let mut seen = 0;
    while let Some(desc) = pending.pop() {
        let digest = desc["digest"].as_str().unwrap();
        let path = blob(digest);
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{digest} is missing from the cache: {e}"));
        assert_eq!(Some(meta.len()), desc["size"].as_u64(), "size of {digest}");
        seen += 1;
        let media = desc["mediaType"].as_str().unwrap_or_default();
        if media.contains("manifest") || media.contains("index") {
            let doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            for key in ["manifests", "layers"] {
                if let Some(list) = doc[key].as_array() {
                    pending.extend(list.iter().cloned());
                }
            }
            if doc["config"].is_object() {
                pending.push(doc["config"].clone());
            }
        }
    }
    assert!(seen > 2, "the cache names its blobs ({seen})");
}

#[test]
fn an_unwritable_cache_destination_is_a_clear_error() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = stack();
    let p = Project::new(&common::project::small_spec("nowrite", ""));
    let file = p.path("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let dest = file.join("cache");
    let b = p.build(
        &s.buildkit_host,
        &[
            "nowrite",
            "--cache-to",
            &format!("type=local,dest={}", dest.display()),
        ],
    );
    let line = b.run.clean_error().to_owned();
    assert!(line.contains(&dest.display().to_string()), "{line}");
}

#[test]
fn concurrent_builds_can_export_to_one_local_cache() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = stack();
    let run = rand_suffix();
    let cache = tempfile::tempdir().unwrap();
    let to = format!("type=local,dest={}", cache.path().display());
    let projects: Vec<Project> = (0..3)
        .map(|i| {
            let extra = format!("[[images.conc.toolchain]]\nrun = \"echo {run}-{i} > /id\"\n");
            Project::new(&common::project::small_spec("conc", &extra))
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = projects
            .iter()
            .map(|p| scope.spawn(|| p.build(&s.buildkit_host, &["conc", "--cache-to", &to])))
            .collect();
        for h in handles {
            h.join().unwrap().ok();
        }
    });
    // index.json is whole and its manifest is there, with every blob it lists.
    let index: serde_json::Value = serde_json::from_str(&index_json(cache.path())).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let blob = |d: &str| {
        cache
            .path()
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&digest)).unwrap()).unwrap();
    for entry in manifest["manifests"].as_array().into_iter().flatten() {
        assert!(blob(entry["digest"].as_str().unwrap()).exists(), "{entry}");
    }
    // And the last one exported imports into an empty builder.
    prune_all();
    let from = format!("type=local,src={}", cache.path().display());
    let any = projects
        .iter()
        .map(|p| p.build(&s.buildkit_host, &["conc", "--cache-from", &from]))
        .filter(|b| b.run.code == Some(0) && b.ran().is_empty())
        .count();
    assert!(
        any >= 1,
        "one of the builds is restored from the shared cache"
    );
}

/// Where `mode=min` and `mode=max` differ. In a strata image every step is a
/// layer of the result, so both export and restore the same (the codex test
/// above); BuildKit's `solver/exporter.go` gives results to a min export's
/// dependencies only where blobs already exist, i.e. layers of the result. A
/// stage whose output is only *copied* into the image is such a dependency:
/// with min it comes back as a key without a result, with max with its layer.
/// So after a prune, a new consumer of that stage re-runs it under min and
/// finds it cached under max.
#[test]
fn only_max_restores_a_stage_that_is_not_a_layer_of_the_image() {
    use strata::llb::{self, Copy, FileAction, Run, State};
    use strata::solve::{progress::Quiet, SolveOpt};

    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = stack();
    let run = rand_suffix();
    let platform = llb::Platform::host();
    let base = llb::source::image(&s.base_image.parse().unwrap(), None).platform(platform);
    let stage = base.run(
        Run::shell(&format!(
            "echo {run} > /artifact && head -c 100000 /dev/urandom >> /artifact"
        ))
        .named("build artifact"),
    );
    let image = |to: &str| -> State {
        base.file(
            vec![FileAction::copy(Copy::new(&stage, "/artifact", to))],
            Some("copy artifact"),
        )
    };
    let cache_ref = |mode: &str| format!("{}/strata/stage-{run}:{mode}", s.registry);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let solve = |state: State, exports: Vec<String>, import: Option<String>| {
        rt.block_on(async {
            let client = strata::Client::connect(
                s.buildkit_host.parse().unwrap(),
                &strata::TlsOptions::default(),
            )
            .await
            .unwrap();
            let opt = SolveOpt {
                cache_exports: exports.iter().map(|e| e.parse().unwrap()).collect(),
                cache_imports: import.iter().map(|i| i.parse().unwrap()).collect(),
                shared_key: run.clone(),
                ..SolveOpt::default()
            };
            strata::solve::solve(&client, &state.marshal(), &opt, &mut Quiet)
                .await
                .unwrap_or_else(|e| panic!("solve: {e}"))
        })
    };
    let stage_cached = |solved: &strata::solve::Solved| {
        solved
            .steps
            .iter()
            .find(|st| st.name == "build artifact")
            .map(|st| st.cached)
            .expect("the stage is in the progress")
    };

    solve(
        image("/a"),
        ["min", "max"]
            .iter()
            .map(|m| {
                format!(
                    "type=registry,ref={},mode={m},registry.insecure=true",
                    cache_ref(m)
                )
            })
            .collect(),
        None,
    );
    // The image itself comes back from either.
    for mode in ["min", "max"] {
        prune_all();
        let again = solve(
            image("/a"),
            vec![],
            Some(format!(
                "type=registry,ref={},registry.insecure=true",
                cache_ref(mode)
            )),
        );
        let copy = again
            .steps
            .iter()
            .find(|st| st.name == "copy artifact")
            .expect("the copy is in the progress");
        assert!(copy.cached, "{mode}: the image is restored");
    }
    // A new consumer of the stage: only max has the stage's result.
    let mut stage_from = Vec::new();
    for mode in ["min", "max"] {
        prune_all();
        let other = solve(
            image("/b"),
            vec![],
            Some(format!(
                "type=registry,ref={},registry.insecure=true",
                cache_ref(mode)
            )),
        );
        stage_from.push((mode, stage_cached(&other)));
    }
    assert_eq!(
        stage_from,
        vec![("min", false), ("max", true)],
        "whether the stage came back from the cache"
    );
}

/// A registry cache exported from a two-platform build restores both
/// platforms on a pruned builder: every step of each platform cached, the
/// same index.
#[test]
fn a_two_platform_registry_cache_restores_both_platforms() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = stack();
    let spec = format!(
        r#"
[images.both]
base = "{base}"
platform = ["linux/amd64", "linux/arm64"]

[[images.both.toolchain]]
run = "echo $TARGETARCH > /arch.txt"

[images.both.overlay]
copy = {{ from = "overlay/", to = "/work" }}
"#,
        base = s.base_image
    );
    let p = Project::new(&spec);
    let repo = format!("{}/strata/both-{}", s.registry, rand_suffix());
    let target = format!("{repo}:v1");
    let cache = format!("type=registry,ref={repo}:cache,mode=max");
    let first = p.build(
        &s.buildkit_host,
        &["both", "--push", &target, "--cache-to", &cache],
    );
    let digest = first.ok().meta("both", "containerimage.digest");

    prune_all();
    let from = format!("type=registry,ref={repo}:cache");
    let restored = p.build(
        &s.buildkit_host,
        &[
            "both",
            "--push",
            &target,
            "--no-skip",
            "--cache-from",
            &from,
        ],
    );
    assert_all_cached(&restored, "registry cache of two platforms");
    // The same layers on each platform. (Not always the same index: BuildKit
    // may date a layer both platforms reached from the other platform's
    // record, a millisecond apart, in the config's history.)
    let restored_digest = restored.meta("both", "containerimage.digest");
    for platform in ["linux/amd64", "linux/arm64"] {
        assert_eq!(
            layer_digests(&target, &digest, platform),
            layer_digests(&target, &restored_digest, platform),
            "{platform}"
        );
    }
}

/// The layer digests of `platform`'s manifest in the index `reference@digest`.
fn layer_digests(reference: &str, digest: &str, platform: &str) -> Vec<String> {
    let image: strata::reference::ImageRef = reference.parse().unwrap();
    let platform: strata::llb::Platform = platform.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let resolved = rt
        .block_on(common::project::registry().manifest(&image.with_digest(digest), &platform))
        .unwrap();
    resolved
        .manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .collect()
}
