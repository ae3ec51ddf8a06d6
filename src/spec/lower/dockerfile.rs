//! A Dockerfile image: no LLB of ours, but the `dockerfile.v0` frontend's
//! options, the `context` and `dockerfile` directories it reads through the
//! session, and each `FROM` handed to it for the platform as a frontend
//! input with its image config (a named context per platform,
//! `context:NAME::PLATFORM=input:NAME::PLATFORM`, the config as
//! `input-metadata:…`), so the content key and the build see the same base:
//! a registry `FROM` is its image pinned to the digest the build resolved,
//! with the config as the registry served it (the frontend then resolves
//! nothing itself: after a prune that saved a round of registry requests per
//! platform); a `FROM` naming an image of the same spec is that image's LLB,
//! and its local dirs are served too: the two are solved together. Per
//! platform, so each platform's lowering adds its own and a multi-platform
//! image's frontend gets them all.

use std::collections::BTreeMap;

use super::{BaseImage, ImageGraph, LoweredImage};
use crate::options::CacheMountUse;
use oci_spec::image::ImageConfiguration;

use crate::llb::{source, Definition, Platform};
use crate::options::Frontend;
use crate::options::LocalDir;
use crate::reference::ImageRef;
use crate::spec::{Dockerfile, Image, RunCacheMount};
use crate::tools::Tool;

/// The frontend BuildKit ships in the daemon.
pub const DOCKERFILE_FRONTEND: &str = "dockerfile.v0";

/// An image of the spec a Dockerfile builds `FROM`.
pub(super) struct Input {
    pub name: String,
    pub definition: Definition,
    pub config: ImageConfiguration,
    pub local_dirs: BTreeMap<String, LocalDir>,
}

pub(super) fn lower(
    image: &Image,
    dockerfile: &Dockerfile,
    platform: &Platform,
    bases: &BTreeMap<ImageRef, BaseImage>,
    inputs: Vec<Input>,
) -> LoweredImage {
    let (dir, filename) = dockerfile.dir_and_name();
    let mut attrs = BTreeMap::from([
        ("filename".to_owned(), filename.clone()),
        ("platform".to_owned(), platform.to_string()),
    ]);
    if let Some(target) = &dockerfile.target {
        attrs.insert("target".into(), target.clone());
    }
    for (k, v) in &dockerfile.args {
        attrs.insert(format!("build-arg:{k}"), v.clone());
    }
    for (k, v) in &image.settings.labels {
        attrs.insert(format!("label:{k}"), v.clone());
    }
    let mut local_dirs = frontend_dirs(dockerfile, dir, &filename);
    let mut frontend_inputs = BTreeMap::new();
    let mut named_input = |name: &str, definition: Definition, config: &[u8]| {
        let input = format!("{name}::{platform}");
        attrs.insert(format!("context:{input}"), format!("input:{input}"));
        attrs.insert(format!("input-metadata:{input}"), input_metadata(config));
        frontend_inputs.insert(input, definition);
    };
    let mut pinned_froms = BTreeMap::new();
    for (_, reference) in &dockerfile.froms {
        if let Some(base) = bases.get(reference) {
            pinned_froms.insert(
                familiar(reference),
                format!("docker-image://{}", base.pinned),
            );
            // The op the frontend would write for a `docker-image://`
            // context, so a client that passes one shares this build's cache.
            let image = source::image_for(&base.pinned, platform, None);
            named_input(
                &familiar(reference),
                image.marshal(),
                &as_resolved(&base.config_bytes),
            );
        }
    }
    for input in inputs {
        // Through `Value`, whose maps are sorted, so the same config gives the same key.
        let config = serde_json::to_value(&input.config)
            .map(|v| v.to_string())
            .unwrap_or_default();
        named_input(&input.name, input.definition, config.as_bytes());
        local_dirs.extend(input.local_dirs);
    }
    LoweredImage {
        name: image.name.clone(),
        graph: ImageGraph::Frontend(Frontend {
            name: DOCKERFILE_FRONTEND.to_owned(),
            attrs,
            inputs: frontend_inputs,
            pinned_froms,
        }),
        local_dirs,
        steps: Vec::new(),
        cache_mounts: cache_mount_uses(dockerfile, platform, bases),
        platform: platform.clone(),
        unkeyable: dockerfile.unkeyable.clone(),
    }
}

