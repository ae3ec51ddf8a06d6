//! Multi-platform images through `strata build` on the real daemon: a spec
//! image built for two platforms is one index (one solve through the
//! gateway), found up to date by its key; outputs that hold one platform are
//! refused before anything solves; run steps see TARGETPLATFORM and friends.
//! linux/386 stands beside linux/amd64 where a test needs no emulator.

mod common;

use common::project::{layer_file, rand_suffix, registry, registry_call, registry_json, Project};
use common::stack;
use common::{docker_run, strata};
use strata::llb::Platform;
use strata::registry::ImageRef;

/// A scratch image with one overlay file, for `platforms` (a TOML value).
fn scratch_spec(image: &str, platforms: &str) -> String {
    format!(
        r#"
[images.{image}]
base = "scratch"
platform = {platforms}

[images.{image}.overlay]
copy = {{ from = "overlay/", to = "/work" }}
"#
    )
}

/// A spec's `platform = [..]` builds one index in one solve: the tag lists
/// both platforms, each manifest's config names its architecture and holds
/// the overlay; unchanged, the key tag answers and nothing is solved; the
/// same list given on the command line is the same image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_platforms_are_one_index_and_a_hit_when_unchanged() {
    let s = stack();
    let p = Project::new(&scratch_spec("duo", r#"["linux/amd64", "linux/386"]"#));
    let repo = format!("{}/strata/duo-{}", s.registry, rand_suffix());
    let target = format!("{repo}:v1");
    let built = p.build(&s.buildkit_host, &["duo", "--push", &target]);
    built.ok();
    let digest = built.meta("duo", "containerimage.digest");

    let index = registry_json(&repo, &format!("manifests/{digest}"));
    let kind = index["mediaType"].as_str().unwrap_or_default();
    assert!(
        kind.ends_with("image.index.v1+json") || kind.ends_with("manifest.list.v2+json"),
        "{index}"
    );
    assert_eq!(
        listed_platforms(&repo, &digest),
        ["linux/amd64", "linux/386"]
    );
    let reference: ImageRef = target.parse().unwrap();
    for platform in ["linux/amd64", "linux/386"] {
        let platform: Platform = platform.parse().unwrap();
        let (_, config) = registry().config(&reference, &platform).await.unwrap();
        assert_eq!(config.architecture().to_string(), platform.architecture);
        let paths = registry().layer_paths(&reference, &platform).await.unwrap();
        assert!(
            paths
                .iter()
                .flatten()
                .any(|p| p.ends_with("work/hello.txt")),
            "{platform}: {paths:?}"
        );
    }

    let again = p.build(&s.buildkit_host, &["duo", "--push", &target]);
    assert!(
        again.ok().run.stdout.contains("duo: up to date ("),
        "{}",
        again.run.stdout
    );
    assert_eq!(again.meta("duo", "containerimage.digest"), digest);

    // The flag names the same list: the same key, so the same image.
    let flagged = p.build(
        &s.buildkit_host,
        &[
            "duo",
            "--push",
            &target,
            "--platform",
            "linux/amd64,linux/386",
        ],
    );
    assert!(flagged.ok().run.stdout.contains("duo: up to date ("));
}

/// A docker tarball holds one platform: asked of a two-platform image it is
/// one line saying so, before anything is solved or pushed.
#[test]
fn one_platform_outputs_are_refused_for_an_index() {
    let s = stack();
    let p = Project::new(&scratch_spec("duo", r#"["linux/amd64", "linux/386"]"#));
    let dest = p.path("duo.tar");
    let out = p.build(
        &s.buildkit_host,
        &[
            "duo",
            "--output",
            &format!("type=docker,dest={}", dest.display()),
        ],
    );
    let line = out.run.clean_error().to_owned();
    assert!(
        line.contains("type=docker holds one platform") && line.contains("linux/amd64,linux/386"),
        "{line}"
    );
    assert!(!dest.exists(), "nothing written");
}

/// A run step sees the platform it runs for as a Dockerfile's RUN does
/// (TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT).
#[test]
fn run_steps_see_the_target_platform() {
    let s = stack();
    let spec = format!(
        r#"
[images.target]
base = "{base}"

[[images.target.toolchain]]
run = "echo \"$TARGETPLATFORM $TARGETOS $TARGETARCH [$TARGETVARIANT]\" > /target.txt"
"#,
        base = s.base_image
    );
    let p = Project::new(&spec);
    let dest = p.path("out");
    let built = p.build(
        &s.buildkit_host,
        &[
            "target",
            "--output",
            &format!("type=local,dest={}", dest.display()),
        ],
    );
    built.ok();
    let written = std::fs::read_to_string(dest.join("target.txt")).unwrap();
    assert_eq!(written.trim(), "linux/amd64 linux amd64 []");
}

/// An overlay path naming the platform copies each platform its own
/// directory in one solve; a `type=local` output of an index is a directory
/// per platform, as BuildKit writes it.
#[test]
fn each_platform_copies_its_own_overlay_directory() {
    let s = stack();
    let spec = r#"
[images.perarch]
base = "scratch"
platform = ["linux/amd64", "linux/386"]

[images.perarch.overlay]
copy = { from = "files/{arch}/", to = "/" }
"#;
    let p = Project::new(spec);
    for arch in ["amd64", "386"] {
        let dir = p.path(&format!("files/{arch}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("arch.txt"), arch).unwrap();
    }
    let dest = p.path("out");
    let output = format!("type=local,dest={}", dest.display());
    p.build(&s.buildkit_host, &["perarch", "--output", &output])
        .ok();
    for (dir, arch) in [("linux_amd64", "amd64"), ("linux_386", "386")] {
        let written = std::fs::read_to_string(dest.join(dir).join("arch.txt")).unwrap();
        assert_eq!(written, arch, "{dir}");
    }
}

/// The platforms an index lists, as `os/arch`.
fn listed_platforms(repo: &str, digest: &str) -> Vec<String> {
    let index = registry_json(repo, &format!("manifests/{digest}"));
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            )
        })
        .collect()
}

/// When one platform's input changes, only that platform is solved: the
/// other is found under its own key tag and the index is written from both
/// manifests (the unchanged one as it was).
#[test]
fn a_change_to_one_platform_solves_only_it() {
    let s = stack();
    let repo = format!("{}/strata/split-{}", s.registry, rand_suffix());
    let target = format!("{repo}:v1");
    let spec = format!(
        r#"
[images.split]
base = "scratch"
platform = ["linux/amd64", "linux/386"]
push = "{target}"

[images.split.overlay]
copy = {{ from = "files/{{arch}}/", to = "/" }}
"#
    );
    let p = Project::new(&spec);
    for arch in ["amd64", "386"] {
        let dir = p.path(&format!("files/{arch}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("arch.txt"), arch).unwrap();
    }
    let first = p.build(&s.buildkit_host, &["split"]);
    let first_digest = first.ok().meta("split", "containerimage.digest");
    let amd64_before = platform_digest(&repo, &first_digest, "amd64");

    std::fs::write(p.path("files/386/arch.txt"), "386, changed").unwrap();
    let second = p.build(&s.buildkit_host, &["split"]);
    let out = &second.ok().run.stdout;
    assert!(
        out.contains("linux/amd64 up to date under its key tag, not solved"),
        "{out}"
    );
    let digest = second.meta("split", "containerimage.digest");
    assert_ne!(digest, first_digest);
    assert_eq!(
        listed_platforms(&repo, &digest),
        ["linux/amd64", "linux/386"]
    );
    assert_eq!(platform_digest(&repo, &digest, "amd64"), amd64_before);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let arch = rt.block_on(layer_file(&target, "linux/386", "arch.txt"));
    assert_eq!(arch.as_deref(), Some("386, changed"));

    // The written index is the image's: unchanged now, a hit.
    let third = p.build(&s.buildkit_host, &["split"]);
    assert!(third.ok().run.stdout.contains("split: up to date ("));
    assert_eq!(third.meta("split", "containerimage.digest"), digest);

    // Pruning the old index keeps every platform the current one lists
    // (each has a key tag of its own, which prune must not delete).
    let spec_path = p.spec().display().to_string();
    let listed = strata(["images", "-f", &spec_path]);
    for platform in ["linux/amd64", "linux/386"] {
        let line = format!("({platform} of the current index)");
        assert!(listed.ok().contains(&line), "{}", listed.stdout);
    }
    let old_386 = platform_digest(&repo, &first_digest, "386");
    strata(["images", "prune", "--keep", "1", "-f", &spec_path]).ok();
    for arch in ["amd64", "386"] {
        let child = platform_digest(&repo, &digest, arch);
        registry_json(&repo, &format!("manifests/{child}"));
    }
    let name = repo.split_once('/').unwrap().1;
    let get = format!("GET /v2/{name}/manifests/{old_386} HTTP/1.0\r\n");
    assert_eq!(
        registry_call(&repo, &get, "", b"").0,
        404,
        "the old 386 manifest is pruned"
    );
}

/// The digest of the `arch` manifest in the index `repo@digest`.
fn platform_digest(repo: &str, digest: &str, arch: &str) -> String {
    let index = registry_json(repo, &format!("manifests/{digest}"));
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == arch)
        .and_then(|m| m["digest"].as_str())
        .unwrap()
        .to_owned()
}

/// linux/arm64 runs through QEMU on this daemon: one step writes `uname -m`
/// on each platform of the two-platform base, and each platform's layer
/// holds its machine. A step limited to arm64, added later, solves arm64
/// alone.
#[test]
fn arm64_steps_run_emulated_beside_amd64() {
    let s = stack();
    let spec = |extra: &str| {
        format!(
            r#"
[images.machine]
base = "{base}"
platform = ["linux/amd64", "linux/arm64"]

[[images.machine.toolchain]]
run = "uname -m > /uname.txt"
{extra}
"#,
            base = s.base_image
        )
    };
    let p = Project::new(&spec(""));
    let repo = format!("{}/strata/machine-{}", s.registry, rand_suffix());
    let target = format!("{repo}:v1");
    let built = p.build(&s.buildkit_host, &["machine", "--push", &target]);
    let digest = built.ok().meta("machine", "containerimage.digest");
    assert_eq!(
        listed_platforms(&repo, &digest),
        ["linux/amd64", "linux/arm64"]
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (platform, machine) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        let written = rt.block_on(layer_file(&target, platform, "uname.txt"));
        assert_eq!(
            written.as_deref().map(str::trim),
            Some(machine),
            "{platform}"
        );
    }

    let arm64_only = r#"
[[images.machine.toolchain]]
run = "echo arm64 only > /arm64.txt"
platforms = ["linux/arm64"]
"#;
    std::fs::write(p.spec(), spec(arm64_only)).unwrap();
    let again = p.build(&s.buildkit_host, &["machine", "--push", &target]);
    let out = &again.ok().run.stdout;
    assert!(
        out.contains("linux/amd64 up to date under its key tag, not solved"),
        "{out}"
    );
    assert_eq!(again.ran().len(), 1, "{:?}", again.ran());
    let only = rt.block_on(layer_file(&target, "linux/arm64", "arm64.txt"));
    assert_eq!(only.as_deref(), Some("arm64 only\n"));
    assert_eq!(
        rt.block_on(layer_file(&target, "linux/amd64", "arm64.txt")),
        None
    );

    // Docker gets its own platform of the index, and runs it.
    let load = p.build(
        &s.buildkit_host,
        &["machine", "--push", &target, "--load", &s.docker_host],
    );
    let out = &load.ok().run.stdout;
    assert!(
        out.contains("machine: loaded into docker as")
            && out.contains("; its linux/amd64 image, docker's platform)"),
        "{out}"
    );
    let machine = docker_run(&target, &["sh", "-c", "cat /uname.txt; uname -m"]);
    assert_eq!(
        machine.split_whitespace().collect::<Vec<_>>(),
        ["x86_64", "x86_64"]
    );
}

/// A two-platform image built `from` a Dockerfile image: one solve, one
/// index, each platform's Dockerfile RUN and own step on that platform, the
/// Dockerfile's ENV seen by the steps.
#[test]
fn a_two_platform_image_from_a_dockerfile_image_is_one_index() {
    let s = stack();
    let run = rand_suffix();
    let p = Project::new(
        r#"
[images.parent]
dockerfile = { file = "df/Dockerfile", context = "df" }

[images.child]
from = "parent"
platform = ["linux/amd64", "linux/arm64"]

[[images.child.toolchain]]
run = "cat /parent.txt > /child.txt && uname -m >> /child.txt && echo $MADE_BY >> /child.txt"
"#,
    );
    std::fs::create_dir(p.path("df")).unwrap();
    let dockerfile = format!(
        "FROM {}\nENV MADE_BY={run}\nRUN uname -m > /parent.txt\n",
        s.base_image
    );
    std::fs::write(p.path("df/Dockerfile"), dockerfile).unwrap();
    let repo = format!("{}/strata/on-dockerfile-{run}", s.registry);
    let target = format!("{repo}:v1");
    let built = p.build(&s.buildkit_host, &["child", "--push", &target]);
    let digest = built.ok().meta("child", "containerimage.digest");
    assert_eq!(
        listed_platforms(&repo, &digest),
        ["linux/amd64", "linux/arm64"]
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (platform, machine) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        let written = rt.block_on(layer_file(&target, platform, "child.txt"));
        let expected = format!("{machine}\n{machine}\n{run}\n");
        assert_eq!(written.as_deref(), Some(expected.as_str()), "{platform}");
    }
}
