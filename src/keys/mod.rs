//! Content keys: one digest of everything that decides an image, so "is this
//! image built already?" is a lookup, not a solve.
//!
//! An image's key covers its LLB (which holds every step, the platform, and
//! the base image pinned by digest — see `build::lower`), its image config,
//! the contents of every local directory it copies in after excludes
//! ([`tree`]), and its `from` parent's key. It does **not** cover the CA
//! bundle or secret values: they are mounted, never part of a layer, and
//! changing them must not make an image "new". Nor where the project is
//! checked out: the LLB carries spec-relative names, so two runners with the
//! same inputs compute the same key. A Dockerfile image's key covers the
//! frontend's options instead of LLB (its `FROM` images pinned among them),
//! the Dockerfile and the context after `.dockerignore`.

pub mod listing;
pub(crate) mod statcache;
pub mod tags;
mod tree;

pub use tree::tree_digest;

use std::fmt;

use sha2::{Digest, Sha256};

use crate::llb::State;
use crate::spec::{ImageGraph, LoweredImage};

/// The key of one image: `sha256:` + 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentKey([u8; 32]);

impl ContentKey {
    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The tag image `image` is also pushed under: `strata-IMAGE-` + 32 hex
    /// digits (128 bits: collisions are not a concern, and tags stay
    /// readable); see [`tags`].
    pub fn tag(&self, image: &str) -> String {
        format!("{}{}", tags::prefix(image), &self.hex()[..32])
    }
}

impl fmt::Display for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// Why a key could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("image {image}: reading {}: {source}", dir.display())]
    Tree {
        image: String,
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {image}: its config cannot be encoded: {reason}")]
    Config { image: String, reason: String },
}

/// The key of an image built for several platforms (one index): of each
/// platform's key, in the order the platforms are named. A single-platform
/// image's key is its platform's, as before lists existed.
pub fn index_key<'a>(
    platforms: impl IntoIterator<Item = (&'a crate::llb::Platform, &'a ContentKey)>,
) -> ContentKey {
    let mut key = Sha256::new();
    key.update(b"strata index key v1\0");
    for (platform, platform_key) in platforms {
        key.update(platform.to_string().as_bytes());
        key.update([0]);
        key.update(platform_key.0);
    }
    ContentKey(key.finalize().into())
}

/// The key of `image`, lowered with its base pinned, built `from` `parent`.
pub fn content_key(
    image: &LoweredImage,
    parent: Option<&ContentKey>,
) -> Result<ContentKey, KeyError> {
    let mut key = Sha256::new();
    key.update(b"strata content key v1\0");
    // A frontend's image is keyed as v1 always keyed it, as an empty graph
    // with the default config (plus the frontend's part below), so the keys
    // (and key tags) of Dockerfile images stay what they were.
    let (definition, config) = match &image.graph {
        ImageGraph::Llb(llb) => (llb.definition.to_bytes(), llb.config.clone()),
        ImageGraph::Frontend(_) => (State::scratch().marshal().to_bytes(), Default::default()),
        // Keyed per platform before they are put together ([`index_key`]).
        ImageGraph::Platforms(graphs) => {
            let all = graphs.iter().flat_map(|(_, llb)| llb.definition.to_bytes());
            (all.collect(), Default::default())
        }
        // Its own steps on scratch; the Dockerfile image's key is `parent`.
        ImageGraph::OnFrontend(graphs) => match graphs.as_slice() {
            [(_, one)] => (
                one.on_scratch.definition.to_bytes(),
                one.on_scratch.config.clone(),
            ),
            _ => {
                let all = graphs
                    .iter()
                    .flat_map(|(_, on)| on.on_scratch.definition.to_bytes());
                (all.collect(), Default::default())
            }
        },
    };
    key.update(definition);
    // Through `Value`, whose maps are sorted: labels are a HashMap.
    let config = serde_json::to_value(&config)
        .map(|v| v.to_string())
        .map_err(|e| KeyError::Config {
            image: image.name.clone(),
            reason: e.to_string(),
        })?;
    key.update(config.as_bytes());
    key.update([0]);
    // A frontend's options (a Dockerfile image: file name, target, build
    // args, labels, platform, its FROM images pinned) and inputs.
    if let Some(frontend) = image.frontend() {
        key.update(frontend.name.as_bytes());
        for (k, v) in &frontend.attrs {
            key.update([0]);
            key.update(k.as_bytes());
            key.update([0]);
            key.update(v.as_bytes());
        }
        for (name, input) in &frontend.inputs {
            key.update(name.as_bytes());
            key.update(input.to_bytes());
        }
        key.update([0]);
    }
    if let Some(parent) = parent {
        key.update(parent.0);
    }
    for (name, dir) in &image.local_dirs {
        let cache = statcache::cache_dir();
        let digest = tree::tree_digest(dir, cache.as_deref()).map_err(|source| KeyError::Tree {
            image: image.name.clone(),
            dir: dir.path.clone(),
            source,
        })?;
        key.update(name.as_bytes());
        key.update([0]);
        key.update(digest);
    }
    Ok(ContentKey(key.finalize().into()))
}
