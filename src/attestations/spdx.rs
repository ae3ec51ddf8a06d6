//! An SPDX 2.3 document's packages, as an SBOM statement carries them
//! (BuildKit's SBOM processor takes statements whose predicate type is
//! [`PREDICATE_TYPE`], from any generator).

use serde::Serialize;

/// The in-toto predicate type of an SPDX document.
pub const PREDICATE_TYPE: &str = "https://spdx.dev/Document";

/// One package of the document: what a package manager recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Its package URL (`pkg:deb/debian/jq@1.6-2.1?arch=amd64`), if given.
    pub purl: Option<String>,
}

impl Package {
    /// The purl's type (`deb`, `pypi`, `npm`), if it has one.
    pub fn kind(&self) -> Option<&str> {
        self.purl
            .as_deref()?
            .strip_prefix("pkg:")?
            .split('/')
            .next()
    }
}

/// The packages of an SPDX document, sorted by kind, name and version.
pub fn packages(document: &serde_json::Value) -> Vec<Package> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let mut packages: Vec<Package> = document["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| Package {
            name: text(&p["name"]),
            version: text(&p["versionInfo"]),
            purl: purl(p),
        })
        .collect();
    packages.sort_by(|a, b| (a.kind(), &a.name, &a.version).cmp(&(b.kind(), &b.name, &b.version)));
    packages
}

/// The package's `purl` external reference.
fn purl(package: &serde_json::Value) -> Option<String> {
    package["externalRefs"]
        .as_array()?
        .iter()
        .find(|r| r["referenceType"] == "purl")
        .and_then(|r| r["referenceLocator"].as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_come_with_their_purls_sorted_by_kind() {
        let doc = serde_json::json!({"packages": [
            {"name": "six", "versionInfo": "1.16.0", "externalRefs": [
                {"referenceType": "purl", "referenceLocator": "pkg:pypi/six@1.16.0"}]},
            {"name": "jq", "versionInfo": "1.6-2.1", "externalRefs": [
                {"referenceType": "cpe23Type", "referenceLocator": "cpe:2.3:a:jq"},
                {"referenceType": "purl", "referenceLocator": "pkg:deb/debian/jq@1.6-2.1?arch=amd64"}]},
            {"name": "bare", "versionInfo": "1"}
        ]});
        let packages = packages(&doc);
        let kinds: Vec<_> = packages.iter().map(Package::kind).collect();
        assert_eq!(kinds, [None, Some("deb"), Some("pypi")]);
        assert_eq!(packages[1].name, "jq");
        assert_eq!(packages[1].version, "1.6-2.1");
        assert!(packages[0].purl.is_none());
    }
}
