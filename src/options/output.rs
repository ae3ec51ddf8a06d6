//! Build outputs (`--output type=…`, `--push`) and how each becomes an exporter.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::str::FromStr;

use base64::Engine;

use super::attrs::{Attrs, OptionError};
use super::stream::TarStream;
use crate::reference::ImageRef;

/// Where a build's result goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An image in a registry (`--push NAME`, `type=image,name=…,push=true`).
    Image {
        name: ImageRef,
        /// More names the same image goes out under (its key tag).
        also: Vec<ImageRef>,
        push: bool,
        insecure: bool,
        attrs: BTreeMap<String, String>,
    },
    /// An OCI layout tarball on this machine.
    Oci { dest: PathBuf, name: Option<String> },
    /// A `docker load`-able tarball on this machine.
    Docker { dest: PathBuf, name: Option<String> },
    /// The result's files in a directory on this machine, replacing it whole;
    /// a directory strata did not export is replaced only with `replace`.
    Local { dest: PathBuf, replace: bool },
    /// Into the image store of the docker daemon whose embedded BuildKit
    /// builds (its `moby` exporter), under `names`.
    Moby { names: Vec<ImageRef> },
    /// A docker tarball naming `names`, handed to `stream`'s reader as it
    /// arrives (a docker daemon's image load).
    DockerStream {
        stream: TarStream,
        names: Vec<ImageRef>,
    },
    /// The result's files as a tar stream handed to `stream`'s reader.
    Tar { stream: TarStream },
    /// Into an OCI layout directory on this machine (BuildKit's `oci`
    /// exporter with `tar=false`, through the session's content store
    /// `export`); pointing a tag of its `index.json` at the result is the
    /// caller's. `attrs` go to the exporter as given.
    OciDir {
        dir: PathBuf,
        attrs: BTreeMap<String, String>,
    },
}

/// `a,b` as the image exporters take a list of names.
fn name_list(names: &[ImageRef]) -> String {
    names
        .iter()
        .map(ImageRef::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

const KINDS: &str = "image, registry, oci, docker or local";

impl FromStr for Output {
    type Err = OptionError;

    /// A buildctl-style `--output` value: `type=oci,dest=out.tar`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let mut a = Attrs::parse("--output", value, KINDS)?;
        let out = match a.kind.as_str() {
            "image" | "registry" => {
                let name = a.need("name")?;
                let name = name.parse().map_err(|e| a.error(format!("name: {e}")))?;
                let push = a.kind == "registry" || a.flag("push")?.unwrap_or(false);
                let insecure = a.flag("registry.insecure")?.unwrap_or(false);
                Output::Image {
                    name,
                    also: Vec::new(),
                    push,
                    insecure,
                    // Passed through to BuildKit's image exporter as given.
                    attrs: std::mem::take(&mut a.map),
                }
            }
            "oci" | "docker" => {
                a.allow(&[&["dest", "name"]])?;
                let dest = a.need("dest")?.into();
                let name = a.take("name");
                match a.kind.as_str() {
                    "oci" => Output::Oci { dest, name },
                    _ => Output::Docker { dest, name },
                }
            }
            "local" => {
                a.allow(&[&["dest", "replace"]])?;
                Output::Local {
                    dest: a.need("dest")?.into(),
                    replace: a.flag("replace")?.unwrap_or(false),
                }
            }
            other => return Err(a.error(format!("unknown type {other:?} (use {KINDS})"))),
        };
        Ok(out)
    }
}

impl Output {
    /// The exporter type and attributes the daemon gets (destinations on this
    /// machine stay here: the daemon streams the bytes back through the session).
    pub(crate) fn exporter(
        &self,
        image_config: Option<&str>,
    ) -> (String, BTreeMap<String, String>) {
        let mut attrs = BTreeMap::new();
        if let Some(config) = image_config {
            attrs.insert("containerimage.config".to_owned(), config.to_owned());
        }
        let kind = match self {
            Output::Image {
                name,
                also,
                push,
                insecure,
                attrs: extra,
            } => {
                let names: Vec<ImageRef> = std::iter::once(name).chain(also).cloned().collect();
                attrs.insert("name".into(), name_list(&names));
                if *push {
                    attrs.insert("push".into(), "true".into());
                }
                if *insecure {
                    attrs.insert("registry.insecure".into(), "true".into());
                }
                attrs.extend(extra.clone());
                "image"
            }
            Output::Oci { name, .. } => {
                if let Some(n) = name {
                    attrs.insert("name".into(), n.clone());
                }
                "oci"
            }
            Output::Docker { name, .. } => {
                if let Some(n) = name {
                    attrs.insert("name".into(), n.clone());
                }
                "docker"
            }
            Output::Local { .. } => {
                attrs.remove("containerimage.config");
                "local"
            }
            Output::Moby { names } => {
                attrs.insert("name".into(), name_list(names));
                "moby"
            }
            Output::DockerStream { names, .. } => {
                attrs.insert("name".into(), name_list(names));
                "docker"
            }
            Output::Tar { .. } => {
                attrs.remove("containerimage.config");
                "tar"
            }
            Output::OciDir { attrs: extra, .. } => {
                attrs.extend(extra.clone());
                attrs.insert("tar".into(), "false".into());
                "oci"
            }
        };
        (kind.to_owned(), attrs)
    }
}

/// What the exporters answered, read once from the daemon's
/// `ExporterResponse` map: the keys strata acts on, typed; every entry as
/// given stays for `--metadata-file`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExporterResponse {
    /// `containerimage.digest`: the image's manifest (or index) digest; for
    /// an image found loaded in docker, its image id.
    pub image_digest: Option<String>,
    /// `containerimage.config.digest`.
    pub config_digest: Option<String>,
    /// `image.name`: the names the image went out under.
    pub names: Vec<String>,
    /// `containerimage.descriptor` (base64 JSON): the image's descriptor.
    pub descriptor: Option<serde_json::Value>,
    /// `cache.manifest`: the descriptor of a local cache export's manifest.
    pub cache_manifest: Option<serde_json::Value>,
    entries: BTreeMap<String, String>,
}

