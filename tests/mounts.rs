//! Portable cache mounts against the real daemon stack: codex's apt, pip and
//! npm cache mounts exported beside its registry, local and S3 cache; a builder
//! whose cache mounts were pruned away seeds them back and, with one apt
//! package and one pip requirement added, downloads only those; unchanged
//! mounts upload nothing; the image is the same with and without `mounts=`
//! and carries none of the mounts' files; a missing, foreign or corrupt
//! artifact is one warning, never a failed build; `mounts-max-size` skips;
//! a two-platform image's mounts travel per platform.
//!
//! The tests prune the shared daemon, so they run one at a time.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::Value;

use common::project::{rand_suffix, registry, small_spec, Build, Project};
use common::{stack, strata};
use strata::llb::Platform;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn addr() -> &'static str {
    &stack().buildkit_host
}

/// `strata.mounts` of `image` in the build's metadata.
fn mounts(b: &Build, image: &str) -> Vec<Value> {
    let meta = b.metadata.as_ref().expect("metadata file written");
    meta[image]["strata.mounts"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no strata.mounts for {image}: {meta}"))
}

fn exports(b: &Build, image: &str) -> Vec<Value> {
    let all = mounts(b, image);
    all.into_iter()
        .filter(|m| m["action"] == "export")
        .collect()
}

/// The log of the step whose name contains `what`: it ran, so it has one.
/// (Not "completed and not cached": a build with `mounts=` exports solves
/// the steps again to copy from their caches, and shows them cached then.)
fn step_log(b: &Build, what: &str) -> String {
    let steps = b.steps();
    let step = steps
        .iter()
        .find(|s| s.name.contains(what) && s.completed && !s.logs.is_empty())
        .unwrap_or_else(|| panic!("no step {what:?} ran: {:?}", b.ran()));
    step.logs.clone()
}

/// apt's package downloads (`Get:N URL SUITE ARCH NAME ARCH VERSION [SIZE]`,
/// not the index files), as `NAME VERSION`.
fn debs_fetched(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|l| {
            !["InRelease", "Release", "Packages", "Translation"]
                .iter()
                .any(|w| l.contains(w))
        })
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let get = words.iter().position(|w| w.starts_with("Get:"))?;
            let (name, version) = (words.get(get + 4)?, words.get(get + 6)?);
            Some(format!("{name} {version}"))
        })
        .collect()
}

