//! Marshalling a [`State`] into BuildKit's `pb.Definition`, deterministically:
//! the same graph always gives the same bytes, so the same digests and cache keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use sha2::{Digest as _, Sha256};

use super::state::{Node, State};
use crate::wire::pb;

/// `sha256:` + hex of the bytes' SHA-256: how BuildKit names an op.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A marshalled build graph: ops in dependency order, then the terminal op.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    ops: Vec<Bytes>,
    metadata: BTreeMap<String, pb::OpMetadata>,
}

impl Definition {
    /// The serialized ops (dependencies first; the last is the terminal op).
    pub fn ops(&self) -> &[Bytes] {
        &self.ops
    }

    /// The digest of every op, in the same order.
    pub fn digests(&self) -> Vec<String> {
        self.ops.iter().map(|b| digest_of(b)).collect()
    }

    /// The decoded op behind `digest`, if it is part of this definition.
    pub fn op(&self, digest: &str) -> Option<pb::Op> {
        self.ops
            .iter()
            .find(|b| digest_of(b) == digest)
            .and_then(|b| pb::Op::decode(b.as_ref()).ok())
    }

    /// Per-op metadata (descriptions, caps), keyed by digest.
    pub fn metadata(&self) -> &BTreeMap<String, pb::OpMetadata> {
        &self.metadata
    }

    /// The wire form, for `Control.Solve`.
    pub fn to_pb(&self) -> pb::Definition {
        pb::Definition {
            def: self.ops.clone(),
            metadata: self.metadata.clone(),
            source: None,
        }
    }

    /// The protobuf bytes, e.g. for `buildctl build` on stdin.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_pb().encode_to_vec()
    }

    /// The definition as the wire carries it (e.g. a frontend's result).
    pub fn from_pb(def: pb::Definition) -> Definition {
        Definition {
            ops: def.def,
            metadata: def.metadata,
        }
    }

    /// Parses a definition from its protobuf bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Definition, prost::DecodeError> {
        let def = pb::Definition::decode(bytes)?;
        Ok(Definition {
            ops: def.def,
            metadata: def.metadata,
        })
    }
}

struct Marshaller {
    /// Digest of each node already marshalled, by address (nodes are shared via Arc).
    done: HashMap<*const Node, String>,
    ops: Vec<Bytes>,
    metadata: BTreeMap<String, pb::OpMetadata>,
}

impl Marshaller {
    fn node(&mut self, node: &Arc<Node>) -> String {
        let key = Arc::as_ptr(node);
        if let Some(d) = self.done.get(&key) {
            return d.clone();
        }
        let inputs = node
            .inputs
            .iter()
            .map(|i| pb::Input {
                digest: self.node(&i.node),
                index: i.index,
            })
            .collect();
        let (bytes, metadata) = match &node.foreign {
            // Its inputs were marshalled from their own bytes: the digests
            // its bytes name are theirs.
            Some(foreign) => (foreign.bytes.clone(), foreign.metadata.clone()),
            None => {
                let op = pb::Op {
                    inputs,
                    op: Some(node.op.clone()),
                    platform: Some(node.platform.to_pb()),
                    constraints: Some(pb::WorkerConstraints::default()),
                };
                (Bytes::from(op.encode_to_vec()), metadata_of(node))
            }
        };
        let digest = digest_of(&bytes);
        if !self.metadata.contains_key(&digest) {
            self.ops.push(bytes);
            self.metadata.insert(digest.clone(), metadata);
        } else {
            merge(self.metadata.get_mut(&digest).expect("present"), node);
        }
        self.done.insert(key, digest.clone());
        digest
    }
}

fn metadata_of(node: &Node) -> pb::OpMetadata {
    pb::OpMetadata {
        ignore_cache: node.ignore_cache,
        description: node.description.clone(),
        caps: node.caps.iter().map(|c| ((*c).to_owned(), true)).collect(),
        ..Default::default()
    }
}

