//! The key tags of a repository (`REPO:strata-<key>`), in a registry or a
//! docker daemon's store (`--load`): which images built for earlier inputs
//! are still there, and pruning all but the newest few. The current key's
//! tag is always kept.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::tags::{is_key_tag_of, PREFIX};
use super::ContentKey;
use crate::docker::{Docker, DockerError};
use crate::llb::Platform;
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryError};
use crate::units::{format_rfc3339, parse_rfc3339};

/// One key tag of a repository.
#[derive(Debug, Clone, Serialize)]
pub struct KeyTag {
    pub reference: ImageRef,
    /// The manifest (or index) it names.
    pub digest: String,
    /// The image config's `created` (when its last layer was made), if read.
    pub created: Option<String>,
    /// It is the tag of the inputs as they are now (the image's, or one
    /// platform's of a multi-platform image: then `platform` says which).
    pub current: bool,
    /// The platform of the current index this tag names alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// `image`'s key tags in `push`'s repository: the current one first, then
/// newest first. Each names the manifest whose bytes it served (digests are
/// computed, never taken from a header). The tags of `platforms` (each
/// platform's own key, for a multi-platform image) are current too, marked
/// with their platform. Fails when the tag list cannot be read whole.
pub async fn list(
    registry: &Registry,
    push: &ImageRef,
    image: &str,
    current: &ContentKey,
    platforms: &[(Platform, ContentKey)],
) -> Result<Vec<KeyTag>, RegistryError> {
    let current_tag = current.tag(image);
    let platform = &platforms.first().expect("an image has a platform").0;
    let platform_of = |tag: &str| {
        platforms
            .iter()
            .find(|(_, key)| key != current && key.tag(image) == tag)
            .map(|(p, _)| p.clone())
    };
    let mut listed = Vec::new();
    for (tag, digest) in tag_digests(registry, push).await? {
        if !is_key_tag_of(&tag, image) {
            continue;
        }
        // Not an image for this platform: still a key tag, of unknown age.
        let created = match registry.config(&push.with_digest(&digest), platform).await {
            Ok((_, config)) => config.created().clone(),
            Err(_) => None,
        };
        let of_platform = platform_of(&tag);
        listed.push(KeyTag {
            current: tag == current_tag || of_platform.is_some(),
            platform: of_platform,
            reference: push.with_tag(&tag),
            digest,
            created,
        });
    }
    Ok(in_order(listed))
}

/// Every tag of `push`'s repository and the digest of the manifest it names,
/// computed from the manifest's bytes (a tag gone meanwhile is left out).
async fn tag_digests(
    registry: &Registry,
    push: &ImageRef,
) -> Result<BTreeMap<String, String>, RegistryError> {
    let mut named = BTreeMap::new();
    for tag in registry.tags(push).await? {
        if let Some(manifest) = registry.raw_manifest(&push.with_tag(&tag)).await? {
            named.insert(tag, manifest.digest);
        }
    }
    Ok(named)
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
    image_name: &str,
    current: &ContentKey,
) -> Result<Vec<KeyTag>, DockerError> {
    let repository = familiar(name);
    let current_tag = current.tag(image_name);
    let mut listed = Vec::new();
    for image in docker.images(&format!("{repository}:{PREFIX}*")).await? {
        for tag in &image.tags {
            let Ok(reference) = tag.parse::<ImageRef>() else {
                continue;
            };
            let ours = familiar(&reference) == repository
                && reference
                    .tag
                    .as_deref()
                    .is_some_and(|t| is_key_tag_of(t, image_name));
            if !ours {
                continue;
            }
            listed.push(KeyTag {
                current: reference.tag.as_deref() == Some(current_tag.as_str()),
                platform: None,
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
        ..Pruned::default()
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
    /// Stale key tags left because they named another manifest (or none)
    /// when checked again right before their delete: a build moved them.
    pub moved: Vec<KeyTag>,
}

/// A stale key tag that stays, and the tag it shares its manifest with (or
/// the tag of an index that lists it: a platform of a multi-platform image).
#[derive(Debug, Serialize)]
pub struct Shared {
    pub tag: KeyTag,
    pub also: String,
}

/// Deletes the key tags of `listed` (as [`list`] orders them) past the
/// first `keep` — never the current one, nor a manifest any other tag of
/// the repository names (kept key tags, other images' key tags, any other
/// tag) or that an index such a tag names lists (each platform of a
/// multi-platform image has its own key tag, and deleting it would break
/// the index). Right before each delete the repository's tags are read again, so
/// a tag a concurrent build moved or added is seen; `removed` hears each
/// removal as it happens, so an error later loses no report of it.
pub async fn prune(
    registry: &Registry,
    push: &ImageRef,
    listed: Vec<KeyTag>,
    keep: usize,
    mut removed: impl FnMut(&KeyTag),
) -> Result<Pruned, RegistryError> {
    let (kept, stale) = split(listed, keep);
    let doomed: BTreeSet<String> = stale.iter().map(|t| tag_of(&t.reference)).collect();
    let mut pruned = Pruned {
        kept,
        ..Pruned::default()
    };
    let mut listed_by = BTreeMap::new();
    for stale in stale {
        if pruned.removed.iter().any(|r| r.digest == stale.digest) {
            removed(&stale); // went with the same manifest
            pruned.removed.push(stale);
            continue;
        }
        let now = tag_digests(registry, push).await?;
        if now.get(&tag_of(&stale.reference)) != Some(&stale.digest) {
            pruned.moved.push(stale);
            continue;
        }
        let staying: BTreeMap<&String, &String> = now
            .iter()
            .filter(|(tag, _)| !doomed.contains(*tag))
            .collect();
        let also = match staying.iter().find(|(_, digest)| ***digest == stale.digest) {
            Some((tag, _)) => Some((*tag).clone()),
            None => listing_index(registry, push, &staying, &stale.digest, &mut listed_by).await?,
        };
        if let Some(also) = also {
            pruned.shared.push(Shared { tag: stale, also });
            continue;
        }
        registry.delete_manifest(push, &stale.digest).await?;
        removed(&stale);
        pruned.removed.push(stale);
    }
    Ok(pruned)
}

/// The tag among `staying` naming an index that lists manifest `digest`;
/// `listed_by` keeps each manifest's children, read once.
async fn listing_index(
    registry: &Registry,
    push: &ImageRef,
    staying: &BTreeMap<&String, &String>,
    digest: &str,
    listed_by: &mut BTreeMap<String, Vec<String>>,
) -> Result<Option<String>, RegistryError> {
    for (tag, index) in staying {
        if !listed_by.contains_key(*index) {
            let children = registry.index_manifests(&push.with_digest(index)).await?;
            let children = children.into_iter().map(|(_, d)| d).collect();
            listed_by.insert((*index).clone(), children);
        }
        if listed_by[*index].iter().any(|child| child == digest) {
            return Ok(Some((*tag).clone()));
        }
    }
    Ok(None)
}

fn tag_of(reference: &ImageRef) -> String {
    reference.tag.clone().unwrap_or_default()
}
