//! What a pool places: an image on all its platforms (one solve on one node
//! builds them together), or one platform of a multi-platform image, so
//! each platform goes where it runs natively. A node's plan builds its
//! platforms of such an image pushed under their key tag alone; the index
//! is written once every platform is built (`assemble`).

use crate::build::index::only_the_push;
use crate::llb::{Platform, Platforms};
use crate::options::Output;
use crate::reference::KEY_PLACEHOLDER;
use crate::spec::{BuildPlan, Job};

/// An image on all its platforms (`platform: None`), or on one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unit {
    pub image: String,
    pub platform: Option<Platform>,
}

impl Unit {
    /// `IMAGE`, or `IMAGE (linux/arm64)`: how notes name it.
    pub fn label(&self) -> String {
        match &self.platform {
            Some(p) => format!("{} ({p})", self.image),
            None => self.image.clone(),
        }
    }
}

/// The units of `images` (of `plan`, in order): a platform each for an
/// image [`splits`] says may, with more than one node to place on.
pub(super) fn units_of(plan: &BuildPlan, images: &[String], nodes: usize) -> Vec<Unit> {
    let mut units = Vec::new();
    for job in plan.jobs.iter().filter(|j| images.contains(&j.image)) {
        if nodes > 1 && splits(plan, job) {
            units.extend(job.platforms.iter().map(|p| Unit {
                image: job.image.clone(),
                platform: Some(p.clone()),
            }));
        } else {
            units.push(Unit {
                image: job.image.clone(),
                platform: None,
            });
        }
    }
    units
}

/// Whether `job`'s platforms may be built on different nodes: several, a
/// push and nothing else to make (an index is put together in the registry;
/// other outputs and `--load` want one solve), and key tags on (each
/// platform is pushed under its own). A part with attestations pushes an
/// index of its image and their manifest, which the whole index takes in
/// (see [`super::assemble`]). A Dockerfile image's part is its frontend
/// asked for its platforms alone.
fn splits(plan: &BuildPlan, job: &Job) -> bool {
    job.platforms.len() > 1 && only_the_push(job).is_some() && plan.key_tags && plan.load.is_none()
}

/// The plan node `mine` are placed on builds: their images, each of
/// `partial` on the platforms of `mine` alone, pushed under their key tag.
pub(super) fn node_plan(plan: &BuildPlan, mine: &[Unit], partial: &[String]) -> BuildPlan {
    let mut images: Vec<String> = Vec::new();
    for unit in mine {
        if !images.contains(&unit.image) {
            images.push(unit.image.clone());
        }
    }
    let mut sub = plan.only(&images);
    for job in sub.jobs.iter_mut().filter(|j| partial.contains(&j.image)) {
        let platforms: Vec<Platform> = mine
            .iter()
            .filter(|u| u.image == job.image)
            .filter_map(|u| u.platform.clone())
            .collect();
        if let Ok(platforms) = Platforms::new(platforms) {
            *job = restricted(job, platforms);
        }
    }
    sub
}

/// `job` on `platforms` only, pushed under its key tag alone (the index
/// that names all its platforms is written after).
fn restricted(job: &Job, platforms: Platforms) -> Job {
    let mut job = job.clone();
    if let Some(push) = job.push.take() {
        let keyed = push.with_tag(KEY_PLACEHOLDER);
        for output in &mut job.outputs {
            if let Output::Image { name, .. } = output {
                if *name == push {
                    *name = keyed.clone();
                }
            }
        }
        job.push = Some(keyed);
    }
    job.part_of = Some(job.platforms.clone());
    job.platforms = platforms;
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restricted_job_builds_its_platforms_under_its_key_tag() {
        let push: crate::reference::ImageRef = "127.0.0.1:5000/app:v1".parse().unwrap();
        let job = Job {
            image: "app".into(),
            outputs: vec![Output::Image {
                name: push.clone(),
                also: Vec::new(),
                push: true,
                insecure: true,
                attrs: Default::default(),
            }],
            push: Some(push),
            name: None,
            cache_exports: Vec::new(),
            cache_imports: Vec::new(),
            platforms: "linux/amd64,linux/arm64".parse().unwrap(),
            part_of: None,
            attest: Default::default(),
        };
        let arm: Platforms = "linux/arm64".parse().unwrap();
        let alone = restricted(&job, arm.clone());
        assert_eq!(alone.platforms, arm);
        assert_eq!(alone.part_of, Some(job.platforms.clone()));
        let pushed = alone.push.unwrap();
        assert_eq!(pushed.tag.as_deref(), Some(KEY_PLACEHOLDER));
        assert!(matches!(&alone.outputs[0], Output::Image { name, .. } if *name == pushed));
        let unit = Unit {
            image: "app".into(),
            platform: Some(arm.first().clone()),
        };
        assert_eq!(unit.label(), "app (linux/arm64)");
    }
}
