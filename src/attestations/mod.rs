//! Reading back what the daemon attached to an image: its index's
//! attestation manifests (one per platform, see [`IndexChild`]), their
//! in-toto statements, and the two predicates strata asks for ([`spdx`]
//! packages, [`provenance`] materials).

pub mod provenance;
pub mod spdx;

use serde::Serialize;

use crate::llb::Platform;
use crate::options::Attestations;
use crate::reference::ImageRef;
use crate::registry::{IndexChild, Registry, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{image}: not in its registry")]
    NotFound { image: String },
    #[error("{image}: bad {what}: {reason}")]
    Invalid {
        image: String,
        what: String,
        reason: String,
    },
}

/// One platform's image and what is attested about it.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformAttestations {
    pub platform: Platform,
    /// The image manifest's digest.
    pub image: String,
    /// The attestation manifest's digest (none: nothing attested).
    pub manifest: Option<String>,
    pub statements: Vec<Statement>,
}

/// One in-toto statement (a layer of the attestation manifest).
#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    pub predicate_type: String,
    pub predicate: Predicate,
}

/// What a statement says, for the predicates strata reads.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicate {
    Sbom(Vec<spdx::Package>),
    Provenance(Vec<provenance::Material>),
    /// A predicate type strata does not read.
    Other,
}

impl Predicate {
    /// The predicate of `predicate_type` out of `predicate`'s JSON.
    fn of(predicate_type: &str, predicate: &serde_json::Value) -> Predicate {
        if predicate_type == spdx::PREDICATE_TYPE {
            Predicate::Sbom(spdx::packages(predicate))
        } else if provenance::is_provenance(predicate_type) {
            Predicate::Provenance(provenance::materials(predicate))
        } else {
            Predicate::Other
        }
    }

    /// `N packages` / `1 material` / `not read by strata`.
    pub fn summary(&self) -> String {
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        match self {
            Predicate::Sbom(packages) => count(packages.len(), "package"),
            Predicate::Provenance(materials) => count(materials.len(), "material"),
            Predicate::Other => "not read by strata".to_owned(),
        }
    }
}

/// Each platform of `image` with its attestations, in the index's order; an
/// image that is a single manifest has none (one entry, nothing attested).
pub async fn read(
    registry: &Registry,
    image: &ImageRef,
) -> Result<Vec<PlatformAttestations>, AttestationError> {
    let (digest, document) = document(registry, image, "index").await?;
    let Some(children) = IndexChild::all_of(&document) else {
        return Ok(vec![PlatformAttestations {
            platform: config_platform(registry, image, &document).await?,
            image: digest,
            manifest: None,
            statements: Vec::new(),
        }]);
    };
    let mut platforms = Vec::new();
    for child in &children {
        let IndexChild::Image { platform, digest } = child else {
            continue;
        };
        let manifest = children.iter().find_map(|c| match c {
            IndexChild::Attestation { of, digest: d } if of == digest => Some(d.clone()),
            _ => None,
        });
        let statements = match &manifest {
            Some(m) => statements(registry, image, m).await?,
            None => Vec::new(),
        };
        platforms.push(PlatformAttestations {
            platform: platform.clone(),
            image: digest.clone(),
            manifest,
            statements,
        });
    }
    Ok(platforms)
}

/// Whether every platform of `image` carries what `asked` asks for (its
/// predicate types, from the attestation manifests' layer annotations; the
/// statements are not fetched): an image found under its key tag without
/// them is solved again rather than taken for a hit.
pub async fn cover(
    registry: &Registry,
    image: &ImageRef,
    asked: &Attestations,
) -> Result<bool, AttestationError> {
    let (_, document) = document(registry, image, "index").await?;
    let Some(children) = IndexChild::all_of(&document) else {
        return Ok(!asked.any());
    };
    for child in &children {
        let IndexChild::Image { digest, .. } = child else {
            continue;
        };
        let attestation = children.iter().find_map(|c| match c {
            IndexChild::Attestation { of, digest: d } if of == digest => Some(d),
            _ => None,
        });
        let types = match attestation {
            Some(d) => predicate_types(registry, &image.with_digest(d)).await?,
            None => Vec::new(),
        };
        let has = |wanted: fn(&str) -> bool| types.iter().any(|t| wanted(t));
        let sbom = |t: &str| t == spdx::PREDICATE_TYPE;
        if (asked.provenance.is_some() && !has(provenance::is_provenance))
            || (asked.sbom.is_some() && !has(sbom))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The predicate types an attestation manifest's layers are annotated with.
async fn predicate_types(
    registry: &Registry,
    manifest: &ImageRef,
) -> Result<Vec<String>, AttestationError> {
    let (_, json) = document(registry, manifest, "attestation manifest").await?;
    Ok(json["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["annotations"]["in-toto.io/predicate-type"].as_str())
        .map(str::to_owned)
        .collect())
}

/// The statements of attestation manifest `digest`, one per layer.
async fn statements(
    registry: &Registry,
    image: &ImageRef,
    digest: &str,
) -> Result<Vec<Statement>, AttestationError> {
    let at = image.with_digest(digest);
    let (_, manifest) = document(registry, &at, "attestation manifest").await?;
    let mut out = Vec::new();
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let Some(digest) = layer["digest"].as_str() else {
            continue;
        };
        let blob = registry.blob(image, digest).await?;
        let statement: serde_json::Value =
            serde_json::from_slice(&blob).map_err(|e| invalid(image, "in-toto statement", e))?;
        let predicate_type = statement["predicateType"].as_str().unwrap_or_default();
        out.push(Statement {
            predicate: Predicate::of(predicate_type, &statement["predicate"]),
            predicate_type: predicate_type.to_owned(),
        });
    }
    Ok(out)
}

/// The digest and JSON of the manifest (or index) `image` names.
async fn document(
    registry: &Registry,
    image: &ImageRef,
    what: &str,
) -> Result<(String, serde_json::Value), AttestationError> {
    let raw = registry
        .raw_manifest(image)
        .await?
        .ok_or_else(|| AttestationError::NotFound {
            image: image.to_string(),
        })?;
    let json = serde_json::from_slice(&raw.bytes).map_err(|e| invalid(image, what, e))?;
    Ok((raw.digest, json))
}

/// The platform a single-manifest image's config names.
async fn config_platform(
    registry: &Registry,
    image: &ImageRef,
    manifest: &serde_json::Value,
) -> Result<Platform, AttestationError> {
    let digest = manifest["config"]["digest"].as_str().unwrap_or_default();
    let config: serde_json::Value = serde_json::from_slice(&registry.blob(image, digest).await?)
        .map_err(|e| invalid(image, "image config", e))?;
    let text = |k: &str| config[k].as_str().unwrap_or_default().to_owned();
    Ok(Platform {
        os: text("os"),
        architecture: text("architecture"),
        variant: text("variant"),
    })
}

fn invalid(image: &ImageRef, what: &str, e: impl std::fmt::Display) -> AttestationError {
    AttestationError::Invalid {
        image: image.to_string(),
        what: what.to_owned(),
        reason: e.to_string(),
    }
}
