//! Local build caches (`type=local`): OCI layouts on this machine that the
//! daemon reads and writes through the session's content store. Before the
//! solve each directory is readied and attached under the store id BuildKit
//! derives from its path; an import is pinned to the digest its tag names.
//! After a *successful* solve each export's tag is pointed at the new cache
//! manifest (BuildKit leaves `index.json` to the client), so a failed build
//! leaves the previous cache as it was.

use std::collections::BTreeMap;
use std::path::Path;

use super::SolveError;
use crate::ocilayout::OciLayout;
use crate::options::local_store_id;
use crate::options::{CacheExport, CacheImport, CacheReport, ExporterResponse};

/// The layouts one solve serves, by store id.
#[derive(Debug, Default)]
pub(super) struct LocalCaches {
    pub stores: BTreeMap<String, OciLayout>,
}

fn store_id(dir: &Path) -> String {
    local_store_id(&dir.display().to_string())
}

fn failed(dir: &Path, doing: &str, e: std::io::Error) -> SolveError {
    SolveError::LocalCache {
        dir: dir.to_owned(),
        message: format!("{doing}: {e}"),
    }
}

impl LocalCaches {
    /// Readies every local export's directory and resolves every local
    /// import; returns the imports to send (an import whose tag is not there
    /// yet is dropped with a warning, as buildctl does: an empty cache).
    pub fn attach(
        &mut self,
        exports: &[CacheExport],
        imports: &[CacheImport],
    ) -> Result<Vec<CacheImport>, SolveError> {
        for export in exports {
            if let CacheExport::Local { dest, .. } = export {
                let layout = OciLayout::new(dest);
                layout
                    .init()
                    .map_err(|e| failed(dest, "cannot create the cache directory", e))?;
                self.stores.insert(store_id(dest), layout);
            }
        }
        let mut sent = Vec::new();
        for import in imports {
            match import {
                CacheImport::Local {
                    src,
                    tag,
                    digest,
                    mounts,
                } => {
                    if let Some(pinned) = self.resolve(src, tag, digest.as_deref()) {
                        sent.push(CacheImport::Local {
                            src: src.clone(),
                            tag: tag.clone(),
                            digest: Some(pinned),
                            mounts: mounts.clone(),
                        });
                    }
                }
                registry => sent.push(registry.clone()),
            }
        }
        Ok(sent)
    }

    /// The digest a local import reads, attaching its layout; `None` when the
    /// layout has no such tag (yet).
    fn resolve(&mut self, src: &Path, tag: &str, digest: Option<&str>) -> Option<String> {
        let layout = OciLayout::new(src);
        let found = match digest {
            Some(d) => Some(d.to_owned()),
            None => match layout.get_tag(tag) {
                Ok(Some(desc)) => desc["digest"].as_str().map(str::to_owned),
                Ok(None) | Err(_) => None,
            },
        };
        match found {
            Some(d) => {
                self.stores.insert(store_id(src), layout);
                Some(d)
            }
            None => {
                tracing::warn!(
                    "--cache-from {}: no cache tagged {tag:?} there yet; building without it",
                    src.display()
                );
                None
            }
        }
    }
}

/// After a successful solve: tags each local export's new cache manifest in
/// its `index.json` and reports what every export wrote (registry sizes are
/// left to the caller, which has a registry client).
pub(super) fn finish(
    exports: &[CacheExport],
    exported: &ExporterResponse,
) -> Result<Vec<CacheReport>, SolveError> {
    let manifest = &exported.cache_manifest;
    let mut reports = Vec::new();
    for export in exports {
        let report = CacheReport::of(export);
        let report = match (export, manifest) {
            (CacheExport::Local { dest, tag, .. }, Some(desc)) => {
                let layout = OciLayout::new(dest);
                layout
                    .put_tag(tag, desc.clone())
                    .map_err(|e| failed(dest, "writing index.json", e))?;
                measure(&layout, desc["digest"].as_str().unwrap_or_default(), report)
            }
            _ => report,
        };
        reports.push(report);
    }
    Ok(reports)
}

/// The size of the cache manifest `digest` of `layout` and of what it references.
fn measure(layout: &OciLayout, digest: &str, report: CacheReport) -> CacheReport {
    let read = layout
        .blob_path(digest)
        .and_then(std::fs::read)
        .ok()
        .and_then(|bytes| Some((serde_json::from_slice(&bytes).ok()?, bytes.len() as u64)));
    match read {
        Some((json, size)) => report.measured(&json, size),
        None => report,
    }
}
