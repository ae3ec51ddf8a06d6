//! A client-side frontend over BuildKit's gateway (LLBBridge), as Go's
//! `client.Build` is: the Control.Solve of such a build carries neither
//! definition nor frontend, so the daemon waits for this side to solve the
//! graphs of every platform (side by side, sharing what they share) and to
//! return them as one result, refs keyed by platform with each platform's
//! image config; the image exporter then writes one image index. A graph
//! may stand on a frontend's result (an image built `from` a Dockerfile
//! image): the frontend is solved first, through the same gateway, and the
//! graph lowered on what it answered — one build for both.

use std::sync::Arc;
use std::time::Duration;

use oci_spec::image::ImageConfiguration;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::llb::{Definition, Platform};
use crate::options::{CacheImport, Frontend};
use crate::wire::google::rpc;
use crate::wire::moby::buildkit::v1::frontend as gateway;
use gateway::llb_bridge_client::LlbBridgeClient;

/// One platform's graph of a multi-platform image (or of an image built on
/// a frontend's result).
#[derive(Debug, Clone)]
pub struct PlatformGraph {
    pub platform: Platform,
    pub source: GraphSource,
}

impl PlatformGraph {
    /// A platform's LLB, ready to solve, with the config the exporter writes.
    pub fn llb(
        platform: Platform,
        definition: Definition,
        config: Option<ImageConfiguration>,
    ) -> PlatformGraph {
        PlatformGraph {
            platform,
            source: GraphSource::Llb {
                definition,
                config: config.map(Box::new),
            },
        }
    }
}

/// What a platform's graph is.
#[derive(Clone)]
pub enum GraphSource {
    /// LLB ready to solve, and the image config the exporter writes.
    Llb {
        definition: Definition,
        config: Option<Box<ImageConfiguration>>,
    },
    /// LLB made once `frontend` answered: `lower` gets the frontend's
    /// result and image config, and returns the graph and its config.
    OnFrontend { frontend: Frontend, lower: LowerOn },
}

/// Lowers a graph on a frontend's result (its definition and config).
pub type LowerOn = Arc<
    dyn Fn(
            &Definition,
            Option<&ImageConfiguration>,
        ) -> Result<(Definition, ImageConfiguration), String>
        + Send
        + Sync,
>;

impl std::fmt::Debug for GraphSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GraphSource::Llb { definition, .. } => {
                write!(f, "Llb({} ops)", definition.ops().len())
            }
            GraphSource::OnFrontend { frontend, .. } => write!(f, "OnFrontend({})", frontend.name),
        }
    }
}

