//! strata.toml as written: serde types that keep source positions, so every
//! later check can name the line. Unknown keys and wrong types are rejected here.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A TOML table of strings whose keys remember where they are (for file order
/// and for naming a bad key).
pub(super) type RawVars = BTreeMap<Spanned<String>, String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpec {
    pub ca_cert: Option<Spanned<String>>,
    #[serde(default)]
    pub images: BTreeMap<Spanned<String>, Spanned<RawImage>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImage {
    pub base: Option<Spanned<String>>,
    pub from: Option<Spanned<String>>,
    pub platform: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub env: RawVars,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, Spanned<String>>,
    pub push: Option<Spanned<String>>,
    /// `provenance = "min" | "max"`: the daemon attaches SLSA provenance.
    pub provenance: Option<Spanned<String>>,
    /// `sbom = true | false | { generator = "IMAGE" }`: the daemon attaches
    /// an SPDX SBOM made by the generator image.
    pub sbom: Option<Spanned<RawSbom>>,
    #[serde(default)]
    pub cache_to: Vec<Spanned<String>>,
    #[serde(default)]
    pub cache_from: Vec<Spanned<String>>,
    #[serde(default)]
    pub toolchain: Vec<Spanned<RawStep>>,
    pub overlay: Option<Spanned<RawOverlay>>,
    pub dockerfile: Option<Spanned<RawDockerfile>>,
}

/// `dockerfile = { file, context, target, args }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDockerfile {
    pub file: Option<Spanned<String>>,
    pub context: Option<Spanned<String>>,
    pub target: Option<String>,
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

/// One `[[images.NAME.toolchain]]` table. Every kind is optional here; the
/// check that exactly one is present comes after, with its position.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub apt: Option<Spanned<Vec<String>>>,
    pub pip: Option<Spanned<Vec<String>>>,
    /// `npm = ["pkg"]` (global) or `npm = { packages = [...], dir = "/app" }`.
    pub npm: Option<Spanned<SeqOrMap<Vec<String>, RawNpmDir>>>,
    pub run: Option<Spanned<String>>,
    pub cache: Option<Spanned<Vec<Spanned<String>>>>,
    pub name: Option<String>,
    pub env: Option<Spanned<RawVars>>,
    pub workdir: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    /// The platforms the step runs for (all of the image's when absent).
    pub platforms: Option<Spanned<OneOrMany>>,
}

/// The step kinds, as the keys are spelled (in the order errors list them).
pub(super) const STEP_KINDS: [&str; 7] = ["apt", "pip", "npm", "run", "env", "workdir", "user"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNpmDir {
    pub packages: Vec<String>,
    pub dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverlay {
    pub copy: Option<SeqOrMap<Vec<RawCopy>, RawCopy>>,
    pub git: Option<SeqOrMap<Vec<RawGit>, RawGit>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCopy {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGit {
    pub url: Spanned<String>,
    #[serde(rename = "ref", default)]
    pub reference: String,
    pub to: Spanned<String>,
}

/// An array (`S`) or a table (`M`). Unlike `#[serde(untagged)]`, which buffers
/// its input and answers "data did not match any variant", this hands the
/// value straight to the matching type, so an unknown or missing key inside
/// keeps its own message and position.
#[derive(Debug)]
pub(super) enum SeqOrMap<S, M> {
    Seq(S),
    Map(M),
}

impl<'de, S: Deserialize<'de>, M: Deserialize<'de>> Deserialize<'de> for SeqOrMap<S, M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either<S, M>(PhantomData<(S, M)>);

        impl<'de, S: Deserialize<'de>, M: Deserialize<'de>> Visitor<'de> for Either<S, M> {
            type Value = SeqOrMap<S, M>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array or a table")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                S::deserialize(SeqAccessDeserializer::new(seq)).map(SeqOrMap::Seq)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                M::deserialize(MapAccessDeserializer::new(map)).map(SeqOrMap::Map)
            }
        }

        deserializer.deserialize_any(Either(PhantomData))
    }
}

/// `sbom = true | false` or `sbom = { generator = "IMAGE" }`.
#[derive(Debug)]
pub(super) enum RawSbom {
    On(bool),
    Generator(RawSbomTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSbomTable {
    pub generator: Spanned<String>,
}

impl<'de> Deserialize<'de> for RawSbom {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoolOrTable;

        impl<'de> Visitor<'de> for BoolOrTable {
            type Value = RawSbom;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or a table { generator = \"IMAGE\" }")
            }

            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawSbom::On(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawSbomTable::deserialize(MapAccessDeserializer::new(map)).map(RawSbom::Generator)
            }
        }

        deserializer.deserialize_any(BoolOrTable)
    }
}

/// A string, or an array of strings (`platform = "linux/arm64"` or
/// `platform = ["linux/amd64", "linux/arm64"]`).
#[derive(Debug, Clone)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Strings;

        impl<'de> Visitor<'de> for Strings {
            type Value = OneOrMany;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
            }
        }

        deserializer.deserialize_any(Strings)
    }
}
