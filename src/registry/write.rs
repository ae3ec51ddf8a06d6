//! Writing to a registry: naming an image that is already there under more
//! tags. In its own repository that is one manifest PUT; in another
//! repository of the same registry its blobs are mounted across first (no
//! bytes travel). `strata build` does this when a content key says the image
//! is built.

use bytes::Bytes;
use http::{header, Method, StatusCode};

use super::{sha256_hex, Call, ImageRef, Registry, RegistryError, MANIFEST_TYPES, MAX_DOCUMENT};

/// A manifest or index exactly as the registry serves it.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Bytes,
}

impl Registry {
    /// The manifest `image` names, as served; its absence is an error
    /// naming it as `what` (a manifest, an index).
    pub(super) async fn existing_manifest(
        &self,
        image: &ImageRef,
        what: &str,
    ) -> Result<RawManifest, RegistryError> {
        self.raw_manifest(image)
            .await?
            .ok_or_else(|| RegistryError::NotFound {
                image: image.to_string(),
                what: what.into(),
                detail: String::new(),
            })
    }

    /// The manifest `image` names, as served; none if the registry has none.
    pub async fn raw_manifest(
        &self,
        image: &ImageRef,
    ) -> Result<Option<RawManifest>, RegistryError> {
        let path = format!("manifests/{}", image.reference());
        let response = self.get(image, &path, Some(MANIFEST_TYPES)).await?;
        if response.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self.check(image, "manifest", response).await?;
        let media_type = response
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        let bytes = self.read(image, "manifest", response, MAX_DOCUMENT).await?;
        Ok(Some(RawManifest {
            digest: format!("sha256:{}", sha256_hex(&bytes)),
            media_type,
            bytes,
        }))
    }

    /// The digest of the manifest `image` names, from a HEAD request (the
    /// registry's `Docker-Content-Digest`); none if absent or not said.
    pub async fn manifest_digest(&self, image: &ImageRef) -> Result<Option<String>, RegistryError> {
        let path = format!("manifests/{}", image.reference());
        let headers = vec![(header::ACCEPT, MANIFEST_TYPES.to_owned())];
        let response = self
            .call(image, Call::pull(Method::HEAD, &path, headers))
            .await?;
        if response.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = self.check(image, "manifest", response).await?;
        Ok(response
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    /// Makes `target` name the manifest `source` names (same registry);
    /// returns its digest.
    pub async fn tag(&self, source: &ImageRef, target: &ImageRef) -> Result<String, RegistryError> {
        if source.registry != target.registry {
            return Err(RegistryError::Invalid {
                image: target.to_string(),
                what: "tag".into(),
                reason: format!("{source} is in another registry (tags are made within one)"),
            });
        }
        let raw = self.existing_manifest(source, "manifest").await?;
        if source.repository != target.repository {
            self.copy_children(source, target, &raw).await?;
        }
        let tag = target.tag.as_deref().unwrap_or("latest");
        self.put_manifest(target, tag, &raw).await?;
        Ok(raw.digest)
    }

    /// Makes everything `raw` refers to present in `target`'s repository:
    /// blobs mounted from `source`'s, child manifests of an index copied.
    async fn copy_children(
        &self,
        source: &ImageRef,
        target: &ImageRef,
        raw: &RawManifest,
    ) -> Result<(), RegistryError> {
        let json: serde_json::Value =
            serde_json::from_slice(&raw.bytes).map_err(|e| RegistryError::Invalid {
                image: source.to_string(),
                what: "manifest".into(),
                reason: e.to_string(),
            })?;
        let digests = |key: &str| -> Vec<String> {
            json[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["digest"].as_str().map(str::to_owned))
                .collect()
        };
        let mut blobs = digests("layers");
        blobs.extend(json["config"]["digest"].as_str().map(str::to_owned));
        for digest in blobs {
            self.mount(source, target, &digest).await?;
        }
        for child in digests("manifests") {
            let child_ref = source.with_digest(&child);
            let child_raw = self.existing_manifest(&child_ref, "manifest").await?;
            Box::pin(self.copy_children(source, target, &child_raw)).await?;
            self.put_manifest(target, &child, &child_raw).await?;
        }
        Ok(())
    }

    pub(super) async fn put_manifest(
        &self,
        target: &ImageRef,
        reference: &str,
        raw: &RawManifest,
    ) -> Result<(), RegistryError> {
        let call = Call {
            method: Method::PUT,
            path: format!("manifests/{reference}"),
            headers: vec![(header::CONTENT_TYPE, raw.media_type.clone())],
            body: raw.bytes.clone(),
            scopes: vec![format!("repository:{}:pull,push", target.repository)],
        };
        let response = self.call(target, call).await?;
        self.check(target, "manifest upload", response).await?;
        Ok(())
    }

    /// Mounts blob `digest` from `source`'s repository into `target`'s.
    async fn mount(
        &self,
        source: &ImageRef,
        target: &ImageRef,
        digest: &str,
    ) -> Result<(), RegistryError> {
        let call = Call {
            method: Method::POST,
            path: format!("blobs/uploads/?mount={digest}&from={}", source.repository),
            headers: Vec::new(),
            body: Bytes::new(),
            scopes: vec![
                format!("repository:{}:pull,push", target.repository),
                format!("repository:{}:pull", source.repository),
            ],
        };
        let response = self.call(target, call).await?;
        if response.status == StatusCode::CREATED {
            return Ok(());
        }
        let status = response.status;
        self.check(target, &format!("blob mount {digest}"), response)
            .await?;
        Err(RegistryError::Status {
            image: target.to_string(),
            what: format!("blob mount {digest} from {}", source.repository),
            status,
            detail: " (the registry started an upload instead of mounting)".into(),
        })
    }
}
