//! A build: the chosen images of a spec, lowered to LLB and solved on one
//! daemon. Images solve at once, each in its own session; the daemon merges the
//! steps they share (an image built `from` another contains its graph).

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::future::join_all;
use oci_spec::image::ImageConfiguration;

use crate::client::Client;
use crate::llb::Platform;
use crate::registry::{ImageRef, Registry, RegistryError, RegistryOptions};
use crate::session::{
    local_store_id, ContentStores, DockerAuth, LocalDir, LocalDirs, OciLayout, SecretFiles, Session,
};
use crate::solve::progress::ProgressMode;
use crate::solve::{
    self, parse_cache_entry, CacheEntry, CacheReport, Direction, Output, SolveError, SolveRequest,
    Solved,
};
use crate::spec::{Base, LowerOptions, LoweredImage, Spec, SpecError};

/// The secret id under which `--ca-cert` reaches the toolchain steps.
pub const CA_SECRET_ID: &str = "strata-ca-cert";

/// What to build and where results go, beyond the spec itself.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Images to build (with what they are built `from`); empty: all.
    pub images: Vec<String>,
    /// `--push REF`: push the (single) image there.
    pub push: Option<String>,
    /// `--output …`, for the single image built.
    pub outputs: Vec<Output>,
    /// Allow plain-http registries beyond loopback ones.
    pub insecure_registry: bool,
    /// A CA bundle for networks that re-sign TLS; mounted as a secret, never stored.
    pub ca_cert: Option<PathBuf>,
    /// `--secret id=…,src=…`.
    pub secrets: BTreeMap<String, PathBuf>,
    pub cache_to: Vec<CacheEntry>,
    pub cache_from: Vec<CacheEntry>,
    pub platform: Option<Platform>,
    pub progress: Option<ProgressMode>,
}

/// One image that was built.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: String,
    /// Where it was pushed, if it was.
    pub pushed: Option<String>,
    pub solved: Solved,
    /// What each cache export wrote.
    pub cache: Vec<CacheReport>,
}

/// Why a build could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Options that do not fit the spec (e.g. `--push` with several images).
    #[error("{0}")]
    Usage(String),
    #[error("image {image}: {source}")]
    Solve {
        image: String,
        #[source]
        source: SolveError,
    },
}

/// Loopback registries are plain http (as BuildKit's own tests and CI use them).
fn is_loopback_registry(reference: &str) -> bool {
    crate::registry::is_loopback(reference.split('/').next().unwrap_or(""))
}

impl BuildOptions {
    fn registry(&self) -> Registry {
        Registry::new(RegistryOptions {
            insecure: Vec::new(),
            insecure_all: self.insecure_registry,
            auth: Some(DockerAuth::from_env()),
        })
    }

    fn insecure_for(&self, reference: &str) -> bool {
        self.insecure_registry || is_loopback_registry(reference)
    }
}

/// The images a build solves: the ones asked for, or every image of the spec.
fn wanted(spec: &Spec, options: &BuildOptions) -> Result<Vec<String>, BuildError> {
    let names = if options.images.is_empty() {
        spec.names().into_iter().map(str::to_owned).collect()
    } else {
        // Checks the names (and the graph) even though only they are solved:
        // the graphs of their `from` images are inside theirs.
        spec.closure(&options.images)?;
        options.images.clone()
    };
    if (options.push.is_some() || !options.outputs.is_empty()) && names.len() != 1 {
        return Err(BuildError::Usage(format!(
            "--push and --output apply to one image; name it (images: {})",
            spec.names().join(", ")
        )));
    }
    Ok(names)
}

/// Lowers `names` to LLB, after fetching their base images' configs (raw LLB
/// carries no image config: the base's ENV PATH, WORKDIR… come from the registry).
pub async fn plan(
    spec: &Spec,
    names: &[String],
    options: &BuildOptions,
) -> Result<Vec<LoweredImage>, BuildError> {
    let registry = options.registry();
    // Only the bases these images stand on, each for the platform it builds for.
    let mut bases: BTreeMap<String, ImageConfiguration> = BTreeMap::new();
    for name in spec.closure(names)? {
        let image = spec.image(&name).expect("closure names images");
        let Base::Image(reference) = &image.base else {
            continue;
        };
        if bases.contains_key(reference) {
            continue;
        }
        let platform = options
            .platform
            .clone()
            .or_else(|| image.platform.clone())
            .unwrap_or_else(Platform::host);
        let (_, config) = registry
            .config(&reference.parse::<ImageRef>()?, &platform)
            .await?;
        bases.insert(reference.clone(), config);
    }
    let lower = LowerOptions {
        ca_cert: options.ca_cert.as_ref().map(|_| CA_SECRET_ID.to_owned()),
        platform: options.platform.clone(),
    };
    names
        .iter()
        .map(|name| spec.lower(name, &bases, &lower).map_err(BuildError::from))
        .collect()
}

