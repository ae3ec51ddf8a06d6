//! Before anything is solved: the images lowered to LLB with their base
//! images pinned by digest, and each one's content key.

use std::collections::BTreeMap;

use super::{BuildError, CA_SECRET_ID};
use crate::keys::{content_key, index_key, tags, ContentKey};
use crate::llb::{Platform, Platforms};
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistryOptions};
use crate::session::DockerAuth;
use crate::spec::{
    labelled, Base, BaseImage, BuildPlan, ImageGraph, Job, LowerOptions, LoweredImage,
};

/// An image lowered for each platform it is built for, with its keys.
#[derive(Debug, Clone)]
pub(super) struct KeyedImage {
    /// One lowering per platform, each with its own key, in the order the
    /// job names the platforms (a frontend image: one, which builds them all).
    pub variants: Vec<(LoweredImage, ContentKey)>,
    /// The image's key: its one platform's, else [`index_key`] of them all.
    pub key: ContentKey,
    /// The key every platform's config records instead of its own: for a
    /// part of a multi-platform Dockerfile image (a pool node's), the whole
    /// index's, as the one frontend call of a whole build labels them all.
    pub records: Option<ContentKey>,
}

impl KeyedImage {
    /// The first platform's lowering: what the steps, mounts and local dirs
    /// of the image are read from (they are the same on every platform).
    pub fn lowered(&self) -> &LoweredImage {
        &self.variants[0].0
    }

    /// Each platform with the key its config records (see [`recording_key`]).
    pub fn recorded(&self) -> Vec<(Platform, ContentKey)> {
        self.variants
            .iter()
            .map(|(image, key)| (image.platform.clone(), self.records.unwrap_or(*key)))
            .collect()
    }

    /// Each platform with its own key (what its key tag names).
    pub fn platform_keys(&self) -> Vec<(Platform, ContentKey)> {
        self.variants
            .iter()
            .map(|(image, key)| (image.platform.clone(), *key))
            .collect()
    }

    /// What is solved: the one lowering, or every platform's graph together.
    pub fn solvable(&self) -> LoweredImage {
        let all: Vec<&Platform> = self.variants.iter().map(|(i, _)| &i.platform).collect();
        self.solvable_for(&all)
    }

    /// The image on `platforms` alone (of those it is built for), each
    /// platform's config recording its own key: one platform's lowering, or
    /// their graphs together.
    pub fn solvable_for(&self, platforms: &[&Platform]) -> LoweredImage {
        let mut chosen = self
            .variants
            .iter()
            .filter(|(image, _)| platforms.contains(&&image.platform))
            .map(|(image, key)| recording_key(image.clone(), &self.records.unwrap_or(*key)));
        let mut first = chosen.next().expect("a platform the image is built for");
        let rest: Vec<LoweredImage> = chosen.collect();
        if rest.is_empty() {
            return first;
        }
        if let ImageGraph::OnFrontend(graphs) = &mut first.graph {
            for image in &rest {
                if let ImageGraph::OnFrontend(other) = &image.graph {
                    graphs.extend(other.iter().cloned());
                }
                first.local_dirs.extend(image.local_dirs.clone());
            }
            return first;
        }
        let mut graphs: Vec<_> = first
            .llb()
            .map(|llb| (first.platform.clone(), llb.clone()))
            .into_iter()
            .collect();
        for image in &rest {
            graphs.extend(image.llb().map(|llb| (image.platform.clone(), llb.clone())));
            // A per-platform overlay serves each platform its own directory.
            first.local_dirs.extend(image.local_dirs.clone());
        }
        first.graph = ImageGraph::Platforms(graphs);
        first
    }

    /// The lowering a single-platform consumer (docker) gets: the host's
    /// platform when the image is built for it, else the first.
    pub fn for_docker(&self) -> LoweredImage {
        let host = Platform::host();
        let platform = self
            .variants
            .iter()
            .map(|(image, _)| &image.platform)
            .find(|p| **p == host)
            .unwrap_or(&self.lowered().platform);
        self.solvable_for(&[platform])
    }

    fn one(image: LoweredImage, key: ContentKey) -> Self {
        KeyedImage {
            variants: vec![(image, key)],
            key,
            records: None,
        }
    }
}

/// What a build knows before it solves anything.
pub(super) struct Prepared {
    /// The plan's images and every image they are built `from`, by name.
    pub images: BTreeMap<String, KeyedImage>,
    /// The registry base images they stand on, pinned (as read for the
    /// first platform that uses them).
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
    let mut prepared = prepare(plan, &registry).await?;
    Ok(plan
        .images()
        .into_iter()
        .filter_map(|name| prepared.images.remove(&name))
        .map(|keyed| keyed.solvable())
        .collect())
}

