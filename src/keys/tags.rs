//! Key tags: each pushed image is also tagged `REPO:strata-<key>`, so "is the
//! image for these inputs built?" is one registry request. On a hit the
//! requested tag is pointed at it (a manifest PUT; blobs mounted across
//! repositories where needed) and nothing is solved.

use super::ContentKey;
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryError};

/// `push`'s repository, tagged with `key`.
pub fn key_ref(push: &ImageRef, key: &ContentKey) -> ImageRef {
    push.with_tag(&key.tag())
}

/// If the image of `key` is in `push`'s repository, makes `push` name it too
/// and returns its digest; none when it has to be built.
pub async fn reuse(
    registry: &Registry,
    push: &ImageRef,
    key: &ContentKey,
) -> Result<Option<String>, RegistryError> {
    let tagged = key_ref(push, key);
    let Some(found) = registry.raw_manifest(&tagged).await? else {
        return Ok(None);
    };
    if push.tag != tagged.tag || push.repository != tagged.repository {
        let current = registry.manifest_digest(push).await?;
        if current.as_deref() != Some(found.digest.as_str()) {
            registry.tag(&tagged, push).await?;
        }
    }
    Ok(Some(found.digest))
}
