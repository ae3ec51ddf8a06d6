//! Source operations: where a graph's filesystems come from.

use std::collections::{BTreeMap, BTreeSet};

use super::state::{Node, State};
use crate::reference::ImageRef;
use crate::wire::pb;

/// The description key BuildKit shows as a step's name in progress output.
pub const CUSTOM_NAME: &str = "llb.customname";

fn source(
    base: &State,
    identifier: String,
    attrs: BTreeMap<String, String>,
    caps: &[&'static str],
    name: Option<&str>,
) -> State {
    let mut description = BTreeMap::new();
    if let Some(name) = name {
        description.insert(CUSTOM_NAME.to_owned(), name.to_owned());
    }
    let mut caps: BTreeSet<&'static str> = caps.iter().copied().collect();
    if !description.is_empty() {
        caps.insert("meta.description");
    }
    let node = Node {
        op: pb::op::Op::Source(pb::SourceOp { identifier, attrs }),
        inputs: Vec::new(),
        platform: base.meta.platform.clone(),
        description,
        caps,
        ignore_cache: false,
        foreign: None,
    };
    base.with_output(node, 0)
}

/// A registry image as the root filesystem.
pub fn image(reference: &ImageRef, name: Option<&str>) -> State {
    image_for(reference, &super::Platform::host(), name)
}

/// Like [`image`], for `platform`: the daemon pulls that platform's variant.
pub fn image_for(reference: &ImageRef, platform: &super::Platform, name: Option<&str>) -> State {
    source(
        &State::scratch().platform(platform.clone()),
        format!("docker-image://{reference}"),
        BTreeMap::new(),
        &["source.image"],
        name,
    )
}

/// An image in an OCI layout on the client machine, read through the
/// session's content store `oci:STORE` (the daemon finds the session from
/// the build's). `manifest` is its digest: layouts are read by digest only.
pub fn oci_layout(store: &str, manifest: &str, platform: &super::Platform) -> State {
    source(
        &State::scratch().platform(platform.clone()),
        format!("oci-layout://strata/mounts@{manifest}"),
        BTreeMap::from([("oci.store".to_owned(), store.to_owned())]),
        &["source.ocilayout"],
        None,
    )
}

/// Options of a local directory source.
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Lets the daemon reuse files from an earlier upload of the same directory.
    pub shared_key_hint: Option<String>,
    /// Shown in progress output.
    pub name: Option<String>,
}

/// A directory on the client machine, sent through the session's FileSync
/// service under `name`.
pub fn local(name: &str, options: &LocalOptions) -> State {
    let mut attrs = BTreeMap::new();
    let mut caps = vec!["source.local"];
    if !options.include.is_empty() {
        attrs.insert(
            "local.includepattern".to_owned(),
            serde_json::to_string(&options.include).expect("strings serialize"),
        );
        caps.push("source.local.includepatterns");
    }
    if !options.exclude.is_empty() {
        attrs.insert(
            "local.excludepatterns".to_owned(),
            serde_json::to_string(&options.exclude).expect("strings serialize"),
        );
        caps.push("source.local.excludepatterns");
    }
    if let Some(hint) = &options.shared_key_hint {
        attrs.insert("local.sharedkeyhint".to_owned(), hint.clone());
        caps.push("source.local.sharedkeyhint");
    }
    source(
        &State::scratch(),
        format!("local://{name}"),
        attrs,
        &caps,
        options.name.as_deref(),
    )
}

/// A git checkout of `url` at `reference` (branch, tag or commit).
/// The secret a git source's token comes from (sent as an http extra header).
pub const GIT_AUTH_TOKEN: &str = "GIT_AUTH_TOKEN";
/// The secret a git source's whole Authorization header comes from.
pub const GIT_AUTH_HEADER: &str = "GIT_AUTH_HEADER";

pub fn git(url: &str, reference: &str, name: Option<&str>) -> State {
    let remote = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(url)
        .trim_start_matches("git@")
        .replacen(':', "/", usize::from(!url.contains("://")));
    let mut identifier = format!("git://{remote}");
    if !reference.is_empty() {
        identifier = format!("{identifier}#{reference}");
    }
    // As BuildKit's Go client does by default: the daemon asks the session for
    // these secrets (missing ones are fine), so credentials never sit in the URL.
    let mut attrs = BTreeMap::from([
        ("git.authtokensecret".to_owned(), GIT_AUTH_TOKEN.to_owned()),
        (
            "git.authheadersecret".to_owned(),
            GIT_AUTH_HEADER.to_owned(),
        ),
    ]);
    let mut caps = vec!["source.git"];
    if url.contains("://") || url.starts_with("git@") {
        attrs.insert("git.fullurl".to_owned(), url.to_owned());
        caps.push("source.git.fullurl");
    }
    source(&State::scratch(), identifier, attrs, &caps, name)
}

/// A file downloaded over HTTP(S), optionally pinned by checksum.
pub fn http(
    url: &str,
    checksum: Option<&str>,
    filename: Option<&str>,
    name: Option<&str>,
) -> State {
    let mut attrs = BTreeMap::new();
    let mut caps = vec!["source.http"];
    if let Some(c) = checksum {
        attrs.insert("http.checksum".to_owned(), c.to_owned());
        caps.push("source.http.checksum");
    }
    if let Some(f) = filename {
        attrs.insert("http.filename".to_owned(), f.to_owned());
    }
    source(&State::scratch(), url.to_owned(), attrs, &caps, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_identifiers() {
        let s = git("https://example.invalid/org/repo.git", "v1", None);
        let node = &s.output.as_ref().unwrap().node;
        let pb::op::Op::Source(src) = &node.op else {
            panic!()
        };
        assert_eq!(src.identifier, "git://example.invalid/org/repo.git#v1");
        assert_eq!(
            src.attrs["git.fullurl"],
            "https://example.invalid/org/repo.git"
        );
    }
}
