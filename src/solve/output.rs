//! Build outputs (`--output type=…`, `--push`) and how each becomes an exporter.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::session::ExportTarget;

/// Where a build's result goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An image in a registry (`--push NAME`, `type=image,name=…,push=true`).
    Image {
        name: String,
        push: bool,
        insecure: bool,
        attrs: BTreeMap<String, String>,
    },
    /// An OCI layout tarball on this machine.
    Oci { dest: PathBuf, name: Option<String> },
    /// A `docker load`-able tarball on this machine.
    Docker { dest: PathBuf, name: Option<String> },
    /// The result's files in a directory on this machine.
    Local { dest: PathBuf },
}

/// Parses a buildctl-style `--output` value: `type=oci,dest=out.tar`.
pub fn parse_output(value: &str) -> Result<Output, String> {
    let mut attrs = BTreeMap::new();
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--output {value:?}: {part:?} is not KEY=VALUE"))?;
        attrs.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let kind = attrs.remove("type").ok_or_else(|| {
        format!("--output {value:?}: missing type= (image, registry, oci, docker or local)")
    })?;
    let dest = |attrs: &mut BTreeMap<String, String>| {
        attrs
            .remove("dest")
            .map(PathBuf::from)
            .ok_or_else(|| format!("--output {value:?}: type={kind} needs dest=PATH"))
    };
    let out = match kind.as_str() {
        "image" | "registry" => {
            let name = attrs
                .remove("name")
                .ok_or_else(|| format!("--output {value:?}: type={kind} needs name=REF"))?;
            let push = kind == "registry"
                || attrs.remove("push").is_some_and(|v| v == "true");
            let insecure = attrs.remove("registry.insecure").is_some_and(|v| v == "true");
            Output::Image {
                name,
                push,
                insecure,
                attrs: std::mem::take(&mut attrs),
            }
        }
        "oci" => Output::Oci {
            dest: dest(&mut attrs)?,
            name: attrs.remove("name"),
        },
        "docker" => Output::Docker {
            dest: dest(&mut attrs)?,
            name: attrs.remove("name"),
        },
        "local" => Output::Local {
            dest: dest(&mut attrs)?,
        },
        other => {
            return Err(format!(
                "--output {value:?}: unknown type {other:?} (use image, registry, oci, docker or local)"
            ))
        }
    };
    if let Output::Oci { .. } | Output::Docker { .. } | Output::Local { .. } = &out {
        if let Some(k) = attrs.keys().next() {
            return Err(format!(
                "--output {value:?}: unknown attribute {k:?} for type={kind}"
            ));
        }
    }
    Ok(out)
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
                attrs.insert("name".into(), name.clone());
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
        };
        (kind.to_owned(), attrs)
    }

    /// Where on this machine the exporter's output goes, if anywhere.
    pub(crate) fn target(&self) -> Option<ExportTarget> {
        match self {
            Output::Oci { dest, .. } | Output::Docker { dest, .. } => {
                Some(ExportTarget::File(dest.clone()))
            }
            Output::Local { dest } => Some(ExportTarget::Dir(dest.clone())),
            Output::Image { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildctl_outputs() {
        assert_eq!(
            parse_output("type=oci,dest=out.tar").unwrap(),
            Output::Oci {
                dest: "out.tar".into(),
                name: None
            }
        );
        assert_eq!(
            parse_output("type=registry,name=127.0.0.1:5000/x:y,registry.insecure=true").unwrap(),
            Output::Image {
                name: "127.0.0.1:5000/x:y".into(),
                push: true,
                insecure: true,
                attrs: BTreeMap::new()
            }
        );
        assert!(parse_output("type=oci")
            .unwrap_err()
            .contains("needs dest=PATH"));
        assert!(parse_output("dest=x")
            .unwrap_err()
            .contains("missing type="));
        assert!(parse_output("type=tarball,dest=x")
            .unwrap_err()
            .contains("unknown type"));
        assert!(parse_output("type=local,dest=d,foo=bar")
            .unwrap_err()
            .contains("unknown attribute"));
        assert!(parse_output("type=oci,dest")
            .unwrap_err()
            .contains("not KEY=VALUE"));
    }
}
