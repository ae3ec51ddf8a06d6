//! Solving: one `Control.Solve` with its session, exporters and cache options,
//! while `Control.Status` streams progress to a renderer.

pub mod cache;
pub mod output;
pub mod progress;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};
use crate::llb::Definition;
use crate::session::{random_id, ExportFiles, Session};
use crate::wire::moby::buildkit::v1 as control;

pub use cache::{parse_cache_entry, CacheEntry, CacheReport, Direction};
pub use output::{parse_output, Output};
use progress::{is_cancellation, Renderer, Step, Tracker};

/// Everything one solve needs besides the session.
#[derive(Debug, Clone)]
pub struct SolveRequest {
    pub definition: Definition,
    pub outputs: Vec<Output>,
    /// The OCI image config the image exporters write (raw LLB carries none).
    pub image_config: Option<serde_json::Value>,
    pub cache_exports: Vec<CacheEntry>,
    pub cache_imports: Vec<CacheEntry>,
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct Solved {
    /// `containerimage.digest`, `containerimage.config.digest`, `image.name`, …
    pub exporter_response: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    pub duration: Duration,
    pub time_to_first_step: Option<Duration>,
}

impl Solved {
    pub fn image_digest(&self) -> Option<&str> {
        self.exporter_response
            .get("containerimage.digest")
            .map(String::as_str)
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
}

/// Runs `request` on the daemon, serving `session` while it runs and feeding
/// progress to `renderer`. Dropping the returned future cancels the build on
/// the daemon (the Solve call is cancelled with it).
pub async fn solve(
    client: &Client,
    mut session: Session,
    request: SolveRequest,
    renderer: &mut dyn Renderer,
) -> Result<Solved, SolveError> {
    let began = Instant::now();
    let files: BTreeMap<usize, _> = request
        .outputs
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.target().map(|t| (i, t)))
        .collect();
    if !files.is_empty() {
        session.export_files(ExportFiles::new(files));
    }
    let running = session.start(client).await?;

    let config = request.image_config.as_ref().map(|c| c.to_string());
    let exporters: Vec<control::Exporter> = request
        .outputs
        .iter()
        .map(|o| {
            let (kind, attrs) = o.exporter(config.as_deref());
            control::Exporter {
                r#type: kind,
                attrs,
            }
        })
        .collect();
    let entries = |list: &[CacheEntry]| {
        list.iter()
            .map(|c| control::CacheOptionsEntry {
                r#type: c.kind.clone(),
                attrs: c.attrs.clone(),
            })
            .collect()
    };
    let build_ref = random_id();
    let mut solve_request = control::SolveRequest {
        r#ref: build_ref.clone(),
        definition: Some(request.definition.to_pb()),
        session: running.id().to_owned(),
        cache: Some(control::CacheOptions {
            exports: entries(&request.cache_exports),
            imports: entries(&request.cache_imports),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Daemons before v0.13 read only the single, deprecated exporter fields.
    if let [first] = exporters.as_slice() {
        solve_request.exporter_deprecated = first.r#type.clone();
        solve_request.exporter_attrs_deprecated = first.attrs.clone();
    }
    solve_request.exporters = exporters;

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

    let mut tracker = Tracker::new();
    let mut control = client.control();
    let solve_call = control.solve(solve_request);
    tokio::pin!(solve_call);
    let result = loop {
        tokio::select! {
            r = &mut solve_call => break r,
            Some(update) = updates.recv() => {
                let events = tracker.apply(&update);
                renderer.update(&tracker, &update, &events);
            }
        }
    };
    // The status stream ends with the build; give it a moment to flush.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(update) = updates.recv().await {
            let events = tracker.apply(&update);
            renderer.update(&tracker, &update, &events);
        }
    })
    .await;
    status_task.abort();
    renderer.finish(&tracker);
    running.close().await;

    match result {
        Ok(response) => Ok(Solved {
            exporter_response: response.into_inner().exporter_response,
            time_to_first_step: tracker.time_to_first_step(),
            steps: tracker.steps().to_vec(),
            duration: began.elapsed(),
        }),
        Err(status) => Err(match tracker.failed_step() {
            // Only cancelled steps seen, but the daemon says why: use that.
            Some(step)
                if step.error.as_deref().is_some_and(is_cancellation)
                    && !is_cancellation(status.message()) =>
            {
                SolveError::Failed {
                    addr: client.addr().to_string(),
                    message: status.message().to_owned(),
                }
            }
            Some(step) => SolveError::StepFailed {
                name: step.name.clone(),
                error: step
                    .error
                    .clone()
                    .unwrap_or_else(|| status.message().to_owned()),
                logs: step.logs.iter().cloned().collect(),
            },
            None => SolveError::Failed {
                addr: client.addr().to_string(),
                message: status.message().to_owned(),
            },
        }),
    }
}
