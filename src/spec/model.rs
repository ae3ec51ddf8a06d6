//! strata.toml as written: serde types that keep source positions, so every
//! later check can name the line. Unknown keys are rejected here.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

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
    pub platform: Option<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub push: Option<Spanned<String>>,
    #[serde(default)]
    pub cache_to: Vec<String>,
    #[serde(default)]
    pub cache_from: Vec<String>,
    #[serde(default)]
    pub toolchain: Vec<Spanned<RawStep>>,
    pub overlay: Option<Spanned<RawOverlay>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub apt: Option<Vec<String>>,
    pub pip: Option<Vec<String>>,
    pub npm: Option<RawNpm>,
    pub run: Option<String>,
    pub cache: Option<Vec<String>>,
    pub name: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

// Untagged enums buffer their input, which loses positions: no `Spanned`
// inside them (errors there point at the enclosing table).

/// `npm = ["pkg"]` (global) or `npm = { packages = [...], dir = "/app" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawNpm {
    Global(Vec<String>),
    Into(RawNpmDir),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNpmDir {
    pub packages: Vec<String>,
    pub dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverlay {
    pub copy: Option<OneOrMany<RawCopy>>,
    pub git: Option<Spanned<RawGit>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCopy {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGit {
    pub url: String,
    #[serde(rename = "ref", default)]
    pub reference: String,
    pub to: String,
}
