//! `strata info`: the daemon's version and its workers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{Client, ClientError};
use crate::wire::moby::buildkit::v1 as control;
use crate::wire::moby::buildkit::v1::types as worker;

/// The daemon's version and workers.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonInfo {
    pub address: String,
    /// e.g. `github.com/moby/buildkit`
    pub package: String,
    pub version: String,
    pub revision: String,
    pub workers: Vec<Worker>,
}

/// One worker (an executor + snapshotter pair) and what it can build.
#[derive(Debug, Clone, Serialize)]
pub struct Worker {
    pub id: String,
    /// `os/arch[/variant]`
    pub platforms: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub gc_policy: Vec<GcPolicy>,
}

/// One rule of the worker's garbage collector.
#[derive(Debug, Clone, Serialize)]
pub struct GcPolicy {
    pub all: bool,
    pub filters: Vec<String>,
    /// Records younger than this are kept; `None` when the rule has no age limit.
    #[serde(with = "opt_secs")]
    pub keep_duration: Option<Duration>,
    /// Cache is trimmed down to this many bytes; 0 means no size limit.
    pub keep_bytes: u64,
}

impl Client {
    /// Asks the daemon for its version (`Control.Info`) and workers (`Control.ListWorkers`).
    pub async fn info(&self) -> Result<DaemonInfo, ClientError> {
        let mut control = self.control();
        let quick = self.answer_within();
        let info = self
            .within("Info", quick, control.info(control::InfoRequest {}))
            .await?
            .into_inner();
        let workers = control.list_workers(control::ListWorkersRequest::default());
        let workers = self
            .within("ListWorkers", quick, workers)
            .await?
            .into_inner();
        let version = info.buildkit_version.unwrap_or_default();
        Ok(DaemonInfo {
            address: self.addr().to_string(),
            package: version.package,
            version: version.version,
            revision: version.revision,
            workers: workers.record.into_iter().map(Worker::from).collect(),
        })
    }
}

impl Client {
    /// How many builds the daemon is running now (`ListenBuildHistory`,
    /// active builds only, then the end); `None` from a daemon without the
    /// history API (dockerd's embedded BuildKit may lack it).
    pub async fn builds_running(&self) -> Result<Option<usize>, ClientError> {
        let mut control = self.control();
        let request = control::BuildHistoryRequest {
            active_only: true,
            early_exit: true,
            ..Default::default()
        };
        let count = async {
            let mut stream = control.listen_build_history(request).await?.into_inner();
            let mut running = 0;
            while let Some(event) = stream.message().await? {
                running +=
                    usize::from(event.r#type == control::BuildHistoryEventType::Started as i32);
            }
            Ok(running)
        };
        match self
            .within("ListenBuildHistory", self.answer_within(), count)
            .await
        {
            Ok(running) => Ok(Some(running)),
            Err(ClientError::Rpc { status, .. }) if status.code() == tonic::Code::Unimplemented => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl From<worker::WorkerRecord> for Worker {
    fn from(w: worker::WorkerRecord) -> Self {
        Worker {
            id: w.id,
            platforms: w
                .platforms
                .iter()
                .map(|p| {
                    let mut s = format!("{}/{}", p.os, p.architecture);
                    if !p.variant.is_empty() {
                        s = format!("{s}/{}", p.variant);
                    }
                    s
                })
                .collect(),
            labels: w.labels.into_iter().collect(),
            gc_policy: w
                .gc_policy
                .into_iter()
                .map(|g| GcPolicy {
                    all: g.all,
                    filters: g.filters,
                    keep_duration: (g.keep_duration > 0)
                        .then(|| Duration::from_nanos(g.keep_duration as u64)),
                    keep_bytes: g.keep_bytes.max(0) as u64,
                })
                .collect(),
        }
    }
}

mod opt_secs {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_secs()),
            None => s.serialize_none(),
        }
    }
}