/// `image` as it is solved: its config (or, for a Dockerfile image, the
/// frontend's labels) records its key ([`tags::KEY_LABEL`]), since a key
/// tag is taken for a hit only when the image it names says it has that
/// key. Added after the key is computed, so the key does not cover itself.
fn recording_key(mut image: LoweredImage, key: &ContentKey) -> LoweredImage {
    match &mut image.graph {
        ImageGraph::Frontend(frontend) => {
            let label = format!("label:{}", tags::KEY_LABEL);
            frontend.attrs.insert(label, key.to_string());
        }
        ImageGraph::Llb(llb) => labelled(&mut llb.config, &key_label(key)),
        ImageGraph::OnFrontend(graphs) => {
            for (_, on) in graphs {
                on.labels.extend(key_label(key));
                labelled(&mut on.on_scratch.config, &key_label(key));
            }
        }
        // Lowered per platform and recorded before they are put together.
        ImageGraph::Platforms(_) => {}
    }
    image
}

fn key_label(key: &ContentKey) -> BTreeMap<String, String> {
    BTreeMap::from([(tags::KEY_LABEL.to_owned(), key.to_string())])
}

/// Lowers images `names` (in that order) for `platform` with their bases
/// pinned; returns the pinned bases too.
async fn lower_with(
    plan: &BuildPlan,
    registry: &Registry,
    names: &[String],
    platform: &Platform,
) -> Result<(Vec<LoweredImage>, BTreeMap<ImageRef, BaseImage>), BuildError> {
    let spec = &plan.spec;
    let bases = base_configs(plan, names, registry, platform).await?;
    let options = LowerOptions {
        ca_cert: plan.ca_cert.as_ref().map(|_| CA_SECRET_ID.to_owned()),
        platform: Some(platform.clone()),
        git_commits: super::git::commits(spec, names).await?,
        pushed_dockerfiles: plan.pushed_dockerfiles.clone(),
    };
    Ok((spec.lower_all(names, &bases, &options)?, bases))
}

/// An image's content key, and why it cannot stand for the image if it cannot.
#[derive(Debug, Clone)]
pub struct ImageKey {
    pub image: String,
    pub key: ContentKey,
    /// Each platform with its own key (one: the image's key).
    pub platform_keys: Vec<(Platform, ContentKey)>,
    pub unkeyable: Option<String>,
}

/// The content key of each image the plan builds, in the plan's order. Reads
/// the base images' manifests (to pin them) and git refs, never solves.
pub async fn keys(plan: &BuildPlan) -> Result<Vec<ImageKey>, BuildError> {
    let registry = registry_from_env(plan);
    let mut prepared = prepare(plan, &registry).await?;
    Ok(plan
        .images()
        .into_iter()
        .filter_map(|image| {
            let keyed = prepared.images.remove(&image)?;
            Some(ImageKey {
                image,
                platform_keys: keyed.platform_keys(),
                unkeyable: keyed.lowered().unkeyable.clone(),
                key: keyed.key,
            })
        })
        .collect())
}

/// The plan's images and every image they are built `from` (a child's key
/// holds its parent's), lowered and keyed for each platform a job builds.
pub(super) async fn prepare(plan: &BuildPlan, registry: &Registry) -> Result<Prepared, BuildError> {
    let mut passes = Vec::new();
    let mut bases = BTreeMap::new();
    for platform in platforms_of(plan) {
        let names: Vec<String> = plan
            .jobs
            .iter()
            .filter(|j| keyed_platforms(plan, j).any(|p| *p == platform))
            .map(|j| j.image.clone())
            .collect();
        let (pass, pass_bases) = keyed_for(plan, registry, &names, &platform).await?;
        for (reference, base) in pass_bases {
            bases.entry(reference).or_insert(base);
        }
        passes.push((platform, pass));
    }
    let mut images = BTreeMap::new();
    for (platform, pass) in &passes {
        for name in pass.keys() {
            if images.contains_key(name) {
                continue;
            }
            let wanted = plan.jobs.iter().find(|j| &j.image == name);
            let order = wanted.map_or_else(
                || vec![platform.clone()],
                |j| j.platforms.iter().cloned().collect(),
            );
            let keyed_on = |p: &Platform| passes.iter().find(|(q, _)| q == p)?.1.get(name);
            let variants = order.iter().filter_map(|p| keyed_on(p).cloned()).collect();
            let mut keyed = merged(variants)?;
            if let Some(whole) = wanted.and_then(|j| dockerfile_part_of(plan, j)) {
                let keys = whole.iter().filter_map(|p| Some((p, &keyed_on(p)?.1)));
                keyed.records = Some(index_key(keys));
            }
            images.insert(name.clone(), keyed);
        }
    }
    Ok(Prepared { images, bases })
}

