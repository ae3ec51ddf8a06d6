//! Cache import and export options, in buildctl's `--cache-to` / `--cache-from`
//! syntax (`type=registry,ref=…,mode=max`).

use std::collections::BTreeMap;

/// One cache import or export (`type=registry,ref=…`), as BuildKit takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub kind: String,
    pub attrs: BTreeMap<String, String>,
}

/// Which way a cache entry goes; the accepted attributes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Export,
    Import,
}

const EXPORT_ATTRS: &[(&str, &[&str])] = &[
    (
        "registry",
        &[
            "ref",
            "mode",
            "compression",
            "compression-level",
            "force-compression",
            "oci-mediatypes",
            "image-manifest",
            "ignore-error",
            "registry.insecure",
        ],
    ),
    (
        "local",
        &[
            "dest",
            "mode",
            "compression",
            "compression-level",
            "force-compression",
            "oci-mediatypes",
            "image-manifest",
            "ignore-error",
            "tag",
        ],
    ),
    ("inline", &["mode"]),
];

const IMPORT_ATTRS: &[(&str, &[&str])] = &[
    ("registry", &["ref", "registry.insecure"]),
    ("local", &["src", "tag", "digest"]),
];

/// Parses one `--cache-to` / `--cache-from` value. `flag` names the option in errors.
pub fn parse_cache_entry(value: &str, direction: Direction) -> Result<CacheEntry, String> {
    let flag = match direction {
        Direction::Export => "--cache-to",
        Direction::Import => "--cache-from",
    };
    // buildctl accepts a bare reference for registry imports.
    if direction == Direction::Import && !value.contains('=') && !value.is_empty() {
        return Ok(CacheEntry {
            kind: "registry".into(),
            attrs: BTreeMap::from([("ref".to_owned(), value.to_owned())]),
        });
    }
    let mut attrs = BTreeMap::new();
    for part in value.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{flag} {value:?}: {part:?} is not KEY=VALUE"))?;
        attrs.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let kind = attrs
        .remove("type")
        .ok_or_else(|| format!("{flag} {value:?}: missing type= (registry, local or inline)"))?;
    let table = match direction {
        Direction::Export => EXPORT_ATTRS,
        Direction::Import => IMPORT_ATTRS,
    };
    let known = table
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, attrs)| *attrs)
        .ok_or_else(|| {
            let kinds: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
            format!(
                "{flag} {value:?}: unknown type {kind:?} (use {})",
                kinds.join(", ")
            )
        })?;
    if let Some(unknown) = attrs.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!(
            "{flag} {value:?}: unknown attribute {unknown:?} for type={kind} (known: {})",
            known.join(", ")
        ));
    }
    let need = |key: &str| {
        if attrs.contains_key(key) {
            Ok(())
        } else {
            Err(format!("{flag} {value:?}: type={kind} needs {key}="))
        }
    };
    match (kind.as_str(), direction) {
        ("registry", _) => need("ref")?,
        ("local", Direction::Export) => need("dest")?,
        ("local", Direction::Import) => need("src")?,
        _ => {}
    }
    if let Some(mode) = attrs.get("mode") {
        if mode != "min" && mode != "max" {
            return Err(format!(
                "{flag} {value:?}: mode must be min or max, not {mode:?}"
            ));
        }
    }
    if let Some(c) = attrs.get("compression") {
        if !["gzip", "zstd", "estargz", "uncompressed"].contains(&c.as_str()) {
            return Err(format!(
                "{flag} {value:?}: compression must be gzip, zstd, estargz or uncompressed, not {c:?}"
            ));
        }
    }
    // Toolchain layers are intermediate results: only mode=max exports them,
    // and restoring them is the point of exporting cache (see README).
    if direction == Direction::Export && kind != "inline" && !attrs.contains_key("mode") {
        attrs.insert("mode".into(), "max".into());
    }
    Ok(CacheEntry { kind, attrs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildctl_cache_options() {
        let e = parse_cache_entry("type=registry,ref=r/x:cache", Direction::Export).unwrap();
        assert_eq!(e.kind, "registry");
        assert_eq!(e.attrs["mode"], "max", "max by default");
        let e = parse_cache_entry("type=registry,ref=r/x,mode=min", Direction::Export).unwrap();
        assert_eq!(e.attrs["mode"], "min");
        let e = parse_cache_entry("type=inline", Direction::Export).unwrap();
        assert!(e.attrs.is_empty());
        let e = parse_cache_entry("r/x:cache", Direction::Import).unwrap();
        assert_eq!(e.attrs["ref"], "r/x:cache");
        let e = parse_cache_entry("type=local,src=/tmp/c", Direction::Import).unwrap();
        assert_eq!(e.attrs["src"], "/tmp/c");
    }

    #[test]
    fn rejects_what_buildkit_would_reject_late() {
        let err = |v, d| parse_cache_entry(v, d).unwrap_err();
        assert!(err("type=registry", Direction::Export).contains("needs ref="));
        assert!(err("type=local,src=x", Direction::Export).contains("unknown attribute \"src\""));
        assert!(err("type=local", Direction::Import).contains("needs src="));
        assert!(err("type=s3,ref=x", Direction::Export).contains("unknown type"));
        assert!(err("type=registry,ref=x,mode=all", Direction::Export).contains("min or max"));
        assert!(err("type=inline", Direction::Import).contains("unknown type"));
        assert!(err("ref", Direction::Export).contains("not KEY=VALUE"));
    }
}

/// What a cache export wrote, for the build report and `--metadata-file`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheReport {
    /// `registry`, `local` or `inline`.
    pub kind: String,
    /// The ref, the directory, or the image carrying inline cache.
    pub location: String,
    pub mode: Option<String>,
    /// Bytes of the cache manifest and every blob it references, when known.
    pub bytes: Option<u64>,
    pub blobs: Option<usize>,
}