const IMAGE_DIGEST: &str = "containerimage.digest";
const CONFIG_DIGEST: &str = "containerimage.config.digest";
const IMAGE_NAME: &str = "image.name";
const DESCRIPTOR: &str = "containerimage.descriptor";
const CACHE_MANIFEST: &str = "cache.manifest";

impl ExporterResponse {
    /// The daemon's map, read once.
    pub fn new(entries: BTreeMap<String, String>) -> ExporterResponse {
        let get = |k: &str| entries.get(k).cloned();
        let json = |text: &str| serde_json::from_str(text).ok();
        let descriptor = entries.get(DESCRIPTOR).and_then(|d| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(d).ok()?;
            serde_json::from_slice(&bytes).ok()
        });
        ExporterResponse {
            image_digest: get(IMAGE_DIGEST),
            config_digest: get(CONFIG_DIGEST),
            names: get(IMAGE_NAME)
                .map(|n| n.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            descriptor,
            cache_manifest: entries.get(CACHE_MANIFEST).and_then(|m| json(m)),
            entries,
        }
    }

    /// An image that was not exported but found: its digest (or docker
    /// image id), under `name` if it has one.
    pub fn found(digest: String, name: Option<&ImageRef>) -> ExporterResponse {
        let mut entries = BTreeMap::from([(IMAGE_DIGEST.to_owned(), digest)]);
        if let Some(name) = name {
            entries.insert(IMAGE_NAME.to_owned(), name.to_string());
        }
        ExporterResponse::new(entries)
    }

    /// Every entry as the daemon gave it (for `--metadata-file`).
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildctl_outputs() {
        assert_eq!(
            "type=oci,dest=out.tar".parse::<Output>().unwrap(),
            Output::Oci {
                dest: "out.tar".into(),
                name: None
            }
        );
        assert_eq!(
            "type=registry,name=127.0.0.1:5000/x:y,registry.insecure=true"
                .parse::<Output>()
                .unwrap(),
            Output::Image {
                also: Vec::new(),
                name: "127.0.0.1:5000/x:y".parse().unwrap(),
                push: true,
                insecure: true,
                attrs: BTreeMap::new()
            }
        );
        assert!("type=oci"
            .parse::<Output>()
            .unwrap_err()
            .to_string()
            .contains("needs dest="));
        assert!("dest=x"
            .parse::<Output>()
            .unwrap_err()
            .to_string()
            .contains("missing type="));
        assert!("type=tarball,dest=x"
            .parse::<Output>()
            .unwrap_err()
            .to_string()
            .contains("unknown type"));
        assert!("type=local,dest=d,foo=bar"
            .parse::<Output>()
            .unwrap_err()
            .to_string()
            .contains("unknown attribute"));
        assert!("type=oci,dest"
            .parse::<Output>()
            .unwrap_err()
            .to_string()
            .contains("not KEY=VALUE"));
    }
}
