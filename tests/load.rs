//! `build --load` into the project's dockerd, every path: a docker tarball
//! streamed from the standalone buildkitd, a pull of a pushed image, the
//! builder being dockerd itself, and the skip when dockerd already has the
//! image — plus a failed build that loads nothing.

mod common;

use common::project::{rand_suffix, small_spec, Build, Project};
use common::{stack, strata};

/// The Docker API socket of the stack's dockerd.
fn docker_socket() -> String {
    stack()
        .docker_host
        .strip_prefix("docker://")
        .expect("STRATA_DOCKER_HOST is docker://PATH")
        .to_owned()
}

/// `GET /images/NAME/json`'s `Id` from the stack's dockerd, if it has NAME.
fn docker_image_id(name: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--unix-socket", &docker_socket()])
        .arg(format!("http://docker/images/{name}/json"))
        .output()
        .expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["Id"].as_str().map(str::to_owned)
}

/// How the image was loaded, from `--metadata-file`.
fn load_path(b: &Build, image: &str) -> String {
    let meta = b.metadata.as_ref().expect("metadata written");
    meta[image]["strata.load"]["path"]
        .as_str()
        .unwrap_or_else(|| panic!("no strata.load for {image}: {meta:#}"))
        .to_owned()
}

fn load_arg() -> String {
    stack().docker_host.clone()
}

#[test]
fn a_tarball_streams_into_docker_then_the_next_build_finds_it_there() {
    let s = stack();
    let image = format!("load-{}", rand_suffix());
    let p = Project::new(&small_spec(&image, ""));
    let load = load_arg();
    let first = p.build(&s.buildkit_host, &["--load", &load]);
    first.ok();
    assert_eq!(load_path(&first, &image), "tarball");
    assert!(
        first.run.stdout.contains("(docker tarball streamed)"),
        "{}",
        first.run.stdout
    );
    let id = docker_image_id(&format!("{image}:latest")).expect("loaded under the image's name");

    // Unchanged: dockerd has it under its key tag; nothing is solved or sent,
    // even with no builder reachable.
    let again = p.build(
        "unix:///nonexistent/strata-no-daemon.sock",
        &["--load", &load],
    );
    again.ok();
    assert_eq!(load_path(&again, &image), "present");
    assert!(
        again
            .run
            .stdout
            .contains(&format!("{image}: up to date (strata-")),
        "{}",
        again.run.stdout
    );
    assert_eq!(
        docker_image_id(&format!("{image}:latest")),
        Some(id.clone())
    );

    // One byte changed: a new image, loaded again.
    std::fs::write(p.path("overlay/hello.txt"), "changed\n").unwrap();
    let changed = p.build(&s.buildkit_host, &["--load", &load]);
    changed.ok();
    assert_eq!(load_path(&changed, &image), "tarball");
    assert_ne!(docker_image_id(&format!("{image}:latest")), Some(id));
    // No temp file of the export anywhere in the project.
    let leftovers: Vec<_> = std::fs::read_dir(p.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Two key tags in docker now; pruning to one keeps the current image.
    let spec = p.spec().display().to_string();
    let mut args = vec!["images", "-f", &spec, "--load", &load, "--json"];
    if let Some(ca) = s.var("STRATA_CA_CERT") {
        args.extend(["--ca-cert", ca]);
    }
    let docker_tags = |args: &[&str]| -> Vec<serde_json::Value> {
        let listed: serde_json::Value = serde_json::from_str(strata(args).ok()).unwrap();
        listed[&image]["docker"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let before = docker_tags(&args);
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(before[0]["current"], true);
    let mut prune = vec!["images", "prune", "--keep", "1"];
    prune.extend_from_slice(&args[1..]);
    strata(&prune).ok();
    let after = docker_tags(&args);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["reference"], before[0]["reference"]);
    assert!(docker_image_id(&format!("{image}:latest")).is_some());
}

#[test]
fn a_pushed_image_is_pulled_by_docker_and_a_docker_builder_exports_into_itself() {
    let s = stack();
    let image = format!("loadpull-{}", rand_suffix());
    let target = format!("{}/strata/{image}:latest", s.registry);
    let p = Project::new(&small_spec(&image, ""));
    let load = load_arg();
    let pulled = p.build(&s.buildkit_host, &["--push", &target, "--load", &load]);
    pulled.ok();
    assert_eq!(load_path(&pulled, &image), "pull");
    assert!(docker_image_id(&target).is_some());
    let present = p.build(&s.buildkit_host, &["--push", &target, "--load", &load]);
    assert_eq!(load_path(present.ok(), &image), "present");

    let local = format!("loadself-{}", rand_suffix());
    let q = Project::new(&small_spec(&local, ""));
    let built = q.build(&s.docker_host, &["--load"]);
    built.ok();
    assert_eq!(load_path(&built, &local), "builder");
    assert!(built
        .run
        .stdout
        .contains("(exported by the builder itself)"));
    assert!(docker_image_id(&format!("{local}:latest")).is_some());
}

#[test]
fn a_failed_build_loads_nothing() {
    let s = stack();
    let image = format!("loadfail-{}", rand_suffix());
    let failing = "[[images.IMG.toolchain]]\nrun = \"exit 7\"\n".replace("IMG", &image);
    let p = Project::new(&small_spec(&image, &failing));
    let failed = p.build(&s.buildkit_host, &["--load", &load_arg()]);
    assert_ne!(failed.run.code, Some(0));
    assert_eq!(docker_image_id(&format!("{image}:latest")), None);
}