/// A graph solved: its ref, and what the exporter writes for it.
struct Solved {
    r#ref: gateway::Ref,
    definition: Definition,
    config: Option<ImageConfiguration>,
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
    let solves = graphs
        .iter()
        .map(|g| bridge.solve_graph(&g.source, imports));
    let returned = match futures::future::try_join_all(solves).await {
        Ok(solved) => gateway::ReturnRequest {
            result: Some(result(graphs, solved)?),
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

    /// Solves `source` to a ref: its LLB, or the frontend and then the LLB
    /// lowered on the frontend's result.
    async fn solve_graph(
        &self,
        source: &GraphSource,
        imports: &[CacheImport],
    ) -> Result<Solved, Status> {
        let (definition, config) = match source {
            GraphSource::Llb { definition, config } => {
                (definition.clone(), config.as_deref().cloned())
            }
            GraphSource::OnFrontend { frontend, lower } => {
                let (base, base_config) = self.solve_frontend(frontend, imports).await?;
                let (definition, config) =
                    lower(&base, base_config.as_ref()).map_err(Status::failed_precondition)?;
                (definition, Some(config))
            }
        };
        let request = gateway::SolveRequest {
            definition: Some(definition.to_pb()),
            ..self.request(imports)
        };
        Ok(Solved {
            r#ref: self.solve(request).await?,
            definition,
            config,
        })
    }

    /// The frontend's graph (not yet evaluated: its steps run as part of
    /// what is built on it) and the image config it answered.
    async fn solve_frontend(
        &self,
        frontend: &Frontend,
        imports: &[CacheImport],
    ) -> Result<(Definition, Option<ImageConfiguration>), Status> {
        let request = gateway::SolveRequest {
            frontend: frontend.name.clone(),
            frontend_opt: super::frontend_attrs(frontend, imports),
            frontend_inputs: frontend
                .inputs
                .iter()
                .map(|(name, definition)| (name.clone(), definition.to_pb()))
                .collect(),
            ..self.request(imports)
        };
        let solved = self.client.clone().solve(self.call(request)).await?;
        let result = solved.into_inner().result.unwrap_or_default();
        let config = match result.metadata.get("containerimage.config") {
            Some(bytes) => Some(
                serde_json::from_slice(bytes)
                    .map_err(|e| Status::internal(format!("the frontend's image config: {e}")))?,
            ),
            None => None,
        };
        match result.result {
            Some(gateway::result::Result::Ref(r)) => {
                let def = r
                    .def
                    .map(Definition::from_pb)
                    .unwrap_or_else(|| crate::llb::State::scratch().marshal());
                Ok((def, config))
            }
            _ => Err(Status::internal("the frontend returned no single ref")),
        }
    }

    /// A solve request's common part. Cache imports go with every one: the
    /// daemon's gateway does not apply the Control request's imports to raw LLB.
    fn request(&self, imports: &[CacheImport]) -> gateway::SolveRequest {
        gateway::SolveRequest {
            allow_result_return: true,
            allow_result_array_ref: true,
            cache_imports: imports
                .iter()
                .flat_map(CacheImport::to_wire)
                .map(|wire| gateway::CacheOptionsEntry {
                    r#type: wire.r#type,
                    attrs: wire.attrs,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Solves one graph to a ref.
    async fn solve(&self, request: gateway::SolveRequest) -> Result<gateway::Ref, Status> {
        let solved = self.client.clone().solve(self.call(request)).await?;
        match solved.into_inner().result.and_then(|r| r.result) {
            Some(gateway::result::Result::Ref(r)) => Ok(r),
            _ => Err(Status::internal("the gateway's solve returned no ref")),
        }
    }
}

/// The build's result: a ref per platform, `refs.platforms` naming them and
/// each platform's config under `containerimage.config/ID`, as BuildKit's
/// image exporter reads them (exptypes); one platform's is its ref alone,
/// with its config as `containerimage.config`, as for any one-platform build.
fn result(graphs: &[PlatformGraph], solved: Vec<Solved>) -> Result<gateway::Result, Status> {
    let config_bytes = |config: &ImageConfiguration| {
        // Through `Value`, whose maps are sorted: the same config, the same bytes.
        serde_json::to_value(config)
            .map(|v| v.to_string().into_bytes())
            .map_err(|e| Status::internal(format!("image config: {e}")))
    };
    let mut metadata = std::collections::BTreeMap::new();
    let mut by_platform = std::collections::BTreeMap::new();
    let mut platforms = Vec::new();
    let one = graphs.len() == 1;
    for (graph, mut solved) in graphs.iter().zip(solved) {
        let id = graph.platform.to_string();
        if solved.r#ref.id.is_empty() {
            // An empty result (a graph of no ops). Never send a default Ref:
            // protobuf leaves it out of the map, and this daemon's Return
            // then dereferences a nil ref and panics.
            solved.r#ref.def = Some(solved.definition.to_pb());
        }
        if let Some(config) = &solved.config {
            let key = if one {
                "containerimage.config".to_owned()
            } else {
                format!("containerimage.config/{id}")
            };
            metadata.insert(key, config_bytes(config)?.into());
        }
        if one {
            return Ok(gateway::Result {
                result: Some(gateway::result::Result::Ref(solved.r#ref)),
                metadata,
                attestations: Default::default(),
            });
        }
        platforms.push(serde_json::json!({
            "ID": id,
            "Platform": {
                "os": graph.platform.os,
                "architecture": graph.platform.architecture,
                "variant": graph.platform.variant,
            },
        }));
        by_platform.insert(id, solved.r#ref);
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
