//! Attestations the daemon attaches to an image: SLSA provenance and an
//! SPDX SBOM, asked for as the `attest:provenance` and `attest:sbom`
//! frontend attributes, which BuildKit's `Control.Solve` reads for raw-LLB
//! and gateway builds as for frontends. Off unless asked: a provenance
//! record carries the build's timestamps, so with it an unchanged rebuild
//! pushes a new index digest.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::OptionError;
use crate::reference::ImageRef;

/// The generator BuildKit runs when none is named: Docker Hub's, which
/// networks without Docker Hub cannot pull (`scripts/daemon.sh` builds
/// strata's own, `examples/sbom-generator`, as `STRATA_SBOM_GENERATOR`).
pub const DEFAULT_SBOM_GENERATOR: &str = "docker.io/docker/buildkit-syft-scanner:stable-1";

/// What a build asks the daemon to attach to each platform's image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attestations {
    pub provenance: Option<ProvenanceMode>,
    pub sbom: Option<Sbom>,
}

impl Attestations {
    /// Whether any is asked for (an image with one is solved whole: its
    /// index holds the attestation manifests the daemon made).
    pub fn any(&self) -> bool {
        self.provenance.is_some() || self.sbom.is_some()
    }

    /// The frontend attributes that ask for them.
    pub fn attrs(&self) -> BTreeMap<String, String> {
        let provenance = self.provenance.map(ProvenanceMode::attr);
        provenance
            .into_iter()
            .chain(self.sbom.as_ref().map(Sbom::attr))
            .collect()
    }
}

/// An SBOM made by running `generator` over the image (BuildKit's scanner
/// protocol: the image at `$BUILDKIT_SCAN_SOURCE`, an in-toto statement out
/// to `$BUILDKIT_SCAN_DESTINATION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sbom {
    pub generator: ImageRef,
    pub chosen: Chosen,
}

/// Who picked an SBOM generator: a default is checked for reachability
/// before a solve (so an unreachable Docker Hub is one clear line, not a
/// hung or late daemon error); a named one is the user's to vouch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    ByDefault,
    Named,
}

impl Sbom {
    /// The frontend attribute that asks the daemon for it.
    pub fn attr(&self) -> (String, String) {
        (
            "attest:sbom".to_owned(),
            format!("generator={}", self.generator),
        )
    }
}

/// `sbom` as the flag or spec asks for it: the default generator or a
/// named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SbomGenerator {
    Default,
    Named(ImageRef),
}

impl SbomGenerator {
    /// The SBOM this asks for, `default` standing in for an unnamed generator.
    pub fn resolve(&self, default: &ImageRef) -> Sbom {
        match self {
            SbomGenerator::Default => Sbom {
                generator: default.clone(),
                chosen: Chosen::ByDefault,
            },
            SbomGenerator::Named(generator) => Sbom {
                generator: generator.clone(),
                chosen: Chosen::Named,
            },
        }
    }
}

impl FromStr for SbomGenerator {
    type Err = String;

    /// An image reference, as the generator's name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<ImageRef>()
            .map(SbomGenerator::Named)
            .map_err(|e| format!("the SBOM generator {s:?}: {e}"))
    }
}

/// `--sbom[=VALUE]` as buildx takes it: `true`/empty (the default
/// generator), `false` (off, also over the spec's), `generator=IMAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomFlag(pub Option<SbomGenerator>);

impl FromStr for SbomFlag {
    type Err = OptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |e: String| OptionError::new("--sbom", s, e);
        let generator = match s.trim() {
            "" | "true" | "1" => Some(SbomGenerator::Default),
            "false" | "0" => None,
            other => match other.strip_prefix("generator=") {
                Some(image) => Some(image.parse().map_err(bad)?),
                None => return Err(bad("expected true, false or generator=IMAGE".to_owned())),
            },
        };
        Ok(SbomFlag(generator))
    }
}

/// How much the provenance record tells (BuildKit's `mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenanceMode {
    /// The build's materials (base images, sources) and its frontend options.
    Min,
    /// Also the build's steps as LLB and its local sources' details.
    Max,
}

