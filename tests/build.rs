//! `strata build` end to end against the real daemons: the codex example
//! pushed and read back, cache behaviour on rebuilds, the CA bundle kept out of
//! layers, clear failures, Ctrl-C, exports, and the LLB interop with buildctl.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::project::{rand_suffix, registry, small_spec, Project};
use common::{stack, strata};
use strata::llb::Platform;
use strata::registry::ImageRef;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_example_builds_pushes_and_rebuilds_from_cache() {
    let s = stack();
    let p = Project::codex();
    let image = format!("{}/strata/codex-test:{}", s.registry, rand_suffix());
    // Solved even if an earlier run left this spec's key tag in the repository.
    let first = p.build(&s.buildkit_host, &["codex", "--push", &image, "--no-skip"]);
    first.ok();
    let digest = first.meta("codex", "containerimage.digest");
    assert!(digest.starts_with("sha256:"), "{digest}");
    // One definition of a step: the summary, the metadata and the spec agree.
    let spec_steps = first
        .steps()
        .iter()
        .filter(|st| st.name.starts_with("[codex "))
        .count() as u64;
    let (steps, cached) = first.summary("codex");
    assert_eq!(steps, spec_steps);
    assert_eq!(first.meta_count("codex", "strata.steps"), spec_steps);
    assert_eq!(first.meta_count("codex", "strata.cached"), cached);

    // The manifest as the registry serves it: layers and our config.
    let r: ImageRef = image.parse().unwrap();
    let (resolved, config) = registry().config(&r, &Platform::host()).await.unwrap();
    assert_eq!(resolved.digest, digest);
    let base: ImageRef = s.base_image.parse().unwrap();
    let base_layers = registry()
        .manifest(&base, &Platform::host())
        .await
        .unwrap()
        .manifest
        .layers()
        .len();
    assert!(
        resolved.manifest.layers().len() > base_layers + 3,
        "base layers plus one per toolchain step and the overlay: {:?}",
        resolved.manifest.layers().len()
    );
    let cfg = config.config().as_ref().expect("an image config");
    let env = cfg.env().clone().unwrap_or_default();
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    assert_eq!(cfg.working_dir().as_deref(), Some("/workspace"));
    for leaked in ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "PIP_CERT"] {
        assert!(
            !env.iter().any(|e| e.starts_with(leaked)),
            "{leaked} stays out of the image: {env:?}"
        );
    }

    // No layer carries the CA bundle (it was a secret mount).
    let paths = registry().layer_paths(&r, &Platform::host()).await.unwrap();
    for layer in &paths {
        for path in layer {
            assert!(
                !path.contains("strata-ca"),
                "CA bundle leaked into a layer: {path}"
            );
        }
    }
    assert!(
        paths
            .iter()
            .flatten()
            .any(|p| p.ends_with("workspace/AGENTS.md")),
        "the overlay is in the image"
    );

    // Unchanged: found by its key tag, nothing solved, same digest.
    let found = p.build(&s.buildkit_host, &["codex", "--push", &image]);
    assert!(found.ok().run.stdout.contains("codex: up to date ("));
    assert_eq!(found.meta("codex", "containerimage.digest"), digest);

    // Solved anyway: every step cached, same digest.
    let again = p.build(&s.buildkit_host, &["codex", "--push", &image, "--no-skip"]);
    again.ok();
    assert_eq!(again.ran(), Vec::<String>::new(), "nothing re-runs");
    assert_eq!(again.summary("codex"), (spec_steps, spec_steps));
    assert_eq!(again.meta_count("codex", "strata.cached"), spec_steps);
    assert_eq!(again.meta("codex", "containerimage.digest"), digest);

    // One overlay file edited: only the overlay copy runs.
    let agents = p.path("overlay/AGENTS.md");
    let mut text = std::fs::read_to_string(&agents).unwrap();
    // Unique per run: the daemon remembers content it has seen before.
    text.push_str(&format!("\nedited by the test, run {}\n", rand_suffix()));
    std::fs::write(&agents, text).unwrap();
    let edited = p.build(&s.buildkit_host, &["codex", "--push", &image]);
    edited.ok();
    let ran = edited.ran();
    assert_eq!(ran.len(), 1, "only the overlay step: {ran:?}");
    assert!(ran[0].contains("overlay"), "{ran:?}");
    assert_ne!(edited.meta("codex", "containerimage.digest"), digest);
}

