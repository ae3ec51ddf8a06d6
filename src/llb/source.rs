//! Source operations: where a graph's filesystems come from.

use std::collections::{BTreeMap, BTreeSet};

use super::state::{Node, State};
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
    };
    base.with_output(node, 0)
}

/// Expands an image reference the way Docker does: `debian` is
/// `docker.io/library/debian:latest`; a first part with a `.` or `:` (or
/// `localhost`) is a registry host.
pub fn normalize_image_ref(reference: &str) -> Result<String, String> {
    let r = reference.trim();
    if r.is_empty() || r.contains(char::is_whitespace) {
        return Err(format!("{reference:?} is not a valid image reference"));
    }
    let (name, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        Some(_) => ("docker.io".to_owned(), name.to_owned()),
        None => ("docker.io".to_owned(), format!("library/{name}")),
    };
    // A tag is a `:` after the last `/` (a `:` before it is a registry port).
    let (path, tag) = match path.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p.to_owned(), Some(t.to_owned())),
        _ => (path, None),
    };
    if path.is_empty()
        || path.split('/').any(str::is_empty)
        || path.chars().any(|c| c.is_ascii_uppercase())
    {
        return Err(format!("{reference:?} is not a valid image reference"));
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), Some(d)) => out = format!("{out}:{t}@{d}"),
        (Some(t), None) => out = format!("{out}:{t}"),
        (None, Some(d)) => out = format!("{out}@{d}"),
        (None, None) => out.push_str(":latest"),
    }
    Ok(out)
}

/// A registry image as the root filesystem. `reference` must already be
/// normalized (see [`normalize_image_ref`]).
pub fn image(reference: &str, name: Option<&str>) -> State {
    image_for(reference, &super::Platform::host(), name)
}

/// Like [`image`], for `platform`: the daemon pulls that platform's variant.
pub fn image_for(reference: &str, platform: &super::Platform, name: Option<&str>) -> State {
    source(
        &State::scratch().platform(platform.clone()),
        format!("docker-image://{reference}"),
        BTreeMap::new(),
        &["source.image"],
        name,
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
    let mut attrs = BTreeMap::new();
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
    fn normalizes_like_docker() {
        let n = |r| normalize_image_ref(r).unwrap();
        assert_eq!(n("debian"), "docker.io/library/debian:latest");
        assert_eq!(n("debian:bookworm"), "docker.io/library/debian:bookworm");
        assert_eq!(n("org/app"), "docker.io/org/app:latest");
        assert_eq!(
            n("127.0.0.1:5000/strata/debian:bookworm"),
            "127.0.0.1:5000/strata/debian:bookworm"
        );
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(n("ghcr.io/x/y@sha256:abcd"), "ghcr.io/x/y@sha256:abcd");
        assert!(normalize_image_ref("").is_err());
        assert!(normalize_image_ref("bad ref").is_err());
        assert!(normalize_image_ref("Debian").is_err());
        assert!(normalize_image_ref("a//b").is_err());
    }

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
