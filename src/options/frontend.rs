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
    /// Each registry `FROM` as a client without frontend inputs names it
    /// (`NAME` → `docker-image://REF@DIGEST`, the digest the inputs pin):
    /// how buildctl and buildx are given the same base in a benchmark.
    pub pinned_froms: BTreeMap<String, String>,
}

impl Frontend {
    /// The options for a client that cannot send frontend inputs: those
    /// naming inputs left out, each registry `FROM` as a pinned
    /// `docker-image://` context.
    pub fn attrs_without_inputs(&self) -> BTreeMap<String, String> {
        let named_input = |k: &str| {
            let name = k
                .strip_prefix("context:")
                .or_else(|| k.strip_prefix("input-metadata:"));
            name.is_some_and(|n| self.inputs.contains_key(n))
        };
        let mut attrs: BTreeMap<String, String> = self
            .attrs
            .iter()
            .filter(|(k, _)| !named_input(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, image) in &self.pinned_froms {
            attrs.insert(format!("context:{name}"), image.clone());
        }
        attrs
    }
}
