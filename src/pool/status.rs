//! `strata pool status`: each node asked, at once and under one deadline,
//! for its version, workers and platforms (`Info`, `ListWorkers`), its cache
//! (`DiskUsage`) and the builds it runs (`ListenBuildHistory`). A node that
//! accepts connections but never answers is reported down when the deadline
//! passes; it never holds the others up.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Node, Pool};
use crate::client::Client;

/// What one node answered, or why it did not.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: String,
    pub reachable: bool,
    /// Why it is not reachable.
    pub error: Option<String>,
    pub version: Option<String>,
    pub workers: usize,
    /// `os/arch[/variant]` of every worker.
    pub platforms: Vec<String>,
    /// Bytes of build cache it holds.
    pub cache_bytes: Option<u64>,
    /// Builds running on it now (none known from a daemon without the
    /// build-history API).
    pub builds_in_flight: Option<usize>,
    /// Cache records in use now: builds in flight hold them.
    pub records_in_use: Option<usize>,
    /// From connecting to the `Info` answer.
    pub probe_ms: Option<f64>,
}

/// Every node of `pool`, each probed under `deadline`, with its cache.
pub async fn status(pool: &Pool, deadline: Duration) -> Vec<NodeStatus> {
    let each = pool.nodes.iter().map(|node| probe(node, deadline, true));
    futures::future::join_all(each).await
}

/// Every node's health and platforms, without its cache (which placement
/// does not need and a large cache makes slow to list).
pub async fn health(pool: &Pool, deadline: Duration) -> Vec<NodeStatus> {
    let each = pool.nodes.iter().map(|node| probe(node, deadline, false));
    futures::future::join_all(each).await
}

async fn probe(node: &Node, deadline: Duration, with_cache: bool) -> NodeStatus {
    let mut status = NodeStatus {
        name: node.name.clone(),
        address: node.addr.to_string(),
        reachable: false,
        error: None,
        version: None,
        workers: 0,
        platforms: Vec::new(),
        cache_bytes: None,
        builds_in_flight: None,
        records_in_use: None,
        probe_ms: None,
    };
    let began = Instant::now();
    let asked = async {
        let client = Client::connect_within(node.addr.clone(), &node.tls, deadline).await?;
        let info = client.info().await?;
        let probe_ms = began.elapsed().as_secs_f64() * 1000.0;
        let (usage, builds) = match with_cache {
            true => (
                Some(client.disk_usage(&[]).await?),
                client.builds_running().await?,
            ),
            false => (None, None),
        };
        Ok::<_, crate::client::ClientError>((info, usage, builds, probe_ms))
    };
    match tokio::time::timeout(deadline, asked).await {
        Err(_) => status.error = Some(format!("no answer within {deadline:?}")),
        Ok(Err(e)) => status.error = Some(e.to_string()),
        Ok(Ok((info, usage, builds, probe_ms))) => {
            status.reachable = true;
            status.version = Some(info.version);
            status.workers = info.workers.len();
            status.platforms = info
                .workers
                .iter()
                .flat_map(|w| w.platforms.iter().cloned())
                .collect();
            status.platforms.dedup();
            status.builds_in_flight = builds;
            status.cache_bytes = usage.as_ref().map(|u| u.total);
            status.records_in_use = usage.map(|u| u.records.iter().filter(|r| r.in_use).count());
            status.probe_ms = Some(probe_ms);
        }
    }
    status
}
