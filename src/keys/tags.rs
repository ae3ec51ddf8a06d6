//! Key tags: each pushed image is also tagged `REPO:strata-IMAGE-<key>`, so
//! "is the image for these inputs built?" is one registry request. On a hit
//! the requested tag is pointed at it (a manifest PUT; blobs mounted across
//! repositories where needed) and nothing is solved.
//!
//! A tag is only the registry's word. The image's config records its key
//! (label [`KEY_LABEL`]), and a tag whose image does not record this key is
//! never taken for a hit. The image's name is in the tag, so images that
//! push into one repository each know their own key tags (`images prune`
//! of one never takes another's).

use sha2::{Digest, Sha256};

use super::ContentKey;
use crate::llb::Platform;
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryError};

/// The image config label that records an image's content key.
pub const KEY_LABEL: &str = "dev.strata.key";

/// What every key tag starts with.
pub const PREFIX: &str = "strata-";

/// A tag is at most 128 characters: the image's part of it at most this many.
const MAX_NAME: usize = 128 - PREFIX.len() - 1 - 32;

/// The start of `image`'s key tags: `strata-IMAGE-`. A name too long for a
/// tag is cut and ends in 8 hex digits of its digest, so two long names
/// sharing a start still differ.
pub fn prefix(image: &str) -> String {
    if image.len() <= MAX_NAME {
        return format!("{PREFIX}{image}-");
    }
    let digest = Sha256::digest(image.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let cut = &image[..MAX_NAME - 9];
    format!("{PREFIX}{cut}.{hex}-")
}

/// `tag` is one of `image`'s key tags: its prefix, then exactly 32
/// lowercase hex digits.
pub fn is_key_tag_of(tag: &str, image: &str) -> bool {
    tag.strip_prefix(&prefix(image)).is_some_and(|rest| {
        rest.len() == 32 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// `push`'s repository, tagged with `image`'s `key`.
pub fn key_ref(push: &ImageRef, image: &str, key: &ContentKey) -> ImageRef {
    push.with_tag(&key.tag(image))
}

/// The image `image`'s `key` tag names in `push`'s repository, if there is
/// one and it records, for each platform of `recorded`, that platform's key
/// in its config: its digest. A multi-platform image records each
/// platform's own key (not the index key), so a platform's manifest is the
/// same whether it was built alone or in an index, and can be found and
/// reused by itself.
pub async fn find(
    registry: &Registry,
    push: &ImageRef,
    image: &str,
    key: &ContentKey,
    recorded: &[(Platform, ContentKey)],
) -> Result<Option<String>, RegistryError> {
    let tagged = key_ref(push, image, key);
    let Some(found) = registry.raw_manifest(&tagged).await? else {
        return Ok(None);
    };
    let pinned = push.with_digest(&found.digest);
    for (platform, expected) in recorded {
        let recorded = recorded_key(registry, &pinned, platform).await?;
        if recorded.as_deref() != Some(expected.to_string().as_str()) {
            tracing::warn!(
                "{tagged} does not record key {expected} for {platform} in its config (label \
                 {KEY_LABEL}): not taken for a hit; building"
            );
            return Ok(None);
        }
    }
    Ok(Some(found.digest))
}

/// The key the config of `pinned`'s `platform` manifest records, if any.
async fn recorded_key(
    registry: &Registry,
    pinned: &ImageRef,
    platform: &Platform,
) -> Result<Option<String>, RegistryError> {
    match registry.config(pinned, platform).await {
        Ok((_, config)) => Ok(config
            .config()
            .as_ref()
            .and_then(|c| c.labels().as_ref())
            .and_then(|labels| labels.get(KEY_LABEL).cloned())),
        Err(
            RegistryError::Invalid { .. }
            | RegistryError::NotFound { .. }
            | RegistryError::NoPlatform { .. },
        ) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes `push` name `digest`, the image [`find`] found under `key`'s tag
/// (nothing to do when `push` is that tag or names it already).
pub async fn point(
    registry: &Registry,
    push: &ImageRef,
    image: &str,
    key: &ContentKey,
    digest: &str,
) -> Result<(), RegistryError> {
    let tagged = key_ref(push, image, key);
    if push.tag != tagged.tag || push.repository != tagged.repository {
        let current = registry.raw_manifest(push).await?.map(|m| m.digest);
        if current.as_deref() != Some(digest) {
            registry.tag(&push.with_digest(digest), push).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_tags_name_their_image_and_no_other() {
        let key = "0123456789abcdef0123456789abcdef";
        assert!(is_key_tag_of(&format!("strata-app-{key}"), "app"));
        assert!(!is_key_tag_of(&format!("strata-app-x-{key}"), "app"));
        assert!(!is_key_tag_of(&format!("strata-app-{key}"), "app-x"));
        assert!(!is_key_tag_of(&format!("strata-app-{key}0"), "app"));
        assert!(!is_key_tag_of(
            &format!("strata-app-{}", key.to_uppercase()),
            "app"
        ));
        assert!(!is_key_tag_of(&format!("strata-{key}"), "app"));
        let long = "a".repeat(200);
        let other = format!("{}b", "a".repeat(199));
        let tag = format!("{}{key}", prefix(&long));
        assert_eq!(tag.len(), 128);
        assert!(is_key_tag_of(&tag, &long));
        assert!(!is_key_tag_of(&tag, &other));
    }
}
