//! Image references, split into the parts the registry API needs.

use std::fmt;
use std::str::FromStr;

use super::RegistryError;
use crate::llb::source::normalize_image_ref;

/// `registry/repository[:tag][@digest]`, normalized the way Docker does
/// (`debian` is `docker.io/library/debian:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
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
}

impl FromStr for ImageRef {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| RegistryError::BadReference {
            reference: s.to_owned(),
            reason,
        };
        let normalized = normalize_image_ref(s).map_err(bad)?;
        let (name, digest) = match normalized.split_once('@') {
            Some((n, d)) => (n, Some(d.to_owned())),
            None => (normalized.as_str(), None),
        };
        let (registry, path) = name
            .split_once('/')
            .ok_or_else(|| bad("no repository".into()))?;
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) => (r.to_owned(), Some(t.to_owned())),
            None => (path.to_owned(), None),
        };
        if let Some(d) = &digest {
            if !d.starts_with("sha256:") || d.len() != 71 {
                return Err(bad(format!("{d:?} is not a sha256 digest")));
            }
        }
        Ok(ImageRef {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
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

    #[test]
    fn splits_normalized_references() {
        let r: ImageRef = "127.0.0.1:5000/strata/debian:bookworm".parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "strata/debian");
        assert_eq!(r.reference(), "bookworm");
        let r: ImageRef = "debian".parse().unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/debian");
        assert_eq!(r.reference(), "latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let d = format!("sha256:{}", "a".repeat(64));
        let r: ImageRef = format!("localhost:5000/x@{d}").parse().unwrap();
        assert_eq!(r.reference(), d);
        assert!("localhost:5000/x@sha256:12".parse::<ImageRef>().is_err());
        assert!("".parse::<ImageRef>().is_err());
    }
}