/// Builds the chosen images of `spec` on `client`'s daemon.
pub async fn build(
    client: &Client,
    spec: &Spec,
    options: &BuildOptions,
) -> Result<Vec<Built>, BuildError> {
    let names = wanted(spec, options)?;
    let images = plan(spec, &names, options).await?;
    let several = images.len() > 1;
    let solves = images.into_iter().map(|image| async move {
        let name = image.name.clone();
        let label = several.then_some(name.as_str());
        let mut renderer = options
            .progress
            .unwrap_or(ProgressMode::Auto)
            .renderer(label);
        let (session, request, pushed) = prepare(spec, image, options)?;
        let exports = request.cache_exports.clone();
        let solved = solve::solve(client, session, request, renderer.as_mut())
            .await
            .map_err(|source| BuildError::Solve {
                image: name.clone(),
                source,
            })?;
        let cache = solve::cache::finish_exports(
            &exports,
            &solved.exporter_response,
            &options.registry(),
            pushed.as_deref(),
        )
        .await
        .map_err(BuildError::Usage)?;
        Ok(Built {
            image: name,
            pushed,
            solved,
            cache,
        })
    });
    join_all(solves).await.into_iter().collect()
}

/// The session and Solve request of one lowered image.
fn prepare(
    spec: &Spec,
    image: LoweredImage,
    options: &BuildOptions,
) -> Result<(Session, SolveRequest, Option<String>), BuildError> {
    let mut outputs = options.outputs.clone();
    let push = options.push.clone().or_else(|| image.push.clone());
    if let Some(reference) = &push {
        outputs.push(Output::Image {
            name: reference.clone(),
            push: true,
            insecure: options.insecure_for(reference),
            attrs: BTreeMap::new(),
        });
    }
    let entries = |values: &[String], direction| -> Result<Vec<CacheEntry>, BuildError> {
        values
            .iter()
            .map(|v| {
                parse_cache_entry(v, direction).map_err(|e| {
                    BuildError::Usage(format!(
                        "{}: image {}: {e}",
                        spec.path().display(),
                        image.name
                    ))
                })
            })
            .collect()
    };
    let mut cache_exports = options.cache_to.clone();
    cache_exports.extend(entries(&image.cache_to, Direction::Export)?);
    let mut cache_imports = options.cache_from.clone();
    cache_imports.extend(entries(&image.cache_from, Direction::Import)?);
    for entry in cache_exports.iter_mut().chain(cache_imports.iter_mut()) {
        if entry.kind == "registry"
            && entry
                .attrs
                .get("ref")
                .is_some_and(|r| options.insecure_for(r))
        {
            entry
                .attrs
                .insert("registry.insecure".into(), "true".into());
        }
    }
    // Local caches are OCI layouts on this machine, served to the daemon as
    // content stores through the session.
    let mut stores = BTreeMap::new();
    for entry in &cache_exports {
        if let Some(dest) = entry.attrs.get("dest").filter(|_| entry.kind == "local") {
            let layout = OciLayout::new(dest);
            layout.init().map_err(|e| {
                BuildError::Usage(format!(
                    "--cache-to {dest}: cannot create the cache directory: {e}"
                ))
            })?;
            stores.insert(local_store_id(dest), layout);
        }
    }
    let mut imports = Vec::new();
    for mut entry in cache_imports {
        if let Some(src) = entry
            .attrs
            .get("src")
            .filter(|_| entry.kind == "local")
            .cloned()
        {
            let tag = entry
                .attrs
                .get("tag")
                .cloned()
                .unwrap_or_else(|| "latest".into());
            let layout = OciLayout::new(&src);
            match layout.get_tag(&tag) {
                Ok(Some(desc)) if !entry.attrs.contains_key("digest") => {
                    let digest = desc["digest"].as_str().unwrap_or_default().to_owned();
                    entry.attrs.insert("digest".into(), digest);
                }
                Ok(Some(_)) => {}
                // As buildctl does: a missing local cache is not an error, just empty.
                Ok(None) | Err(_) => {
                    tracing::warn!("--cache-from {src}: no cache tagged {tag:?} there yet; building without it");
                    continue;
                }
            }
            stores.insert(local_store_id(&src), layout);
        }
        imports.push(entry);
    }
    let cache_imports = imports;

    let mut session = Session::new("strata", &format!("strata:{}", image.name));
    let dirs: BTreeMap<String, LocalDir> = image
        .local_dirs
        .iter()
        .map(|(name, dir)| {
            (
                name.clone(),
                LocalDir {
                    path: dir.path.clone(),
                    excludes: dir.exclude.clone(),
                },
            )
        })
        .collect();
    if !dirs.is_empty() {
        session.local_dirs(LocalDirs::new(dirs));
    }
    session.auth(DockerAuth::from_env());
    let mut secrets = options.secrets.clone();
    if let Some(ca) = &options.ca_cert {
        secrets.insert(CA_SECRET_ID.to_owned(), ca.clone());
    }
    if !secrets.is_empty() {
        session.secrets(SecretFiles::new(secrets));
    }
    if !stores.is_empty() {
        session.content_stores(ContentStores::new(stores));
    }
    let request = SolveRequest {
        definition: image.definition,
        outputs,
        image_config: Some(image.config),
        cache_exports,
        cache_imports,
    };
    Ok((session, request, push))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_insecure_by_default() {
        assert!(is_loopback_registry("127.0.0.1:5000/strata/x:y"));
        assert!(is_loopback_registry("localhost:5000/x"));
        assert!(is_loopback_registry("[::1]:5000/x"));
        assert!(!is_loopback_registry("registry.example.org/x"));
        assert!(!is_loopback_registry("10.0.0.5:5000/x"));
    }
}
