//! Build-cache exports and imports as typed values. They are parsed once, from
//! buildctl's syntax (`type=registry,ref=…,mode=max`) on the command line or in
//! a spec, print back in that syntax, and become the daemon's
//! `CacheOptionsEntry` in one place ([`CacheExport::to_wire`],
//! [`CacheImport::to_wire`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::attrs::{Attrs, OptionError};
use super::mounts::MountOptions;
use super::s3::{refuse_credentials, S3Cache, S3_ATTRS};
use crate::reference::ImageRef;
use crate::wire::moby::buildkit::v1::CacheOptionsEntry;

/// Which results a cache export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Only what is a layer of the image (and results whose blobs exist).
    Min,
    /// Every intermediate result: an edit anywhere still finds the steps
    /// before it. The default (see README: toolchain stages need it).
    #[default]
    Max,
}

/// How exported layers are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Estargz,
    Uncompressed,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Estargz => "estargz",
            Compression::Uncompressed => "uncompressed",
        }
    }
}

/// Options every blob-writing export (registry, local) shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerOptions {
    pub mode: CacheMode,
    pub compression: Option<Compression>,
    pub compression_level: Option<u8>,
    pub force_compression: bool,
    pub oci_mediatypes: Option<bool>,
    /// Write the cache as an OCI image manifest (for registries that reject indexes).
    pub image_manifest: bool,
    /// A failed export does not fail the build.
    pub ignore_error: bool,
}

/// Where a build's cache is exported to (`--cache-to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheExport {
    Registry {
        reference: ImageRef,
        options: LayerOptions,
        /// Plain http to the registry (set for loopback and `--insecure-registry`).
        insecure: bool,
        /// Cache mounts exported beside the cache (strata's, never sent to BuildKit).
        mounts: Option<MountOptions>,
    },
    /// An OCI layout directory on this machine, written through the session.
    Local {
        dest: PathBuf,
        /// The tag in the layout's `index.json`.
        tag: String,
        options: LayerOptions,
        mounts: Option<MountOptions>,
    },
    /// An S3 bucket, written by the daemon (BuildKit's s3 backend).
    S3 {
        cache: S3Cache,
        mode: CacheMode,
        ignore_error: bool,
        /// Cache mounts exported beside the cache, as objects in the bucket.
        mounts: Option<MountOptions>,
    },
    /// Cache metadata inside the exported image's config.
    Inline { mode: Option<CacheMode> },
}

/// Where a build's cache is imported from (`--cache-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheImport {
    Registry {
        reference: ImageRef,
        insecure: bool,
        /// Cache mounts seeded from beside the cache before the build.
        mounts: Option<MountOptions>,
    },
    /// An OCI layout directory on this machine, read through the session.
    Local {
        src: PathBuf,
        tag: String,
        /// The cache manifest's digest; found from `tag` when not given.
        digest: Option<String>,
        mounts: Option<MountOptions>,
    },
    /// An S3 bucket, read by the daemon; each of several names is an import.
    S3 {
        cache: S3Cache,
        mounts: Option<MountOptions>,
    },
}

/// strata's own: which cache mounts travel with the cache (see [`crate::mounts`]).
const MOUNT_ATTRS: &[&str] = &["mounts", "mounts-max-size"];

const LAYER_ATTRS: &[&str] = &[
    "mode",
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "image-manifest",
    "ignore-error",
];

impl Attrs {
    fn reference(&mut self) -> Result<ImageRef, OptionError> {
        let r = self.need("ref")?;
        r.parse().map_err(|e| self.error(format!("ref: {e}")))
    }

    fn mode(&mut self) -> Result<Option<CacheMode>, OptionError> {
        match self.take("mode").as_deref() {
            None => Ok(None),
            Some("min") => Ok(Some(CacheMode::Min)),
            Some("max") => Ok(Some(CacheMode::Max)),
            Some(other) => Err(self.error(format!("mode must be min or max, not {other:?}"))),
        }
    }

