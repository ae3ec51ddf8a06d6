//! `strata du` and `strata prune`: what the build cache holds and reclaiming it.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{Client, ClientError, SLOW_CALL};
use crate::wire::moby::buildkit::v1 as control;

/// One build-cache record.
#[derive(Debug, Clone, Serialize)]
pub struct UsageRecord {
    pub id: String,
    /// BuildKit's record type: `regular`, `source.local`, `exec.cachemount`, `frontend`, …
    pub record_type: String,
    pub description: String,
    pub size: u64,
    pub mutable: bool,
    pub in_use: bool,
    pub shared: bool,
    pub parents: Vec<String>,
    /// Unix seconds.
    pub created_at: Option<i64>,
    /// Unix seconds.
    pub last_used_at: Option<i64>,
    pub usage_count: i64,
}

impl UsageRecord {
    /// The id of a cache mount's record (`exec.cachemount`, described
    /// `cached mount /x from exec … with id "ID"`); BuildKit leaves the id
    /// out when it is the target path.
    pub fn cache_mount_id(&self) -> Option<&str> {
        if self.record_type != "exec.cachemount" {
            return None;
        }
        let (_, rest) = self.description.rsplit_once(" with id \"")?;
        rest.strip_suffix('"')
    }

    /// The description on one line: a cache mount by its id, anything else
    /// by the first line of what BuildKit says (an exec's script can be long).
    pub fn summary(&self) -> String {
        if let Some(id) = self.cache_mount_id() {
            return format!("cache mount {id}");
        }
        let first = self.description.lines().next().unwrap_or("");
        let mut line: String = first.chars().take(120).collect();
        if line.len() < self.description.len() {
            line.push('…');
        }
        line
    }

    /// A record is reclaimable when nothing holds it and no other record shares it.
    pub fn reclaimable(&self) -> bool {
        !self.in_use && !self.shared
    }

    /// How long ago the record was last used, if the daemon says.
    pub fn idle_for(&self) -> Option<Duration> {
        let at = self.last_used_at?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        Some(Duration::from_secs(now.saturating_sub(at).max(0) as u64))
    }
}

impl From<control::UsageRecord> for UsageRecord {
    fn from(r: control::UsageRecord) -> Self {
        UsageRecord {
            id: r.id,
            record_type: r.record_type,
            description: r.description,
            size: r.size.max(0) as u64,
            mutable: r.mutable,
            in_use: r.in_use,
            shared: r.shared,
            parents: r.parents,
            created_at: r.created_at.map(|t| t.seconds),
            last_used_at: r.last_used_at.map(|t| t.seconds),
            usage_count: r.usage_count,
        }
    }
}

/// The daemon's build-cache usage with totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiskUsage {
    pub total: u64,
    pub reclaimable: u64,
    pub in_use: u64,
    pub shared: u64,
    pub records: Vec<UsageRecord>,
}

impl DiskUsage {
    fn from_records(mut records: Vec<UsageRecord>) -> Self {
        // Largest first: that is what someone short of disk wants to see.
        records.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.id.cmp(&b.id)));
        let sum = |keep: fn(&UsageRecord) -> bool| -> u64 {
            records.iter().filter(|r| keep(r)).map(|r| r.size).sum()
        };
        DiskUsage {
            total: sum(|_| true),
            reclaimable: sum(UsageRecord::reclaimable),
            in_use: sum(|r| r.in_use),
            shared: sum(|r| r.shared),
            records,
        }
    }
}

/// What `prune` may remove. The default removes what BuildKit's own prune would:
/// unused records, keeping internal and frontend ones unless `all` is set.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Also remove internal and frontend records (buildctl's `--all`).
    pub all: bool,
    /// Keep this many bytes of cache (0: no such floor).
    pub keep_bytes: u64,
    /// Keep records used within this long.
    pub keep_duration: Option<Duration>,
    /// BuildKit filter expressions, e.g. `type==exec.cachemount`.
    pub filters: Vec<String>,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub freed: u64,
    pub records: Vec<UsageRecord>,
}

