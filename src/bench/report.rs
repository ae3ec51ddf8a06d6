//! The benchmark's results: per-mode summaries, the terminal table and the
//! JSON document (schema in docs/benchmarks.md).

use serde::Serialize;

use super::{ExportResult, Mode, Phases, RunResult};
use crate::units::human_bytes;

/// Median and range of one mode's runs through strata, and the same mode
/// through each client compared.
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
    /// For a cache-import mode: whether any step came from the cache.
    pub imported: Option<bool>,
    /// Median time per phase.
    pub phases: Phases,
    /// The clients compared, in `--compare` order.
    pub compared: Vec<Compared>,
}

/// One compared client's runs of a mode.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    pub tool: String,
    pub median_seconds: f64,
    /// strata / this client, median wall time.
    pub ratio: Option<f64>,
    pub steps_run: usize,
    pub steps_cached: usize,
    /// For a cache-import mode: whether any of its steps came from the cache
    /// (if not, its runs did a cold build and the ratio is not comparable).
    pub imported: Option<bool>,
    pub phases: Phases,
}

/// Everything `strata bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub modes: Vec<ModeSummary>,
    pub exports: Vec<ExportResult>,
    pub runs: Vec<RunResult>,
    /// The `fresh-edit` mode's two builds, with and without cache mounts.
    pub fresh_edit: Vec<super::fresh_edit::FreshEditRun>,
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

/// Whether `mode` imports a cache, and if so whether `runs` found any of it.
fn imported(mode: Mode, runs: &[&RunResult]) -> Option<bool> {
    let imports = mode.prunes() && mode != Mode::Cold;
    imports.then(|| runs.iter().any(|r| r.steps_cached > 0))
}

/// The median of each phase over `runs`.
fn median_phases(runs: &[&RunResult]) -> Phases {
    let of =
        |f: fn(&Phases) -> f64| median(&mut runs.iter().map(|r| f(&r.phases)).collect::<Vec<_>>());
    Phases {
        resolve: of(|p| p.resolve),
        upload: of(|p| p.upload),
        steps: of(|p| p.steps),
        export: of(|p| p.export),
    }
}

fn wall_median(runs: &[&RunResult]) -> f64 {
    median(&mut runs.iter().map(|r| r.wall_seconds).collect::<Vec<_>>())
}

impl ModeSummary {
    fn of(mode: Mode, runs: &[RunResult]) -> ModeSummary {
        let of = |tool: &str| -> Vec<&RunResult> {
            runs.iter()
                .filter(|r| r.mode == mode && r.tool == tool)
                .collect()
        };
        let ours = of("strata");
        let walls: Vec<f64> = ours.iter().map(|r| r.wall_seconds).collect();
        let min = walls.iter().copied().fold(f64::INFINITY, f64::min);
        let max = walls.iter().copied().fold(0.0, f64::max);
        let mut firsts: Vec<f64> = ours.iter().filter_map(|r| r.first_step_seconds).collect();
        let last = ours.last();
        let median_ours = wall_median(&ours);
        let mut tools: Vec<&str> = Vec::new();
        for r in runs.iter().filter(|r| r.tool != "strata") {
            if !tools.contains(&r.tool.as_str()) {
                tools.push(&r.tool);
            }
        }
        let compared = tools
            .into_iter()
            .map(|tool| {
                let theirs = of(tool);
                let median_theirs = wall_median(&theirs);
                Compared {
                    tool: tool.to_owned(),
                    median_seconds: median_theirs,
                    ratio: (median_theirs > 0.0).then(|| median_ours / median_theirs),
                    steps_run: theirs.last().map_or(0, |r| r.steps_run),
                    steps_cached: theirs.last().map_or(0, |r| r.steps_cached),
                    imported: imported(mode, &theirs),
                    phases: median_phases(&theirs),
                }
            })
            .collect();
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
            imported: imported(mode, &ours),
            phases: median_phases(&ours),
            compared,
        }
    }
}

impl Report {
    pub fn new(image: &str, runs: Vec<RunResult>, exports: Vec<ExportResult>) -> Report {
        let mut modes: Vec<Mode> = runs.iter().map(|r| r.mode).collect();
        modes.dedup();
        Report {
            image: image.to_owned(),
            modes: modes
                .into_iter()
                .map(|m| ModeSummary::of(m, &runs))
                .collect(),
            exports,
            runs,
            fresh_edit: Vec::new(),
        }
    }

