//! `env`, `workdir` and `user`, as image settings or as toolchain steps: they
//! change what later steps inherit and the image config, and add no layer.

use crate::llb::{Platform, State};

/// The variables a Dockerfile's `ARG TARGETPLATFORM`… give a `RUN`, by
/// name, for `platform`. Not `BUILDPLATFORM`: the builder is chosen after
/// the LLB is written (and keyed), so what it is cannot be in the graph.
pub(super) fn target_vars(platform: &Platform) -> [(&'static str, String); 4] {
    [
        ("TARGETPLATFORM", platform.to_string()),
        ("TARGETOS", platform.os.clone()),
        ("TARGETARCH", platform.architecture.clone()),
        ("TARGETVARIANT", platform.variant.clone()),
    ]
}

/// `state` with the platform's [`target_vars`] for the steps that follow
/// (kept out of the image config: see `config::finish`).
pub(super) fn target_platform(state: State, platform: &Platform) -> State {
    target_vars(platform)
        .iter()
        .fold(state, |state, (k, v)| state.env(k, v))
}

/// Sets each variable in order; a value may use `$NAME` / `${NAME}` of earlier ones.
pub(super) fn env(state: State, vars: &[(String, String)]) -> State {
    vars.iter().fold(state, |state, (k, v)| {
        let value = expand(v, &state);
        state.env(k, &value)
    })
}

/// Expands `$NAME` and `${NAME}` from `state`'s environment (unknown: empty).
fn expand(value: &str, state: &State) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(state.get_env(name).unwrap_or(""));
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}
