//! A multi-platform image, platform by platform. Each platform's manifest
//! records its own key and carries its own key tag, so an index is more
//! than a hit or a miss: when the index's key misses but some platforms'
//! keys hit (one platform's `{arch}` overlay changed, or a step limited to
//! it), only the others are solved, each pushed under its key tag, and
//! strata writes the index from the manifests (as buildx's `imagetools
//! create` merges a multi-node build's).

use std::time::Instant;

use crate::keys::{tags, ContentKey};
use crate::llb::Platform;
use crate::options::{ExporterResponse, Output};
use crate::reference::ImageRef;
use crate::registry::IndexChild;
use crate::solve::progress::Renderer;
use crate::solve::Solved;
use crate::spec::{Job, StepInfo};

use super::prepare::KeyedImage;
use super::{BuildError, Run};

/// A multi-platform job put together from its platforms.
pub(super) struct Assembled {
    /// The index written, and the steps of the platforms solved for it.
    pub solved: Solved,
    /// The solved platforms' lowered steps.
    pub lowered: Vec<StepInfo>,
    /// The platforms found under their key tags (not solved).
    pub found: Vec<Platform>,
}

impl Run<'_> {
    /// `job`'s index from its platforms' key tags, solving only the
    /// platforms not found; none when no platform is found (one solve of
    /// them all writes the index itself) or the job asks for more than the
    /// push (other outputs and cache exports are made by a full solve).
    pub(super) async fn assemble_from_platforms(
        &self,
        job: &Job,
        keyed: &KeyedImage,
        renderer: &mut dyn Renderer,
    ) -> Result<Option<Assembled>, BuildError> {
        let Some(push) = self.only_pushed(job, keyed) else {
            return Ok(None);
        };
        let began = Instant::now();
        let recorded = keyed.recorded();
        let mut digests = Vec::new();
        for (platform, key) in &recorded {
            let one = [(platform.clone(), *key)];
            let found = tags::find(self.registry, push, &job.image, key, &one).await?;
            digests.push(found);
        }
        if digests.iter().all(Option::is_none) {
            return Ok(None);
        }
        let found = recorded
            .iter()
            .zip(&digests)
            .filter(|(_, d)| d.is_some())
            .map(|((p, _), _)| p.clone())
            .collect();
        let mut steps = Vec::new();
        let mut lowered = Vec::new();
        for ((platform, key), digest) in recorded.iter().zip(&mut digests) {
            if digest.is_some() {
                continue;
            }
            let image = keyed.solvable_for(&[platform]);
            let alone = platform_job(job, push, key);
            let solved = self.solve(&alone, &image, key, None, renderer).await?;
            *digest = solved.image_digest().map(str::to_owned);
            steps.extend(solved.steps);
            lowered.extend(image.steps);
        }
        let children: Vec<IndexChild> = recorded
            .iter()
            .zip(digests)
            .filter_map(|((p, _), d)| {
                Some(IndexChild::Image {
                    platform: p.clone(),
                    digest: d?,
                })
            })
            .collect();
        let index_ref = tags::key_ref(push, &job.image, &keyed.key);
        let digest = self.registry.put_index(&index_ref, &children).await?;
        if index_ref != *push {
            self.registry.put_index(push, &children).await?;
        }
        let solved = Solved {
            exported: ExporterResponse::found(digest, Some(push)),
            steps,
            duration: began.elapsed(),
            time_to_first_step: None,
            cache: Vec::new(),
        };
        Ok(Some(Assembled {
            solved,
            lowered,
            found,
        }))
    }

    /// After one solve pushed `job`'s index at `digest`: each platform's
    /// manifest tagged with its key, so a later build whose inputs change
    /// for one platform finds the others. Failing only costs that later
    /// build a full solve: a warning.
    pub(super) async fn tag_platforms(&self, job: &Job, keyed: &KeyedImage, digest: &str) {
        let Some(push) = job.push.as_ref().filter(|_| self.key_tags(keyed)) else {
            return;
        };
        if let Err(e) = self.try_tag_platforms(job, keyed, push, digest).await {
            tracing::warn!(
                "{}: the platforms of {push} are not key-tagged one by one ({e}); a change to \
                 one platform will solve them all",
                job.image
            );
        }
    }

    async fn try_tag_platforms(
        &self,
        job: &Job,
        keyed: &KeyedImage,
        push: &ImageRef,
        digest: &str,
    ) -> Result<(), BuildError> {
        let children = self
            .registry
            .index_manifests(&push.with_digest(digest))
            .await?;
        for (platform, key) in keyed.recorded() {
            let Some((_, child)) = children.iter().find(|(p, _)| *p == platform) else {
                continue;
            };
            let tagged = tags::key_ref(push, &job.image, &key);
            self.registry.tag(&push.with_digest(child), &tagged).await?;
        }
        Ok(())
    }

    /// Key tags stand for this image: on, and the image keyable.
    pub(super) fn key_tags(&self, keyed: &KeyedImage) -> bool {
        self.plan.key_tags && keyed.lowered().unkeyable.is_none()
    }

    /// The push of a multi-platform job that asks for nothing but it, with
    /// key tags usable: what [`Run::assemble_from_platforms`] can assemble.
    fn only_pushed<'j>(&self, job: &'j Job, keyed: &KeyedImage) -> Option<&'j ImageRef> {
        // With attestations, each solve pushes an index of its own (image
        // and attestation manifests): the image is solved whole, one index.
        let usable = keyed.variants.len() > 1
            && self.key_tags(keyed)
            && !self.plan.no_skip
            && !job.attest.any();
        only_the_push(job).filter(|_| usable)
    }
}

/// The job's push, when it asks for nothing else (no other output, no cache
/// export): what a key tag can stand for without solving.
pub(super) fn only_the_push(job: &Job) -> Option<&ImageRef> {
    let push = job.push.as_ref()?;
    let only = job.cache_exports.is_empty()
        && job
            .outputs
            .iter()
            .all(|o| matches!(o, Output::Image { name, .. } if name == push));
    only.then_some(push)
}

/// `job` as one platform pushed alone under its key tag `key`.
fn platform_job(job: &Job, push: &ImageRef, key: &ContentKey) -> Job {
    let tagged = tags::key_ref(push, &job.image, key);
    let outputs = job
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Image {
                name,
                push: true,
                insecure,
                attrs,
                ..
            } if name == push => Some(Output::Image {
                name: tagged.clone(),
                also: Vec::new(),
                push: true,
                insecure: *insecure,
                attrs: attrs.clone(),
            }),
            _ => None,
        })
        .collect();
    Job {
        push: Some(tagged),
        outputs,
        ..job.clone()
    }
}
