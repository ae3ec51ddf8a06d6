//! A graph another client marshalled — a frontend's result, as the gateway
//! returns it with its ref — as a [`State`] later ops build on. Its ops are
//! kept as the bytes they came in, so they keep their digests: the daemon
//! sees the very vertices the frontend's own solve made and shares them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::marshal::{digest_of, Definition};
use super::platform::Platform;
use super::state::{Foreign, Node, Output, State};
use crate::wire::pb;

/// Why a definition could not be built on.
#[derive(Debug, thiserror::Error)]
pub enum ForeignError {
    #[error("an op of the graph cannot be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("an op of the graph names an input it does not hold ({0})")]
    MissingInput(String),
    #[error("the graph does not end in a terminal op with one input")]
    NoTerminal,
}

impl State {
    /// The filesystem `definition` ends in (its terminal op's input), with
    /// default metadata: the caller sets the environment its config says.
    /// An empty definition is scratch.
    pub fn from_definition(definition: &Definition) -> Result<State, ForeignError> {
        let Some((terminal, ops)) = definition.ops().split_last() else {
            return Ok(State::scratch());
        };
        let terminal = pb::Op::decode(terminal.as_ref())?;
        let [head] = terminal.inputs.as_slice() else {
            return Err(ForeignError::NoTerminal);
        };
        let mut nodes: BTreeMap<String, Arc<Node>> = BTreeMap::new();
        // Dependencies come first in a definition: each op's inputs are known.
        for bytes in ops {
            let digest = digest_of(bytes);
            let node = foreign_node(bytes, definition.metadata().get(&digest), &nodes)?;
            nodes.insert(digest, Arc::new(node));
        }
        let node = nodes
            .get(&head.digest)
            .cloned()
            .ok_or_else(|| ForeignError::MissingInput(head.digest.clone()))?;
        Ok(State::scratch().at_output(node, head.index))
    }
}

fn foreign_node(
    bytes: &Bytes,
    metadata: Option<&pb::OpMetadata>,
    nodes: &BTreeMap<String, Arc<Node>>,
) -> Result<Node, ForeignError> {
    let op = pb::Op::decode(bytes.as_ref())?;
    let inputs = op
        .inputs
        .iter()
        .map(|input| {
            let node = nodes
                .get(&input.digest)
                .cloned()
                .ok_or_else(|| ForeignError::MissingInput(input.digest.clone()))?;
            Ok(Output {
                node,
                index: input.index,
            })
        })
        .collect::<Result<_, ForeignError>>()?;
    let platform = op.platform.map_or_else(Platform::host, |p| Platform {
        os: p.os,
        architecture: p.architecture,
        variant: p.variant,
    });
    let metadata = metadata.cloned().unwrap_or_default();
    Ok(Node {
        op: op.op.ok_or(ForeignError::NoTerminal)?,
        inputs,
        platform,
        description: BTreeMap::new(),
        caps: BTreeSet::new(),
        ignore_cache: metadata.ignore_cache,
        foreign: Some(Foreign {
            bytes: bytes.clone(),
            metadata,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llb::{source, Run};

    #[test]
    fn ops_built_on_a_foreign_graph_keep_its_bytes_and_name_its_output() {
        let base = source::local("context", &Default::default())
            .run(Run::shell("make"))
            .marshal();
        let on = State::from_definition(&base).unwrap();
        let child = on.run(Run::shell("make install")).marshal();
        let (base_terminal, base_ops) = base.ops().split_last().unwrap();
        // Every op of the base, byte for byte, then the new one and a terminal.
        assert_eq!(&child.ops()[..base_ops.len()], base_ops);
        assert_eq!(child.ops().len(), base_ops.len() + 2);
        let head = &pb::Op::decode(base_terminal.as_ref()).unwrap().inputs[0];
        let new = pb::Op::decode(child.ops()[base_ops.len()].as_ref()).unwrap();
        assert_eq!(new.inputs[0].digest, head.digest);
        for digest in &base.digests()[..base_ops.len()] {
            assert!(child.metadata().contains_key(digest), "{digest}");
        }
        // Marshalled again, the same bytes.
        assert_eq!(on.marshal().ops()[..base_ops.len()], *base_ops);
    }

    #[test]
    fn an_empty_graph_is_scratch_and_a_torn_one_is_an_error() {
        assert!(State::from_definition(&State::scratch().marshal())
            .unwrap()
            .is_scratch());
        let base = source::local("context", &Default::default())
            .run(Run::shell("make"))
            .marshal();
        // Without its first op (the local source), the exec names an unknown input.
        let mut wire = base.to_pb();
        wire.def.remove(0);
        let torn = Definition::from_pb(wire);
        assert!(matches!(
            State::from_definition(&torn),
            Err(ForeignError::MissingInput(_))
        ));
    }
}
