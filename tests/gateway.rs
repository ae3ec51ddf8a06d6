//! The gateway wire (proto/moby/buildkit/v1/frontend/gateway.proto) against
//! the real daemon: a Control.Solve with neither definition nor frontend
//! makes the daemon wait for a client-side frontend, which pings LLBBridge,
//! solves a graph, reads a file of the result and returns it. This is the
//! path multi-platform builds take (several graphs, one result).

mod common;

use std::time::Duration;

use common::stack;
use strata::llb::{self, Run};
use strata::wire::moby::buildkit::v1 as control;
use strata::wire::moby::buildkit::v1::frontend as gateway;
use strata::{Addr, TlsOptions};
use tonic::metadata::MetadataValue;
use tonic::Request;

/// A gateway call names its build with this metadata.
fn in_build<T>(build: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "buildkit-controlapi-buildid",
        MetadataValue::try_from(build).unwrap(),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_side_frontend_solves_reads_and_returns() {
    let s = stack();
    let addr: Addr = s.buildkit_host.parse().unwrap();
    let channel = strata::connect::connect(&addr, &TlsOptions::default())
        .await
        .unwrap();
    let build = strata::ids::random_id();
    let mut control_client = control::control_client::ControlClient::new(channel.clone());
    let solve = tokio::spawn({
        let build = build.clone();
        async move {
            control_client
                .solve(control::SolveRequest {
                    r#ref: build,
                    ..Default::default()
                })
                .await
        }
    });
    let mut bridge = gateway::llb_bridge_client::LlbBridgeClient::new(channel);
    // The daemon registers the build's forwarder once its Solve arrived.
    let mut pong = None;
    for _ in 0..50 {
        match bridge.ping(in_build(&build, gateway::PingRequest {})).await {
            Ok(p) => {
                pong = Some(p.into_inner());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let pong = pong.expect("the gateway answered no ping");
    assert!(
        pong.frontend_api_caps.iter().any(|c| c.id == "solve.base"),
        "{:?}",
        pong.frontend_api_caps
            .iter()
            .map(|c| &c.id)
            .collect::<Vec<_>>()
    );
    assert!(!pong.workers.is_empty());

    let base =
        llb::source::image(&s.base_image.parse().unwrap(), None).platform(llb::Platform::host());
    let state = base.run(Run::shell("uname -m > /arch").named("write arch"));
    let solved = bridge
        .solve(in_build(
            &build,
            gateway::SolveRequest {
                definition: Some(state.marshal().to_pb()),
                allow_result_return: true,
                allow_result_array_ref: true,
                ..Default::default()
            },
        ))
        .await
        .expect("the gateway solves a graph")
        .into_inner();
    let Some(gateway::result::Result::Ref(reference)) = solved.result.and_then(|r| r.result) else {
        panic!("the solve returned no ref");
    };
    let arch = bridge
        .read_file(in_build(
            &build,
            gateway::ReadFileRequest {
                r#ref: reference.id.clone(),
                file_path: "/arch".into(),
                range: None,
            },
        ))
        .await
        .expect("reading a file of the result")
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&arch.data).trim(), "x86_64");

    bridge
        .r#return(in_build(
            &build,
            gateway::ReturnRequest {
                result: Some(gateway::Result {
                    result: Some(gateway::result::Result::Ref(reference)),
                    ..Default::default()
                }),
                error: None,
            },
        ))
        .await
        .expect("returning the result");
    tokio::time::timeout(Duration::from_secs(60), solve)
        .await
        .expect("the build ends once its result is returned")
        .unwrap()
        .expect("the build succeeds");
}

