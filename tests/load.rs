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

/// `GET /images/NAME/json` from the stack's dockerd (`null` if it has no NAME).
fn docker_image(name: &str) -> serde_json::Value {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--unix-socket", &docker_socket()])
        .arg(format!("http://docker/images/{name}/json"))
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The image's `Id` in the stack's dockerd, if it has NAME.
fn docker_image_id(name: &str) -> Option<String> {
    docker_image(name)["Id"].as_str().map(str::to_owned)
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

/// A "docker daemon" on a unix socket in `dir`: each connection's request
/// head goes to `answer`, which may read the rest and write what it likes.
fn hostile_docker(
    dir: &std::path::Path,
    answer: fn(&mut std::os::unix::net::UnixStream, &str),
) -> String {
    let path = dir.join("docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n")
                    && std::io::Read::read(&mut stream, &mut byte).unwrap_or(0) == 1
                {
                    head.push(byte[0]);
                }
                answer(&mut stream, &String::from_utf8_lossy(&head));
            });
        }
    });
    format!("docker://{}", path.display())
}

/// Headers, one byte of the body, then nothing, ever.
fn stalls_its_body(stream: &mut std::os::unix::net::UnixStream, _head: &str) {
    let _ = std::io::Write::write_all(stream, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[");
    std::thread::sleep(std::time::Duration::from_secs(600));
}

/// Takes every load (reads the tarball to its end, says it loaded it) and
/// never has the image.
fn drops_every_load(stream: &mut std::os::unix::net::UnixStream, head: &str) {
    use std::io::{Read, Write};
    if head.starts_with("POST /images/load") {
        let mut seen = Vec::new();
        let mut chunk = [0u8; 65536];
        while !seen.ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&chunk[..n]);
            let keep = seen.len().saturating_sub(8);
            seen.drain(..keep);
        }
        let body = "{\"stream\":\"Loaded image: x:latest\\n\"}\n";
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    } else {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}");
    }
}

/// A docker daemon that sends headers and then stalls its body cannot hold
/// `strata images --load`: it ends at the answer's deadline, saying so.
#[test]
fn a_docker_daemon_that_stalls_its_answer_ends_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let docker = hostile_docker(dir.path(), stalls_its_body);
    let p = Project::new(&small_spec("stall", ""));
    let spec = p.spec().display().to_string();
    let began = std::time::Instant::now();
    let out = strata(["images", "-f", &spec, "--load", &docker]);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("no whole answer within"),
        "{}",
        out.stderr
    );
    assert!(
        began.elapsed() < std::time::Duration::from_secs(150),
        "it ended"
    );
}

/// A load docker says it did but whose image it does not have is an error,
/// never "loaded into docker".
#[test]
fn a_load_docker_drops_is_an_error() {
    let s = stack();
    let dir = tempfile::tempdir().unwrap();
    let docker = hostile_docker(dir.path(), drops_every_load);
    let p = Project::new(&small_spec("dropped", ""));
    let built = p.build(&s.buildkit_host, &["--load", &docker]);
    assert_ne!(built.run.code, Some(0), "{}", built.run.stdout);
    assert!(
        built.run.stderr.contains("does not have"),
        "{}",
        built.run.stderr
    );
    assert!(
        !built.run.stdout.contains("loaded into docker"),
        "{}",
        built.run.stdout
    );
}

/// The image's `OS/ARCHITECTURE` in the stack's dockerd.
fn docker_image_platform(name: &str) -> String {
    let v = docker_image(name);
    let text = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    format!("{}/{}", text("Os"), text("Architecture"))
}

/// An image with provenance and an SBOM loads as its platform's image (the
/// attestation manifest, `unknown/unknown`, is not what docker gets), pulled
/// when pushed and streamed when not; unchanged, it is found in docker.
#[test]
fn an_attested_image_loads_as_its_platform_alone() {
    let s = stack();
    let image = format!("loadattest-{}", rand_suffix());
    let target = format!("{}/strata/{image}:latest", s.registry);
    let p = Project::new(&small_spec(&image, ""));
    let generator = s
        .var("STRATA_SBOM_GENERATOR")
        .expect("STRATA_SBOM_GENERATOR");
    let sbom = format!("--sbom=generator={generator}");
    let load = load_arg();
    let args = ["--push", &target, "--load", &load, "--provenance", &sbom];
    // A daemon of the test's own: this BuildKit keeps an SBOM-scanned image's
    // records in use until it restarts (moby/buildkit#5498), which would pin
    // records the shared daemon's prune tests expect to go.
    let daemon = common::ScratchDaemon::start();
    let pulled = p.build(&daemon.addr, &args);
    assert_eq!(load_path(pulled.ok(), &image), "pull");
    assert_eq!(docker_image_platform(&target), "linux/amd64");
    let present = p.build(&daemon.addr, &args);
    assert_eq!(load_path(present.ok(), &image), "present");

    let streamed = p.build(&daemon.addr, &["--load", &load, "--provenance", &sbom]);
    assert_eq!(load_path(streamed.ok(), &image), "tarball");
    assert_eq!(
        docker_image_platform(&format!("{image}:latest")),
        "linux/amd64"
    );
}
