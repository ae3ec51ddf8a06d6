//! A frontend the daemon runs (`dockerfile.v0`) instead of an LLB graph.

use std::collections::BTreeMap;

use crate::llb::Definition;

/// A frontend the daemon runs, e.g. `dockerfile.v0` with its options
/// (`filename`, `target`, `build-arg:K`, `label:K`, `context:NAME`…) and
/// the LLB inputs its `context:NAME=input:NAME` options name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frontend {
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    pub inputs: BTreeMap<String, Definition>,
}
