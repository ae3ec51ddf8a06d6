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

impl Registry {
    /// Writes the index of `children` (each platform's manifest digest, in
    /// `target`'s repository, in the order given) as `target`; returns its
    /// digest. Docker-typed manifests make a Docker manifest list, OCI ones
    /// an OCI index (registries and docker read both).
    pub async fn put_index(
        &self,
        target: &ImageRef,
        children: &[(Platform, String)],
    ) -> Result<String, RegistryError> {
        let mut manifests = Vec::new();
        for (platform, digest) in children {
            let child = target.with_digest(digest);
            let raw = self.existing_manifest(&child, "manifest").await?;
            manifests.push(descriptor(platform, &raw));
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

    /// The platform manifests of the index `index` names (attestations, whose
    /// platform is `unknown/unknown`, left out), in its order.
    pub async fn index_manifests(
        &self,
        index: &ImageRef,
    ) -> Result<Vec<(Platform, String)>, RegistryError> {
        let raw = self.existing_manifest(index, "index").await?;
        let json: serde_json::Value =
            serde_json::from_slice(&raw.bytes).map_err(|e| RegistryError::Invalid {
                image: index.to_string(),
                what: "index".into(),
                reason: e.to_string(),
            })?;
        Ok(platform_entries(&json))
    }
}

/// Each `(platform, digest)` of an index's JSON, but attestations.
fn platform_entries(index: &serde_json::Value) -> Vec<(Platform, String)> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let p = &m["platform"];
            let platform = Platform {
                os: text(&p["os"]),
                architecture: text(&p["architecture"]),
                variant: text(&p["variant"]),
            };
            let digest = m["digest"].as_str()?.to_owned();
            (platform.os != "unknown" && !platform.os.is_empty()).then_some((platform, digest))
        })
        .collect()
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
        let index = serde_json::json!({ "manifests": [
            entry,
            { "digest": "sha256:11", "platform": { "os": "unknown", "architecture": "unknown" } },
        ]});
        assert_eq!(platform_entries(&index), [(arm, "sha256:00".to_owned())]);
    }
}
