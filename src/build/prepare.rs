//! Before anything is solved: the images lowered to LLB with their base
//! images pinned by digest, and each one's content key.

use std::collections::BTreeMap;

use super::{BuildError, CA_SECRET_ID};
use crate::keys::{content_key, tags, ContentKey};
use crate::llb::Platform;
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryOptions};
use crate::session::DockerAuth;
use crate::spec::{Base, BaseImage, BuildPlan, ImageGraph, LowerOptions, LoweredImage};

/// An image lowered, with its content key.
pub(super) type KeyedImage = (LoweredImage, ContentKey);

/// What a build knows before it solves anything.
pub(super) struct Prepared {
    /// The plan's images and every image they are built `from`, by name.
    pub images: BTreeMap<String, KeyedImage>,
    /// The registry base images they stand on, pinned.
    pub bases: BTreeMap<ImageRef, BaseImage>,
}

/// The registry client a build reads base images and cache sizes with.
pub(super) fn registry(plan: &BuildPlan, auth: &DockerAuth) -> Registry {
    Registry::new(RegistryOptions {
        insecure: plan.insecure_registries.clone(),
        auth: Some(auth.clone()),
        timeout: None,
    })
}

/// [`registry`] with the user's docker credentials.
pub fn registry_from_env(plan: &BuildPlan) -> Registry {
    let auth = DockerAuth::from_env().with_insecure_hosts(&plan.insecure_registries);
    registry(plan, &auth)
}

/// Lowers the plan's images to LLB, after fetching their base images'
/// configs (raw LLB carries no image config: the base's ENV PATH, WORKDIR…
/// come from the registry). Returns them in the order of `plan.jobs`.
pub async fn lower(plan: &BuildPlan) -> Result<Vec<LoweredImage>, BuildError> {
    let registry = registry_from_env(plan);
    let plan = on_built_parents(plan, &registry).await?;
    let mut prepared = prepare(&plan, &registry).await?;
    Ok(plan
        .images()
        .into_iter()
        .filter_map(|name| prepared.images.remove(&name))
        .map(|(image, key)| recording_key(image, &key))
        .collect())
}

/// `image` as it is solved: its config (or, for a Dockerfile image, the
/// frontend's labels) records its key ([`tags::KEY_LABEL`]), since a key
/// tag is taken for a hit only when the image it names says it has that
/// key. Added after the key is computed, so the key does not cover itself.
pub(super) fn recording_key(mut image: LoweredImage, key: &ContentKey) -> LoweredImage {
    match &mut image.graph {
        ImageGraph::Frontend(frontend) => {
            let label = format!("label:{}", tags::KEY_LABEL);
            frontend.attrs.insert(label, key.to_string());
        }
        ImageGraph::Llb(llb) => {
            let mut config = llb.config.config().clone().unwrap_or_default();
            let mut labels = config.labels().clone().unwrap_or_default();
            labels.insert(tags::KEY_LABEL.to_owned(), key.to_string());
            config.set_labels(Some(labels));
            llb.config.set_config(Some(config));
        }
    }
    image
}

/// `plan` with the images built `from` Dockerfile images starting from
/// those as their key tags say they were pushed (for keys and LLB without
/// a build, which would push them first).
async fn on_built_parents(plan: &BuildPlan, registry: &Registry) -> Result<BuildPlan, BuildError> {
    if plan.parents.is_empty() {
        return Ok(plan.clone());
    }
    let keyed = prepare(&plan.parents_first(), registry).await?;
    let mut pushed = BTreeMap::new();
    for parent in &plan.parents {
        let (Some(push), Some((lowered, key))) = (&parent.name, keyed.images.get(&parent.image))
        else {
            continue;
        };
        let tagged = tags::key_ref(push, &parent.image, key);
        match tags::find(registry, push, &parent.image, key, &lowered.platform).await? {
            Some(digest) => pushed.insert(parent.image.clone(), tagged.with_digest(&digest)),
            None => {
                return Err(BuildError::ParentNotBuilt {
                    parent: parent.image.clone(),
                    reference: tagged.to_string(),
                })
            }
        };
    }
    Ok(plan.rebase_on(&pushed))
}

/// Lowers images `names` (in that order) with their bases pinned; returns
/// the pinned bases too.
async fn lower_with(
    plan: &BuildPlan,
    registry: &Registry,
    names: &[String],
) -> Result<(Vec<LoweredImage>, BTreeMap<ImageRef, BaseImage>), BuildError> {
    let spec = &plan.spec;
    let bases = base_configs(plan, names, registry).await?;
    let options = LowerOptions {
        ca_cert: plan.ca_cert.as_ref().map(|_| CA_SECRET_ID.to_owned()),
        platform: plan.platform.clone(),
        git_commits: super::git::commits(spec, names).await?,
    };
    Ok((spec.lower_all(names, &bases, &options)?, bases))
}

/// An image's content key, and why it cannot stand for the image if it cannot.
#[derive(Debug, Clone)]
pub struct ImageKey {
    pub image: String,
    pub key: ContentKey,
    pub unkeyable: Option<String>,
}

/// The content key of each image the plan builds, in the plan's order. Reads
/// the base images' manifests (to pin them) and git refs, never solves.
pub async fn keys(plan: &BuildPlan) -> Result<Vec<ImageKey>, BuildError> {
    let registry = registry_from_env(plan);
    let plan = on_built_parents(plan, &registry).await?;
    let mut prepared = prepare(&plan, &registry).await?;
    Ok(plan
        .images()
        .into_iter()
        .filter_map(|image| {
            let (lowered, key) = prepared.images.remove(&image)?;
            Some(ImageKey {
                image,
                key,
                unkeyable: lowered.unkeyable,
            })
        })
        .collect())
}

/// The plan's images and every image they are built `from` (a child's key
/// holds its parent's), lowered and keyed.
pub(super) async fn prepare(plan: &BuildPlan, registry: &Registry) -> Result<Prepared, BuildError> {
    let closure = plan.spec.closure(&plan.images())?;
    let (lowered, bases) = lower_with(plan, registry, &closure).await?;
    let mut keyed: BTreeMap<String, KeyedImage> = BTreeMap::new();
    // The closure lists parents before their children.
    for image in lowered {
        let parent = plan
            .parent_of(&image.name)
            .and_then(|parent| keyed.get(parent).map(|(_, key)| key));
        let key = content_key(&image, parent)?;
        keyed.insert(image.name.clone(), (image, key));
    }
    Ok(Prepared {
        images: keyed,
        bases,
    })
}

/// The configs of the bases `names` stand on, each for the platform it builds for.
async fn base_configs(
    plan: &BuildPlan,
    names: &[String],
    registry: &Registry,
) -> Result<BTreeMap<ImageRef, BaseImage>, BuildError> {
    let mut bases = BTreeMap::new();
    for name in plan.spec.closure(names)? {
        let image = plan.spec.image(&name).expect("closure names images");
        let references = match &image.base {
            Base::Image(reference) => vec![reference.clone()],
            Base::Dockerfile(d) => d.froms.iter().map(|(_, r)| r.clone()).collect(),
            Base::From(_) | Base::Scratch => continue,
        };
        let platform = plan
            .platform
            .clone()
            .or_else(|| image.platform.clone())
            .unwrap_or_else(Platform::host);
        for reference in references {
            if bases.contains_key(&reference) {
                continue;
            }
            let (resolved, config) = registry.config(&reference, &platform).await?;
            let digest = resolved.index_digest.unwrap_or(resolved.digest);
            let pinned = reference.with_digest(&digest);
            bases.insert(reference, BaseImage { pinned, config });
        }
    }
    Ok(bases)
}
