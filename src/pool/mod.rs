//! Builder pools: several buildkitd nodes behind one command.
//!
//! - a [`Pool`] is given as several `--addr` (or `BUILDKIT_HOST` as a comma
//!   list) or as `--builders FILE` ([`builders`]);
//! - [`status`]: each node probed under a deadline (`strata pool status`);
//! - [`place`]: which node builds which image (rendezvous hashing with
//!   bounded load, keyed by stable image identity).

pub mod builders;
pub mod place;
pub mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{Client, ClientError, Daemon};
use crate::connect::{Addr, TlsOptions};

/// One buildkitd of a pool.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its stable name: placement hashes it (default: its address).
    pub name: String,
    pub addr: Addr,
    pub tls: TlsOptions,
    /// Its share of the images, relative to the others'.
    pub weight: f64,
    pub labels: BTreeMap<String, String>,
}

impl Node {
    /// A short name for progress lines ([`label`]).
    pub fn label(&self) -> String {
        label(&self.name)
    }
}

/// A node name made short for people: a socket's file stem
/// (`buildkitd-node2`), a TCP address's `host:port`, else the name.
pub fn label(name: &str) -> String {
    let rest = name.split_once("://").map_or(name, |(_, r)| r);
    match name.starts_with("unix://") {
        true => std::path::Path::new(rest)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| rest.to_owned()),
        false => rest.to_owned(),
    }
}

/// The nodes one command builds on.
#[derive(Debug, Clone)]
pub struct Pool {
    pub nodes: Vec<Node>,
    /// How long a node may take to accept and answer.
    pub timeout: Duration,
    /// How images are placed on the nodes.
    pub placement: place::Placement,
    /// A registry repository every node exports each image's cache to
    /// (`REPO:TAG-IMAGE`) and imports from: an image placed on another node
    /// than its parent, or moved off a lost node, is not built cold.
    pub cache: Option<crate::reference::ImageRef>,
}

/// Why a pool could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// `builders.toml:3: unknown field …` (line 0: the file as a whole).
    #[error("{}{}: {message}", file.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
    File {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

impl Pool {
    /// A pool of `addrs`, all reached with `tls`, weight 1 each.
    pub fn of_addrs(addrs: Vec<Addr>, tls: &TlsOptions, timeout: Duration) -> Pool {
        let nodes = addrs
            .into_iter()
            .map(|addr| Node {
                name: addr.to_string(),
                addr,
                tls: tls.clone(),
                weight: 1.0,
                labels: BTreeMap::new(),
            })
            .collect();
        Pool {
            nodes,
            timeout,
            placement: place::Placement::default(),
            cache: None,
        }
    }

    /// The pool `--builders FILE` describes; `tls` (the command line's TLS
    /// flags) fills in what a node does not say itself.
    pub fn load(path: &Path, timeout: Duration, tls: &TlsOptions) -> Result<Pool, PoolError> {
        let mut nodes = builders::load(path)?;
        for node in &mut nodes {
            node.tls = node.tls.or(tls);
        }
        Ok(Pool {
            nodes,
            timeout,
            placement: place::Placement::default(),
            cache: None,
        })
    }

    /// `ask` put to every node at once, each answer beside its node, in the
    /// pool's order: one node down does not hold up or hide the others.
    pub async fn each<'a, T, F, Fut>(&'a self, ask: F) -> Vec<(&'a Node, Result<T, ClientError>)>
    where
        F: Fn(&'a Node, Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let asked = self.nodes.iter().map(|node| {
            let ask = &ask;
            async move {
                let client =
                    Client::connect_within(node.addr.clone(), &node.tls, self.timeout).await;
                let answer = match client {
                    Ok(client) => ask(node, client).await,
                    Err(e) => Err(e),
                };
                (node, answer)
            }
        });
        futures::future::join_all(asked).await
    }

    /// Each node as a daemon connected to when first needed.
    pub fn daemons(&self) -> Vec<Daemon> {
        self.nodes
            .iter()
            .map(|n| Daemon::new(n.addr.clone(), n.tls.clone(), self.timeout))
            .collect()
    }
}
