//! `--builders FILE`: a pool as TOML, one `[[node]]` table per buildkitd.
//!
//! ```toml
//! [[node]]
//! name = "a"                       # default: the address
//! addr = "tcp://10.0.0.5:1234"
//! tlsdir = "/etc/strata/tls"       # or ca / cert / key one by one
//! weight = 2                       # its share of the images (default 1)
//! labels = { zone = "eu-1" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Node, PoolError};
use crate::connect::{Addr, TlsOptions};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    node: Vec<NodeEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeEntry {
    name: Option<String>,
    addr: String,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    tlsdir: Option<PathBuf>,
    servername: Option<String>,
    weight: Option<f64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The nodes of the file at `path` (relative TLS paths from its directory).
pub fn load(path: &Path) -> Result<Vec<Node>, PoolError> {
    let text = std::fs::read_to_string(path).map_err(|e| PoolError::File {
        file: path.to_owned(),
        line: 0,
        message: e.to_string(),
    })?;
    parse(path, &text)
}

/// The nodes of `text`, a builders file said to be at `path`.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Node>, PoolError> {
    let at = |offset: Option<usize>, message: String| PoolError::File {
        file: path.to_owned(),
        line: offset.map_or(0, |o| text[..o.min(text.len())].lines().count().max(1)),
        message,
    };
    let file: File = toml::from_str(text)
        .map_err(|e| at(e.span().map(|s| s.start + 1), e.message().trim().to_owned()))?;
    if file.node.is_empty() {
        return Err(at(
            None,
            "no [[node]] tables: a pool needs at least one".into(),
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut nodes: Vec<Node> = Vec::new();
    for entry in file.node {
        let addr: Addr = entry
            .addr
            .parse()
            .map_err(|e| at(text.find(&entry.addr), format!("addr: {e}")))?;
        let name = entry.name.unwrap_or_else(|| entry.addr.clone());
        if nodes.iter().any(|n| n.name == name) {
            return Err(at(
                text.find(&name),
                format!("two nodes are named {name:?}"),
            ));
        }
        let weight = entry.weight.unwrap_or(1.0);
        if !(weight > 0.0 && weight.is_finite()) {
            return Err(at(
                text.find(&entry.addr),
                format!("{name}: weight must be above 0"),
            ));
        }
        let rel = |p: Option<PathBuf>| p.map(|p| dir.join(p));
        nodes.push(Node {
            name,
            addr,
            tls: TlsOptions {
                ca_cert: rel(entry.ca),
                cert: rel(entry.cert),
                key: rel(entry.key),
                server_name: entry.servername,
                dir: rel(entry.tlsdir),
            },
            weight,
            labels: entry.labels,
        });
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nodes_with_their_tls_and_weights() {
        let text = "[[node]]\naddr = \"unix:///run/a.sock\"\n\n[[node]]\nname = \"b\"\naddr = \"tcp://127.0.0.1:1235\"\ntlsdir = \"tls\"\nweight = 2\nlabels = { zone = \"x\" }\n";
        let nodes = parse(Path::new("/etc/pool/builders.toml"), text).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].name, "unix:///run/a.sock");
        assert_eq!(nodes[1].weight, 2.0);
        assert_eq!(
            nodes[1].tls.dir.as_deref(),
            Some(Path::new("/etc/pool/tls"))
        );
        assert_eq!(nodes[1].labels["zone"], "x");
    }

    #[test]
    fn a_bad_file_is_one_line_naming_file_and_line() {
        let bad = |text: &str| parse(Path::new("b.toml"), text).unwrap_err().to_string();
        let e = bad("[[node]]\naddr = \"unix:///a\"\nwieght = 2\n");
        assert!(e.starts_with("b.toml:3: unknown field `wieght`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(bad("").contains("at least one"));
        assert!(bad("[[node]]\naddr = \"ftp://x\"\n").starts_with("b.toml:2: addr:"));
        assert!(bad("[[node]]\naddr = \"unix:///a\"\nweight = 0\n").contains("above 0"));
    }
}