impl Client {
    /// Lists build-cache records (`Control.DiskUsage`), optionally filtered.
    pub async fn disk_usage(&self, filters: &[String]) -> Result<DiskUsage, ClientError> {
        let mut control = self.control();
        let asked = control.disk_usage(control::DiskUsageRequest {
            filter: filters.to_vec(),
        });
        let response = self
            .within("DiskUsage", SLOW_CALL, asked)
            .await?
            .into_inner();
        Ok(DiskUsage::from_records(
            response.record.into_iter().map(UsageRecord::from).collect(),
        ))
    }

    /// Prunes as `options` say until it took: records a build let go of a
    /// moment ago may still be in use (and survive a prune), so it prunes
    /// again, 250 ms apart for up to 10 s, while the cache is above
    /// `keep_bytes` and some record is in use. Bytes freed in all.
    pub async fn prune_settled(&self, options: &PruneOptions) -> Result<u64, ClientError> {
        let mut freed = 0;
        for _ in 0..40 {
            freed += self.prune(options, |_| {}).await?.freed;
            let usage = self.disk_usage(&[]).await?;
            if usage.total <= options.keep_bytes || !usage.records.iter().any(|r| r.in_use) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        Ok(freed)
    }

    /// Removes build cache (`Control.Prune`), calling `on_removed` as each record goes.
    pub async fn prune(
        &self,
        options: &PruneOptions,
        mut on_removed: impl FnMut(&UsageRecord),
    ) -> Result<PruneReport, ClientError> {
        let request = control::PruneRequest {
            filter: options.filters.clone(),
            all: options.all,
            keep_duration: options
                .keep_duration
                .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
                .unwrap_or(0),
            keep_bytes: options.keep_bytes.min(i64::MAX as u64) as i64,
        };
        let mut control = self.control();
        let asked = control.prune(request);
        let mut stream = self.within("Prune", SLOW_CALL, asked).await?.into_inner();
        let mut records = Vec::new();
        while let Some(item) = self.within("Prune", SLOW_CALL, stream.message()).await? {
            let record = UsageRecord::from(item);
            on_removed(&record);
            records.push(record);
        }
        Ok(PruneReport {
            freed: records.iter().map(|r| r.size).sum(),
            records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, size: u64, in_use: bool, shared: bool) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            record_type: "regular".into(),
            description: String::new(),
            size,
            mutable: false,
            in_use,
            shared,
            parents: vec![],
            created_at: None,
            last_used_at: None,
            usage_count: 0,
        }
    }

    #[test]
    fn cache_mounts_are_summed_up_by_their_id() {
        let mut r = record("m", 1, false, false);
        r.record_type = "exec.cachemount".into();
        r.description = "cached mount /strata/m0 from exec /bin/sh -c # strata: probe\nset -e\n with id \"strata:apt:linux/amd64:/var/cache/apt\"".into();
        assert_eq!(
            r.cache_mount_id(),
            Some("strata:apt:linux/amd64:/var/cache/apt")
        );
        assert_eq!(
            r.summary(),
            "cache mount strata:apt:linux/amd64:/var/cache/apt"
        );
        r.record_type = "regular".into();
        assert_eq!(r.cache_mount_id(), None);
        assert_eq!(
            r.summary(),
            "cached mount /strata/m0 from exec /bin/sh -c # strata: probe…"
        );
    }

    #[test]
    fn totals_split_reclaimable_from_in_use() {
        let du = DiskUsage::from_records(vec![
            record("a", 10, false, false),
            record("b", 200, true, false),
            record("c", 30, false, true),
        ]);
        assert_eq!(du.total, 240);
        assert_eq!(du.reclaimable, 10);
        assert_eq!(du.in_use, 200);
        assert_eq!(du.shared, 30);
        assert_eq!(du.records[0].id, "b", "largest first");
    }
}