    fn layer_options(&mut self) -> Result<LayerOptions, OptionError> {
        let compression = match self.take("compression").as_deref() {
            None => None,
            Some("gzip") => Some(Compression::Gzip),
            Some("zstd") => Some(Compression::Zstd),
            Some("estargz") => Some(Compression::Estargz),
            Some("uncompressed") => Some(Compression::Uncompressed),
            Some(other) => {
                return Err(self.error(format!(
                    "compression must be gzip, zstd, estargz or uncompressed, not {other:?}"
                )))
            }
        };
        let compression_level = match self.take("compression-level") {
            None => None,
            Some(l) => Some(l.parse::<u8>().map_err(|_| {
                self.error(format!("compression-level is a number 0-22, not {l:?}"))
            })?),
        };
        Ok(LayerOptions {
            mode: self.mode()?.unwrap_or_default(),
            compression,
            compression_level,
            force_compression: self.flag("force-compression")?.unwrap_or(false),
            oci_mediatypes: self.flag("oci-mediatypes")?,
            image_manifest: self.flag("image-manifest")?.unwrap_or(false),
            ignore_error: self.flag("ignore-error")?.unwrap_or(false),
        })
    }

    fn insecure(&mut self) -> Result<bool, OptionError> {
        Ok(self.flag("registry.insecure")?.unwrap_or(false))
    }

    fn mounts(&mut self) -> Result<Option<MountOptions>, OptionError> {
        let max = self.take("mounts-max-size");
        match self.take("mounts") {
            None if max.is_some() => Err(self.error("mounts-max-size needs mounts=")),
            None => Ok(None),
            Some(list) => MountOptions::parse(&list, max.as_deref())
                .map(Some)
                .map_err(|e| self.error(e)),
        }
    }
}

impl FromStr for CacheExport {
    type Err = OptionError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        refuse_credentials("--cache-to", value)?;
        let mut a = Attrs::parse("--cache-to", value, "registry, local, s3 or inline")?;
        match a.kind.as_str() {
            "registry" => {
                a.allow(&[&["ref", "registry.insecure"], LAYER_ATTRS, MOUNT_ATTRS])?;
                Ok(CacheExport::Registry {
                    reference: a.reference()?,
                    insecure: a.insecure()?,
                    options: a.layer_options()?,
                    mounts: a.mounts()?,
                })
            }
            "local" => {
                a.allow(&[&["dest", "tag"], LAYER_ATTRS, MOUNT_ATTRS])?;
                Ok(CacheExport::Local {
                    dest: a.need("dest")?.into(),
                    tag: a.take("tag").unwrap_or_else(|| "latest".into()),
                    options: a.layer_options()?,
                    mounts: a.mounts()?,
                })
            }
            "s3" => {
                a.allow(&[S3_ATTRS, &["mode", "ignore-error"], MOUNT_ATTRS])?;
                Ok(CacheExport::S3 {
                    cache: a.s3()?,
                    mode: a.mode()?.unwrap_or_default(),
                    ignore_error: a.flag("ignore-error")?.unwrap_or(false),
                    mounts: a.mounts()?,
                })
            }
            "inline" => {
                a.allow(&[&["mode"]])?;
                Ok(CacheExport::Inline { mode: a.mode()? })
            }
            other => Err(a.error(format!(
                "unknown type {other:?} (use registry, local, s3, inline)"
            ))),
        }
    }
}

impl FromStr for CacheImport {
    type Err = OptionError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        // buildctl accepts a bare reference for registry imports.
        if !value.contains('=') && !value.trim().is_empty() {
            return Ok(CacheImport::Registry {
                reference: value
                    .parse()
                    .map_err(|e| OptionError::new("--cache-from", value, format!("{e}")))?,
                insecure: false,
                mounts: None,
            });
        }
        refuse_credentials("--cache-from", value)?;
        let mut a = Attrs::parse("--cache-from", value, "registry, local or s3")?;
        match a.kind.as_str() {
            "registry" => {
                a.allow(&[&["ref", "registry.insecure"], MOUNT_ATTRS])?;
                Ok(CacheImport::Registry {
                    reference: a.reference()?,
                    insecure: a.insecure()?,
                    mounts: a.mounts()?,
                })
            }
            "local" => {
                a.allow(&[&["src", "tag", "digest"], MOUNT_ATTRS])?;
                Ok(CacheImport::Local {
                    src: a.need("src")?.into(),
                    tag: a.take("tag").unwrap_or_else(|| "latest".into()),
                    digest: a.take("digest"),
                    mounts: a.mounts()?,
                })
            }
            "s3" => {
                a.allow(&[S3_ATTRS, MOUNT_ATTRS])?;
                Ok(CacheImport::S3 {
                    cache: a.s3()?,
                    mounts: a.mounts()?,
                })
            }
            other => Err(a.error(format!("unknown type {other:?} (use registry, local, s3)"))),
        }
    }
}

