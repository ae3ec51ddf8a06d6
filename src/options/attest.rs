//! Attestations the daemon attaches to an image: SLSA provenance, asked for
//! as the `attest:provenance` frontend attribute, which BuildKit's
//! `Control.Solve` reads for raw-LLB and gateway builds as for frontends.
//! Off unless asked: a provenance record carries the build's timestamps, so
//! with it an unchanged rebuild pushes a new index digest.

use std::fmt;
use std::str::FromStr;

use super::OptionError;

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
}