    /// The terminal table: one line per mode (with each compared client's
    /// median and ratio, or "did not import"), the time per phase, then the
    /// exports and the slowest steps of the cold build.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if !self.modes.is_empty() {
            out.push_str(&self.modes_table());
            out.push_str(&self.phase_table());
        }
        out.push_str(&self.exports_table());
        out.push_str(&self.cold_steps_table());
        out.push_str(&self.fresh_edit_table());
        out.trim_start_matches('\n').to_owned()
    }

    /// One line per mode, with each compared client's median and ratio.
    fn modes_table(&self) -> String {
        let mut out = String::new();
        let tools: Vec<&str> = self
            .modes
            .first()
            .map(|m| m.compared.iter().map(|c| c.tool.as_str()).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<13} {:>4} {:>9} {:>17} {:>11} {:>10} {:>8}",
            "MODE", "RUNS", "MEDIAN", "MIN-MAX", "1ST STEP", "RUN/CACHED", "HIT"
        ));
        for tool in &tools {
            out.push_str(&format!(" {:>9} {:>15}", tool.to_uppercase(), "RATIO"));
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
            for c in &m.compared {
                let ratio = match (c.imported, c.ratio) {
                    (Some(false), _) => "did not import".to_owned(),
                    (_, Some(r)) => format!("{r:.2}"),
                    (_, None) => "-".to_owned(),
                };
                out.push_str(&format!(" {:>8.2}s {:>15}", c.median_seconds, ratio));
            }
            out.push('\n');
        }
        out
    }

    /// Each cache export made beforehand: its time, size and blobs.
    fn exports_table(&self) -> String {
        if self.exports.is_empty() {
            return String::new();
        }
        let mut out = String::from("\nCACHE EXPORT    TIME       SIZE  BLOBS\n");
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
        out
    }

    /// strata's cold build, its slowest steps first.
    fn cold_steps_table(&self) -> String {
        let Some(cold) = self
            .runs
            .iter()
            .find(|r| r.mode == Mode::Cold && r.tool == "strata")
        else {
            return String::new();
        };
        let mut steps: Vec<_> = cold.steps.iter().filter(|s| s.seconds.is_some()).collect();
        steps.sort_by(|a, b| {
            b.seconds
                .partial_cmp(&a.seconds)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut out = String::from("\nCOLD BUILD, PER STEP (slowest first)\n");
        for s in steps.iter().take(12) {
            out.push_str(&format!("{:>8.2}s  {}\n", s.seconds.unwrap_or(0.0), s.name));
        }
        out
    }

    /// The `fresh-edit` runs: time and what the changed steps downloaded.
    fn fresh_edit_table(&self) -> String {
        if self.fresh_edit.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "\nFRESH BUILDER + IMPORT + EDIT   TIME   APT DEBS   APT BYTES   PIP FILES   PIP BYTES\n",
        );
        for r in &self.fresh_edit {
            out.push_str(&format!(
                "{:<30} {:>6.1}s {:>9} {:>11} {:>11} {:>11}\n",
                match (r.tool.as_str(), r.mounts) {
                    ("strata", true) => "strata, with mounts=all".to_owned(),
                    ("strata", false) => "strata, without mounts".to_owned(),
                    (tool, _) => format!("{tool} (no mounts travel)"),
                },
                r.seconds,
                r.apt_packages,
                human_bytes(r.apt_bytes),
                r.pip_downloads,
                human_bytes(r.pip_bytes)
            ));
        }
        out
    }
}

impl Report {
    /// Median seconds per phase, per mode and client.
    fn phase_table(&self) -> String {
        let mut out = format!(
            "\nPHASES (median){:<3} {:<9} {:>8} {:>8} {:>8} {:>8}\n",
            "", "CLIENT", "RESOLVE", "UPLOAD", "STEPS", "EXPORT"
        );
        for m in &self.modes {
            let rows = std::iter::once(("strata", &m.phases))
                .chain(m.compared.iter().map(|c| (c.tool.as_str(), &c.phases)));
            for (tool, p) in rows {
                out.push_str(&format!(
                    "{:<17} {:<9} {:>7.2}s {:>7.2}s {:>7.2}s {:>7.2}s\n",
                    m.mode.name(),
                    tool,
                    p.resolve,
                    p.upload,
                    p.steps,
                    p.export
                ));
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
            phases: Phases::default(),
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
        assert_eq!(m.compared[0].median_seconds, 2.0);
        assert_eq!(m.compared[0].ratio, Some(1.0));
        assert_eq!(m.hit_rate, 0.75);
        assert!(r.table().contains("RATIO"));
    }

    /// A bench of fresh-edit alone prints its table, not empty mode tables.
    #[test]
    fn a_fresh_edit_bench_prints_only_its_table() {
        let mut r = Report::new("x", vec![], vec![]);
        r.fresh_edit = vec![super::super::fresh_edit::FreshEditRun {
            tool: "buildctl".into(),
            apt_packages: 452,
            ..Default::default()
        }];
        let table = r.table();
        assert!(table.starts_with("FRESH BUILDER"), "{table}");
        assert!(table.contains("buildctl (no mounts travel)"), "{table}");
        assert!(
            !table.contains("MODE") && !table.contains("PHASES"),
            "{table}"
        );
    }

    #[test]
    fn an_import_mode_run_with_nothing_cached_did_not_import() {
        let mut cold_theirs = run(Mode::Local, "buildctl", 9.0);
        cold_theirs.steps_cached = 0;
        let r = Report::new(
            "x",
            vec![run(Mode::Local, "strata", 1.0), cold_theirs],
            vec![],
        );
        assert_eq!(r.modes[0].imported, Some(true));
        assert_eq!(r.modes[0].compared[0].imported, Some(false));
        assert!(r.table().contains("did not import"));
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
