//! `strata bench` against the real daemon, on a small spec so it stays quick:
//! the table, the JSON document, the SVG chart, the buildctl comparison, and
//! the refusal to prune without `--allow-prune`.

mod common;

use std::sync::Mutex;

use common::project::{rand_suffix, small_spec, Project};
use common::{stack, strata};
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn refuses_to_prune_without_permission() {
    let s = stack();
    let p = Project::new(&small_spec("benchy", ""));
    let run = strata([
        "--addr",
        &s.buildkit_host,
        "bench",
        "-f",
        p.spec().to_str().unwrap(),
        "benchy",
        "--modes",
        "cold,warm",
    ]);
    let line = run.clean_error().to_owned();
    assert!(line.contains("--allow-prune"), "{line}");
    assert!(line.contains("cold"), "{line}");
}

#[test]
fn measures_modes_and_writes_json_and_svg() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = stack();
    // The child finds buildctl the way a shell prepared by daemon.sh would.
    std::env::set_var("STRATA_BUILDCTL", &s.buildctl);
    let p = Project::new(&small_spec("benchy", ""));
    let json = p.path("bench.json");
    let svg = p.path("bench.svg");
    let run = strata([
        "--addr",
        &s.buildkit_host,
        "bench",
        "-f",
        p.spec().to_str().unwrap(),
        "benchy",
        "--modes",
        "cold,warm,edit,local,registry-max,hit",
        "--runs",
        "2",
        "--allow-prune",
        "--cache-repo",
        &format!("{}/strata/bench-test", s.registry),
        "--compare",
        "buildctl",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let table = run.ok().to_owned();
    assert!(
        run.stderr.contains("prunes"),
        "says up front that it prunes"
    );
    assert!(
        run.stderr.contains("warm run 2/2"),
        "progress per run: {}",
        run.stderr
    );
    for mode in ["cold", "warm", "edit", "local", "registry-max", "hit"] {
        assert!(table.contains(mode), "{mode} in the table:\n{table}");
    }
    assert!(table.contains("RATIO"), "{table}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let modes = report["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 6);
    let by = |name: &str| modes.iter().find(|m| m["mode"] == name).unwrap().clone();
    let warm = by("warm");
    assert_eq!(warm["runs"], 2);
    assert_eq!(warm["steps_run"], 0, "a no-op rebuild runs nothing: {warm}");
    assert!(warm["compared"][0]["ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(warm["compared"][0]["tool"], "buildctl");
    assert!(
        warm["phases"]["export"].as_f64().unwrap() > 0.0,
        "every run pushes: {warm}"
    );
    let cold = by("cold");
    assert!(cold["steps_run"].as_u64().unwrap() >= 2, "{cold}");
    let local = by("local");
    assert!(local["hit_rate"].as_f64().unwrap() > 0.5, "{local}");
    let hit = by("hit");
    assert_eq!(hit["steps_run"], 0, "a key-tag hit solves nothing: {hit}");
    assert_eq!(
        hit["steps_cached"], 0,
        "a key-tag hit solves nothing: {hit}"
    );
    let edit = by("edit");
    assert!(edit["steps_run"].as_u64().unwrap() >= 1, "{edit}");
    assert_eq!(
        report["exports"].as_array().unwrap().len(),
        2,
        "local and registry-max exported once"
    );
    assert_eq!(
        report["runs"].as_array().unwrap().len(),
        6 * 2 * 2,
        "modes x runs x (strata, buildctl)"
    );
    // Both clients pushed the same image.
    let repo = format!("{}/strata/bench-test", s.registry);
    let digest = |tag: &str| common::project::manifest_digest(&format!("{repo}:{tag}"));
    assert!(digest("out-strata").is_some());
    assert_eq!(
        digest("out-strata"),
        digest("out-buildctl"),
        "the same output"
    );
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg"), "an SVG");
    assert!(svg.contains("registry-max"), "mode labels drawn");

    // The user's overlay was never edited (the bench works on a copy).
    assert_eq!(
        std::fs::read_to_string(p.path("overlay/hello.txt")).unwrap(),
        "hello\n"
    );
}

/// A Dockerfile image against buildctl and buildx: all three push the same
/// image, and each import mode says whether each client imported.
#[test]
fn a_dockerfile_image_against_buildctl_and_buildx() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = stack();
    std::env::set_var("STRATA_BUILDCTL", &s.buildctl);
    if let Some(buildx) = s.var("STRATA_BUILDX") {
        std::env::set_var("STRATA_BUILDX", buildx);
    }
    let p = Project::new("[images.dfbench]\ndockerfile = { file = \"Dockerfile\" }\n");
    std::fs::write(
        p.path("Dockerfile"),
        format!(
            "FROM {}\nRUN echo toolchain > /toolchain.txt\nCOPY overlay/ /work/\n",
            s.base_image
        ),
    )
    .unwrap();
    let json = p.path("bench.json");
    let repo = format!("{}/strata/bench-df-{}", s.registry, rand_suffix());
    let run = strata([
        "--addr",
        &s.buildkit_host,
        "bench",
        "-f",
        p.spec().to_str().unwrap(),
        "dfbench",
        "--modes",
        "warm,edit,registry-max",
        "--runs",
        "1",
        "--allow-prune",
        "--cache-repo",
        &repo,
        "--compare",
        "buildctl,buildx",
        "--json",
        json.to_str().unwrap(),
    ]);
    let table = run.ok().to_owned();
    assert!(
        table.contains("BUILDX") && table.contains("BUILDCTL"),
        "{table}"
    );
    assert!(table.contains("PHASES"), "{table}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let modes = report["modes"].as_array().unwrap();
    let by = |name: &str| modes.iter().find(|m| m["mode"] == name).unwrap().clone();
    let registry = by("registry-max");
    assert_eq!(registry["imported"], true, "{registry}");
    for c in registry["compared"].as_array().unwrap() {
        assert!(c["imported"].is_boolean(), "{c}");
    }
    assert_eq!(by("warm")["steps_run"], 0);
    assert!(by("edit")["steps_run"].as_u64().unwrap() >= 1);
    // The same work, the same output.
    let digest = |tag: &str| common::project::manifest_digest(&format!("{repo}:{tag}"));
    let ours = digest("out-strata");
    assert!(ours.is_some());
    assert_eq!(digest("out-buildctl"), ours);
    assert_eq!(digest("out-buildx"), ours);
}

/// Two platforms of a Dockerfile image, benchmarked against buildx given
/// the same `--platform`: both push the same image index.
#[test]
fn two_platforms_against_buildx_push_the_same_index() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let s = stack();
    let Some(buildx) = s.var("STRATA_BUILDX") else {
        panic!("scripts/daemon.sh exports STRATA_BUILDX");
    };
    std::env::set_var("STRATA_BUILDX", buildx);
    let p = Project::new("[images.dfduo]\ndockerfile = { file = \"Dockerfile\" }\n");
    std::fs::write(
        p.path("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nCOPY overlay/ /work/\n",
    )
    .unwrap();
    let repo = format!("{}/strata/bench-duo-{}", s.registry, rand_suffix());
    let run = strata([
        "--addr",
        &s.buildkit_host,
        "bench",
        "-f",
        p.spec().to_str().unwrap(),
        "dfduo",
        "--platform",
        "linux/amd64,linux/386",
        "--modes",
        "warm",
        "--runs",
        "1",
        "--cache-repo",
        &repo,
        "--compare",
        "buildx",
    ]);
    let table = run.ok().to_owned();
    assert!(table.contains("BUILDX"), "{table}");
    let digest = |tag: &str| common::project::manifest_digest(&format!("{repo}:{tag}"));
    let ours = digest("out-strata").expect("strata pushed");
    assert_eq!(digest("out-buildx").as_deref(), Some(ours.as_str()));
    let index = common::project::registry_json(&repo, &format!("manifests/{ours}"));
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "386"], "{index}");
}
