//! Build outputs (`--output type=…`, `--push`) and how each becomes an exporter.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::str::FromStr;

use super::attrs::{Attrs, OptionError};
use crate::reference::ImageRef;
use crate::session::{ExportTarget, LocalDest, TarStream};

/// Where a build's result goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An image in a registry (`--push NAME`, `type=image,name=…,push=true`).
    Image {
        name: ImageRef,
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
                push,
                insecure,
                attrs: extra,
            } => {
                attrs.insert("name".into(), name.to_string());
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

    /// Where on this machine the exporter's output goes, if anywhere.
    pub(crate) fn target(&self) -> Option<ExportTarget> {
        match self {
            Output::Oci { dest, .. } | Output::Docker { dest, .. } => {
                Some(ExportTarget::File(dest.clone()))
            }
            Output::Local { dest, replace } => Some(ExportTarget::Dir(LocalDest {
                dir: dest.clone(),
                replace: *replace,
            })),
            Output::DockerStream { stream, .. } | Output::Tar { stream } => {
                Some(ExportTarget::Stream(stream.clone()))
            }
            Output::Image { .. } | Output::Moby { .. } | Output::OciDir { .. } => None,
        }
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