impl ProvenanceMode {
    pub fn name(self) -> &'static str {
        match self {
            ProvenanceMode::Min => "min",
            ProvenanceMode::Max => "max",
        }
    }

    /// The frontend attribute that asks the daemon for it.
    pub fn attr(self) -> (String, String) {
        (
            "attest:provenance".to_owned(),
            format!("mode={}", self.name()),
        )
    }
}

impl fmt::Display for ProvenanceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProvenanceMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "min" => Ok(ProvenanceMode::Min),
            "max" => Ok(ProvenanceMode::Max),
            other => Err(format!("{other:?} is not a provenance mode (min or max)")),
        }
    }
}

/// `--provenance[=VALUE]` as buildx takes it: `true`/empty (mode=min),
/// `false` (off, also over the spec's), `min`/`max`, `mode=min|max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvenanceFlag(pub Option<ProvenanceMode>);

impl FromStr for ProvenanceFlag {
    type Err = OptionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = s.trim();
        let mode = match value {
            "" | "true" | "1" => Some(ProvenanceMode::Min),
            "false" | "0" => None,
            other => Some(
                other
                    .strip_prefix("mode=")
                    .unwrap_or(other)
                    .parse()
                    .map_err(|e: String| OptionError::new("--provenance", s, e))?,
            ),
        };
        Ok(ProvenanceFlag(mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_reads_as_buildx_takes_it() {
        let flag = |s: &str| s.parse::<ProvenanceFlag>().map(|f| f.0);
        assert_eq!(flag(""), Ok(Some(ProvenanceMode::Min)));
        assert_eq!(flag("true"), Ok(Some(ProvenanceMode::Min)));
        assert_eq!(flag("false"), Ok(None));
        assert_eq!(flag("max"), Ok(Some(ProvenanceMode::Max)));
        assert_eq!(flag("mode=max"), Ok(Some(ProvenanceMode::Max)));
        let e = flag("mode=most").unwrap_err().to_string();
        assert!(
            e.contains("--provenance") && e.contains("min or max"),
            "{e}"
        );
        assert_eq!(
            ProvenanceMode::Max.attr(),
            ("attest:provenance".to_owned(), "mode=max".to_owned())
        );
    }

    #[test]
    fn the_sbom_flag_names_a_generator_or_takes_the_default() {
        let flag = |s: &str| s.parse::<SbomFlag>().map(|f| f.0);
        let default: ImageRef = "127.0.0.1:5000/strata/sbom-generator:1".parse().unwrap();
        assert_eq!(flag(""), Ok(Some(SbomGenerator::Default)));
        assert_eq!(flag("false"), Ok(None));
        let named = flag("generator=127.0.0.1:5000/gen:2").unwrap().unwrap();
        let sbom = named.resolve(&default);
        assert_eq!(sbom.chosen, Chosen::Named);
        assert_eq!(
            sbom.attr(),
            (
                "attest:sbom".to_owned(),
                "generator=127.0.0.1:5000/gen:2".to_owned()
            )
        );
        assert_eq!(
            SbomGenerator::Default.resolve(&default).chosen,
            Chosen::ByDefault
        );
        let e = flag("syft").unwrap_err().to_string();
        assert!(e.contains("--sbom") && e.contains("generator=IMAGE"), "{e}");
        let e = flag("generator=UPPER:bad:ref").unwrap_err().to_string();
        assert!(e.contains("--sbom") && e.contains("SBOM generator"), "{e}");
    }

    #[test]
    fn attestations_become_the_attributes_the_daemon_reads() {
        let none = Attestations::default();
        assert!(!none.any() && none.attrs().is_empty());
        let both = Attestations {
            provenance: Some(ProvenanceMode::Min),
            sbom: Some(SbomGenerator::Default.resolve(&DEFAULT_SBOM_GENERATOR.parse().unwrap())),
        };
        let attrs = both.attrs();
        assert_eq!(attrs["attest:provenance"], "mode=min");
        assert_eq!(
            attrs["attest:sbom"],
            "generator=docker.io/docker/buildkit-syft-scanner:stable-1"
        );
    }
}
