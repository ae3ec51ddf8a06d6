//! A client-side frontend over BuildKit's gateway (LLBBridge), as Go's
//! `client.Build` is: the Control.Solve of such a build carries neither
//! definition nor frontend, so the daemon waits for this side to solve the
//! graphs of every platform (side by side, sharing what they share) and to
//! return them as one result, refs keyed by platform with each platform's
//! image config; the image exporter then writes one image index.

use std::time::Duration;

use oci_spec::image::ImageConfiguration;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::llb::{Definition, Platform};
use crate::options::CacheImport;
use crate::wire::google::rpc;
use crate::wire::moby::buildkit::v1::frontend as gateway;
use gateway::llb_bridge_client::LlbBridgeClient;

/// One platform's graph of a multi-platform image.
#[derive(Debug, Clone)]
pub struct PlatformGraph {
    pub platform: Platform,
    pub definition: Definition,
    /// The image config the exporter writes for this platform.
    pub config: Option<ImageConfiguration>,
}

/// How long the daemon may take to register the build's gateway after its
/// Solve call arrived.
const REGISTERED_WITHIN: Duration = Duration::from_secs(10);

/// Solves `graphs` in build `build_ref` and returns them as its result. A
/// failed solve is returned as the build's error (so Control.Solve reports
/// it as any failed build); `Err` is only for a gateway that never answered.
pub(super) async fn serve(
    channel: Channel,
    build_ref: &str,
    graphs: &[PlatformGraph],
    imports: &[CacheImport],
) -> Result<(), Status> {
    let bridge = Bridge {
        client: LlbBridgeClient::new(channel),
        build_ref,
    };
    bridge.registered().await?;
    let solves = graphs.iter().map(|g| bridge.solve(&g.definition, imports));
    let returned = match futures::future::try_join_all(solves).await {
        Ok(refs) => gateway::ReturnRequest {
            result: Some(result(graphs, refs)?),
            error: None,
        },
        Err(status) => gateway::ReturnRequest {
            result: None,
            error: Some(rpc::Status {
                code: status.code() as i32,
                message: status.message().to_owned(),
                details: Vec::new(),
            }),
        },
    };
    bridge
        .client
        .clone()
        .r#return(bridge.call(returned))
        .await?;
    Ok(())
}

/// The gateway of one build: every call names it.
struct Bridge<'a> {
    client: LlbBridgeClient<Channel>,
    build_ref: &'a str,
}

impl Bridge<'_> {
    fn call<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = MetadataValue::try_from(self.build_ref) {
            request
                .metadata_mut()
                .insert("buildkit-controlapi-buildid", value);
        }
        request
    }

    /// Waits until the daemon answers a ping for this build.
    async fn registered(&self) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + REGISTERED_WITHIN;
        loop {
            match self
                .client
                .clone()
                .ping(self.call(gateway::PingRequest {}))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Solves one graph to a ref. Cache imports go with it: the daemon's
    /// gateway does not apply the Control request's imports to raw LLB.
    async fn solve(
        &self,
        definition: &Definition,
        imports: &[CacheImport],
    ) -> Result<gateway::Ref, Status> {
        let request = gateway::SolveRequest {
            definition: Some(definition.to_pb()),
            allow_result_return: true,
            allow_result_array_ref: true,
            cache_imports: imports
                .iter()
                .map(|i| {
                    let wire = i.to_wire();
                    gateway::CacheOptionsEntry {
                        r#type: wire.r#type,
                        attrs: wire.attrs,
                    }
                })
                .collect(),
            ..Default::default()
        };
        let solved = self.client.clone().solve(self.call(request)).await?;
        match solved.into_inner().result.and_then(|r| r.result) {
            Some(gateway::result::Result::Ref(r)) => Ok(r),
            _ => Err(Status::internal("the gateway's solve returned no ref")),
        }
    }
}

/// The build's result: a ref per platform, `refs.platforms` naming them and
/// each platform's config under `containerimage.config/ID`, as BuildKit's
/// image exporter reads them (exptypes).
fn result(graphs: &[PlatformGraph], refs: Vec<gateway::Ref>) -> Result<gateway::Result, Status> {
    let mut metadata = std::collections::BTreeMap::new();
    let mut by_platform = std::collections::BTreeMap::new();
    let mut platforms = Vec::new();
    for (graph, mut r) in graphs.iter().zip(refs) {
        let id = graph.platform.to_string();
        if r.id.is_empty() {
            // An empty result (a graph of no ops). Never send a default Ref:
            // protobuf leaves it out of the map, and this daemon's Return
            // then dereferences a nil ref and panics.
            r.def = Some(graph.definition.to_pb());
        }
        platforms.push(serde_json::json!({
            "ID": id,
            "Platform": {
                "os": graph.platform.os,
                "architecture": graph.platform.architecture,
                "variant": graph.platform.variant,
            },
        }));
        if let Some(config) = &graph.config {
            // Through `Value`, whose maps are sorted: the same config, the same bytes.
            let bytes = serde_json::to_value(config)
                .map_err(|e| Status::internal(format!("image config: {e}")))?
                .to_string();
            metadata.insert(format!("containerimage.config/{id}"), bytes.into());
        }
        by_platform.insert(id, r);
    }
    let listed = serde_json::json!({ "Platforms": platforms }).to_string();
    metadata.insert("refs.platforms".to_owned(), listed.into());
    Ok(gateway::Result {
        result: Some(gateway::result::Result::Refs(gateway::RefMap {
            refs: by_platform,
        })),
        metadata,
        attestations: Default::default(),
    })
}