/// A graph per platform in one solve through `Graph::Platforms`: the pushed
/// tag names an image index listing both platforms, each manifest's config
/// saying its own architecture and its layer holding its own file. linux/386
/// stands beside linux/amd64 because file ops need no emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platforms_solved_in_one_build_push_one_index() {
    use common::project::registry_json;
    use oci_spec::image::{Arch, ConfigBuilder, ImageConfigurationBuilder, Os};
    use strata::llb::{FileAction, Platform, State};
    use strata::options::Output;
    use strata::solve::{self, progress::Quiet, Graph, PlatformGraph, SolveOpt};

    let s = stack();
    let client = strata::Client::connect(s.buildkit_host.parse().unwrap(), &TlsOptions::default())
        .await
        .unwrap();
    let graph = |platform: &str, arch: Arch| {
        let platform: Platform = platform.parse().unwrap();
        let state = State::scratch().platform(platform.clone()).file(
            vec![FileAction::mkfile("/arch", 0o644, platform.to_string())],
            Some("write arch"),
        );
        let config = ImageConfigurationBuilder::default()
            .architecture(arch)
            .os(Os::Linux)
            .config(ConfigBuilder::default().build().unwrap())
            .build()
            .unwrap();
        PlatformGraph::llb(platform, state.marshal(), Some(config))
    };
    let graphs = [
        graph("linux/amd64", Arch::Amd64),
        graph("linux/386", Arch::i386),
    ];
    let repo = format!("{}/strata/gateway-index", s.registry);
    let opt = SolveOpt {
        exports: vec![Output::Image {
            name: format!("{repo}:latest").parse().unwrap(),
            also: Vec::new(),
            push: true,
            insecure: true,
            attrs: Default::default(),
        }],
        ..SolveOpt::default()
    };
    let solved = solve::solve(&client, Graph::Platforms(&graphs), &opt, &mut Quiet)
        .await
        .expect("a two-platform build");
    let digest = solved.image_digest().expect("the index digest").to_owned();

    let get = |what: &str| registry_json(&repo, what);
    let index = get(&format!("manifests/{digest}"));
    // An index (Docker's media types unless the exporter is asked for OCI's).
    let kind = index["mediaType"].as_str().unwrap_or_default();
    assert!(
        kind.ends_with("image.index.v1+json") || kind.ends_with("manifest.list.v2+json"),
        "{index}"
    );
    let mut seen = Vec::new();
    for entry in index["manifests"].as_array().unwrap() {
        let arch = entry["platform"]["architecture"]
            .as_str()
            .unwrap()
            .to_owned();
        let manifest = get(&format!("manifests/{}", entry["digest"].as_str().unwrap()));
        let config = get(&format!(
            "blobs/{}",
            manifest["config"]["digest"].as_str().unwrap()
        ));
        assert_eq!(config["architecture"], arch.as_str(), "{config}");
        seen.push(arch);
    }
    seen.sort();
    assert_eq!(seen, ["386", "amd64"], "{index}");
}

/// One platform's failing step fails the whole build, named with its log,
/// as a one-graph build's would (the gateway's solves are lazy: the step
/// runs, and fails, when the result is built). The other platform's graph is
/// empty, whose ref has no id: sent as a default message it would be left out
/// of the refs map, and this daemon's Return panics on the missing ref.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_that_fails_fails_the_build() {
    use strata::llb::{Platform, State};
    use strata::solve::{self, progress::Quiet, Graph, PlatformGraph, SolveError, SolveOpt};

    let s = stack();
    let client = strata::Client::connect(s.buildkit_host.parse().unwrap(), &TlsOptions::default())
        .await
        .unwrap();
    let base = llb::source::image(&s.base_image.parse().unwrap(), None);
    let ok = State::scratch().platform(Platform::host());
    let failing =
        base.run(Run::shell("echo broken >&2; exit 4").named("the failing platform's step"));
    let graphs = [
        PlatformGraph::llb(Platform::host(), ok.marshal(), None),
        PlatformGraph::llb("linux/386".parse().unwrap(), failing.marshal(), None),
    ];
    let err = solve::solve(
        &client,
        Graph::Platforms(&graphs),
        &SolveOpt::default(),
        &mut Quiet,
    )
    .await
    .expect_err("a step exits 4");
    match err {
        SolveError::StepFailed { name, .. } => assert_eq!(name, "the failing platform's step"),
        other => panic!("expected the failing step, got {other}"),
    }
}
