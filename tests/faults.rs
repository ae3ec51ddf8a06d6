//! Faults in every phase, against the real daemon stack: a daemon killed
//! mid-step, registries that die or hang, signals during resolution, a step
//! and an export, a daemon that never answers. Each time: a clear line, the
//! right exit code, nothing lost (earlier caches and outputs byte-for-byte as
//! they were) and nothing left behind (no temp files, no containers).
//!
//! Daemons killed here are the tests' own ([`ScratchDaemon`]), never the
//! shared one.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::project::{rand_suffix, Project};
use common::{stack, strata, strata_command, ScratchDaemon, ScratchRegistry};

/// Every file under `dir` (relative path → sha256 of its bytes, symlinks of
/// their target): what "byte-for-byte intact" compares.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    use sha2::Digest;
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_owned();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                walk(root, &path, out);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, target.into_os_string().into_encoded_bytes());
            } else if kind.is_file() {
                let mut hasher = sha2::Sha256::new();
                let mut file = std::fs::File::open(&path).unwrap();
                std::io::copy(&mut file, &mut hasher).unwrap();
                out.insert(rel, hasher.finalize().to_vec());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// strata's temporary names (`.NAME.strata-ID`, ingest files) anywhere under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let temp = name.contains(".strata-") && name != strata::session::staging::MARKER;
            if temp || name.ends_with(".strata") {
                found.push(entry.path());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    found
}

/// A spec whose last step sleeps when the CA bundle (a secret: not part of
/// any cache key) says `strata-slow`, so one spec serves a run that hangs in
/// the step and a run that passes it.
fn spec(image: &str, marker: &str, slow_step: bool) -> String {
    let slow = if slow_step {
        format!(
            "[[images.{image}.toolchain]]\nname = \"maybe slow\"\nrun = \"if grep -q strata-slow \
             /run/secrets/strata-ca.crt; then echo started-{marker}; sleep 300; echo {marker}; fi; \
             echo two > /two.txt\"\n"
        )
    } else {
        String::new()
    };
    format!(
        "[images.{image}]\nbase = \"{base}\"\n\n[[images.{image}.toolchain]]\nrun = \"echo one > /one.txt\"\n\n\
         {slow}\n[images.{image}.overlay]\ncopy = {{ from = \"overlay/\", to = \"/work\" }}\n",
        base = stack().base_image
    )
}

/// `strata --addr ADDR build -f SPEC --progress plain --ca-cert CA ARGS…`.
fn build_command(addr: &str, p: &Project, ca: &Path, args: &[String]) -> Command {
    let mut all: Vec<String> = vec![
        "--addr".into(),
        addr.into(),
        "build".into(),
        "-f".into(),
        p.spec().display().to_string(),
        "--progress".into(),
        "plain".into(),
        "--ca-cert".into(),
        ca.display().to_string(),
    ];
    all.extend(args.iter().cloned());
    strata_command(&all)
}

/// Starts `cmd` with stderr read line by line in the background.
fn spawn_watched(mut cmd: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running strata");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits for a line containing `needle`; returns everything seen.
fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut seen = String::new();
    while !seen.contains(needle) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => panic!("never saw {needle:?}:\n{seen}"),
        }
    }
    seen
}