/// Two equal ops reached by different paths: keep the union of what they ask.
fn merge(into: &mut pb::OpMetadata, node: &Node) {
    into.ignore_cache |= node.ignore_cache;
    for (k, v) in &node.description {
        into.description
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    for c in &node.caps {
        into.caps.insert((*c).to_owned(), true);
    }
}

impl State {
    /// The digest of the op this state is an output of: the vertex the
    /// daemon's progress reports it as. `None` for scratch.
    pub fn digest(&self) -> Option<String> {
        let out = self.output.as_ref()?;
        let mut m = Marshaller {
            done: HashMap::new(),
            ops: Vec::new(),
            metadata: BTreeMap::new(),
        };
        Some(m.node(&out.node))
    }

    /// Marshals this state and everything it depends on.
    pub fn marshal(&self) -> Definition {
        let mut m = Marshaller {
            done: HashMap::new(),
            ops: Vec::new(),
            metadata: BTreeMap::new(),
        };
        let Some(out) = &self.output else {
            // Scratch: an empty definition, as BuildKit's client sends it.
            return Definition {
                ops: Vec::new(),
                metadata: BTreeMap::new(),
            };
        };
        let head = m.node(&out.node);
        let terminal = pb::Op {
            inputs: vec![pb::Input {
                digest: head,
                index: out.index,
            }],
            ..Default::default()
        };
        let bytes = Bytes::from(terminal.encode_to_vec());
        let digest = digest_of(&bytes);
        let mut caps: BTreeMap<String, bool> = [("constraints", true), ("platform", true)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        if m.metadata.values().any(|md| !md.description.is_empty()) {
            caps.insert("meta.description".into(), true);
        }
        if m.metadata.values().any(|md| md.ignore_cache) {
            caps.insert("meta.ignorecache".into(), true);
        }
        m.ops.push(bytes);
        m.metadata.insert(
            digest,
            pb::OpMetadata {
                caps,
                ..Default::default()
            },
        );
        Definition {
            ops: m.ops,
            metadata: m.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::exec::{CacheSharing, Mount, Run};
    use super::super::file::{Copy, FileAction};
    use super::super::source::{image, local, LocalOptions};
    use super::super::Platform;
    use super::*;

    fn graph(overlay_name: &str) -> State {
        let p = Platform::host();
        let base = image(
            &"127.0.0.1:5000/strata/debian:bookworm".parse().unwrap(),
            Some("base"),
        );
        let apt =
            base.run(
                Run::shell("apt-get update && apt-get install -y git")
                    .mounts(["/var/cache/apt", "/var/lib/apt"].map(|dir| {
                        Mount::cache(dir, &format!("apt:{p}:{dir}"), CacheSharing::Locked)
                    }))
                    .named("apt: git"),
            );
        let pip = apt
            .env("PIP_NO_INPUT", "1")
            .run(Run::shell("pip install six").mount(Mount::cache(
                "/root/.cache/pip",
                "pip",
                CacheSharing::Locked,
            )));
        let files = local(
            overlay_name,
            &LocalOptions {
                exclude: vec!["*.log".into()],
                ..Default::default()
            },
        );
        pip.dir("/workspace").file(
            vec![FileAction::copy(Copy::new(&files, "/", "."))],
            Some("overlay"),
        )
    }

    #[test]
    fn a_state_digest_is_its_op_in_the_definition() {
        let state = graph("overlay");
        let def = state.marshal();
        let digest = state.digest().unwrap();
        let digests = def.digests();
        // The op before the terminal one is the state's own.
        assert_eq!(digests[digests.len() - 2], digest);
        assert!(State::scratch().digest().is_none());
    }

    #[test]
    fn marshalling_is_deterministic() {
        let a = graph("overlay").marshal();
        let b = graph("overlay").marshal();
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(a.digests(), b.digests());
        // base, apt, pip, local, copy, terminal
        assert_eq!(a.ops().len(), 6);
        let back = Definition::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn dependencies_come_first_and_terminal_last() {
        let def = graph("overlay").marshal();
        let digests = def.digests();
        for (i, d) in digests.iter().enumerate() {
            let op = def.op(d).unwrap();
            for input in &op.inputs {
                let at = digests.iter().position(|x| *x == input.digest).unwrap();
                assert!(at < i, "input {at} listed before its user {i}");
            }
        }
        let terminal = def.op(digests.last().unwrap()).unwrap();
        assert!(terminal.op.is_none());
        assert_eq!(terminal.inputs.len(), 1);
    }

    #[test]
    fn an_overlay_change_leaves_toolchain_digests_alone() {
        let a = graph("overlay").marshal().digests();
        let b = graph("overlay-2").marshal().digests();
        assert_eq!(a[..3], b[..3], "base, apt, pip unchanged");
        assert_ne!(a[3..], b[3..]);
    }

    #[test]
    fn shared_prefixes_marshal_once() {
        let base = image(&"docker.io/library/debian:bookworm".parse().unwrap(), None);
        let x = base.run(Run::shell("true"));
        let y = x.file(vec![FileAction::mkdir("/a", 0o755)], None);
        let z = x.file(vec![FileAction::copy(Copy::new(&y, "/a", "/b"))], None);
        let def = z.marshal();
        // base, run, mkdir, copy, terminal: `x` appears once though reached twice.
        assert_eq!(def.ops().len(), 5);
    }

    #[test]
    fn cache_mounts_and_names_are_on_the_wire() {
        let def = graph("overlay").marshal();
        let digests = def.digests();
        let apt = def.op(&digests[1]).unwrap();
        let Some(pb::op::Op::Exec(exec)) = apt.op else {
            panic!("second op is the apt exec")
        };
        let caches: Vec<_> = exec
            .mounts
            .iter()
            .filter(|m| m.mount_type == pb::MountType::Cache as i32)
            .map(|m| (m.dest.as_str(), m.cache_opt.as_ref().unwrap().sharing))
            .collect();
        assert_eq!(
            caches,
            [
                ("/var/cache/apt", pb::CacheSharingOpt::Locked as i32),
                ("/var/lib/apt", pb::CacheSharingOpt::Locked as i32)
            ]
        );
        assert_eq!(
            def.metadata()[&digests[1]].description["llb.customname"],
            "apt: git"
        );
        assert!(def.metadata()[&digests[1]]
            .caps
            .contains_key("exec.mount.cache"));
    }
}
