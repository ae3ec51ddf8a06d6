//! Solving: one `Control.Solve` with its session, exporters and cache options,
//! while `Control.Status` streams progress to a renderer.

mod gateway;
mod local_cache;
pub mod progress;
mod s3_cache;
mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use oci_spec::image::ImageConfiguration;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};
use crate::ids::random_id;
use crate::llb::Definition;
use crate::ocilayout::OciLayout;
use crate::options::LocalDir;
use crate::options::{CacheExport, CacheImport, CacheReport, ExporterResponse, Frontend, Output};
use crate::session::{
    Attachables, ContentStores, DockerAuth, ExportError, ExportFiles, ExportTarget, LocalDirs,
    SecretFiles, Session, StagedExports,
};
use crate::wire::moby::buildkit::v1 as control;

pub use gateway::{GraphSource, LowerOn, PlatformGraph};
use progress::{is_cancellation, Renderer, Step, Tracker};

/// Everything one solve needs besides the graph, in the spirit of BuildKit's
/// Go `client.SolveOpt`: [`solve`] builds the session from it (local dirs,
/// secrets, credentials, the content stores local caches need, the receivers
/// of exported files) and updates local caches' `index.json` only on success.
#[derive(Debug, Clone, Default)]
pub struct SolveOpt {
    /// Where the result goes (`--output`, `--push`); none: only the cache.
    pub exports: Vec<Output>,
    pub cache_exports: Vec<CacheExport>,
    pub cache_imports: Vec<CacheImport>,
    /// `local://NAME` sources of the graph and the directories they are.
    pub local_dirs: BTreeMap<String, LocalDir>,
    /// Secret ids and the files holding them.
    pub secrets: BTreeMap<String, PathBuf>,
    /// Registry credentials the daemon may ask for; none: anonymous.
    pub auth: Option<DockerAuth>,
    /// The image config the image exporters write (raw LLB carries none).
    pub image_config: Option<ImageConfiguration>,
    /// Lets the daemon reuse what earlier sessions with the same key uploaded
    /// (e.g. `strata:IMAGE`); empty: a key of its own.
    pub shared_key: String,
    /// OCI layouts on this machine that `oci-layout://` sources of the graph
    /// read, by the store id they name (`oci.store`).
    pub oci_layouts: BTreeMap<String, PathBuf>,
    /// Session services besides the built-in ones the fields above make
    /// (BuildKit's `SolveOpt.Session`): a library caller's own. One of the
    /// name of a built-in service replaces it.
    pub attachables: Attachables,
    /// Frontend attributes the daemon's `Control.Solve` reads itself for
    /// every kind of build, frontend or not: the attestations it attaches
    /// (`attest:provenance=mode=…`).
    pub attest: BTreeMap<String, String>,
}

