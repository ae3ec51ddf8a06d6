//! The same work through BuildKit's own client: `strata llb`'s graph fed to
//! `buildctl build` with the same local dirs, secrets and cache flags, timed
//! the same way, steps counted from its `--progress rawjson` stream.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use tokio::io::AsyncReadExt;

use super::{Mode, RunResult, StepTime};
use crate::build::CA_SECRET_ID;
use crate::solve::CacheImport;
use crate::spec::LoweredImage;

/// One `buildctl build` of the image's LLB.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    buildctl: &Path,
    daemon_args: &[String],
    llb_file: &Path,
    image: &LoweredImage,
    ca_cert: Option<&Path>,
    import: Option<&CacheImport>,
    mode: Mode,
    run: usize,
) -> Result<RunResult, String> {
    let mut cmd = tokio::process::Command::new(buildctl);
    cmd.args(daemon_args)
        .arg("build")
        .arg("--progress")
        .arg("rawjson");
    for (name, dir) in &image.local_dirs {
        cmd.arg("--local")
            .arg(format!("{name}={}", dir.path.display()));
    }
    if let Some(ca) = ca_cert {
        cmd.arg("--secret")
            .arg(format!("id={CA_SECRET_ID},src={}", ca.display()));
    }
    if let Some(import) = import {
        cmd.arg("--import-cache").arg(import.to_string());
    }
    let stdin =
        std::fs::File::open(llb_file).map_err(|e| format!("{}: {e}", llb_file.display()))?;
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("running {}: {e}", buildctl.display()))?;
    let mut progress = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut progress).await;
    }
    let status = child.wait().await.map_err(|e| e.to_string())?;
    let wall = t.elapsed().as_secs_f64();
    if !status.success() {
        let tail: Vec<&str> = progress.lines().rev().take(5).collect();
        return Err(format!(
            "buildctl build failed ({status}): {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(from_rawjson(&progress, image, mode, run, wall))
}

/// Folds buildctl's rawjson status lines into a run: each vertex once, cached
/// or with its duration.
fn from_rawjson(
    progress: &str,
    image: &LoweredImage,
    mode: Mode,
    run: usize,
    wall: f64,
) -> RunResult {
    use std::collections::BTreeMap;
    let mut steps: BTreeMap<String, StepTime> = BTreeMap::new();
    let mut times: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    let parse_time = |v: &serde_json::Value| -> Option<f64> {
        let s = v.as_str()?;
        let t = crate::units::parse_rfc3339(s)?;
        Some(t)
    };
    // rawjson is a stream of (pretty-printed) JSON objects, not one per line.
    let stream = serde_json::Deserializer::from_str(progress).into_iter::<serde_json::Value>();
    for v in stream.map_while(Result::ok) {
        for vx in v["vertexes"].as_array().into_iter().flatten() {
            let digest = vx["digest"].as_str().unwrap_or_default().to_owned();
            let entry = steps.entry(digest.clone()).or_insert_with(|| StepTime {
                spec_step: image.steps.iter().any(|s| s.digest == digest),
                name: String::new(),
                cached: false,
                seconds: None,
            });
            if let Some(n) = vx["name"].as_str() {
                entry.name = n.to_owned();
            }
            entry.cached |= vx["cached"].as_bool().unwrap_or(false);
            let t = times.entry(digest).or_default();
            if let Some(s) = parse_time(&vx["started"]) {
                t.0 = Some(s);
            }
            if let Some(c) = parse_time(&vx["completed"]) {
                t.1 = Some(c);
            }
        }
    }
    for (digest, (start, end)) in times {
        if let (Some(s), Some(e), Some(step)) = (start, end, steps.get_mut(&digest)) {
            step.seconds = Some((e - s).max(0.0));
        }
    }
    let steps: Vec<StepTime> = steps.into_values().collect();
    RunResult {
        mode,
        tool: "buildctl".into(),
        run,
        wall_seconds: wall,
        first_step_seconds: None,
        steps_run: super::count(&steps, false),
        steps_cached: super::count(&steps, true),
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_timestamps() {
        assert_eq!(
            crate::units::parse_rfc3339("1970-01-01T00:00:10Z"),
            Some(10.0)
        );
        let t = crate::units::parse_rfc3339("2026-11-23T02:05:25.5Z").unwrap();
        assert_eq!(t, 1_795_399_525.5);
        assert_eq!(
            crate::units::parse_rfc3339("2026-11-23T03:05:25.5+01:00"),
            Some(t)
        );
    }

    #[test]
    fn folds_rawjson_into_a_run() {
        let lines = r#"{"vertexes":[{"digest":"a","name":"[i 1/2] x",
  "started":"1970-01-01T00:00:01Z"}]}
{"vertexes":[{"digest":"a","name":"[i 1/2] x","started":"1970-01-01T00:00:01Z","completed":"1970-01-01T00:00:03Z"},{"digest":"b","name":"[i 2/2] y","cached":true},{"digest":"c","name":"local x","started":"1970-01-01T00:00:01Z","completed":"1970-01-01T00:00:02Z"}]}"#;
        let step = |digest: &str, name: &str| crate::spec::StepInfo {
            name: name.into(),
            kind: "run",
            digest: digest.into(),
            command: Vec::new(),
        };
        let image = LoweredImage {
            name: "i".into(),
            state: crate::llb::State::scratch(),
            definition: crate::llb::State::scratch().marshal(),
            config: Default::default(),
            local_dirs: Default::default(),
            steps: vec![step("a", "[i 1/2] x"), step("b", "[i 2/2] y")],
            frontend: None,
        };
        let r = from_rawjson(lines, &image, Mode::Warm, 1, 4.0);
        assert_eq!(
            (r.steps_run, r.steps_cached),
            (1, 1),
            "a local transfer is not a spec step"
        );
        let x = r.steps.iter().find(|s| s.name == "[i 1/2] x").unwrap();
        assert_eq!(x.seconds, Some(2.0));
    }
}
