//! The daemon's cache-mount records, and what this machine remembers of
//! them, so a build whose mounts nobody touched needs no probe at all.
//!
//! `Control.DiskUsage` lists each cache mount as a record (`exec.cachemount`,
//! described `… with id "ID"`) with a use count that grows every time an exec
//! mounts it. strata remembers, per record, the use count it last saw, the
//! fingerprint of what the mount held then and the artifact it holds. The
//! same record with the same use count holds what it held; a record seeded
//! from (or exported as) an artifact still holds that artifact's files.
//! Anything else (a record this machine never saw, a pruned and recreated
//! mount, a build of another client) falls back to the probe.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Probed;
use crate::client::{Client, ClientError};

/// One cache mount as the daemon lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub uses: i64,
}

/// The daemon's cache-mount records, by cache id.
pub async fn current(client: &Client) -> Result<BTreeMap<String, Record>, ClientError> {
    let usage = client
        .disk_usage(&["type==exec.cachemount".to_owned()])
        .await?;
    Ok(usage
        .records
        .iter()
        .filter_map(|r| {
            let record = Record {
                id: r.id.clone(),
                uses: r.usage_count,
            };
            Some((r.cache_mount_id()?.to_owned(), record))
        })
        .collect())
}

/// What this machine last knew of one record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub uses: i64,
    /// What the mount held at `uses` (a probe's or an export's fingerprint).
    pub fingerprint: Option<String>,
    pub size: u64,
    /// The artifact whose files it holds (seeded from it or exported as it).
    pub holds: Option<String>,
}

/// Records this machine remembers, by record id, kept in
/// `$XDG_CACHE_HOME/strata/mount-records.json` (nothing without a home).
#[derive(Debug, Default)]
pub struct Memory {
    file: Option<PathBuf>,
    known: BTreeMap<String, Remembered>,
}

/// How many records are remembered (beyond it, those first by id go).
const KEEP: usize = 500;

impl Memory {
    pub fn load() -> Memory {
        let file = crate::keys::statcache::strata_cache_dir().map(|d| d.join("mount-records.json"));
        let known = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Memory { file, known }
    }

    /// What `record` holds, if nobody mounted it since this machine looked.
    pub fn known(&self, record: &Record) -> Option<Probed> {
        let known = self.known.get(&record.id)?;
        if known.uses != record.uses {
            return None;
        }
        Some(Probed {
            fingerprint: known.fingerprint.clone()?,
            size: known.size,
            stamp: known.holds.clone(),
        })
    }

    /// Whether `record` holds the files of artifact `digest`.
    pub fn holds(&self, record: &Record, digest: &str) -> bool {
        self.known
            .get(&record.id)
            .is_some_and(|k| k.holds.as_deref() == Some(digest))
    }

    /// Notes what `record` holds now: `probed` (none: changed, unknown) and
    /// the artifact `holds` (none: as before).
    pub fn remember(&mut self, record: &Record, probed: Option<&Probed>, holds: Option<&str>) {
        let before = self.known.get(&record.id);
        let holds = holds
            .map(str::to_owned)
            .or_else(|| before.and_then(|k| k.holds.clone()));
        self.known.insert(
            record.id.clone(),
            Remembered {
                uses: record.uses,
                fingerprint: probed.map(|p| p.fingerprint.clone()),
                size: probed.map_or(0, |p| p.size),
                holds,
            },
        );
    }

    /// Writes the memory back (atomically; a failure only costs a probe later).
    pub fn save(&mut self) {
        let Some(file) = &self.file else {
            return;
        };
        while self.known.len() > KEEP {
            let oldest = self.known.keys().next().cloned();
            oldest.map(|k| self.known.remove(&k));
        }
        let Ok(bytes) = serde_json::to_vec(&self.known) else {
            return;
        };
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_used_since_is_not_known() {
        let mut m = Memory::default();
        let r = Record {
            id: "r1".into(),
            uses: 3,
        };
        let p = Probed {
            fingerprint: "f".into(),
            size: 7,
            stamp: None,
        };
        m.remember(&r, Some(&p), Some("sha256:a"));
        assert_eq!(m.known(&r).map(|k| k.fingerprint), Some("f".to_owned()));
        let used = Record {
            uses: 4,
            ..r.clone()
        };
        assert_eq!(m.known(&used), None, "mounted since: unknown");
        assert!(m.holds(&used, "sha256:a"), "what it was seeded with stays");
        m.remember(&used, None, None);
        assert!(m.holds(&used, "sha256:a"), "kept when not said");
        assert_eq!(m.known(&used), None, "changed: no fingerprint");
    }
}
