//! Image references (`registry/repository[:tag][@digest]`), parsed once where
//! a user or a spec gives them and passed on typed: the spec's bases and push
//! targets, outputs, cache refs, LLB image sources and the registry client all
//! take an [`ImageRef`]. Normalized as Docker does: `debian` is
//! `docker.io/library/debian:latest`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reference:?} is not a valid image reference: {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: String,
}

/// A normalized image reference. `tag` is `latest` when neither a tag nor a
/// digest was given; with a digest, the digest decides what is pulled.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    /// `docker.io`, `127.0.0.1:5000`, `ghcr.io`…
    pub registry: String,
    /// `library/debian`, `strata/codex`…
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:` + 64 hex digits.
    pub digest: Option<String>,
}

impl ImageRef {
    /// What to ask the manifests endpoint for: the digest if pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host that serves the API (Docker Hub's API lives elsewhere).
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository at another tag (no digest).
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        ImageRef {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same reference pinned to `digest` (the tag is kept for reading).
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            digest: Some(digest.to_owned()),
            ..self.clone()
        }
    }

    /// This reference with a `{key}` tag replaced by `tag` (others unchanged).
    pub fn with_key_tag(&self, tag: &str) -> ImageRef {
        if self.tag.as_deref() == Some(KEY_PLACEHOLDER) {
            self.with_tag(tag)
        } else {
            self.clone()
        }
    }

    /// Whether the registry is on the loopback, where plain http is the norm
    /// (as BuildKit's own tests and CI use it).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

/// Whether a registry host (with or without port) is on the loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host)
        .trim_matches(['[', ']']);
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A path component as the distribution spec has it: alphanumerics joined by
/// `.`, `_`, `__` or runs of `-`.
fn is_path_component(part: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = part.as_bytes();
    !bytes.is_empty()
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes
            .iter()
            .all(|&c| alnum(c) || matches!(c, b'.' | b'_' | b'-'))
        && !part.contains("..")
        && !part.contains("___")
}

/// `host`, `host:port` or `[v6]:port`.
fn is_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.ends_with(':') && !p.contains(']') => (n, Some(p)),
        _ => (host, None),
    };
    let name_ok = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !name.is_empty()
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
    };
    name_ok
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()))
}

/// A tag that stands for the image's content key (`push = "reg/app:{key}"`),
/// filled in by the build ([`ImageRef::with_key_tag`]).
pub const KEY_PLACEHOLDER: &str = "{key}";

fn is_tag(tag: &str) -> bool {
    tag == KEY_PLACEHOLDER
        || tag.len() <= 128
            && tag.bytes().enumerate().all(|(i, c)| {
                c.is_ascii_alphanumeric() || c == b'_' || (i > 0 && matches!(c, b'.' | b'-'))
            })
}

fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(reference: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ReferenceError {
            reference: reference.to_owned(),
            reason: reason.to_owned(),
        };
        let r = reference.trim();
        if r.is_empty() {
            return Err(bad("it is empty"));
        }
        if r.contains(char::is_whitespace) {
            return Err(bad("it contains white space"));
        }
        let (name, digest) = match r.split_once('@') {
            Some((n, d)) if is_sha256_digest(d) => (n, Some(d.to_owned())),
            Some((_, d)) => return Err(bad(&format!("{d:?} is not a sha256 digest"))),
            None => (r, None),
        };
        // A first part with a `.` or `:` (or `localhost`) is a registry host.
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            Some(_) => ("docker.io".to_owned(), name.to_owned()),
            None => ("docker.io".to_owned(), format!("library/{name}")),
        };
        // A tag is a `:` after the last `/` (a `:` before it is a registry port).
        let (repository, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p.to_owned(), Some(t.to_owned())),
            _ => (path, None),
        };
        if repository.is_empty() || repository.split('/').any(str::is_empty) {
            return Err(bad("the repository has an empty part"));
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository names are lowercase"));
        }
        if let Some(part) = repository.split('/').find(|p| !is_path_component(p)) {
            return Err(bad(&format!(
                "{part:?} is not a repository name part (a-z, 0-9 and . _ - between them)"
            )));
        }
        if !is_host(&registry) {
            return Err(bad(&format!("{registry:?} is not a registry host[:port]")));
        }
        match tag.as_deref() {
            Some("") => return Err(bad("the tag is empty")),
            Some(t) if !is_tag(t) => {
                return Err(bad(&format!(
                    "{t:?} is not a tag (up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -)"
                )))
            }
            _ => {}
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            (tag, _) => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// As its canonical string (`registry/repository:tag@digest`).
impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(r: &str) -> String {
        r.parse::<ImageRef>().unwrap().to_string()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(n("debian"), "docker.io/library/debian:latest");
        assert_eq!(n("debian:bookworm"), "docker.io/library/debian:bookworm");
        assert_eq!(n("org/app"), "docker.io/org/app:latest");
        assert_eq!(
            n("127.0.0.1:5000/strata/debian:bookworm"),
            "127.0.0.1:5000/strata/debian:bookworm"
        );
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(n(&format!("ghcr.io/x/y@{d}")), format!("ghcr.io/x/y@{d}"));
        for bad in ["", "bad ref", "Debian", "a//b", "x@sha256:12", "x:"] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn splits_into_the_parts_the_registry_api_needs() {
        let r: ImageRef = "127.0.0.1:5000/strata/debian:bookworm".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "strata/debian");
        assert_eq!(r.reference(), "bookworm");
        assert!(r.is_loopback());
        assert_eq!(
            r.with_tag("cache").to_string(),
            "127.0.0.1:5000/strata/debian:cache"
        );
        let r: ImageRef = "debian".parse().unwrap();
        assert_eq!(r.repository, "library/debian");
        assert_eq!(r.reference(), "latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert!(!r.is_loopback());
        let d = format!("sha256:{}", "b".repeat(64));
        let pinned = r.with_digest(&d);
        assert_eq!(pinned.reference(), d);
        assert_eq!(
            pinned.to_string(),
            format!("docker.io/library/debian:latest@{d}")
        );
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("localhost:5000"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("registry.example.org"));
        assert!(!is_loopback_host("10.0.0.5:5000"));
    }
}
