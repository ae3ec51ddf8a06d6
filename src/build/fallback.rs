//! `--keep-going`: when an image fails, the nearest image of its `from`
//! chain that is built (its key tag, or the chain's base image) and the
//! steps that are missing from it — so a runner can start from that image
//! and run those steps at task start instead of not starting at all.

use std::collections::BTreeMap;

use serde::Serialize;

use super::prepare::Prepared;
use super::{BuildError, Built};
use crate::keys::{tags, ContentKey};
use crate::reference::ImageRef;
use crate::registry::Registry;
use crate::spec::{Base, Spec, StepInfo};

/// An image that failed to build.
#[derive(Debug)]
pub struct Failed {
    pub image: String,
    pub key: ContentKey,
    pub error: BuildError,
    pub fallback: Fallback,
}

/// Where a runner can start instead of the image that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Fallback {
    /// The ancestor image of the spec that is built, or none: the base image
    /// of the chain (or scratch, when `reference` is none too).
    pub image: Option<String>,
    /// The image to start from: the ancestor's key tag, else the pinned base.
    pub reference: Option<ImageRef>,
    /// The steps of the failed image (and of the ancestors between) that
    /// `reference` does not contain, in order.
    pub steps: Vec<StepInfo>,
}

/// What is known about each image of the run while looking for a fallback.
pub(super) struct Known<'a> {
    pub spec: &'a Spec,
    pub registry: &'a Registry,
    pub prepared: &'a Prepared,
    /// The images this run built.
    pub built: BTreeMap<&'a str, &'a Built>,
    /// The images this run tried and failed.
    pub failed: Vec<&'a str>,
    pub key_tags: bool,
}

impl Known<'_> {
    /// The fallback of image `name`, which failed.
    pub async fn fallback(&self, name: &str) -> Fallback {
        let image = self.spec.image(name).expect("a planned image");
        let steps = &self.prepared.images[name].lowered().steps;
        for ancestor in self.spec.from_chain(image).skip(1) {
            if let Some(reference) = self.built_ref(&ancestor.name).await {
                let baked = &self.prepared.images[&ancestor.name].lowered().steps;
                return Fallback {
                    image: Some(ancestor.name.clone()),
                    reference: Some(reference),
                    steps: missing(steps, baked),
                };
            }
        }
        let root = self
            .spec
            .from_chain(image)
            .last()
            .expect("a chain has its image");
        let reference = match &root.base {
            Base::Image(reference) => Some(
                self.prepared
                    .bases
                    .get(reference)
                    .map_or_else(|| reference.clone(), |base| base.pinned.clone()),
            ),
            Base::From(_) | Base::Scratch | Base::Dockerfile(_) => None,
        };
        Fallback {
            image: None,
            reference,
            steps: steps.clone(),
        }
    }

    /// Where image `name` can be pulled from as built for this run's inputs:
    /// its key tag, when this run pushed it or its repository has it.
    async fn built_ref(&self, name: &str) -> Option<ImageRef> {
        if let Some(built) = self.built.get(name) {
            let pushed = built.pushed.as_ref()?;
            return Some(if built.key_tagged {
                tags::key_ref(pushed, name, &built.key)
            } else {
                pushed.clone()
            });
        }
        if self.failed.contains(&name) || !self.key_tags {
            return None;
        }
        let push = self.spec.image(name)?.push.as_ref()?;
        let keyed = &self.prepared.images[name];
        let key = &keyed.key;
        let found = tags::find(self.registry, push, name, key, &keyed.recorded()).await;
        match found {
            Ok(Some(digest)) => Some(tags::key_ref(push, name, key).with_digest(&digest)),
            _ => None,
        }
    }
}

/// The steps of `all` that `baked` does not have.
fn missing(all: &[StepInfo], baked: &[StepInfo]) -> Vec<StepInfo> {
    all.iter()
        .filter(|s| !baked.iter().any(|b| b.digest == s.digest))
        .cloned()
        .collect()
}
