//! The key tags of a repository (`REPO:strata-<key>`), in a registry or a
//! docker daemon's store (`--load`): which images built for earlier inputs
//! are still there, and pruning all but the newest few. The current key's
//! tag is always kept.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Serialize;

use super::ContentKey;
use crate::docker::{Docker, DockerError};
use crate::llb::Platform;
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryError};
use crate::units::{format_rfc3339, parse_rfc3339};

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
    Ok(in_order(listed))
}

/// The current tag first, then newest first, unknown ages last.
fn in_order(mut listed: Vec<KeyTag>) -> Vec<KeyTag> {
    let age = |t: &KeyTag| t.created.as_deref().and_then(parse_rfc3339);
    listed.sort_by(|a, b| {
        let rank = |t: &KeyTag| (t.current, age(t).is_some());
        rank(b)
            .cmp(&rank(a))
            .then(age(b).partial_cmp(&age(a)).unwrap_or(Ordering::Equal))
    });
    listed
}

/// `listed` (as ordered) split into the first `keep` and the current one,
/// and the rest.
fn split(listed: Vec<KeyTag>, keep: usize) -> (Vec<KeyTag>, Vec<KeyTag>) {
    let (kept, stale): (Vec<_>, Vec<_>) = listed
        .into_iter()
        .enumerate()
        .partition(|(i, t)| *i < keep || t.current);
    let strip = |v: Vec<(usize, KeyTag)>| v.into_iter().map(|(_, t)| t).collect();
    (strip(kept), strip(stale))
}

/// The key tags of `name`'s repository in `docker`, ordered as [`list`].
pub async fn list_docker(
    docker: &Docker,
    name: &ImageRef,
    current: &ContentKey,
) -> Result<Vec<KeyTag>, DockerError> {
    let repository = familiar(name);
    let prefix = format!("{repository}:{KEY_TAG_PREFIX}");
    let current_tag = current.tag();
    let mut listed = Vec::new();
    for image in docker.images(&format!("{prefix}*")).await? {
        for tag in image.tags.iter().filter(|t| t.starts_with(&prefix)) {
            let Ok(reference) = tag.parse::<ImageRef>() else {
                continue;
            };
            listed.push(KeyTag {
                current: reference.tag.as_deref() == Some(current_tag.as_str()),
                reference,
                digest: image.id.clone(),
                created: Some(format_rfc3339(image.created)),
            });
        }
    }
    Ok(in_order(listed))
}

/// Removes the key tags of `listed` (ordered as [`list_docker`]) past the
/// first `keep`, never the current one. An image goes with its last tag.
pub async fn prune_docker(
    docker: &Docker,
    listed: Vec<KeyTag>,
    keep: usize,
) -> Result<Pruned, DockerError> {
    let (kept, stale) = split(listed, keep);
    for t in &stale {
        docker.remove(&familiar_tagged(&t.reference)).await?;
    }
    Ok(Pruned {
        removed: stale,
        kept,
        shared: Vec::new(),
    })
}

/// `name`'s repository as docker lists it: `docker.io/library/x` is `x`.
fn familiar(name: &ImageRef) -> String {
    match name.registry.as_str() {
        "docker.io" => name
            .repository
            .strip_prefix("library/")
            .unwrap_or(&name.repository)
            .to_owned(),
        _ => name.name(),
    }
}

fn familiar_tagged(reference: &ImageRef) -> String {
    format!("{}:{}", familiar(reference), tag_of(reference))
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
    let (kept, stale) = split(listed, keep);
    let mut pruned = Pruned {
        kept,
        ..Pruned::default()
    };
    let mut protected = other_tags(registry, push).await?;
    for t in &pruned.kept {
        protected.insert(t.digest.clone(), tag_of(&t.reference));
    }
    for stale in stale {
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
