//! The key tags of a repository (`REPO:strata-<key>`): which images built
//! for earlier inputs are still there, and pruning all but the newest few.
//! The current key's tag is always kept.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ContentKey;
use crate::llb::Platform;
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryError};

/// The prefix every key tag has.
pub const KEY_TAG_PREFIX: &str = "strata-";

/// One key tag of a repository.
#[derive(Debug, Clone, Serialize)]
pub struct KeyTag {
    pub reference: ImageRef,
    /// The manifest (or index) it names.
    pub digest: String,
    /// The image config's `created` (when its last layer was made), if read.
    pub created: Option<String>,
    /// It is the tag of the inputs as they are now.
    pub current: bool,
}

/// The key tags of `push`'s repository: the current one first, then newest first.
pub async fn list(
    registry: &Registry,
    push: &ImageRef,
    current: &ContentKey,
    platform: &Platform,
) -> Result<Vec<KeyTag>, RegistryError> {
    let current_tag = current.tag();
    let mut listed = Vec::new();
    for tag in registry.tags(push).await? {
        if !tag.starts_with(KEY_TAG_PREFIX) {
            continue;
        }
        let reference = push.with_tag(&tag);
        let (digest, created) = match registry.config(&reference, platform).await {
            Ok((resolved, config)) => (
                resolved.index_digest.unwrap_or(resolved.digest),
                config.created().clone(),
            ),
            // Not an image for this platform: still a key tag, of unknown age.
            Err(_) => match registry.manifest_digest(&reference).await? {
                Some(digest) => (digest, None),
                None => continue,
            },
        };
        listed.push(KeyTag {
            reference,
            digest,
            created,
            current: tag == current_tag,
        });
    }
    // RFC 3339 times in UTC sort as text; unknown ages last.
    listed.sort_by(|a, b| {
        (b.current, b.created.is_some(), &b.created).cmp(&(
            a.current,
            a.created.is_some(),
            &a.created,
        ))
    });
    Ok(listed)
}

/// What [`prune`] did.
#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    pub removed: Vec<KeyTag>,
    pub kept: Vec<KeyTag>,
    /// Stale key tags left because another tag names the same manifest: a
    /// registry deletes manifests, and every tag naming one with it.
    pub shared: Vec<Shared>,
}

/// A stale key tag that stays, and the tag it shares its manifest with.
#[derive(Debug, Serialize)]
pub struct Shared {
    pub tag: KeyTag,
    pub also: String,
}

/// Deletes the key tags of `listed` (as [`list`] orders them) past the
/// first `keep` — never the current one, nor a manifest another kept or
/// non-key tag of the repository names.
pub async fn prune(
    registry: &Registry,
    push: &ImageRef,
    listed: Vec<KeyTag>,
    keep: usize,
) -> Result<Pruned, RegistryError> {
    let mut pruned = Pruned::default();
    let (kept, stale): (Vec<_>, Vec<_>) = listed
        .into_iter()
        .enumerate()
        .partition(|(i, t)| *i < keep || t.current);
    pruned.kept = kept.into_iter().map(|(_, t)| t).collect();
    let mut protected = other_tags(registry, push).await?;
    for t in &pruned.kept {
        protected.insert(t.digest.clone(), tag_of(&t.reference));
    }
    for (_, stale) in stale {
        if let Some(by) = protected.get(&stale.digest) {
            pruned.shared.push(Shared {
                tag: stale,
                also: by.clone(),
            });
        } else if pruned.removed.iter().any(|r| r.digest == stale.digest) {
            pruned.removed.push(stale); // went with the same manifest
        } else {
            registry.delete_manifest(push, &stale.digest).await?;
            pruned.removed.push(stale);
        }
    }
    Ok(pruned)
}

/// The manifests the repository's other (non-key) tags name → a tag naming each.
async fn other_tags(
    registry: &Registry,
    push: &ImageRef,
) -> Result<BTreeMap<String, String>, RegistryError> {
    let mut named = BTreeMap::new();
    for tag in registry.tags(push).await? {
        if tag.starts_with(KEY_TAG_PREFIX) {
            continue;
        }
        let reference = push.with_tag(&tag);
        if let Some(digest) = registry.manifest_digest(&reference).await? {
            named.entry(digest).or_insert(tag);
        }
    }
    Ok(named)
}

fn tag_of(reference: &ImageRef) -> String {
    reference.tag.clone().unwrap_or_default()
}