impl LayerOptions {
    /// As BuildKit's attributes (the mode always said: BuildKit's own default is min).
    fn attrs(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![(
            "mode",
            match self.mode {
                CacheMode::Min => "min".to_owned(),
                CacheMode::Max => "max".to_owned(),
            },
        )];
        if let Some(c) = self.compression {
            out.push(("compression", c.name().to_owned()));
        }
        if let Some(l) = self.compression_level {
            out.push(("compression-level", l.to_string()));
        }
        if self.force_compression {
            out.push(("force-compression", "true".into()));
        }
        if let Some(o) = self.oci_mediatypes {
            out.push(("oci-mediatypes", o.to_string()));
        }
        if self.image_manifest {
            out.push(("image-manifest", "true".into()));
        }
        if self.ignore_error {
            out.push(("ignore-error", "true".into()));
        }
        out
    }
}

impl CacheMode {
    pub fn name(self) -> &'static str {
        match self {
            CacheMode::Min => "min",
            CacheMode::Max => "max",
        }
    }
}

impl CacheExport {
    /// `registry`, `local`, `s3` or `inline`.
    pub fn kind(&self) -> &'static str {
        match self {
            CacheExport::Registry { .. } => "registry",
            CacheExport::Local { .. } => "local",
            CacheExport::S3 { .. } => "s3",
            CacheExport::Inline { .. } => "inline",
        }
    }

    pub fn mode(&self) -> Option<CacheMode> {
        match self {
            CacheExport::Registry { options, .. } | CacheExport::Local { options, .. } => {
                Some(options.mode)
            }
            CacheExport::S3 { mode, .. } => Some(*mode),
            CacheExport::Inline { mode } => *mode,
        }
    }

    /// The attributes in buildctl's order of meaning: the location first.
    fn attrs(&self) -> Vec<(&'static str, String)> {
        match self {
            CacheExport::Registry {
                reference,
                options,
                insecure,
                ..
            } => {
                let mut out = vec![("ref", reference.to_string())];
                out.extend(options.attrs());
                if *insecure {
                    out.push(("registry.insecure", "true".into()));
                }
                out
            }
            CacheExport::Local {
                dest, tag, options, ..
            } => {
                let mut out = vec![("dest", dest.display().to_string())];
                if tag != "latest" {
                    out.push(("tag", tag.clone()));
                }
                out.extend(options.attrs());
                out
            }
            CacheExport::S3 {
                cache,
                mode,
                ignore_error,
                ..
            } => {
                let mut out = cache.attrs();
                out.push(("mode", mode.name().to_owned()));
                if *ignore_error {
                    out.push(("ignore-error", "true".into()));
                }
                out
            }
            CacheExport::Inline { mode } => mode
                .map(|m| ("mode", m.name().into()))
                .into_iter()
                .collect(),
        }
    }

    /// The entry the daemon takes in `SolveRequest.cache.exports`: the
    /// attributes, and an S3 cache's credentials.
    pub fn to_wire(&self) -> CacheOptionsEntry {
        let mut attrs = self.attrs();
        if let CacheExport::S3 { cache, .. } = self {
            attrs.extend(cache.credential_attrs());
        }
        wire(self.kind(), attrs)
    }

    /// The S3 location of an `s3` entry, to resolve against the environment.
    pub fn s3_mut(&mut self) -> Option<&mut S3Cache> {
        match self {
            CacheExport::S3 { cache, .. } => Some(cache),
            _ => None,
        }
    }
}

