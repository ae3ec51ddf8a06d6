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