/// The number apt reports as `N newly installed`.
fn newly_installed(log: &str) -> usize {
    let line = log
        .lines()
        .find(|l| l.contains("newly installed"))
        .unwrap_or_else(|| panic!("apt's summary in: {log}"));
    let after = line.split_once("upgraded, ").map_or(line, |(_, a)| a);
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// The files pip downloaded (`Downloading NAME-VERSION-….whl`).
fn pip_downloads(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(|l| l.split_once("Downloading "))
        .filter_map(|(_, after)| after.split_whitespace().next())
        .map(|file| file.rsplit('/').next().unwrap_or(file).to_owned())
        .collect()
}

fn edit_toolchain(p: &Project) {
    let spec = std::fs::read_to_string(p.spec()).unwrap();
    let spec = spec.replace("\"npm\"]", "\"npm\", \"tree\"]").replace(
        "\"requests==2.31.0\"]",
        "\"requests==2.31.0\", \"toml==0.10.2\"]",
    );
    std::fs::write(p.spec(), spec).unwrap();
}

/// The apt and pip steps of `b` fetched what the edit added and nothing
/// the `cold` build had fetched. (Not "exactly the additions": the mirrors
/// may publish a new version of an unpinned dependency between the two
/// builds, which no cache could have held.)
fn assert_fetched_only_the_additions(b: &Build, cold: &Build, how: &str) {
    b.ok();
    let installed = newly_installed(&step_log(b, "apt install"));
    assert!(
        installed > 100,
        "{how}: the apt step installs everything ({installed})"
    );
    let cold_debs = assert_apt_fetched_only(b, cold, "apt install", "tree", how);
    assert!(
        cold_debs > 100,
        "the cold build fetched {cold_debs} packages"
    );
    let pip = pip_downloads(&step_log(b, "pip install"));
    let cold_pip = pip_downloads(&step_log(cold, "pip install"));
    let again: Vec<_> = pip.intersection(&cold_pip).collect();
    assert!(
        again.is_empty() && pip.iter().any(|f| f.starts_with("toml-")),
        "{how}: pip downloaded {pip:?}, {again:?} again, not just toml"
    );
}

/// The apt step named `step` of `b` fetched `added` and none of the
/// packages the same step of `cold` fetched; how many `cold` fetched.
fn assert_apt_fetched_only(b: &Build, cold: &Build, step: &str, added: &str, how: &str) -> usize {
    let apt = step_log(b, step);
    let debs = debs_fetched(&apt);
    let cold_debs = debs_fetched(&step_log(cold, step));
    let again: Vec<_> = debs.intersection(&cold_debs).collect();
    assert!(
        again.is_empty() && debs.iter().any(|d| d.starts_with(&format!("{added} "))),
        "{how}: apt fetched {} packages, {} of them again ({again:?}), \
         not just {added}:\n{apt}",
        debs.len(),
        again.len()
    );
    cold_debs.len()
}

fn prune(args: &[&str]) {
    let mut all = vec!["--addr", addr(), "prune"];
    all.extend(args);
    strata(all).ok();
}

#[test]
fn cache_mounts_travel_to_a_builder_that_lost_them() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let p = Project::codex();
    let repo = format!("127.0.0.1:5000/strata/mounts-{}", rand_suffix());
    let local = p.path("cache");
    let to_registry = format!("type=registry,ref={repo}:cache,mounts=all");
    let to_local = format!("type=local,dest={},mounts=all", local.display());
    let s3 = s3_cache(&format!("mounts-{}", rand_suffix()));
    let to_s3 = format!("{s3},mounts=all");
    let env = s3_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let image = format!("{repo}:img");
    let args = [
        "--cache-to",
        &to_registry,
        "--cache-to",
        &to_local,
        "--cache-to",
        &to_s3,
        "--push",
        &image,
    ];

    // Cold, so the steps run and fill the mounts (a builder whose steps came
    // from imported cache has empty ones: the very problem).
    prune(&["--all"]);
    let first = p.build_env(addr(), &args, &env);
    first.ok();
    let exported = exports(&first, "codex");
    let tools: Vec<&str> = exported
        .iter()
        .map(|m| m["tool"].as_str().unwrap())
        .collect();
    for tool in ["apt", "pip", "npm"] {
        assert_eq!(
            tools.iter().filter(|t| **t == tool).count(),
            if tool == "apt" { 6 } else { 3 },
            "{tools:?}"
        );
    }
    assert!(
        exported.iter().all(|m| m["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))),
        "{exported:?}"
    );

    // Unchanged mounts: the same artifacts, nothing sent.
    let again = p.build_env(addr(), &[&args[..], &["--no-skip"]].concat(), &env);
    again.ok();
    for (before, after) in exported.iter().zip(exports(&again, "codex")) {
        assert_eq!(after["result"], "unchanged", "{after}");
        assert_eq!(after["digest"], before["digest"], "{after}");
    }
    assert!(
        again.run.stdout.contains("unchanged, 0 B uploaded"),
        "{}",
        again.run.stdout
    );

    // The image is the one built without mounts=, and holds none of their files.
    let plain = p.build(addr(), &["--no-skip", "--push", &format!("{repo}:plain")]);
    assert_eq!(
        plain.ok().meta("codex", "containerimage.digest"),
        first.meta("codex", "containerimage.digest")
    );
    let reference = image.parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let layers = rt
        .block_on(registry().layer_paths(&reference, &Platform::host()))
        .unwrap();
    let leaked: Vec<&String> = layers
        .iter()
        .flatten()
        .filter(|path| {
            (path.contains("var/cache/apt/archives/") && path.ends_with(".deb"))
                || path.contains("root/.cache/pip/")
                || path.contains("root/.npm/_cacache")
        })
        .collect();
    assert!(leaked.is_empty(), "mount files in the image: {leaked:?}");

    // Cache-mount records are listed, and pruned by type.
    let du = strata(["--addr", addr(), "-v", "du"]);
    assert!(du.ok().contains("exec.cachemount"), "{}", du.stdout);
    prune(&["--filter", "type==exec.cachemount"]);
    let du = strata(["--addr", addr(), "-v", "du"]);
    assert!(!du.ok().contains("exec.cachemount"), "{}", du.stdout);

    // A builder without the mounts, one apt package and one pip requirement added.
    edit_toolchain(&p);
    let from_registry = format!("type=registry,ref={repo}:cache,mounts=all");
    let seeded = p.build(addr(), &["--cache-from", &from_registry]);
    assert_fetched_only_the_additions(&seeded, &first, "registry");
    assert!(mounts(&seeded, "codex")
        .iter()
        .any(|m| m["result"] == "seeded"));

    prune(&["--all"]);
    let from_local = format!("type=local,src={},mounts=all", local.display());
    let seeded = p.build(addr(), &["--cache-from", &from_local]);
    assert_fetched_only_the_additions(&seeded, &first, "local");

    prune(&["--all"]);
    let from_s3 = format!("{s3},mounts=all");
    let seeded = p.build_env(addr(), &["--cache-from", &from_s3], &env);
    assert_fetched_only_the_additions(&seeded, &first, "s3");
}

/// `type=s3,…` of the stack's bucket, the cache `name`.
fn s3_cache(name: &str) -> String {
    let var = |k: &str| stack().var(k).unwrap_or_else(|| panic!("{k} exported"));
    format!(
        "type=s3,bucket={},region={},endpoint_url={},use_path_style=true,name={name}",
        var("STRATA_S3_BUCKET"),
        var("STRATA_S3_REGION"),
        var("STRATA_S3_ENDPOINT")
    )
}

/// The stack's S3 key pair, for strata's environment.
fn s3_env() -> Vec<(&'static str, String)> {
    ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        .map(|k| (k, stack().var(k).expect("the key pair exported").to_owned()))
        .to_vec()
}

#[test]
fn a_missing_or_foreign_artifact_is_one_warning() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let step = "[[images.w.toolchain]]\nrun = \"echo x > /root/.cache/w/x\"\ncache = [\"/root/.cache/w\"]\n";
    let p = Project::new(&small_spec("w", step));
    let repo = format!("127.0.0.1:5000/strata/mounts-{}", rand_suffix());
    let from = format!("type=registry,ref={repo}:cache,mounts=/root/.cache/w");
    let missing = p.build(addr(), &["--cache-from", &from]);
    missing.ok();
    assert!(
        missing
            .run
            .stderr
            .contains("warning: mount run /root/.cache/w: not seeded (no artifact at"),
        "{}",
        missing.run.stderr
    );

    // An image where the artifact should be: foreign.
    let tag = &mounts(&missing, "w")[0]["location"];
    let tag = tag.as_str().unwrap();
    p.build(addr(), &["--push", tag]).ok();
    let foreign = p.build(addr(), &["--cache-from", &from, "--no-skip"]);
    foreign.ok();
    assert!(
        foreign
            .run
            .stderr
            .contains("is not a strata cache-mount artifact"),
        "{}",
        foreign.run.stderr
    );

    // Above mounts-max-size: skipped, and said.
    let small = format!("type=registry,ref={repo}:small,mounts=/root/.cache/w,mounts-max-size=1B");
    let skipped = p.build(addr(), &["--cache-to", &small, "--no-skip"]);
    assert!(
        skipped
            .ok()
            .run
            .stdout
            .contains("is above mounts-max-size 1 B: skipped"),
        "{}",
        skipped.run.stdout
    );

    // A local artifact whose manifest is garbage: corrupt, one warning.
    let dir = p.path("local-cache");
    let to_local = format!("type=local,dest={},mounts=all", dir.display());
    let exported = p.build(addr(), &["--cache-to", &to_local, "--no-skip"]);
    let digest = exports(exported.ok(), "w")[0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let manifest = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::write(manifest, b"{ not json").unwrap();
    let from_local = format!("type=local,src={},mounts=all", dir.display());
    let corrupt = p.build(addr(), &["--cache-from", &from_local, "--no-skip"]);
    assert!(
        corrupt
            .ok()
            .run
            .stderr
            .contains("warning: mount run /root/.cache/w: not seeded ("),
        "{}",
        corrupt.run.stderr
    );
}

/// A Dockerfile's own `RUN --mount=type=cache` mounts travel as a spec's
/// do: exported beside a local cache (by the frontend's cache ids), seeded
/// into a builder that lost them, and the edited step fetches only the
/// package added.
#[test]
fn a_dockerfiles_cache_mounts_travel_too() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let p = Project::new("[images.d]\ndockerfile = { file = \"Dockerfile\" }\n");
    let write = |packages: &str| {
        let text = format!(
            "FROM {}\n\
             RUN rm -f /etc/apt/apt.conf.d/docker-clean && echo 'Binary::apt::APT::Keep-Downloaded-Packages \"true\";' > /etc/apt/apt.conf.d/keep-cache\n\
             RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n\
                 --mount=type=cache,target=/var/lib/apt,sharing=locked \\\n\
                 apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {packages}\n",
            stack().base_image
        );
        std::fs::write(p.path("Dockerfile"), text).unwrap();
    };
    // Outside the context, which the content key reads.
    let cache = tempfile::tempdir().unwrap();
    let local = cache.path().join("cache");
    let to_local = format!("type=local,dest={},mounts=all", local.display());
    write("tree");
    prune(&["--all"]);
    let first = p.build(addr(), &["--cache-to", &to_local]);
    let exported = exports(first.ok(), "d");
    let ids: Vec<&str> = exported
        .iter()
        .filter_map(|m| m["mount"].as_str())
        .collect();
    assert_eq!(ids, ["//var/cache/apt", "//var/lib/apt"], "{exported:?}");
    assert!(
        exported
            .iter()
            .all(|m| m["tool"] == "apt" && m["digest"].is_string()),
        "{exported:?}"
    );

    write("tree bc");
    prune(&["--all"]);
    let from_local = format!("type=local,src={},mounts=all", local.display());
    let seeded = p.build(addr(), &["--cache-from", &from_local]);
    seeded.ok();
    assert!(
        mounts(&seeded, "d").iter().all(|m| m["result"] == "seeded"),
        "{:?}",
        mounts(&seeded, "d")
    );
    assert_apt_fetched_only(&seeded, &first, "apt-get install", "bc", "Dockerfile");
}

/// A two-platform image's cache mounts travel per platform: each platform's
/// mount (its id names the platform) is exported and, on a builder that
/// lost them, seeded back, so each platform's step finds its own files.
#[test]
fn each_platforms_cache_mounts_travel() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let step = |n: u32| {
        format!(
            "[images.pm]\nbase = \"{}\"\nplatform = [\"linux/amd64\", \"linux/arm64\"]\n\n\
             [[images.pm.toolchain]]\nrun = \"echo {n}; uname -m >> /root/.cache/w/seen; cat /root/.cache/w/seen\"\n\
             cache = [\"/root/.cache/w\"]\n",
            stack().base_image
        )
    };
    let p = Project::new(&step(1));
    let dir = p.path("local-cache");
    let to_local = format!("type=local,dest={},mounts=all", dir.display());
    let exported = p.build(addr(), &["--cache-to", &to_local]);
    let locations: BTreeSet<String> = exports(exported.ok(), "pm")
        .iter()
        .map(|m| m["location"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(locations.len(), 2, "a mount per platform: {locations:?}");

    prune(&["--all"]);
    std::fs::write(p.spec(), step(2)).unwrap();
    let from_local = format!("type=local,src={},mounts=all", dir.display());
    let seeded = p.build(addr(), &["--cache-from", &from_local]);
    let logs: Vec<String> = seeded
        .ok()
        .steps()
        .into_iter()
        .filter(|s| s.name.contains("uname -m"))
        .map(|s| s.logs)
        .collect();
    for machine in ["x86_64", "aarch64"] {
        assert!(
            logs.iter().any(|l| l.matches(machine).count() == 2),
            "{machine} found its own mount seeded: {logs:?}"
        );
    }
}

/// Two images whose cache entries (two repositories of one registry) name
/// the same cache mount: it is copied once, and the second entry gets a tag
/// of the same artifact, nothing uploaded.
#[test]
fn a_mount_two_images_export_is_copied_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = rand_suffix();
    let repo = format!("127.0.0.1:5000/strata/mounts-shared-{run}");
    let image = |name: &str| {
        format!(
            "[images.{name}]\nbase = \"{base}\"\n\
             cache_to = [\"type=registry,ref={repo}-{name}:cache,mounts=all\"]\n\n\
             [[images.{name}.toolchain]]\n\
             run = \"echo {run} > /root/.cache/shared/{name}; echo {name} > /{name}.txt\"\n\
             cache = [\"/root/.cache/shared\"]\n",
            base = stack().base_image
        )
    };
    let p = Project::new(&format!("{}\n{}", image("a"), image("b")));
    let built = p.build(addr(), &[]);
    built.ok();
    let a = exports(&built, "a");
    let b = exports(&built, "b");
    assert_eq!(a[0]["result"], "exported", "{a:?}");
    assert_eq!(b[0]["result"], "shared", "{b:?}");
    assert_eq!(a[0]["digest"], b[0]["digest"]);
    let copies = built
        .steps()
        .iter()
        .filter(|s| s.name.contains("copy cache mount /root/.cache/shared (1/"))
        .count();
    assert_eq!(copies, 1, "one copy of the mount, not one per image");
    let tag = b[0]["location"].as_str().unwrap();
    assert_eq!(
        common::project::manifest_digest(tag).as_deref(),
        a[0]["digest"].as_str(),
        "{tag} names the artifact"
    );
    assert!(
        built
            .run
            .stdout
            .contains(&format!("the artifact exported to {repo}-a")),
        "{}",
        built.run.stdout
    );
}

/// A mount is exported as soon as the images that use it are built, while
/// the others still build: the copy of a quick image's mount starts before
/// a slow image's step ends.
#[test]
fn a_mount_is_exported_while_other_images_still_build() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = rand_suffix();
    let repo = format!("127.0.0.1:5000/strata/mounts-early-{run}");
    let p = Project::new(&format!(
        "[images.quick]\nbase = \"{base}\"\n\
         cache_to = [\"type=registry,ref={repo}:cache,mounts=all\"]\n\n\
         [[images.quick.toolchain]]\n\
         run = \"echo {run} > /root/.cache/early/x; echo quick > /quick.txt\"\n\
         cache = [\"/root/.cache/early\"]\n\n\
         [images.slow]\nbase = \"{base}\"\n\n\
         [[images.slow.toolchain]]\nrun = \"sleep 8; echo {run} > /slow.txt\"\n",
        base = stack().base_image
    ));
    let built = p.build(addr(), &[]);
    built.ok();
    assert_eq!(exports(&built, "quick")[0]["result"], "exported");
    let lines: Vec<&str> = built.run.stderr.lines().collect();
    let copy_started = lines
        .iter()
        .position(|l| l.contains("copy cache mount /root/.cache/early (1/"))
        .expect("the mount was copied");
    let slow_done = lines
        .iter()
        .position(|l| {
            let Ok(v) = serde_json::from_str::<Value>(l) else {
                return false;
            };
            v["vertexes"].as_array().into_iter().flatten().any(|vx| {
                vx["name"].as_str().is_some_and(|n| n.contains("sleep 8"))
                    && !vx["completed"].is_null()
            })
        })
        .expect("the slow step completed");
    assert!(
        copy_started < slow_done,
        "the export waited for the slow image (line {copy_started} after {slow_done})"
    );
}