impl CacheImport {
    pub fn kind(&self) -> &'static str {
        match self {
            CacheImport::Registry { .. } => "registry",
            CacheImport::Local { .. } => "local",
            CacheImport::S3 { .. } => "s3",
        }
    }

    fn attrs(&self) -> Vec<(&'static str, String)> {
        match self {
            CacheImport::Registry {
                reference,
                insecure,
                ..
            } => {
                let mut out = vec![("ref", reference.to_string())];
                if *insecure {
                    out.push(("registry.insecure", "true".into()));
                }
                out
            }
            CacheImport::Local {
                src, tag, digest, ..
            } => {
                let mut out = vec![("src", src.display().to_string())];
                if tag != "latest" {
                    out.push(("tag", tag.clone()));
                }
                if let Some(d) = digest {
                    out.push(("digest", d.clone()));
                }
                out
            }
            CacheImport::S3 { cache, .. } => cache.attrs(),
        }
    }

    /// The entries the daemon takes in `SolveRequest.cache.imports`: one,
    /// or one per name of an S3 import (BuildKit reads only an entry's first
    /// name), each with the credentials.
    pub fn to_wire(&self) -> Vec<CacheOptionsEntry> {
        match self {
            CacheImport::S3 { cache, .. } if cache.names.len() > 1 => cache
                .names
                .iter()
                .map(|n| {
                    let one = cache.named(n);
                    wire(self.kind(), one.wire_attrs())
                })
                .collect(),
            CacheImport::S3 { cache, .. } => vec![wire(self.kind(), cache.wire_attrs())],
            _ => vec![wire(self.kind(), self.attrs())],
        }
    }

    /// The S3 location of an `s3` entry, to resolve against the environment.
    pub fn s3_mut(&mut self) -> Option<&mut S3Cache> {
        match self {
            CacheImport::S3 { cache, .. } => Some(cache),
            _ => None,
        }
    }
}

fn wire(kind: &str, attrs: Vec<(&'static str, String)>) -> CacheOptionsEntry {
    CacheOptionsEntry {
        r#type: kind.to_owned(),
        attrs: attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

fn write_attrs(
    f: &mut fmt::Formatter<'_>,
    kind: &str,
    attrs: Vec<(&'static str, String)>,
) -> fmt::Result {
    write!(f, "type={kind}")?;
    for (k, v) in attrs {
        write!(f, ",{k}={v}")?;
    }
    Ok(())
}

impl CacheExport {
    /// The cache mounts exported beside this cache (`mounts=`), if any.
    pub fn mounts(&self) -> Option<&MountOptions> {
        match self {
            CacheExport::Registry { mounts, .. }
            | CacheExport::Local { mounts, .. }
            | CacheExport::S3 { mounts, .. } => mounts.as_ref(),
            CacheExport::Inline { .. } => None,
        }
    }
}

impl CacheImport {
    /// The cache mounts seeded from beside this cache (`mounts=`), if any.
    pub fn mounts(&self) -> Option<&MountOptions> {
        match self {
            CacheImport::Registry { mounts, .. }
            | CacheImport::Local { mounts, .. }
            | CacheImport::S3 { mounts, .. } => mounts.as_ref(),
        }
    }
}

/// BuildKit's attributes, then strata's own `mounts=` ones.
fn with_mounts(
    mut attrs: Vec<(&'static str, String)>,
    mounts: Option<&MountOptions>,
) -> Vec<(&'static str, String)> {
    attrs.extend(mounts.into_iter().flat_map(MountOptions::attrs));
    attrs
}

impl fmt::Display for CacheExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_attrs(f, self.kind(), with_mounts(self.attrs(), self.mounts()))
    }
}

impl fmt::Display for CacheImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_attrs(f, self.kind(), with_mounts(self.attrs(), self.mounts()))
    }
}

/// What a cache export wrote, for the build report and `--metadata-file`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CacheReport {
    /// `registry`, `local`, `s3` or `inline`.
    pub kind: String,
    /// The ref, the directory, or the image carrying inline cache.
    pub location: String,
    pub mode: Option<CacheMode>,
    /// Bytes of the cache manifest and every blob it references, when known.
    pub bytes: Option<u64>,
    pub blobs: Option<usize>,
}

