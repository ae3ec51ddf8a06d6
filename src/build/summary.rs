//! A build's closing report: per image its node, tier, wall time, steps run
//! and cached and hit rate; per tier the same totals; the whole build's time
//! and images per node. The CLI prints it as a table and `--progress json`
//! ends with it, so people and machines read the same numbers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::{Outcome, TierReport};

/// The closing report of one build ([`Summary::of`]).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub images: Vec<ImageSummary>,
    pub tiers: Vec<TierSummary>,
    /// Wall time of the whole build.
    pub seconds: f64,
    /// Images built per node (empty for one daemon).
    pub nodes: BTreeMap<String, usize>,
}

/// One image: where and how long, and how much of it was cached.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    pub image: String,
    /// Its nodes, joined with `, ` (one, or each that built a platform).
    pub node: Option<String>,
    /// The same, one by one.
    #[serde(skip)]
    pub nodes: Vec<String>,
    pub tier: Option<usize>,
    pub seconds: f64,
    pub steps_run: usize,
    pub steps_cached: usize,
    /// Cached steps over all steps, 0 to 1 (1 when it has none).
    pub hit_rate: f64,
    /// Found built under its key tag; nothing solved.
    pub up_to_date: bool,
    pub digest: Option<String>,
    /// Why it failed (`--keep-going`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One tier's totals over its images.
#[derive(Debug, Clone, Serialize)]
pub struct TierSummary {
    #[serde(flatten)]
    pub report: TierReport,
    pub hit_rate: f64,
}

/// Cached over all, 1 when there was nothing to run.
pub fn hit_rate(run: usize, cached: usize) -> f64 {
    match run + cached {
        0 => 1.0,
        all => cached as f64 / all as f64,
    }
}

impl Summary {
    /// What `outcome` amounts to, the build having taken `took`.
    pub fn of(outcome: &Outcome, took: Duration) -> Summary {
        let tier_of = |image: &str| {
            let has = |t: &&TierReport| t.images.iter().any(|i| i == image);
            outcome.tiers.iter().find(has).map(|t| t.tier)
        };
        let mut images: Vec<ImageSummary> = outcome
            .built
            .iter()
            .map(|b| {
                let (run, cached) = b.step_counts();
                ImageSummary {
                    image: b.image.clone(),
                    node: (!b.nodes.is_empty()).then(|| b.nodes.join(", ")),
                    nodes: b.nodes.clone(),
                    tier: tier_of(&b.image),
                    seconds: b.solved.duration.as_secs_f64(),
                    steps_run: run,
                    steps_cached: cached,
                    hit_rate: hit_rate(run, cached),
                    up_to_date: b.up_to_date,
                    digest: b.solved.image_digest().map(str::to_owned),
                    error: None,
                }
            })
            .collect();
        images.extend(outcome.failed.iter().map(|f| ImageSummary {
            image: f.image.clone(),
            node: None,
            nodes: Vec::new(),
            tier: tier_of(&f.image),
            seconds: 0.0,
            steps_run: 0,
            steps_cached: 0,
            hit_rate: 0.0,
            up_to_date: false,
            digest: None,
            error: Some(f.error.to_string()),
        }));
        let tiers = outcome
            .tiers
            .iter()
            .map(|t| TierSummary {
                hit_rate: hit_rate(t.steps_run, t.steps_cached),
                report: t.clone(),
            })
            .collect();
        Summary {
            images,
            tiers,
            seconds: took.as_secs_f64(),
            nodes: outcome.images_per_node(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hit_rate;

    #[test]
    fn a_build_with_nothing_to_run_is_all_hits() {
        assert_eq!(hit_rate(0, 0), 1.0);
        assert_eq!(hit_rate(1, 3), 0.75);
        assert_eq!(hit_rate(2, 0), 0.0);
    }
}