#[test]
fn an_added_apt_package_reuses_the_downloaded_debs() {
    let s = stack();
    // A fresh env value makes this run's apt steps new to the daemon's cache;
    // the apt cache mount (shared by every build) keeps the .debs.
    let run_id = rand_suffix();
    let step = |pkgs: &str| {
        format!(
            "[[images.aptly.toolchain]]\nenv = {{ RUN_ID = \"{run_id}\" }}\n\n\
             [[images.aptly.toolchain]]\napt = [{pkgs}]\n"
        )
    };
    let p = Project::new(&small_spec("aptly", &step("\"less\"")));
    let first = p.build(&s.buildkit_host, &["aptly"]);
    first.ok();
    std::fs::write(p.spec(), small_spec("aptly", &step("\"less\", \"bzip2\""))).unwrap();
    let second = p.build(&s.buildkit_host, &["aptly"]);
    second.ok();
    let steps = second.steps();
    let apt = steps
        .iter()
        .find(|st| st.name.contains("apt install") && st.completed && !st.cached)
        .unwrap_or_else(|| panic!("the apt step re-ran: {steps:#?}"));
    let fetched: Vec<&str> = apt.logs.lines().filter(|l| l.starts_with("Get:")).collect();
    assert!(
        apt.logs.contains("bzip2"),
        "the new package is installed: {}",
        apt.logs
    );
    // apt prints `Get:N URL SUITE/COMPONENT ARCH PACKAGE VERSION [SIZE]` per download.
    assert!(
        !fetched.iter().any(|l| l.contains(" less ")),
        "less came from the cache mount, not the network: {fetched:?}"
    );
}

#[test]
fn spec_errors_name_file_line_and_key() {
    let p = Project::new("[images.a]\nbase = \"x\"\naptt = [\"git\"]\n");
    let run = strata(["build", "-f", p.spec().to_str().unwrap()]);
    let line = run.clean_error().to_owned();
    assert!(line.contains("strata.toml:3"), "{line}");
    assert!(line.contains("aptt"), "{line}");
}

#[test]
fn a_failing_run_step_is_reported_by_its_spec_name() {
    let s = stack();
    let extra = "[[images.failing.toolchain]]\nrun = \"echo the-last-words; exit 7\"\nname = \"doomed step\"\n";
    let p = Project::new(&small_spec("failing", extra));
    let b = p.build(&s.buildkit_host, &["failing"]);
    assert_eq!(b.run.code, Some(1), "{:#?}", b.run);
    assert!(!b.run.stderr.contains("panicked"));
    let last = b.run.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{last}");
    assert!(last.contains("doomed step"), "{last}");
    assert!(last.contains("exit code: 7"), "{last}");
    assert!(b.run.stderr.contains("the-last-words"), "logs are shown");
}

#[test]
fn builds_through_dockerd_and_exports_files() {
    let s = stack();
    let p = Project::new(&small_spec("viadocker", ""));
    let oci = p.path("image.oci.tar");
    let out = p.path("rootfs");
    let b = p.build(
        &s.docker_host,
        &[
            "viadocker",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
        ],
    );
    b.ok();
    let size = std::fs::metadata(&oci).expect("oci tarball written").len();
    assert!(size > 1_000_000, "{size}");
    let b = p.build(
        &s.buildkit_host,
        &[
            "viadocker",
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
    );
    b.ok();
    assert_eq!(
        std::fs::read_to_string(out.join("work/hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("toolchain.txt")).unwrap(),
        "toolchain\n"
    );
}

#[test]
fn ctrl_c_cancels_the_running_step_and_exits_130() {
    let s = stack();
    let marker = format!("strata-cancel-{}", rand_suffix());
    let extra = format!(
        "[[images.slow.toolchain]]\nrun = \"echo started-{marker}; sleep 300; echo {marker}\"\nname = \"slow step\"\n"
    );
    let p = Project::new(&small_spec("slow", &extra));
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--addr", &s.buildkit_host, "build", "-f"])
        .arg(p.spec())
        .args(["--progress", "plain"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = String::new();
    while !seen.contains(&format!("started-{marker}")) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the slow step never started:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
    }
    let sent = Instant::now();
    send_sigint(child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(sent.elapsed() < Duration::from_secs(20));
    // The daemon stopped the step: no process of it is left.
    let gone = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(250));
        !processes_mention(&format!("echo {marker}"))
    });
    assert!(gone, "the step's process is still running on the daemon");
}

fn send_sigint(pid: u32) {
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn processes_mention(needle: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(needle)
        })
}

#[test]
fn llb_runs_unchanged_through_buildctl() {
    let s = stack();
    let p = Project::new(&small_spec("interop", ""));
    let llb = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["llb", "-f"])
        .arg(p.spec())
        .arg("interop")
        .output()
        .unwrap();
    assert!(
        llb.status.success(),
        "{}",
        String::from_utf8_lossy(&llb.stderr)
    );
    let hint = String::from_utf8_lossy(&llb.stderr).to_string();
    let locals: Vec<&str> = hint
        .split_whitespace()
        .filter(|w| w.contains('=') && w.contains("overlay"))
        .collect();
    assert_eq!(locals.len(), 1, "one local dir to pass: {hint}");
    let out = p.path("buildctl-out");
    let mut child = Command::new(&s.buildctl)
        .args(["--addr", &s.buildkit_host, "build", "--local", locals[0]])
        .arg("--output")
        .arg(format!("type=local,dest={}", out.display()))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&llb.stdout).unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("work/hello.txt")).unwrap(),
        "hello\n"
    );
    // Same spec, same bytes.
    let again = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["llb", "-f"])
        .arg(p.spec())
        .arg("interop")
        .output()
        .unwrap();
    assert_eq!(again.stdout, llb.stdout, "strata llb is deterministic");
}

