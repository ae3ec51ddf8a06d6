//! Where a cache mount's artifact lives beside a build cache, and finding it.
//!
//! One artifact per mount: an image-shaped manifest with one layer (what
//! travels of the mount), annotated with the mount's cache id and the
//! fingerprint of what it holds. In a registry it is a tag of the cache's
//! repository, `TAG-mount-TOOL-HASH` (HASH: of the cache id); in a local
//! cache it is an entry of the same layout's `index.json` with that name; in
//! an S3 cache, a pointer object of that name beside content-addressed blobs
//! (see [`super::s3`]).

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::ocilayout::OciLayout;
use crate::options::CacheMountUse;
use crate::options::{CacheExport, CacheImport, S3Cache};
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryError};

/// The annotation naming the cache id an artifact holds.
pub const ID: &str = "dev.strata.mount.id";
/// The annotation with the fingerprint of what the artifact holds (see `probe`).
pub const FINGERPRINT: &str = "dev.strata.mount.fingerprint";

/// Where one mount's artifact is (or goes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Registry {
        reference: ImageRef,
        insecure: bool,
    },
    /// An entry named `name` of the OCI layout at `dir`.
    Local {
        dir: PathBuf,
        name: String,
    },
    /// The pointer `name` in an S3 cache's bucket.
    S3 {
        cache: S3Cache,
        name: String,
    },
}

/// An artifact found where a mount's is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Its manifest's digest.
    pub digest: String,
    pub fingerprint: String,
    /// Its layers' blobs: (digest, size).
    pub layers: Vec<(String, u64)>,
}

impl Artifact {
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(|(_, s)| s).sum()
    }
}

/// Why an artifact could not be used; the build goes on without it.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("no artifact at {0}")]
    Missing(String),
    #[error("{location} is not a strata cache-mount artifact of {id} ({why})")]
    Foreign {
        location: String,
        id: String,
        why: String,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Local(String),
    #[error(transparent)]
    S3(#[from] super::s3::S3ArtifactError),
}

/// `TAG-mount-TOOL-HASH`: a tag (and layout name) per cache id, beside `tag`.
pub fn name(tag: &str, mount: &CacheMountUse) -> String {
    let hash = Sha256::digest(mount.id.as_bytes());
    let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let suffix = format!("-mount-{}-{hex}", mount.tool);
    // A registry tag has at most 128 characters.
    let keep = 128 - suffix.len();
    let tag: String = tag.chars().take(keep).collect();
    format!("{tag}{suffix}")
}

impl Location {
    /// Where `export` puts `mount`'s artifact; `None` for inline caches.
    pub fn of_export(export: &CacheExport, mount: &CacheMountUse) -> Option<Location> {
        match export {
            CacheExport::Registry {
                reference,
                insecure,
                ..
            } => Some(Location::in_registry(reference, *insecure, mount)),
            CacheExport::Local { dest, tag, .. } => Some(Location::Local {
                dir: dest.clone(),
                name: name(tag, mount),
            }),
            CacheExport::S3 { cache, .. } => Some(Location::in_s3(cache, mount)),
            CacheExport::Inline { .. } => None,
        }
    }

    /// Where `import` holds `mount`'s artifact.
    pub fn of_import(import: &CacheImport, mount: &CacheMountUse) -> Location {
        match import {
            CacheImport::Registry {
                reference,
                insecure,
                ..
            } => Location::in_registry(reference, *insecure, mount),
            CacheImport::Local { src, tag, .. } => Location::Local {
                dir: src.clone(),
                name: name(tag, mount),
            },
            CacheImport::S3 { cache, .. } => Location::in_s3(cache, mount),
        }
    }

    /// Beside the cache's (first) manifest name, as a registry tag is.
    fn in_s3(cache: &S3Cache, mount: &CacheMountUse) -> Location {
        let base = cache.names.first().map_or("buildkit", String::as_str);
        Location::S3 {
            cache: cache.clone(),
            name: name(base, mount),
        }
    }

    fn in_registry(cache: &ImageRef, insecure: bool, mount: &CacheMountUse) -> Location {
        let tag = cache.tag.as_deref().unwrap_or("latest");
        Location::Registry {
            reference: cache.with_tag(&name(tag, mount)),
            insecure: insecure || cache.is_loopback(),
        }
    }

    /// The artifact there, checked to be `mount`'s.
    pub async fn find(
        &self,
        registry: &Registry,
        mount: &CacheMountUse,
    ) -> Result<Artifact, ArtifactError> {
        let (digest, manifest) = match self {
            Location::Registry { reference, .. } => match registry.artifact(reference).await {
                Ok((digest, _, json)) => (digest, json),
                Err(RegistryError::NotFound { .. }) => {
                    return Err(ArtifactError::Missing(self.to_string()))
                }
                Err(e) => return Err(e.into()),
            },
            Location::Local { dir, name } => local_manifest(dir, name)
                .map_err(|e| ArtifactError::Local(format!("{}: {e}", dir.display())))?
                .ok_or_else(|| ArtifactError::Missing(self.to_string()))?,
            Location::S3 { cache, name } => super::s3::find(cache, name)
                .await?
                .ok_or_else(|| ArtifactError::Missing(self.to_string()))?,
        };
        self.check(digest, &manifest, mount)
    }

    fn check(
        &self,
        digest: String,
        manifest: &serde_json::Value,
        mount: &CacheMountUse,
    ) -> Result<Artifact, ArtifactError> {
        let foreign = |why: &str| ArtifactError::Foreign {
            location: self.to_string(),
            id: mount.id.clone(),
            why: why.to_owned(),
        };
        let annotations = &manifest["annotations"];
        match annotations[ID].as_str() {
            Some(id) if id == mount.id => {}
            Some(other) => return Err(foreign(&format!("it holds {other}"))),
            None => return Err(foreign("no strata annotations")),
        }
        let layers = manifest["layers"]
            .as_array()
            .ok_or_else(|| foreign("no layers"))?
            .iter()
            .map(|l| {
                let digest = l["digest"]
                    .as_str()
                    .ok_or_else(|| foreign("a layer has no digest"))?;
                Ok((digest.to_owned(), l["size"].as_u64().unwrap_or(0)))
            })
            .collect::<Result<Vec<_>, ArtifactError>>()?;
        Ok(Artifact {
            digest,
            fingerprint: annotations[FINGERPRINT].as_str().unwrap_or("").to_owned(),
            layers,
        })
    }
}

/// The manifest named `name` in the layout at `dir`, and its digest.
fn local_manifest(
    dir: &std::path::Path,
    name: &str,
) -> std::io::Result<Option<(String, serde_json::Value)>> {
    let layout = OciLayout::new(dir);
    let Some(descriptor) = layout.get_tag(name)? else {
        return Ok(None);
    };
    let Some(digest) = descriptor["digest"].as_str() else {
        return Ok(None);
    };
    let bytes = std::fs::read(layout.blob_path(digest)?)?;
    let json = serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(Some((digest.to_owned(), json)))
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Registry { reference, .. } => write!(f, "{reference}"),
            Location::Local { dir, name } => write!(f, "{} ({name})", dir.display()),
            Location::S3 { cache, name } => {
                write!(
                    f,
                    "s3://{}/{}strata/mounts/{name}",
                    cache.bucket, cache.prefix
                )
            }
        }
    }
}