/// Bytes and count of what a manifest or index references (config, layers,
/// entries), plus the manifest itself.
pub fn referenced_size(manifest: &serde_json::Value, manifest_bytes: u64) -> (u64, usize) {
    let mut bytes = manifest_bytes;
    let mut blobs = 1;
    let descriptors = manifest["config"]
        .as_object()
        .map(|c| serde_json::Value::Object(c.clone()))
        .into_iter()
        .chain(manifest["layers"].as_array().cloned().unwrap_or_default())
        .chain(
            manifest["manifests"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    for d in descriptors {
        bytes += d["size"].as_u64().unwrap_or(0);
        blobs += 1;
    }
    (bytes, blobs)
}

/// After a successful solve: points each local cache's `index.json` at the
/// exported cache manifest (BuildKit leaves that to the client), and measures
/// what every export wrote.
pub async fn finish_exports(
    exports: &[CacheEntry],
    exporter_response: &BTreeMap<String, String>,
    registry: &crate::registry::Registry,
    image: Option<&str>,
) -> Result<Vec<CacheReport>, String> {
    let manifest: Option<serde_json::Value> = exporter_response
        .get("cache.manifest")
        .and_then(|m| serde_json::from_str(m).ok());
    let mut reports = Vec::new();
    for entry in exports {
        let mode = entry.attrs.get("mode").cloned();
        let mut report = CacheReport {
            kind: entry.kind.clone(),
            location: String::new(),
            mode,
            bytes: None,
            blobs: None,
        };
        match entry.kind.as_str() {
            "local" => {
                let dest = entry.attrs.get("dest").cloned().unwrap_or_default();
                report.location = dest.clone();
                if let Some(desc) = &manifest {
                    let tag = entry
                        .attrs
                        .get("tag")
                        .map(String::as_str)
                        .unwrap_or("latest");
                    let layout = crate::session::OciLayout::new(&dest);
                    layout
                        .put_tag(tag, desc.clone())
                        .map_err(|e| format!("--cache-to {dest}: writing index.json: {e}"))?;
                    let digest = desc["digest"].as_str().unwrap_or_default();
                    if let Ok(bytes) = layout
                        .blob_path(digest)
                        .map_err(|e| e.to_string())
                        .and_then(|p| std::fs::read(p).map_err(|e| e.to_string()))
                    {
                        if let Ok(json) = serde_json::from_slice(&bytes) {
                            let (b, n) = referenced_size(&json, bytes.len() as u64);
                            report.bytes = Some(b);
                            report.blobs = Some(n);
                        }
                    }
                }
            }
            "registry" => {
                let reference = entry.attrs.get("ref").cloned().unwrap_or_default();
                report.location = reference.clone();
                if let Ok(r) = reference.parse::<crate::registry::ImageRef>() {
                    if let Ok((_, size, json)) = registry.artifact(&r).await {
                        let (b, n) = referenced_size(&json, size);
                        report.bytes = Some(b);
                        report.blobs = Some(n);
                    }
                }
            }
            _ => {
                report.location = image
                    .map(|i| format!("inline in {i}"))
                    .unwrap_or_else(|| "inline".into());
            }
        }
        reports.push(report);
    }
    Ok(reports)
}
