//! `--progress json`: one JSON object per status update on stderr, for machines.

use std::io::Write;

use serde::Serialize;

use super::{Event, Renderer, Tracker};
use crate::wire::moby::buildkit::v1::StatusResponse;

pub struct JsonRenderer {
    out: std::io::Stderr,
    image: Option<String>,
}

impl JsonRenderer {
    pub fn new(image: Option<String>) -> Self {
        JsonRenderer {
            out: std::io::stderr(),
            image,
        }
    }
}

fn unix(ts: &Option<prost_types::Timestamp>) -> Option<f64> {
    ts.as_ref()
        .filter(|t| t.seconds > 0)
        .map(|t| t.seconds as f64 + t.nanos as f64 / 1e9)
}

/// The schema of one line: the daemon's update, with step numbers added.
#[derive(Serialize)]
struct Line<'a> {
    /// The image this update belongs to, when several build at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    vertexes: Vec<VertexLine<'a>>,
    statuses: Vec<StatusLine<'a>>,
    logs: Vec<LogLine<'a>>,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct VertexLine<'a> {
    step: usize,
    digest: &'a str,
    name: &'a str,
    cached: bool,
    started: Option<f64>,
    completed: Option<f64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
}

#[derive(Serialize)]
struct StatusLine<'a> {
    step: usize,
    id: &'a str,
    name: &'a str,
    current: i64,
    total: i64,
    completed: Option<f64>,
}

#[derive(Serialize)]
struct LogLine<'a> {
    step: usize,
    digest: &'a str,
    stream: i64,
    data: String,
}

impl Renderer for JsonRenderer {
    fn update(&mut self, tracker: &Tracker, update: &StatusResponse, _events: &[Event]) {
        let number = |digest: &str| {
            tracker
                .steps()
                .iter()
                .find(|s| s.digest == digest)
                .map(|s| s.number)
                .unwrap_or(0)
        };
        let line = Line {
            image: self.image.as_deref(),
            vertexes: update
                .vertexes
                .iter()
                .map(|v| VertexLine {
                    step: number(&v.digest),
                    digest: &v.digest,
                    name: &v.name,
                    cached: v.cached,
                    started: unix(&v.started),
                    completed: unix(&v.completed),
                    error: &v.error,
                })
                .collect(),
            statuses: update
                .statuses
                .iter()
                .map(|s| StatusLine {
                    step: number(&s.vertex),
                    id: &s.id,
                    name: &s.name,
                    current: s.current,
                    total: s.total,
                    completed: unix(&s.completed),
                })
                .collect(),
            logs: update
                .logs
                .iter()
                .map(|l| LogLine {
                    step: number(&l.vertex),
                    digest: &l.vertex,
                    stream: l.stream,
                    data: String::from_utf8_lossy(&l.msg).into_owned(),
                })
                .collect(),
            warnings: update
                .warnings
                .iter()
                .map(|w| String::from_utf8_lossy(&w.short).into_owned())
                .collect(),
        };
        if let Ok(text) = serde_json::to_string(&line) {
            let _ = writeln!(self.out.lock(), "{text}");
        }
    }

    fn finish(&mut self, _tracker: &Tracker) {
        let _ = self.out.flush();
    }
}