/// What a solve builds: an LLB graph strata wrote, or a frontend the daemon
/// runs (as `buildctl build --frontend`), which makes the graph itself.
#[derive(Debug, Clone, Copy)]
pub enum Graph<'a> {
    Llb(&'a Definition),
    Frontend(&'a Frontend),
    /// One graph per platform, solved side by side through the gateway into
    /// one result: the image exporters write an image index.
    Platforms(&'a [PlatformGraph]),
}

impl<'a> From<&'a Definition> for Graph<'a> {
    fn from(definition: &'a Definition) -> Self {
        Graph::Llb(definition)
    }
}

impl<'a> From<&'a Frontend> for Graph<'a> {
    fn from(frontend: &'a Frontend) -> Self {
        Graph::Frontend(frontend)
    }
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Solved {
    /// What the exporters answered (image digest, names, …).
    pub exported: ExporterResponse,
    pub steps: Vec<Step>,
    pub duration: Duration,
    pub time_to_first_step: Option<Duration>,
    /// What each cache export wrote (registry sizes are not measured here).
    pub cache: Vec<CacheReport>,
}

impl Solved {
    pub fn image_digest(&self) -> Option<&str> {
        self.exported.image_digest.as_deref()
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A step of the graph failed; `logs` is the tail of its output.
    #[error("step {name:?} failed: {error}")]
    StepFailed {
        name: String,
        error: String,
        logs: Vec<String>,
    },
    /// The daemon refused or aborted the build outside any one step.
    #[error("build failed on {addr}: {message}")]
    Failed { addr: String, message: String },
    /// The connection to the daemon broke during the build (the daemon died,
    /// restarted, or the network between went away).
    #[error("lost the connection to the daemon at {addr} during the build ({detail}); was buildkitd stopped or restarted?")]
    ConnectionLost { addr: String, detail: String },
    /// The build's progress went silent and the daemon then did not answer
    /// a probe either: it is frozen or cut off, though the connection holds.
    #[error("the daemon at {addr} stopped answering during the build: no progress for {}s, then {detail}", silent.as_secs())]
    StoppedAnswering {
        addr: String,
        silent: Duration,
        detail: String,
    },
    /// A local cache directory could not be prepared or updated.
    #[error("local cache {}: {message}", dir.display())]
    LocalCache { dir: PathBuf, message: String },
    /// The image config could not be encoded for the exporter.
    #[error("image config: {0}")]
    ImageConfig(String),
    /// An output on this machine could not be (or may not be) put in place.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The daemon's S3 cache export failed: which cache, where, and why in
    /// a few words; the daemon's own text is the source.
    #[error("S3 cache {location} at {endpoint}: {reason}")]
    S3Cache {
        location: String,
        endpoint: String,
        reason: String,
        #[source]
        daemon: DaemonSaid,
    },
}

/// The daemon's words, kept for `-v`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DaemonSaid(pub String);

impl SolveError {
    /// The registry refused a pushed manifest: `MANIFEST_BLOB_UNKNOWN`, or
    /// the bare `400 Bad Request` to the manifest PUT that is all BuildKit
    /// reports of it. A registry answers so when it does not hold a blob the
    /// manifest names though the push had just sent it, as pushes of shared
    /// blobs into one repository at once can end (Debian's docker-registry,
    /// containerd/nerdctl#2404); pushing again sends what is missing.
    pub fn is_manifest_refused(&self) -> bool {
        let text = self.to_string();
        let bare_400 = text.contains("PUT request to")
            && text.contains("/manifests/")
            && text.contains("400 Bad Request");
        bare_400 || text.contains("blob unknown") || text.contains("MANIFEST_BLOB_UNKNOWN")
    }
}

impl SolveOpt {
    /// The session serving this solve, and the imports to send (local ones
    /// pinned to a digest, missing ones dropped).
    fn session(&self, staged: &StagedExports) -> Result<(Session, Vec<CacheImport>), SolveError> {
        let key = if self.shared_key.is_empty() {
            random_id()
        } else {
            self.shared_key.clone()
        };
        let mut session = Session::new("strata", &key);
        // A caller's service replaces the built-in one of its name.
        for service in self.attachables.iter() {
            session.attach(service);
        }
        if !self.local_dirs.is_empty() {
            session.attach(&LocalDirs::new(self.local_dirs.clone()));
        }
        if let Some(auth) = &self.auth {
            session.attach(auth);
        }
        if !self.secrets.is_empty() {
            session.attach(&SecretFiles::new(self.secrets.clone()));
        }
        let mut caches = local_cache::LocalCaches::default();
        let imports = caches.attach(&self.cache_exports, &self.cache_imports)?;
        for (id, dir) in &self.oci_layouts {
            caches
                .stores
                .insert(format!("oci:{id}"), OciLayout::new(dir));
        }
        for output in &self.exports {
            if let Output::OciDir { dir, .. } = output {
                // BuildKit's oci exporter writes into the store named `export`.
                caches.stores.insert("export".into(), OciLayout::new(dir));
            }
        }
        if !caches.stores.is_empty() {
            session.attach(&ContentStores::new(caches.stores));
        }
        let files: BTreeMap<usize, _> = self
            .exports
            .iter()
            .enumerate()
            .filter_map(|(i, o)| ExportTarget::of(o).map(|t| (i, t)))
            .collect();
        // A destination that may not be replaced fails now, not after the build.
        for target in files.values() {
            if let ExportTarget::Dir(dest) = target {
                dest.check()?;
            }
        }
        if !files.is_empty() {
            session.attach(&ExportFiles::new(files, staged));
        }

        Ok((session, imports))
    }

    /// The Solve call for `definition` in session `session_id`.
    fn request(
        &self,
        graph: Graph<'_>,
        session_id: &str,
        build_ref: &str,
        imports: &[CacheImport],
    ) -> Result<control::SolveRequest, SolveError> {
        // Through `Value`, whose maps are sorted: the config's labels are a
        // HashMap, and the same image must always get the same config bytes.
        let config = match &self.image_config {
            Some(c) => Some(
                serde_json::to_value(c)
                    .map_err(|e| SolveError::ImageConfig(e.to_string()))?
                    .to_string(),
            ),
            None => None,
        };
        let exporters: Vec<control::Exporter> = self
            .exports
            .iter()
            .map(|o| {
                let (kind, attrs) = o.exporter(config.as_deref());
                control::Exporter {
                    r#type: kind,
                    attrs,
                }
            })
            .collect();
        let mut request = control::SolveRequest {
            r#ref: build_ref.to_owned(),
            session: session_id.to_owned(),
            cache: Some(control::CacheOptions {
                exports: self
                    .cache_exports
                    .iter()
                    .map(CacheExport::to_wire)
                    .collect(),
                imports: imports.iter().flat_map(CacheImport::to_wire).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        match graph {
            Graph::Llb(definition) => request.definition = Some(definition.to_pb()),
            Graph::Frontend(frontend) => frontend_request(&mut request, frontend, imports),
            // Neither definition nor frontend: the daemon waits for ours.
            Graph::Platforms(_) => {}
        }
        request.frontend_attrs.extend(self.attest.clone());
        // Daemons before v0.13 read only the single, deprecated exporter fields.
        if let [first] = exporters.as_slice() {
            request.exporter_deprecated = first.r#type.clone();
            request.exporter_attrs_deprecated = first.attrs.clone();
        }
        request.exporters = exporters;
        Ok(request)
    }
}

/// A frontend's part of the request.
fn frontend_request(
    request: &mut control::SolveRequest,
    frontend: &Frontend,
    imports: &[CacheImport],
) {
    request.frontend = frontend.name.clone();
    request.frontend_attrs = frontend_attrs(frontend, imports);
    request.frontend_inputs = frontend
        .inputs
        .iter()
        .map(|(name, definition)| (name.clone(), definition.to_pb()))
        .collect();
}

/// A frontend's options. The frontend resolves cache imports itself, so it
/// is told them too (as BuildKit's Go client does).
fn frontend_attrs(frontend: &Frontend, imports: &[CacheImport]) -> BTreeMap<String, String> {
    let mut attrs = frontend.attrs.clone();
    if !imports.is_empty() {
        let entries: Vec<serde_json::Value> = imports
            .iter()
            .flat_map(CacheImport::to_wire)
            .map(|wire| serde_json::json!({ "Type": wire.r#type, "Attrs": wire.attrs }))
            .collect();
        let json = serde_json::Value::from(entries).to_string();
        attrs.insert("cache-imports".into(), json);
    }
    attrs
}

/// Runs `graph` on the daemon with what `opt` asks, serving its session
/// while it runs and feeding progress to `renderer`. Outputs on this machine
/// and local caches' tags are put in place only after the build succeeded;
/// until then they are staged beside their destinations. Dropping the
/// returned future cancels the build on the daemon (the Solve call is
/// cancelled with it) and removes what was staged.
pub async fn solve<'a>(
    client: &Client,
    graph: impl Into<Graph<'a>>,
    opt: &SolveOpt,
    renderer: &mut dyn Renderer,
) -> Result<Solved, SolveError> {
    let graph = graph.into();
    let began = Instant::now();
    let staged = StagedExports::default();
    let (session, imports) = opt.session(&staged)?;
    let running = session.start(client).await?;
    let build_ref = random_id();
    let request = opt.request(graph, running.id(), &build_ref, &imports)?;
    let mut tracker = Tracker::new();
    let status = run_with_status(client, request, build_ref.clone(), &mut tracker, renderer);
    let result = match graph {
        Graph::Platforms(graphs) => {
            let served = gateway::serve(client.channel(), &build_ref, graphs, &imports);
            with_gateway(status, served).await
        }
        _ => status.await,
    };
    running.close().await;
    match result {
        Ok(response) => {
            let exported = ExporterResponse::new(response.exporter_response);
            staged.commit()?;
            Ok(Solved {
                cache: local_cache::finish(&opt.cache_exports, &exported)?,
                exported,
                time_to_first_step: tracker.time_to_first_step(),
                steps: tracker.steps().to_vec(),
                duration: began.elapsed(),
            })
        }
        Err(Ended::Daemon(status)) => Err(s3_cache::explained(
            &opt.cache_exports,
            failure(client, &tracker, &status),
        )),
        Err(Ended::Silent(e)) => Err(SolveError::StoppedAnswering {
            addr: client.addr().to_string(),
            silent: SILENCE_BEFORE_PROBE,
            detail: e.to_string(),
        }),
    }
}

/// How long a build's progress may be silent before strata asks the daemon
/// whether it is still there. A step may well run this long without a word;
/// only a daemon that then also ignores the probe is given up on (sooner
/// than the connection's keepalive would notice a frozen one).
pub const SILENCE_BEFORE_PROBE: Duration = Duration::from_secs(30);

/// Why a Solve call ended without an answer.
enum Ended {
    /// The daemon's own error, or the transport's.
    Daemon(tonic::Status),
    /// Progress went silent and the daemon did not answer the probe.
    Silent(crate::client::ClientError),
}

/// The build's Solve call, while `served` answers its gateway; a gateway
/// that never answered ends the build (dropping the Solve call cancels it).
async fn with_gateway(
    status: impl std::future::Future<Output = Result<control::SolveResponse, Ended>>,
    served: impl std::future::Future<Output = Result<(), tonic::Status>>,
) -> Result<control::SolveResponse, Ended> {
    tokio::pin!(status);
    tokio::select! {
        r = &mut status => r,
        s = served => match s {
            Ok(()) => status.await,
            Err(e) => Err(Ended::Daemon(e)),
        },
    }
}

/// Calls Solve while following `Control.Status` for the same build ref.
async fn run_with_status(
    client: &Client,
    request: control::SolveRequest,
    build_ref: String,
    tracker: &mut Tracker,
    renderer: &mut dyn Renderer,
) -> Result<control::SolveResponse, Ended> {
    // Status must be asked for concurrently: the daemon answers it only once
    // the Solve call has registered the build.
    let (tx, mut updates) = mpsc::channel(256);
    let mut control = client.control();
    let status_task = tokio::spawn(async move {
        let stream = control
            .status(control::StatusRequest { r#ref: build_ref })
            .await;
        if let Ok(stream) = stream {
            let mut stream = stream.into_inner();
            while let Some(Ok(update)) = stream.next().await {
                if tx.send(update).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut control = client.control();
    let solve_call = control.solve(request);
    tokio::pin!(solve_call);
    let mut heard = tokio::time::Instant::now();
    let result = loop {
        tokio::select! {
            r = &mut solve_call => break r.map_err(Ended::Daemon),
            Some(update) = updates.recv() => {
                heard = tokio::time::Instant::now();
                let events = tracker.apply(&update);
                renderer.update(tracker, &update, &events);
            }
            () = tokio::time::sleep_until(heard + SILENCE_BEFORE_PROBE) => {
                match client.still_answers().await {
                    Ok(()) => heard = tokio::time::Instant::now(),
                    Err(e) => break Err(Ended::Silent(e)),
                }
            }
        }
    };
    // The status stream ends with the build; give it a moment to flush.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(update) = updates.recv().await {
            let events = tracker.apply(&update);
            renderer.update(tracker, &update, &events);
        }
    })
    .await;
    status_task.abort();
    renderer.finish(tracker);
    result.map(tonic::Response::into_inner)
}

/// Why the build failed: the step that caused it, with its last output, or
/// the daemon's own words.
fn failure(client: &Client, tracker: &Tracker, status: &tonic::Status) -> SolveError {
    if let Some(detail) = connection_lost(status) {
        return SolveError::ConnectionLost {
            addr: client.addr().to_string(),
            detail,
        };
    }
    // A frontend's error may say where in its source it comes from.
    let at = |message: &str| match source::location(status) {
        Some(location) => format!("{location}: {message}"),
        None => message.to_owned(),
    };
    let daemon_says = || SolveError::Failed {
        addr: client.addr().to_string(),
        message: at(status.message()),
    };
    match tracker.failed_step_for(status.message()) {
        // Only cancelled steps seen, but the daemon says why: use that.
        Some(step)
            if step.error.as_deref().is_some_and(is_cancellation)
                && !is_cancellation(status.message()) =>
        {
            daemon_says()
        }
        Some(step) => SolveError::StepFailed {
            name: step.name.clone(),
            error: at(step.error.as_deref().unwrap_or(status.message())),
            logs: step.logs.iter().cloned().collect(),
        },
        None => daemon_says(),
    }
}

/// If `status` is our side's transport failing (not the daemon's answer: those
/// carry no source error), the innermost cause.
fn connection_lost(status: &tonic::Status) -> Option<String> {
    use tonic::Code;
    let mut cause = std::error::Error::source(status)?;
    if !matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
    ) {
        return None;
    }
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    Some(cause.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_manifest_is_told_from_other_push_failures() {
        let failed = |message: &str| SolveError::StepFailed {
            name: "exporting to image".into(),
            error: message.into(),
            logs: Vec::new(),
        };
        let refused = [
            // What BuildKit says of docker-registry's MANIFEST_BLOB_UNKNOWN.
            "failed to push 127.0.0.1:5000/x:1: failed commit on ref \"manifest-sha256:84\": \
             unexpected status from PUT request to http://127.0.0.1:5000/v2/x/manifests/1: 400 Bad Request",
            "manifest blob unknown: blob unknown to registry",
        ];
        for message in refused {
            assert!(failed(message).is_manifest_refused(), "{message}");
        }
        let others = [
            "unexpected status from PUT request to http://r/v2/x/manifests/1: 401 Unauthorized",
            "unexpected status from PUT request to http://r/v2/x/blobs/uploads/u1: 400 Bad Request",
            "process \"/bin/sh -c make\" did not complete successfully: exit code: 2",
        ];
        for message in others {
            assert!(!failed(message).is_manifest_refused(), "{message}");
        }
    }
}
