//! BuildKit's `--progress rawjson` stream (buildctl's and buildx's) folded
//! into a run: each vertex once, cached or with its duration.

use std::collections::BTreeMap;

use super::{Mode, RunResult, StepTime};

/// The run `progress` describes; `spec_step` says which vertices are the
/// image's own steps (counted as run or cached), by digest and name.
pub fn fold(
    progress: &str,
    spec_step: &dyn Fn(&str, &str) -> bool,
    tool: &str,
    mode: Mode,
    run: usize,
    wall: f64,
) -> RunResult {
    let mut steps: BTreeMap<String, StepTime> = BTreeMap::new();
    let mut times: BTreeMap<String, (Option<f64>, Option<f64>)> = BTreeMap::new();
    let parse_time = |v: &serde_json::Value| crate::units::parse_rfc3339(v.as_str()?);
    for v in objects(progress) {
        for vx in v["vertexes"].as_array().into_iter().flatten() {
            let digest = vx["digest"].as_str().unwrap_or_default().to_owned();
            let entry = steps.entry(digest.clone()).or_insert_with(|| StepTime {
                spec_step: false,
                name: String::new(),
                cached: false,
                seconds: None,
            });
            if let Some(n) = vx["name"].as_str() {
                entry.name = n.to_owned();
            }
            entry.spec_step = spec_step(&digest, &entry.name);
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
    RunResult::new(tool, mode, run, wall, None, steps.into_values().collect())
}

/// Each vertex's name and its whole log (stdout and stderr, in order), from
/// the stream's `logs` entries (their `data` is base64, and a line may be
/// split between entries).
pub fn step_logs(progress: &str) -> Vec<(String, String)> {
    use base64::Engine;
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut logs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for v in objects(progress) {
        for vx in v["vertexes"].as_array().into_iter().flatten() {
            if let (Some(d), Some(n)) = (vx["digest"].as_str(), vx["name"].as_str()) {
                names.insert(d.to_owned(), n.to_owned());
            }
        }
        for log in v["logs"].as_array().into_iter().flatten() {
            let vertex = log["vertex"].as_str().unwrap_or_default();
            let data = log["data"].as_str().unwrap_or_default();
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) {
                logs.entry(vertex.to_owned()).or_default().extend(bytes);
            }
        }
    }
    logs.into_iter()
        .map(|(vertex, bytes)| {
            let name = names.get(&vertex).cloned().unwrap_or(vertex);
            (name, String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect()
}

/// The JSON objects of a rawjson stream: pretty-printed objects one after
/// another, with whatever else a client prints between them (buildx's
/// `WARNING:` lines) skipped.
fn objects(text: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        rest = &rest[start..];
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
        match stream.next() {
            Some(Ok(v)) => {
                out.push(v);
                rest = &rest[stream.byte_offset()..];
            }
            // Not an object here: go on after this line.
            _ => rest = rest.find('\n').map_or("", |end| &rest[end..]),
        }
    }
    out
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
    fn logs_are_joined_per_vertex_and_named() {
        // "Get:1 tr" + "ee\n", base64, in two entries.
        let text = r#"{"vertexes":[{"digest":"sha256:a","name":"apt install tree"}]}
{"logs":[{"vertex":"sha256:a","stream":1,"data":"R2V0OjEgdHI=","timestamp":"2026-11-30T00:00:00Z"}]}
{"logs":[{"vertex":"sha256:a","stream":1,"data":"ZWUK","timestamp":"2026-11-30T00:00:01Z"}]}"#;
        assert_eq!(
            step_logs(text),
            vec![("apt install tree".to_owned(), "Get:1 tree\n".to_owned())]
        );
    }

    #[test]
    fn text_between_objects_is_skipped() {
        let text = "WARNING: local cache import at /x not found {oops\n{\"a\": 1}\nnote\n{\n  \"b\": 2\n}\n";
        let got = objects(text);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1]["b"], 2);
    }

    #[test]
    fn folds_rawjson_into_a_run() {
        let lines = r#"{"vertexes":[{"digest":"a","name":"[i 1/2] x",
  "started":"1970-01-01T00:00:01Z"}]}
{"vertexes":[{"digest":"a","name":"[i 1/2] x","started":"1970-01-01T00:00:01Z","completed":"1970-01-01T00:00:03Z"},{"digest":"b","name":"[i 2/2] y","cached":true},{"digest":"c","name":"local x","started":"1970-01-01T00:00:01Z","completed":"1970-01-01T00:00:02Z"}]}"#;
        let ours = |digest: &str, _: &str| digest == "a" || digest == "b";
        let r = fold(lines, &ours, "buildctl", Mode::Warm, 1, 4.0);
        assert_eq!(
            (r.steps_run, r.steps_cached),
            (1, 1),
            "a local transfer is not a spec step"
        );
        let x = r.steps.iter().find(|s| s.name == "[i 1/2] x").unwrap();
        assert_eq!(x.seconds, Some(2.0));
        assert_eq!(r.phases.upload, 1.0);
    }
}
