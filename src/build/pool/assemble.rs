//! A multi-platform image built in parts over a pool (each node its
//! platforms, pushed under their key tags): the index of every platform's
//! manifest written with strata's registry client, as buildx's multi-node
//! builders merge with `imagetools create`, and the parts folded into one
//! [`Built`].

use crate::build::{BuildError, Built};
use crate::keys::{index_key, tags, ContentKey};
use crate::llb::Platform;
use crate::options::ExporterResponse;
use crate::registry::{IndexChild, Registry};
use crate::solve::Solved;
use crate::spec::Job;

/// The image of `job` from its `parts` (each a node's build of some of
/// its platforms): its index pushed under its key tag and push target.
pub(super) async fn assemble(
    registry: &Registry,
    job: &Job,
    parts: Vec<Built>,
) -> Result<Built, BuildError> {
    let keys: Vec<(Platform, ContentKey)> = job
        .platforms
        .iter()
        .filter_map(|p| {
            let keyed = parts.iter().flat_map(|b| &b.platform_keys);
            keyed.clone().find(|(q, _)| q == p).cloned()
        })
        .collect();
    let key = index_key(keys.iter().map(|(p, k)| (p, k)));
    let push = job.push.as_ref().expect("split jobs push");
    let push = push.with_key_tag(&key.tag(&job.image));
    let mut children = Vec::new();
    for part in &parts {
        children.extend(manifests_of(registry, part).await?);
    }
    // The platforms in the job's order, then the attestations about them.
    children.sort_by_key(|child| match child {
        IndexChild::Image { platform, .. } => job.platforms.iter().position(|q| q == platform),
        IndexChild::Attestation { .. } => Some(usize::MAX),
    });
    let key_ref = tags::key_ref(&push, &job.image, &key);
    let digest = registry.put_index(&key_ref, &children).await?;
    if key_ref != push {
        registry.put_index(&push, &children).await?;
    }
    Ok(folded(job, push, key, keys, digest, parts))
}

/// The manifests a part pushed: its one manifest, or the entries of the
/// index it pushed (for several platforms, or one with its attestations).
async fn manifests_of(registry: &Registry, part: &Built) -> Result<Vec<IndexChild>, BuildError> {
    let (Some(pushed), Some(digest)) = (&part.pushed, part.solved.image_digest()) else {
        return Ok(Vec::new());
    };
    if let Some(children) = registry.index_children(&pushed.with_digest(digest)).await? {
        return Ok(children);
    }
    let platform = match part.platform_keys.as_slice() {
        [(platform, _)] => platform.clone(),
        _ => return Ok(Vec::new()),
    };
    Ok(vec![IndexChild::Image {
        platform,
        digest: digest.to_owned(),
    }])
}

/// The parts as one image: its key, push and index; their steps, cache
/// reports and mounts together; every node that built a part.
fn folded(
    job: &Job,
    push: crate::reference::ImageRef,
    key: ContentKey,
    platform_keys: Vec<(Platform, ContentKey)>,
    digest: String,
    parts: Vec<Built>,
) -> Built {
    let mut solved = Solved {
        exported: ExporterResponse::found(digest, Some(&push)),
        steps: Vec::new(),
        duration: Default::default(),
        time_to_first_step: None,
        cache: Vec::new(),
    };
    let (mut lowered, mut mounts, mut found, mut nodes) = (vec![], vec![], vec![], vec![]);
    let up_to_date = parts.iter().all(|p| p.up_to_date);
    let frontend = parts.iter().any(|p| p.frontend);
    for part in parts {
        solved.steps.extend(part.solved.steps);
        solved.cache.extend(part.solved.cache);
        solved.duration = solved.duration.max(part.solved.duration);
        lowered.extend(part.lowered);
        mounts.extend(part.mounts);
        found.extend(part.platforms_found);
        if part.up_to_date && !up_to_date {
            found.extend(part.platform_keys.into_iter().map(|(p, _)| p));
        }
        for node in part.nodes {
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
    }
    Built {
        image: job.image.clone(),
        pushed: Some(push),
        key,
        key_tagged: true,
        up_to_date,
        solved,
        lowered,
        loaded: None,
        frontend,
        mounts,
        nodes,
        platforms_found: found,
        platform_keys,
    }
}