impl CacheReport {
    /// A report of `export` whose size is not known (yet).
    pub fn of(export: &CacheExport) -> CacheReport {
        let location = match export {
            CacheExport::Registry { reference, .. } => reference.to_string(),
            CacheExport::Local { dest, .. } => dest.display().to_string(),
            CacheExport::S3 { cache, .. } => cache.location(),
            CacheExport::Inline { .. } => "inline".to_owned(),
        };
        CacheReport {
            kind: export.kind().to_owned(),
            location,
            mode: export.mode(),
            bytes: None,
            blobs: None,
        }
    }

    /// Records the size of what a manifest or index references (config,
    /// layers, entries), plus the manifest itself.
    pub fn measured(mut self, manifest: &serde_json::Value, manifest_bytes: u64) -> CacheReport {
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
        self.bytes = Some(bytes);
        self.blobs = Some(blobs);
        self
    }
}

/// A cache entry that may name a directory on this machine (`type=local`):
/// a spec's entries have it checked against the spec's path policy.
pub trait LocalCachePath {
    fn local_path(&mut self) -> Option<&mut PathBuf>;
}

impl LocalCachePath for CacheExport {
    fn local_path(&mut self) -> Option<&mut PathBuf> {
        match self {
            CacheExport::Local { dest, .. } => Some(dest),
            _ => None,
        }
    }
}

impl LocalCachePath for CacheImport {
    fn local_path(&mut self) -> Option<&mut PathBuf> {
        match self {
            CacheImport::Local { src, .. } => Some(src),
            _ => None,
        }
    }
}