#[test]
fn images_of_one_spec_build_together_sharing_their_steps() {
    let s = stack();
    let run = rand_suffix();
    let spec = format!(
        r#"
[images.parent]
base = "{base}"

[[images.parent.toolchain]]
run = "echo {run} > /parent.txt"
name = "parent step"

[images.child]
from = "parent"

[[images.child.toolchain]]
run = "cat /parent.txt > /child.txt"
name = "child step"

[images.child.overlay]
copy = {{ from = "overlay/", to = "/w" }}
"#,
        base = s.base_image
    );
    let p = Project::new(&spec);
    let out = p.path("child-rootfs");
    let both = p.build(&s.buildkit_host, &[]);
    both.ok();
    let meta = both.metadata.as_ref().unwrap();
    assert!(
        meta.get("parent").is_some() && meta.get("child").is_some(),
        "{meta}"
    );
    let parent_runs = both
        .steps()
        .iter()
        .filter(|st| st.name.contains("parent step") && st.completed && !st.cached)
        .count();
    assert!(parent_runs <= 1, "the shared step ran once");
    // The child really is built on the parent.
    p.build(
        &s.buildkit_host,
        &[
            "child",
            "--output",
            &format!("type=local,dest={}", out.display()),
        ],
    )
    .ok();
    assert_eq!(
        std::fs::read_to_string(out.join("child.txt")).unwrap(),
        format!("{run}\n")
    );
}

/// Runs `strata ARGS…` on a pseudo-terminal (util-linux `script`), as a user
/// at a shell would; returns its exit code and what the terminal showed.
fn on_terminal(args: &[String]) -> (Option<i32>, String) {
    let command = std::iter::once(env!("CARGO_BIN_EXE_strata").to_owned())
        .chain(args.iter().cloned())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env_remove("BUILDKIT_HOST")
        .env("COLUMNS", "160")
        .stdin(Stdio::null())
        .output()
        .expect("running script(1)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_terminal_gets_the_live_view() {
    let s = stack();
    let run = rand_suffix();
    let extra = format!(
        "[[images.live.toolchain]]\nrun = \"echo live-{run}; sleep 1\"\nname = \"say hello\"\n"
    );
    // Steps of its own: a step shared with another test's build running at
    // the same moment can be re-run for that build and show as run here.
    let spec = small_spec("live", &extra)
        .replace("GREETING = \"hi\"", &format!("GREETING = \"hi-{run}\""));
    assert!(spec.contains(&format!("hi-{run}")));
    let p = Project::new(&spec);
    let args = |extra: &[&str]| -> Vec<String> {
        ["--addr", &s.buildkit_host, "build", "-f"]
            .iter()
            .map(|a| a.to_string())
            .chain([p.spec().display().to_string()])
            .chain(extra.iter().map(|a| a.to_string()))
            .collect()
    };
    // auto picks the live view on a terminal: a ✔ line with the step's
    // duration for what ran, CACHED for what did not, then the summary.
    let (code, screen) = on_terminal(&args(&[]));
    assert_eq!(code, Some(0), "{screen}");
    let done = screen
        .lines()
        .find(|l| l.contains('✔') && l.contains("say hello"))
        .unwrap_or_else(|| panic!("a done line for the step:\n{screen}"));
    assert!(
        done.trim_end().ends_with('s'),
        "the done line ends with its duration: {done}"
    );
    assert!(screen.contains("live  (no image exported)"), "{screen}");
    let (code, screen) = on_terminal(&args(&["--progress", "tty"]));
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.contains("CACHED") && l.contains("say hello")),
        "a rebuild shows the step cached:\n{screen}"
    );

    // A failing step: ✘, its error and its last log lines on the screen, and
    // the one error line last.
    let extra = format!(
        "[[images.live.toolchain]]\nrun = \"echo last-words-{run}; exit 4\"\nname = \"fail on purpose\"\n"
    );
    let failing = Project::new(&small_spec("live", &extra));
    let mut failing_args = args(&[]);
    failing_args[4] = failing.spec().display().to_string();
    let (code, screen) = on_terminal(&failing_args);
    assert_eq!(code, Some(1), "{screen}");
    let failed = screen
        .lines()
        .position(|l| l.contains('✘') && l.contains("fail on purpose"))
        .unwrap_or_else(|| panic!("a failed line for the step:\n{screen}"));
    assert!(
        screen
            .lines()
            .skip(failed)
            .any(|l| l.contains(&format!("last-words-{run}"))),
        "its logs follow it:\n{screen}"
    );
    let last = screen.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert!(last.starts_with("error: "), "{last}");
    assert!(!screen.contains("panicked"), "{screen}");
}
