//! The solve path with a hand-built graph, below the spec: session tunnel,
//! FileSync upload, cache mounts, image push, progress and failure reporting.

mod common;

use std::collections::BTreeMap;

use common::stack;
use strata::llb::{self, Run, State};
use strata::options::LocalDir;
use strata::options::Output;
use strata::solve::{self, progress::Quiet, SolveOpt};
use strata::tools::Tool;
use strata::{Addr, Client, TlsOptions};

async fn client(addr: &str) -> Client {
    Client::connect(addr.parse::<Addr>().unwrap(), &TlsOptions::default())
        .await
        .expect("connecting to the test daemon")
}

fn graph(base: &str, marker: &str) -> State {
    let platform = llb::Platform::host();
    let root = llb::source::image(&base.parse().unwrap(), None).platform(platform.clone());
    let ctx = llb::source::local("ctx", &Default::default());
    root.run(
        Run::shell(&format!("echo {marker} > /marker && ls /root/.cache/pip"))
            .mounts(Tool::Pip.cache_mounts(&platform))
            .named("write marker"),
    )
    .file(
        vec![llb::FileAction::copy(llb::Copy::new(&ctx, "/", "/ctx"))],
        Some("copy context"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solves_uploads_and_pushes() {
    let s = stack();
    for addr in [s.buildkit_host.as_str(), s.docker_host.as_str()] {
        let client = client(addr).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.txt"), "hello from the client\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/data.bin"), vec![7u8; 300_000]).unwrap();

        let name = format!("{}/strata/solve-test:latest", s.registry);
        let opt = SolveOpt {
            local_dirs: BTreeMap::from([(
                "ctx".to_owned(),
                LocalDir {
                    path: dir.path().to_owned(),
                    excludes: vec![],
                },
            )]),
            exports: vec![Output::Image {
                name: name.parse().unwrap(),
                also: Vec::new(),
                push: true,
                insecure: true,
                attrs: BTreeMap::new(),
            }],
            shared_key: "solve-test".into(),
            ..SolveOpt::default()
        };
        let definition = graph(&s.base_image, addr).marshal();
        let solved = solve::solve(&client, &definition, &opt, &mut Quiet)
            .await
            .unwrap_or_else(|e| panic!("solve on {addr}: {e}"));
        let digest = solved.image_digest().expect("an image digest");
        assert!(digest.starts_with("sha256:"), "{digest}");
        assert!(
            solved.steps.iter().any(|st| st.name == "write marker"),
            "step names reach progress: {:?}",
            solved.steps.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_named_with_its_log() {
    let s = stack();
    let client = client(&s.buildkit_host).await;
    let root = llb::source::image(&s.base_image.parse().unwrap(), None);
    let state =
        root.run(Run::shell("echo about to fail; echo oops >&2; exit 3").named("the failing step"));
    let err = solve::solve(&client, &state.marshal(), &SolveOpt::default(), &mut Quiet)
        .await
        .expect_err("the step exits 3");
    match err {
        solve::SolveError::StepFailed { name, error, logs } => {
            assert_eq!(name, "the failing step");
            assert!(error.contains("exit code: 3"), "{error}");
            assert!(logs.iter().any(|l| l.contains("oops")), "{logs:?}");
        }
        other => panic!("expected StepFailed, got {other}"),
    }
}

/// A step quiet for longer than the silence that makes strata probe the
/// daemon (30 s) is not taken for a lost daemon: the probe is answered and
/// the build goes on.
#[test]
fn a_step_quiet_past_the_silence_probe_is_not_a_lost_daemon() {
    let s = stack();
    let marker = common::project::rand_suffix();
    let p = common::project::Project::new(&format!(
        "[images.quiet]\nbase = \"{}\"\n\n[[images.quiet.toolchain]]\nrun = \"sleep 38; echo {marker} > /quiet.txt\"\n",
        s.base_image
    ));
    let mut args = vec!["--timeout".to_owned(), "3s".into()];
    args.extend(["--addr", &s.buildkit_host, "build", "-f"].map(String::from));
    args.push(p.spec().display().to_string());
    args.extend(["--progress", "plain"].map(String::from));
    let run = common::strata(&args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

/// A library caller's own session service goes through the same door as the
/// built-in ones: a secrets service attached to the SolveOpt (its `secrets`
/// field left empty) answers the step's secret mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_attached_service_is_served() {
    let s = stack();
    let client = client(&s.buildkit_host).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "attached-secret").unwrap();
    let root = llb::source::image(&s.base_image.parse().unwrap(), None);
    let graph = root.run(
        Run::shell(&format!(
            "test \"$(cat /run/secrets/token)\" = attached-secret # {}",
            strata::ids::random_id()
        ))
        .mount(llb::Mount::secret("/run/secrets/token", "token"))
        .named("read the attached secret"),
    );
    // Without it the step has no secret to read (first: a step that ran
    // would be cached, secrets are not part of its key).
    let err = solve::solve(&client, &graph.marshal(), &SolveOpt::default(), &mut Quiet)
        .await
        .expect_err("no secrets service, no secret");
    assert!(err.to_string().contains("secret"), "{err}");
    let mut opt = SolveOpt::default();
    opt.attachables
        .add(strata::session::SecretFiles::new(BTreeMap::from([(
            "token".to_owned(),
            file.clone(),
        )])));
    solve::solve(&client, &graph.marshal(), &opt, &mut Quiet)
        .await
        .expect("the attached secrets service answers the mount");
}