/// The directories the frontend reads through the session: the context
/// (less what `.dockerignore` leaves out) and the Dockerfile alone.
fn frontend_dirs(
    dockerfile: &Dockerfile,
    dir: &std::path::Path,
    filename: &str,
) -> BTreeMap<String, LocalDir> {
    BTreeMap::from([
        (
            "context".to_owned(),
            LocalDir {
                path: dockerfile.context.clone(),
                excludes: dockerignore(dockerfile),
            },
        ),
        (
            "dockerfile".to_owned(),
            LocalDir {
                path: dir.to_owned(),
                // The frontend asks for the file alone; so does the key.
                excludes: vec![
                    "*".to_owned(),
                    format!("!{filename}"),
                    format!("!{filename}.dockerignore"),
                ],
            },
        ),
    ])
}

/// The Dockerfile's `RUN --mount=type=cache` mounts as this build's cache
/// mounts (`mounts=` carries them): a seed or an export of one runs on the
/// registry image its stage starts from, pinned as the build pins it.
fn cache_mount_uses(
    dockerfile: &Dockerfile,
    platform: &Platform,
    bases: &BTreeMap<ImageRef, BaseImage>,
) -> Vec<CacheMountUse> {
    let on = |m: &RunCacheMount| {
        let pinned = match bases.get(&m.image) {
            Some(base) => &base.pinned,
            None if m.image.digest.is_some() => &m.image,
            None => return None,
        };
        Some(source::image_for(
            pinned,
            platform,
            Some(&format!("base {}", m.image)),
        ))
    };
    dockerfile
        .cache_mounts
        .iter()
        .filter_map(|m| {
            let state = on(m)?;
            Some(CacheMountUse {
                id: m.id.clone(),
                target: m.target.clone(),
                sharing: m.sharing,
                tool: Tool::of_cache_dir(&m.target),
                rootfs: state.clone(),
                base: state,
            })
        })
        .collect()
}

/// A registry config as the frontend keeps one it resolved for a
/// `docker-image://` context: without its `created` (the frontend clears
/// it, and the image it writes follows), every other field as served.
fn as_resolved(config: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Value>(config) {
        Ok(serde_json::Value::Object(mut fields)) => {
            fields.remove("created");
            serde_json::to_vec(&fields).unwrap_or_else(|_| config.to_vec())
        }
        _ => config.to_vec(),
    }
}

/// `{"containerimage.config": <config JSON, base64>}`: what the frontend
/// reads an input's image config from (Go's `map[string][]byte`).
fn input_metadata(config: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(config);
    serde_json::json!({ "containerimage.config": encoded }).to_string()
}

/// The name the frontend looks a `FROM` image up by (`context:NAME`):
/// docker's familiar form, without `:latest`.
fn familiar(reference: &ImageRef) -> String {
    let repository = match reference.registry.as_str() {
        "docker.io" => reference
            .repository
            .strip_prefix("library/")
            .unwrap_or(&reference.repository)
            .to_owned(),
        _ => reference.name(),
    };
    match reference.tag.as_deref() {
        None | Some("latest") => repository,
        Some(tag) => format!("{repository}:{tag}"),
    }
}

/// The ignore patterns the frontend applies to the context (here they keep
/// ignored files out of the content key): `NAME.dockerignore` beside the
/// Dockerfile named NAME when there is one, as BuildKit's clients read it,
/// else the context's `.dockerignore`.
fn dockerignore(dockerfile: &Dockerfile) -> Vec<String> {
    let (dir, name) = dockerfile.dir_and_name();
    std::fs::read_to_string(dir.join(format!("{name}.dockerignore")))
        .or_else(|_| std::fs::read_to_string(dockerfile.context.join(".dockerignore")))
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_names_as_the_frontend_looks_them_up() {
        let f = |r: &str| familiar(&r.parse().unwrap());
        assert_eq!(f("debian"), "debian");
        assert_eq!(f("docker.io/library/debian:bookworm"), "debian:bookworm");
        assert_eq!(f("org/app:latest"), "org/app");
        assert_eq!(
            f("127.0.0.1:5000/strata/debian:bookworm"),
            "127.0.0.1:5000/strata/debian:bookworm"
        );
    }
}
