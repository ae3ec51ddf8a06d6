//! SLSA provenance's materials: what a build read (base images by digest,
//! git sources, local contexts), in either of the predicate versions
//! BuildKit writes (v0.2's `materials`, v1's `resolvedDependencies`).

use serde::Serialize;

/// Whether `predicate_type` is SLSA provenance, of any version.
pub fn is_provenance(predicate_type: &str) -> bool {
    predicate_type.starts_with("https://slsa.dev/provenance/")
}

/// One thing the build read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Material {
    /// `pkg:docker/…@…`, `https://github.com/…git#…`, …
    pub uri: String,
    /// `sha256:…` (or the first digest the record gives), if any.
    pub digest: Option<String>,
}

/// The materials of a provenance predicate, in its order.
pub fn materials(predicate: &serde_json::Value) -> Vec<Material> {
    let listed = predicate["materials"]
        .as_array()
        .or_else(|| predicate["buildDefinition"]["resolvedDependencies"].as_array());
    listed
        .into_iter()
        .flatten()
        .map(|m| Material {
            uri: m["uri"].as_str().unwrap_or_default().to_owned(),
            digest: digest(&m["digest"]),
        })
        .collect()
}

/// `ALGORITHM:HEX` of a `{"sha256": HEX}` map (sha256 first).
fn digest(digests: &serde_json::Value) -> Option<String> {
    let map = digests.as_object()?;
    let (algorithm, hex) = map.get_key_value("sha256").or_else(|| map.iter().next())?;
    Some(format!("{algorithm}:{}", hex.as_str()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn materials_are_read_from_either_version() {
        let v02 = serde_json::json!({"materials": [
            {"uri": "pkg:docker/debian@bookworm", "digest": {"sha256": "ab"}},
            {"uri": "https://example.invalid/x.git"}
        ]});
        let v1 = serde_json::json!({"buildDefinition": {"resolvedDependencies": [
            {"uri": "pkg:docker/debian@bookworm", "digest": {"sha512": "cd"}}
        ]}});
        let m = materials(&v02);
        assert_eq!(m[0].digest.as_deref(), Some("sha256:ab"));
        assert_eq!(m[1].digest, None);
        assert_eq!(materials(&v1)[0].digest.as_deref(), Some("sha512:cd"));
        assert!(is_provenance("https://slsa.dev/provenance/v0.2"));
        assert!(!is_provenance("https://spdx.dev/Document"));
    }
}
