//! Multi-platform images through `strata build` on the real daemon: a spec
//! image built for two platforms is one index (one solve through the
//! gateway), found up to date by its key; outputs that hold one platform are
//! refused before anything solves; run steps see TARGETPLATFORM and friends.
//! linux/386 stands beside linux/amd64 where a test needs no emulator.

mod common;

use common::project::{rand_suffix, registry, registry_json, Project};
use common::stack;
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
    let listed: Vec<String> = index["manifests"]
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
        .collect();
    assert_eq!(listed, ["linux/amd64", "linux/386"], "{index}");
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