fn rest(rx: &mpsc::Receiver<String>) -> String {
    let mut all = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        all.push_str(&line);
        all.push('\n');
    }
    all
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_with_deadline(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("strata did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A CA bundle file: the real one (steps need none here) plus, for slow
/// runs, the word that makes the last step sleep.
fn ca_file(p: &Project, slow: bool) -> PathBuf {
    let path = p.path(if slow { "ca-slow.pem" } else { "ca.pem" });
    let mut text =
        std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    if slow {
        text.push_str("\n# strata-slow\n");
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn buildkitd_killed_during_a_step_loses_nothing_and_the_build_resumes_from_the_cache() {
    let mut daemon = ScratchDaemon::start();
    let marker = format!("strata-kill-{}", rand_suffix());
    let p = Project::new(&spec("f", &marker, false));
    let (cache, out) = (p.path("cache"), p.path("out"));
    let flags = vec![
        "--cache-to".to_owned(),
        format!("type=local,dest={}", cache.display()),
        "--cache-from".into(),
        format!("type=local,src={}", cache.display()),
        "--output".into(),
        format!("type=local,dest={}", out.display()),
    ];
    // A good build leaves a cache and an output.
    let good = build_command(&daemon.addr, &p, &ca_file(&p, false), &flags)
        .output()
        .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let (cache_before, out_before) = (snapshot(&cache), snapshot(&out));
    assert!(cache_before.contains_key(Path::new("index.json")));

    // The next build (one more step) is killed with its daemon mid-step.
    std::fs::write(p.spec(), spec("f", &marker, true)).unwrap();
    std::fs::write(p.path("overlay/hello.txt"), "changed\n").unwrap();
    let (mut child, rx) =
        spawn_watched(build_command(&daemon.addr, &p, &ca_file(&p, true), &flags));
    let seen = wait_for_line(&rx, &format!("started-{marker}"), Duration::from_secs(300));
    let killed = Instant::now();
    daemon.kill();
    let status = wait_with_deadline(&mut child, Duration::from_secs(60));
    let took = killed.elapsed();
    let stderr = seen + &rest(&rx);
    assert!(!status.success());
    assert!(
        took < Duration::from_secs(2),
        "exited {took:?} after the kill"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(
        last.contains(&daemon.addr) && last.contains("lost the connection"),
        "{last}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(snapshot(&cache), cache_before, "the local cache changed");
    assert_eq!(snapshot(&out), out_before, "the output changed");
    assert_eq!(leftovers(p.dir.path()), Vec::<PathBuf>::new());

    // The daemon comes back (its own cache pruned): the same build passes
    // the step and takes the first step from the local cache.
    daemon.restart();
    strata(["--addr", &daemon.addr, "prune", "--all"]).ok();
    let again = build_command(&daemon.addr, &p, &ca_file(&p, false), &flags)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    let first = stderr
        .lines()
        .find(|l| l.contains("] run: echo one"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no first step:\n{stderr}"));
    assert!(
        stderr
            .lines()
            .any(|l| l.trim() == format!("{first} CACHED")),
        "the first step ({first}) comes from the imported cache:\n{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("work/hello.txt")).unwrap(),
        "changed\n"
    );
}

#[test]
fn sigint_and_sigterm_during_a_step_cancel_it_on_the_daemon_and_exit_130_or_143() {
    let daemon = ScratchDaemon::start();
    for (name, code) in [("TERM", 143), ("INT", 130)] {
        let marker = format!("strata-sig-{}", rand_suffix());
        let p = Project::new(&spec("s", &marker, true));
        let out = p.path("out.tar");
        std::fs::write(&out, "an earlier export").unwrap();
        let flags = vec![
            "--output".to_owned(),
            format!("type=oci,dest={}", out.display()),
        ];
        let (mut child, rx) =
            spawn_watched(build_command(&daemon.addr, &p, &ca_file(&p, true), &flags));
        wait_for_line(&rx, &format!("started-{marker}"), Duration::from_secs(300));
        signal(&child, name);
        let status = wait_with_deadline(&mut child, Duration::from_secs(20));
        let stderr = rest(&rx);
        assert_eq!(status.code(), Some(code), "SIG{name}: {stderr}");
        assert!(
            stderr.contains(&format!("interrupted by SIG{name}")),
            "{stderr}"
        );
        let gone = (0..40).any(|_| {
            std::thread::sleep(Duration::from_millis(250));
            daemon.containers().is_empty()
        });
        assert!(
            gone,
            "SIG{name}: containers left: {:?}",
            daemon.containers()
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "an earlier export");
        assert_eq!(leftovers(p.dir.path()), Vec::<PathBuf>::new());
    }
}

#[test]
fn sigint_and_sigterm_during_an_export_keep_the_earlier_output_and_leave_no_temp_files() {
    let daemon = ScratchDaemon::start();
    let extra = "[[images.x.toolchain]]\nrun = \"head -c 400000000 /dev/urandom > /big\"\n";
    let p = Project::new(&common::project::small_spec("x", extra));
    let out = p.path("out");
    let flags = vec![
        "--output".to_owned(),
        format!("type=local,dest={}", out.display()),
    ];
    let ca = ca_file(&p, false);
    let first = build_command(&daemon.addr, &p, &ca, &flags)
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let before = snapshot(&out);
    for (name, code) in [("INT", 130), ("TERM", 143)] {
        // A changed overlay: a replaced tree would differ from `before`.
        std::fs::write(p.path("overlay/hello.txt"), format!("{name}\n")).unwrap();
        let (mut child, rx) = spawn_watched(build_command(&daemon.addr, &p, &ca, &flags));
        // The export is under way once its staging directory appears.
        let deadline = Instant::now() + Duration::from_secs(300);
        while !std::fs::read_dir(p.dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".out.strata-"))
        {
            assert!(
                child.try_wait().unwrap().is_none(),
                "finished before the export was seen: {}",
                rest(&rx)
            );
            assert!(Instant::now() < deadline, "no export seen");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(&child, name);
        let status = wait_with_deadline(&mut child, Duration::from_secs(20));
        assert_eq!(status.code(), Some(code), "SIG{name}: {}", rest(&rx));
        assert!(
            snapshot(&out) == before,
            "SIG{name}: the earlier output changed"
        );
        assert_eq!(leftovers(p.dir.path()), Vec::<PathBuf>::new(), "SIG{name}");
        // The daemon let go of the cancelled build: nothing stays in use.
        // (Here within a second; up to 3 minutes, as a loaded 2-core CI
        // runner once still held them after 60 s. Should it hold them for
        // good, the message says which.)
        let in_use = || {
            let du = strata(["--addr", &daemon.addr, "du", "--json"]);
            let usage: serde_json::Value = serde_json::from_str(du.ok()).unwrap();
            let records = usage["records"].as_array().cloned().unwrap_or_default();
            let held: Vec<String> = records
                .iter()
                .filter(|r| r["in_use"] != false)
                .map(|r| format!("{} {}", r["record_type"], r["description"]))
                .collect();
            held
        };
        let signalled = Instant::now();
        let released = (0..720).any(|_| {
            std::thread::sleep(Duration::from_millis(250));
            in_use().is_empty()
        });
        assert!(
            released,
            "SIG{name}: records still in use {:.0}s after the interrupted export: {:?}\n\
             the daemon's goroutines in the solver, exporters and sessions:\n{}",
            signalled.elapsed().as_secs_f64(),
            in_use(),
            daemon.goroutines_in(&["llbsolver", "exporter", "filesync", "session.(*Manager)"])
        );
    }
}

/// A server on a free loopback port that accepts connections and never answers.
fn silent_listener() -> String {
    common::hostile_http(|_, _| std::thread::sleep(Duration::from_secs(600))).0
}

#[test]
fn sigint_and_sigterm_during_base_resolution_exit_130_or_143_with_nothing_left() {
    let registry = silent_listener();
    let text = format!("[images.b]\nbase = \"{registry}/hangs/forever:1\"\n");
    let p = Project::new(&text);
    let ca = ca_file(&p, false);
    for (name, code) in [("INT", 130), ("TERM", 143)] {
        let (mut child, rx) = spawn_watched(build_command(&stack().buildkit_host, &p, &ca, &[]));
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            child.try_wait().unwrap().is_none(),
            "resolution should hang: {}",
            rest(&rx)
        );
        signal(&child, name);
        let status = wait_with_deadline(&mut child, Duration::from_secs(10));
        assert_eq!(status.code(), Some(code), "SIG{name}: {}", rest(&rx));
        assert_eq!(leftovers(p.dir.path()), Vec::<PathBuf>::new());
    }
}

#[test]
fn a_daemon_that_never_answers_is_given_up_on_within_the_timeout() {
    let addr = silent_listener();
    let began = Instant::now();
    let run = strata([
        "--addr",
        &format!("tcp://{addr}"),
        "--timeout",
        "2s",
        "info",
    ]);
    let line = run.clean_error();
    assert!(
        line.contains(&addr) && line.contains("did not answer"),
        "{line}"
    );
    assert!(began.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_dead_registry_is_named_for_base_resolution_and_push() {
    let s = stack();
    let mut registry = ScratchRegistry::start();
    let dead = registry.addr.clone();
    registry.kill();
    // Base resolution.
    let p = Project::new(&format!("[images.b]\nbase = \"{dead}/gone/base:1\"\n"));
    let run = strata([
        "--addr",
        &s.buildkit_host,
        "build",
        "-f",
        &p.spec().display().to_string(),
    ]);
    let line = run.clean_error();
    assert!(line.contains(&dead), "{line}");

    // Push, killed once the upload has begun.
    let mut registry = ScratchRegistry::start();
    let target = format!("{}/faults/img:1", registry.addr);
    let p = Project::new(&common::project::small_spec("pushed", ""));
    let ca = ca_file(&p, false);
    let flags = vec!["--push".to_owned(), target.clone()];
    let (mut child, rx) = spawn_watched(build_command(&s.buildkit_host, &p, &ca, &flags));
    let deadline = Instant::now() + Duration::from_secs(300);
    while !registry.uploading("faults/img") {
        if child.try_wait().unwrap().is_some() {
            break; // pushed before we could kill: still checked below
        }
        assert!(Instant::now() < deadline, "no upload seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    registry.kill();
    let status = wait_with_deadline(&mut child, Duration::from_secs(120));
    let stderr = rest(&rx);
    if !status.success() {
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.contains(&registry.addr), "{last}");
    }
    assert_eq!(leftovers(p.dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_failed_build_keeps_earlier_tarballs_and_local_outputs_refuse_foreign_dirs() {
    let s = stack();
    let p = Project::new(&common::project::small_spec("o", ""));
    let ca = ca_file(&p, false);
    let tar = p.path("img.tar");
    std::fs::write(&tar, "the previous good tarball").unwrap();
    // The oci export completes; the push to a closed port then fails the build.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let flags = vec![
        "--output".to_owned(),
        format!("type=oci,dest={}", tar.display()),
        "--output".into(),
        format!("type=registry,name={closed}/nowhere/x:1"),
    ];
    let run = build_command(&s.buildkit_host, &p, &ca, &flags)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert_eq!(
        std::fs::read_to_string(&tar).unwrap(),
        "the previous good tarball"
    );
    assert_eq!(leftovers(p.dir.path()), Vec::<PathBuf>::new());

    // A directory strata did not export is not replaced without replace=true.
    let mine = p.path("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "precious").unwrap();
    let flags = vec![
        "--output".to_owned(),
        format!("type=local,dest={}", mine.display()),
    ];
    let run = build_command(&s.buildkit_host, &p, &ca, &flags)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("replace=true"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "precious"
    );
    let flags = vec![
        "--output".to_owned(),
        format!("type=local,dest={},replace=true", mine.display()),
    ];
    let run = build_command(&s.buildkit_host, &p, &ca, &flags)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!mine.join("notes.txt").exists());
    assert!(mine.join(".strata-export").exists());
}

/// Manifest PUTs the fake registry of the test below has answered.
static MANIFEST_PUTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A registry that takes every blob and refuses the first manifest with
/// `MANIFEST_BLOB_UNKNOWN`, as Debian's docker-registry did in CI when
/// pushes of shared blobs into one repository crossed.
fn refuses_the_first_manifest(stream: &mut std::net::TcpStream, head: &str) {
    use std::io::{Read, Write};
    let lower = head.to_ascii_lowercase();
    let length: usize = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = stream.read_exact(&mut body);
    let line = head.lines().next().unwrap_or("");
    let (method, path) = line
        .split_once(' ')
        .map(|(m, rest)| (m, rest.split(' ').next().unwrap_or("")))
        .unwrap_or(("", ""));
    let repo_path = path.split("/blobs/").next().unwrap_or("");
    let digest = path
        .split_once("digest=")
        .map(|(_, d)| d.split('&').next().unwrap_or(d).replace("%3A", ":"))
        .unwrap_or_default();
    let answer = match method {
        "GET" if path == "/v2/" => "200 OK\r\nContent-Length: 2\r\n\r\n{}".to_owned(),
        "POST" => format!(
            "202 Accepted\r\nLocation: {repo_path}/blobs/uploads/u1\r\nRange: 0-0\r\nContent-Length: 0\r\n\r\n"
        ),
        "PATCH" => format!(
            "202 Accepted\r\nLocation: {repo_path}/blobs/uploads/u1\r\nRange: 0-{}\r\nContent-Length: 0\r\n\r\n",
            length.saturating_sub(1)
        ),
        "PUT" if path.contains("/blobs/uploads/") => format!(
            "201 Created\r\nDocker-Content-Digest: {digest}\r\nLocation: {repo_path}/blobs/{digest}\r\nContent-Length: 0\r\n\r\n"
        ),
        "PUT" if path.contains("/manifests/") => {
            if MANIFEST_PUTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                let errors = r#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:0"}]}"#;
                format!(
                    "400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{errors}",
                    errors.len()
                )
            } else {
                use sha2::Digest;
                let digest = format!("sha256:{:x}", sha2::Sha256::digest(&body));
                format!("201 Created\r\nDocker-Content-Digest: {digest}\r\nContent-Length: 0\r\n\r\n")
            }
        }
        _ => "404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
    };
    let _ = stream.write_all(format!("HTTP/1.1 {answer}").as_bytes());
}

#[test]
fn a_manifest_the_registry_refuses_for_an_unknown_blob_is_pushed_once_more() {
    let (addr, seen) = common::hostile_http(refuses_the_first_manifest);
    let p = Project::new(&common::project::small_spec("retry", ""));
    let target = format!("{addr}/faults/retry:1");
    let built = p.build(&stack().buildkit_host, &["--push", &target, "--no-key-tag"]);
    built.ok();
    assert!(
        built.run.stderr.contains("pushing once more"),
        "{}",
        built.run.stderr
    );
    let puts = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.starts_with("PUT") && h.contains("/manifests/"))
        .count();
    assert_eq!(puts, 2, "{:#?}", seen.lock().unwrap());
}
