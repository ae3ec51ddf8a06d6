//! `--progress plain`: one line per event, in buildctl's plain format.

use std::io::Write;
use std::time::SystemTime;

use super::{Event, Renderer, Tracker};
use crate::units::{human_bytes, human_duration};
use crate::wire::moby::buildkit::v1::StatusResponse;

pub struct PlainRenderer {
    out: std::io::Stderr,
    /// `"[IMAGE] "` when several images build at once.
    prefix: String,
}

impl PlainRenderer {
    pub fn new(label: Option<String>) -> Self {
        PlainRenderer {
            out: std::io::stderr(),
            prefix: label.map(|l| format!("[{l}] ")).unwrap_or_default(),
        }
    }
}

impl Renderer for PlainRenderer {
    fn update(&mut self, tracker: &Tracker, _update: &StatusResponse, events: &[Event]) {
        let mut out = self.out.lock();
        let p = &self.prefix;
        for event in events {
            let _ = match event {
                Event::Started(i) => {
                    let s = tracker.step(*i);
                    writeln!(out, "{p}#{} {}", s.number, s.name)
                }
                Event::Cached(i) => {
                    let s = tracker.step(*i);
                    writeln!(out, "{p}#{} {}\n{p}#{} CACHED", s.number, s.name, s.number)
                }
                Event::Done(i) => {
                    let s = tracker.step(*i);
                    let took = s.duration().map(human_duration).unwrap_or_default();
                    writeln!(out, "{p}#{} DONE {took}", s.number)
                }
                Event::Failed(i) => {
                    let s = tracker.step(*i);
                    writeln!(
                        out,
                        "{p}#{} ERROR: {}",
                        s.number,
                        s.error.as_deref().unwrap_or("")
                    )
                }
                Event::Log { step, line } => {
                    let s = tracker.step(*step);
                    let at = s
                        .started
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0);
                    writeln!(out, "{p}#{} {at:.3} {line}", s.number)
                }
                Event::Task {
                    step,
                    id,
                    current,
                    total,
                    done: true,
                } => {
                    let s = tracker.step(*step);
                    if *total > 0 {
                        writeln!(
                            out,
                            "{p}#{} {id} {} / {} done",
                            s.number,
                            human_bytes(*current as u64),
                            human_bytes(*total as u64)
                        )
                    } else {
                        writeln!(out, "{p}#{} {id} done", s.number)
                    }
                }
                Event::Task { .. } => Ok(()),
            };
        }
    }

    fn finish(&mut self, _tracker: &Tracker) {
        let _ = self.out.flush();
    }
}
