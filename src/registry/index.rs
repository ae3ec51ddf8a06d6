//! Writing an image index from manifests already in a repository: how a
//! multi-platform image is put together when its platforms were pushed one
//! by one (some found under their key tags, others solved on their own or
//! on other pool nodes), as buildx's `imagetools create` merges the
//! manifests of a multi-node build.

use bytes::Bytes;

use super::{ImageRef, RawManifest, Registry, RegistryError};
use crate::llb::Platform;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The annotation BuildKit puts on an attestation manifest's index entry …
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// … and the one naming the image manifest it is about.
const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// An entry of an image index: a platform's image manifest, or the
/// attestation manifest about one (BuildKit's `attestation-manifest`, whose
/// platform is `unknown/unknown`: never an image to pull or list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexChild {
    Image { platform: Platform, digest: String },
    Attestation { of: String, digest: String },
}

impl IndexChild {
    pub fn digest(&self) -> &str {
        match self {
            IndexChild::Image { digest, .. } | IndexChild::Attestation { digest, .. } => digest,
        }
    }

    /// Every entry of an index's JSON, in its order; none if it is not an
    /// index (a manifest has `layers`, not `manifests`).
    pub fn all_of(index: &serde_json::Value) -> Option<Vec<IndexChild>> {
        let entries = index["manifests"].as_array()?;
        Some(entries.iter().filter_map(IndexChild::of_entry).collect())
    }

    fn of_entry(entry: &serde_json::Value) -> Option<IndexChild> {
        let digest = entry["digest"].as_str()?.to_owned();
        let annotations = &entry["annotations"];
        if annotations[REFERENCE_TYPE] == "attestation-manifest" {
            let of = annotations[REFERENCE_DIGEST].as_str()?.to_owned();
            return Some(IndexChild::Attestation { of, digest });
        }
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let p = &entry["platform"];
        let platform = Platform {
            os: text(&p["os"]),
            architecture: text(&p["architecture"]),
            variant: text(&p["variant"]),
        };
        (platform.os != "unknown" && !platform.os.is_empty())
            .then_some(IndexChild::Image { platform, digest })
    }

    /// The entry that stands for it in an index, `raw` being its manifest.
    fn descriptor(&self, raw: &RawManifest) -> serde_json::Value {
        match self {
            IndexChild::Image { platform, .. } => descriptor(platform, raw),
            IndexChild::Attestation { of, .. } => serde_json::json!({
                "mediaType": raw.media_type,
                "digest": raw.digest,
                "size": raw.bytes.len(),
                "annotations": { REFERENCE_DIGEST: of, REFERENCE_TYPE: "attestation-manifest" },
                "platform": { "architecture": "unknown", "os": "unknown" },
            }),
        }
    }
}

impl Registry {
    /// Writes the index of `children` (manifests in `target`'s repository,
    /// in the order given) as `target`; returns its digest. Docker-typed
    /// manifests make a Docker manifest list, OCI ones an OCI index
    /// (registries and docker read both).
    pub async fn put_index(
        &self,
        target: &ImageRef,
        children: &[IndexChild],
    ) -> Result<String, RegistryError> {
        let mut manifests = Vec::new();
        for child in children {
            let at = target.with_digest(child.digest());
            let raw = self.existing_manifest(&at, "manifest").await?;
            manifests.push(child.descriptor(&raw));
        }
        let media_type = index_type(manifests.iter());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": manifests,
        });
        let bytes = Bytes::from(serde_json::to_vec(&index).expect("JSON values serialize"));
        let raw = RawManifest {
            digest: format!("sha256:{}", super::sha256_hex(&bytes)),
            media_type: media_type.to_owned(),
            bytes,
        };
        let tag = target.tag.as_deref().unwrap_or("latest");
        self.put_manifest(target, tag, &raw).await?;
        Ok(raw.digest)
    }

    /// The entries of the index `image` names; none when it names a manifest.
    pub async fn index_children(
        &self,
        image: &ImageRef,
    ) -> Result<Option<Vec<IndexChild>>, RegistryError> {
        let raw = self.existing_manifest(image, "index").await?;
        let json: serde_json::Value =
            serde_json::from_slice(&raw.bytes).map_err(|e| RegistryError::Invalid {
                image: image.to_string(),
                what: "index".into(),
                reason: e.to_string(),
            })?;
        Ok(IndexChild::all_of(&json))
    }

    /// The platform manifests of the index `index` names (attestations left
    /// out), in its order.
    pub async fn index_manifests(
        &self,
        index: &ImageRef,
    ) -> Result<Vec<(Platform, String)>, RegistryError> {
        let children = self.index_children(index).await?.unwrap_or_default();
        Ok(children
            .into_iter()
            .filter_map(|child| match child {
                IndexChild::Image { platform, digest } => Some((platform, digest)),
                IndexChild::Attestation { .. } => None,
            })
            .collect())
    }
}

/// The index entry of one platform's manifest.
fn descriptor(platform: &Platform, raw: &RawManifest) -> serde_json::Value {
    let mut platform_json = serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
    });
    if !platform.variant.is_empty() {
        platform_json["variant"] = platform.variant.clone().into();
    }
    serde_json::json!({
        "mediaType": raw.media_type,
        "digest": raw.digest,
        "size": raw.bytes.len(),
        "platform": platform_json,
    })
}

/// A Docker manifest list when every entry is a Docker manifest, else an OCI index.
fn index_type<'a>(mut entries: impl Iterator<Item = &'a serde_json::Value>) -> &'static str {
    let docker = entries.all(|m| {
        m["mediaType"]
            .as_str()
            .is_some_and(|t| t.starts_with("application/vnd.docker."))
    });
    if docker {
        DOCKER_LIST
    } else {
        OCI_INDEX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(media_type: &str) -> RawManifest {
        RawManifest {
            digest: "sha256:00".into(),
            media_type: media_type.into(),
            bytes: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn an_index_entry_names_its_platform_and_the_list_type_follows_the_manifests() {
        let arm: Platform = "linux/arm/v7".parse().unwrap();
        let entry = descriptor(&arm, &raw("application/vnd.oci.image.manifest.v1+json"));
        assert_eq!(entry["platform"]["variant"], "v7");
        assert_eq!(entry["size"], 2);
        let amd: Platform = "linux/amd64".parse().unwrap();
        let docker = descriptor(
            &amd,
            &raw("application/vnd.docker.distribution.manifest.v2+json"),
        );
        assert!(docker["platform"].get("variant").is_none());
        assert_eq!(index_type([&docker].into_iter()), DOCKER_LIST);
        assert_eq!(index_type([&docker, &entry].into_iter()), OCI_INDEX);
        let attestation = IndexChild::Attestation {
            of: "sha256:00".into(),
            digest: "sha256:11".into(),
        };
        let index = serde_json::json!({ "manifests": [
            entry,
            attestation.descriptor(&raw("application/vnd.oci.image.manifest.v1+json")),
        ]});
        let children = IndexChild::all_of(&index).unwrap();
        assert_eq!(
            children,
            [
                IndexChild::Image {
                    platform: arm,
                    digest: "sha256:00".to_owned()
                },
                IndexChild::Attestation {
                    of: "sha256:00".into(),
                    digest: "sha256:00".into()
                }
            ]
        );
        assert_eq!(index["manifests"][1]["platform"]["os"], "unknown");
        assert!(IndexChild::all_of(&serde_json::json!({"layers": []})).is_none());
    }
}