/// The store id BuildKit uses for a local cache directory: `local:` + the
/// `dest` (export) or `src` (import) attribute, exactly as passed in the Solve request.
pub fn local_store_id(dir: &str) -> String {
    format!("local:{dir}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildctl_cache_options() {
        let e: CacheExport = "type=registry,ref=r.io/x:cache".parse().unwrap();
        assert_eq!(e.mode(), Some(CacheMode::Max), "max by default");
        assert_eq!(e.to_wire().attrs["mode"], "max");
        let e: CacheExport = "type=registry,ref=r.io/x,mode=min".parse().unwrap();
        assert_eq!(e.mode(), Some(CacheMode::Min));
        let e: CacheExport = "type=inline".parse().unwrap();
        assert!(e.to_wire().attrs.is_empty());
        let i: CacheImport = "r.io/x:cache".parse().unwrap();
        assert_eq!(i.to_wire()[0].attrs["ref"], "r.io/x:cache");
        let i: CacheImport = "type=local,src=/tmp/c".parse().unwrap();
        assert_eq!(i.to_wire()[0].attrs["src"], "/tmp/c");
    }

    #[test]
    fn print_back_in_the_syntax_they_were_read_in() {
        for text in [
            "type=registry,ref=127.0.0.1:5000/a/b:cache,mode=min,compression=zstd,force-compression=true,registry.insecure=true",
            "type=local,dest=/var/cache/x,mode=max,image-manifest=true,ignore-error=true",
            "type=inline",
        ] {
            let e: CacheExport = text.parse().unwrap();
            assert_eq!(e.to_string(), text);
            assert_eq!(e.to_string().parse::<CacheExport>().unwrap(), e);
        }
        for text in [
            "type=registry,ref=127.0.0.1:5000/a/b:cache",
            "type=local,src=/c,tag=v1,digest=sha256:00",
        ] {
            let i: CacheImport = text.parse().unwrap();
            assert_eq!(i.to_string(), text);
        }
    }

    #[test]
    fn rejects_what_buildkit_would_reject_late() {
        let export = |v: &str| v.parse::<CacheExport>().unwrap_err().to_string();
        let import = |v: &str| v.parse::<CacheImport>().unwrap_err().to_string();
        assert!(export("type=registry").contains("needs ref="));
        assert!(export("type=local,src=x").contains("unknown attribute \"src\""));
        assert!(import("type=local").contains("needs src="));
        assert!(export("type=gha,ref=x").contains("unknown type"));
        assert!(export("type=registry,ref=x,mode=all").contains("min or max"));
        assert!(export("type=registry,ref=x,compression=lz4").contains("gzip, zstd"));
        assert!(export("type=registry,ref=X").contains("lowercase"));
        assert!(import("type=inline").contains("unknown type"));
        assert!(export("ref").contains("not KEY=VALUE"));
        assert!(export("type=local,dest=d,ignore-error=yes").contains("true or false"));
        assert!(export("type=registry").starts_with("--cache-to \"type=registry\": "));
        assert!(export("type=local,dest=d,mounts-max-size=1GB").contains("needs mounts="));
        assert!(export("type=inline,mounts=all").contains("unknown attribute \"mounts\""));
    }

    #[test]
    fn s3_entries_print_back_and_carry_credentials_only_on_the_wire() {
        let text = "type=s3,bucket=b,region=r,endpoint_url=http://127.0.0.1:8333,\
                    use_path_style=true,prefix=ci/,name=main;pr-1,touch_refresh=24h,\
                    upload_parallelism=4,mode=max";
        let mut e: CacheExport = text.parse().unwrap();
        assert_eq!(e.to_string(), text);
        let env = crate::options::S3Env::from_lookup(|k| match k {
            "AWS_ACCESS_KEY_ID" => Some("AKID".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("sekrit".into()),
            _ => None,
        });
        e.s3_mut().unwrap().resolve(&env).unwrap();
        assert!(!e.to_string().contains("sekrit"), "{e}");
        assert!(!format!("{e:?}").contains("sekrit"), "{e:?}");
        let wire = e.to_wire();
        assert_eq!(wire.attrs["secret_access_key"], "sekrit");
        assert_eq!(wire.attrs["name"], "main;pr-1");
        assert_eq!(CacheReport::of(&e).location, "s3://b/ci/manifests/main");

        let mut i: CacheImport = "type=s3,bucket=b,name=main;pr-1".parse().unwrap();
        let no_region = i.s3_mut().unwrap().resolve(&env).unwrap_err();
        assert!(
            no_region.contains("needs region= (or AWS_REGION"),
            "{no_region}"
        );
        let env = crate::options::S3Env {
            region: Some("eu-west-1".into()),
            ..env
        };
        i.s3_mut().unwrap().resolve(&env).unwrap();
        let entries = i.to_wire();
        let names: Vec<&str> = entries.iter().map(|w| w.attrs["name"].as_str()).collect();
        assert_eq!(names, ["main", "pr-1"], "BuildKit reads one name per entry");
        assert!(entries
            .iter()
            .all(|w| w.attrs["region"] == "eu-west-1" && w.attrs["access_key_id"] == "AKID"));
    }

    #[test]
    fn s3_entries_refuse_credentials_in_the_text_without_echoing_them() {
        let export = |v: &str| v.parse::<CacheExport>().unwrap_err().to_string();
        assert!(export("type=s3,region=r").contains("needs bucket="));
        let e = export("type=s3,bucket=b,secret_access_key=sekrit,access_key_id=AKID");
        assert!(!e.contains("sekrit") && !e.contains("AKID"), "{e}");
        assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        assert!(export("type=s3,bucket=b,endpoint_url=127.0.0.1:8333").contains("http://"));
        assert!(export("type=s3,bucket=b,upload_parallelism=0").contains("above 0"));
        let i = "type=s3,bucket=b,session_token=t0k".parse::<CacheImport>();
        assert!(!i.unwrap_err().to_string().contains("t0k"));
    }

    #[test]
    fn mounts_are_strata_s_own_and_read_as_a_list() {
        let e: CacheExport = "type=registry,ref=r.io/x:c,mounts=apt,pip,mounts-max-size=1GB"
            .parse()
            .unwrap();
        assert_eq!(e.mounts().unwrap().max_size, Some(1_000_000_000));
        let wire = e.to_wire();
        assert!(!wire.attrs.contains_key("mounts"), "BuildKit never sees it");
        let text = e.to_string();
        assert!(
            text.ends_with(",mounts=apt,pip,mounts-max-size=1000000000B"),
            "{text}"
        );
        assert_eq!(text.parse::<CacheExport>().unwrap(), e);
        let i: CacheImport = "type=local,src=/c,mounts=all".parse().unwrap();
        assert!(i.mounts().is_some());
        assert!(!i.to_wire()[0].attrs.contains_key("mounts"));
    }
}
