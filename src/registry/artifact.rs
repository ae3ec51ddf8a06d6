//! Any manifest or index as JSON, not only images: BuildKit's registry cache is
//! an index whose entries are layer blobs, which image resolution would reject.

use super::{sha256_hex, ImageRef, Registry, RegistryError, MANIFEST_TYPES, MAX_DOCUMENT};

impl Registry {
    /// The manifest or index `image` points to: its digest, its size in bytes
    /// as served, and its JSON.
    pub async fn artifact(
        &self,
        image: &ImageRef,
    ) -> Result<(String, u64, serde_json::Value), RegistryError> {
        let path = format!("manifests/{}", image.reference());
        let response = self.get(image, &path, Some(MANIFEST_TYPES)).await?;
        let response = self.check(image, "manifest", response).await?;
        let body = self.read(image, "manifest", response, MAX_DOCUMENT).await?;
        let json = serde_json::from_slice(&body).map_err(|e| RegistryError::Invalid {
            image: image.to_string(),
            what: "manifest".into(),
            reason: e.to_string(),
        })?;
        let digest = format!("sha256:{}", sha256_hex(&body));
        Ok((digest, body.len() as u64, json))
    }
}