/// The platforms of the whole image when `job` builds part of a
/// multi-platform Dockerfile image (see [`KeyedImage::records`]).
fn dockerfile_part_of<'a>(plan: &BuildPlan, job: &'a Job) -> Option<&'a Platforms> {
    let dockerfile = matches!(plan.image(job).base, Base::Dockerfile(_));
    job.part_of.as_ref().filter(|_| dockerfile)
}

/// The platforms `job`'s image is lowered and keyed for: its own, and the
/// whole image's for a part of a multi-platform Dockerfile image.
fn keyed_platforms<'a>(plan: &BuildPlan, job: &'a Job) -> impl Iterator<Item = &'a Platform> {
    let whole = dockerfile_part_of(plan, job)
        .into_iter()
        .flat_map(|p| p.iter());
    job.platforms.iter().chain(whole)
}

/// Every platform the plan's jobs build, each once, in the order named.
fn platforms_of(plan: &BuildPlan) -> Vec<Platform> {
    let mut all: Vec<Platform> = Vec::new();
    for platform in plan.jobs.iter().flat_map(|j| keyed_platforms(plan, j)) {
        if !all.contains(platform) {
            all.push(platform.clone());
        }
    }
    all
}

/// Images `names` and what they are built `from`, lowered for `platform`
/// and keyed.
async fn keyed_for(
    plan: &BuildPlan,
    registry: &Registry,
    names: &[String],
    platform: &Platform,
) -> Result<
    (
        BTreeMap<String, (LoweredImage, ContentKey)>,
        BTreeMap<ImageRef, BaseImage>,
    ),
    BuildError,
> {
    let closure = plan.spec.closure(names)?;
    let (lowered, bases) = lower_with(plan, registry, &closure, platform).await?;
    let mut keyed: BTreeMap<String, (LoweredImage, ContentKey)> = BTreeMap::new();
    // The closure lists parents before their children.
    for image in lowered {
        let parent = plan
            .parent_of(&image.name)
            .and_then(|parent| keyed.get(parent).map(|(_, key)| key));
        let key = content_key(&image, parent)?;
        keyed.insert(image.name.clone(), (image, key));
    }
    Ok((keyed, bases))
}

/// An image's lowerings, one per platform, as one [`KeyedImage`]. A
/// frontend builds every platform itself: its lowerings are one, asked for
/// all of them, with every platform's named contexts (each lowering names
/// its own, `context:NAME::PLATFORM`) and inputs.
fn merged(variants: Vec<(LoweredImage, ContentKey)>) -> Result<KeyedImage, BuildError> {
    if variants.len() == 1 {
        let (image, key) = variants.into_iter().next().expect("one");
        return Ok(KeyedImage::one(image, key));
    }
    let key = index_key(variants.iter().map(|(image, key)| (&image.platform, key)));
    let list = variants
        .iter()
        .map(|(image, _)| image.platform.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (mut first, _) = variants[0].clone();
    if let ImageGraph::Frontend(frontend) = &mut first.graph {
        for (image, _) in &variants[1..] {
            if let ImageGraph::Frontend(other) = &image.graph {
                frontend.attrs.extend(other.attrs.clone());
                frontend.inputs.extend(other.inputs.clone());
                frontend.pinned_froms.extend(other.pinned_froms.clone());
            }
            first.local_dirs.extend(image.local_dirs.clone());
            first.cache_mounts.extend(image.cache_mounts.clone());
        }
        frontend.attrs.insert("platform".to_owned(), list);
        return Ok(KeyedImage {
            variants: vec![(first, key)],
            key,
            records: None,
        });
    }
    Ok(KeyedImage {
        variants,
        key,
        records: None,
    })
}

/// The configs of the bases `names` stand on, each for the platform it builds for.
async fn base_configs(
    plan: &BuildPlan,
    names: &[String],
    registry: &Registry,
    platform: &Platform,
) -> Result<BTreeMap<ImageRef, BaseImage>, BuildError> {
    let mut bases = BTreeMap::new();
    for name in plan.spec.closure(names)? {
        let image = plan.spec.image(&name).expect("closure names images");
        let references = match &image.base {
            Base::Image(reference) => vec![reference.clone()],
            Base::Dockerfile(d) => {
                let pushed = plan.pushed_dockerfiles.get(&name).cloned();
                let froms = d.froms.iter().map(|(_, r)| r.clone());
                froms.chain(pushed).collect()
            }
            Base::From(_) | Base::Scratch => continue,
        };
        for reference in references {
            if bases.contains_key(&reference) {
                continue;
            }
            let (resolved, config, config_bytes) =
                registry.config_and_bytes(&reference, platform).await?;
            let digest = resolved.index_digest.unwrap_or(resolved.digest);
            let pinned = reference.with_digest(&digest);
            let base = BaseImage {
                pinned,
                config,
                config_bytes,
            };
            bases.insert(reference, base);
        }
    }
    Ok(bases)
}
