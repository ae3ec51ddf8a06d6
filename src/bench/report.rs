//! The benchmark's results: per-mode summaries, the terminal table and the
//! JSON document (schema in docs/benchmarks.md).

use serde::Serialize;

use super::{ExportResult, Mode, RunResult};

/// Median and range of one mode's runs through one client.
#[derive(Debug, Clone, Serialize)]
pub struct ModeSummary {
    pub mode: Mode,
    pub runs: usize,
    pub median_seconds: f64,
    pub min_seconds: f64,
    pub max_seconds: f64,
    pub median_first_step_seconds: Option<f64>,
    pub steps_run: usize,
    pub steps_cached: usize,
    pub hit_rate: f64,
    /// buildctl's median for the same mode, when compared.
    pub buildctl_median_seconds: Option<f64>,
    /// strata / buildctl median wall time.
    pub ratio: Option<f64>,
}

/// Everything `strata bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub modes: Vec<ModeSummary>,
    pub exports: Vec<ExportResult>,
    pub runs: Vec<RunResult>,
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

impl Report {
    pub fn new(image: &str, runs: Vec<RunResult>, exports: Vec<ExportResult>) -> Report {
        let mut modes: Vec<Mode> = runs.iter().map(|r| r.mode).collect();
        modes.dedup();
        let summaries = modes
            .into_iter()
            .map(|mode| {
                let of = |tool: &str| -> Vec<&RunResult> {
                    runs.iter()
                        .filter(|r| r.mode == mode && r.tool == tool)
                        .collect()
                };
                let ours = of("strata");
                let mut walls: Vec<f64> = ours.iter().map(|r| r.wall_seconds).collect();
                let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
                let max = walls.iter().copied().fold(0.0, f64::max);
                let mut firsts: Vec<f64> =
                    ours.iter().filter_map(|r| r.first_step_seconds).collect();
                let last = ours.last();
                let mut theirs: Vec<f64> = of("buildctl").iter().map(|r| r.wall_seconds).collect();
                let median_ours = median(&mut walls);
                let buildctl = (!theirs.is_empty()).then(|| median(&mut theirs));
                ModeSummary {
                    mode,
                    runs: ours.len(),
                    median_seconds: median_ours,
                    min_seconds: if min.is_finite() { min } else { 0.0 },
                    max_seconds: max,
                    median_first_step_seconds: (!firsts.is_empty()).then(|| median(&mut firsts)),
                    steps_run: last.map(|r| r.steps_run).unwrap_or(0),
                    steps_cached: last.map(|r| r.steps_cached).unwrap_or(0),
                    hit_rate: last.map(|r| r.hit_rate()).unwrap_or(0.0),
                    buildctl_median_seconds: buildctl,
                    ratio: buildctl.filter(|b| *b > 0.0).map(|b| median_ours / b),
                }
            })
            .collect();
        Report {
            image: image.to_owned(),
            modes: summaries,
            exports,
            runs,
        }
    }

    /// The terminal table: one line per mode, then the exports, then the
    /// slowest steps of the cold build (the per-phase view).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let compare = self
            .modes
            .iter()
            .any(|m| m.buildctl_median_seconds.is_some());
        out.push_str(&format!(
            "{:<13} {:>4} {:>9} {:>17} {:>11} {:>10} {:>8}",
            "MODE", "RUNS", "MEDIAN", "MIN-MAX", "1ST STEP", "RUN/CACHED", "HIT"
        ));
        if compare {
            out.push_str(&format!(" {:>9} {:>7}", "BUILDCTL", "RATIO"));
        }
        out.push('\n');
        for m in &self.modes {
            out.push_str(&format!(
                "{:<13} {:>4} {:>8.2}s {:>7.2}s-{:>7.2}s {:>10} {:>10} {:>7.0}%",
                m.mode.name(),
                m.runs,
                m.median_seconds,
                m.min_seconds,
                m.max_seconds,
                m.median_first_step_seconds
                    .map(|s| format!("{s:.2}s"))
                    .unwrap_or_else(|| "-".into()),
                format!("{}/{}", m.steps_run, m.steps_cached),
                m.hit_rate * 100.0
            ));
            if compare {
                out.push_str(&format!(
                    " {:>8} {:>7}",
                    m.buildctl_median_seconds
                        .map(|s| format!("{s:.2}s"))
                        .unwrap_or_else(|| "-".into()),
                    m.ratio
                        .map(|r| format!("{r:.2}"))
                        .unwrap_or_else(|| "-".into())
                ));
            }
            out.push('\n');
        }
        if !self.exports.is_empty() {
            out.push_str("\nCACHE EXPORT    TIME       SIZE  BLOBS\n");
            for e in &self.exports {
                out.push_str(&format!(
                    "{:<13} {:>6.2}s {:>10} {:>6}\n",
                    e.mode.name(),
                    e.seconds,
                    e.bytes
                        .map(crate::units::human_bytes)
                        .unwrap_or_else(|| "-".into()),
                    e.blobs.map(|b| b.to_string()).unwrap_or_else(|| "-".into())
                ));
            }
        }
        if let Some(cold) = self
            .runs
            .iter()
            .find(|r| r.mode == Mode::Cold && r.tool == "strata")
        {
            let mut steps: Vec<_> = cold.steps.iter().filter(|s| s.seconds.is_some()).collect();
            steps.sort_by(|a, b| {
                b.seconds
                    .partial_cmp(&a.seconds)
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            out.push_str("\nCOLD BUILD, PER STEP (slowest first)\n");
            for s in steps.iter().take(12) {
                out.push_str(&format!("{:>8.2}s  {}\n", s.seconds.unwrap_or(0.0), s.name));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: Mode, tool: &str, wall: f64) -> RunResult {
        RunResult {
            mode,
            tool: tool.into(),
            run: 1,
            wall_seconds: wall,
            first_step_seconds: Some(0.1),
            steps_run: 1,
            steps_cached: 3,
            steps: vec![],
        }
    }

    #[test]
    fn summaries_take_medians_and_ratios() {
        let runs = vec![
            run(Mode::Warm, "strata", 1.0),
            run(Mode::Warm, "buildctl", 2.0),
            run(Mode::Warm, "strata", 3.0),
            run(Mode::Warm, "buildctl", 2.0),
            run(Mode::Warm, "strata", 2.0),
        ];
        let r = Report::new("x", runs, vec![]);
        let m = &r.modes[0];
        assert_eq!(m.median_seconds, 2.0);
        assert_eq!((m.min_seconds, m.max_seconds), (1.0, 3.0));
        assert_eq!(m.buildctl_median_seconds, Some(2.0));
        assert_eq!(m.ratio, Some(1.0));
        assert_eq!(m.hit_rate, 0.75);
        assert!(r.table().contains("RATIO"));
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
