//! Build progress from the daemon's `Control.Status` stream: a [`Tracker`] folds
//! status updates into per-step state and [`Event`]s; a renderer shows them
//! (`tty`: a live view, `plain`: one line per event like buildctl, `json`: one
//! object per status update, for machines).

mod deduped;
mod json;
mod plain;
mod tty;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::wire::moby::buildkit::v1::StatusResponse;

pub use deduped::{Claims, Deduped};
pub use json::JsonRenderer;
pub use plain::PlainRenderer;
pub use tty::TtyRenderer;

/// How many log lines of each step are kept for error reports.
const LOG_TAIL: usize = 20;

/// Longest line kept whole: output without newlines (a progress bar, a
/// binary dump) is cut into lines of this size rather than buffered forever.
const MAX_LINE: usize = 16 * 1024;

/// One step (vertex) of the build as the daemon reported it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// 1-based, in the order the daemon first reported the steps.
    pub number: usize,
    pub digest: String,
    pub name: String,
    pub cached: bool,
    #[serde(skip)]
    pub started: Option<SystemTime>,
    #[serde(skip)]
    pub completed: Option<SystemTime>,
    pub error: Option<String>,
    #[serde(skip)]
    pub logs: VecDeque<String>,
    /// Bytes or items of sub-tasks (layer pulls, uploads), by sub-task id.
    #[serde(skip)]
    pub tasks: HashMap<String, (i64, i64)>,
}

impl Step {
    /// How long the step ran, once it finished.
    pub fn duration(&self) -> Option<Duration> {
        Some(
            self.completed?
                .duration_since(self.started?)
                .unwrap_or_default(),
        )
    }

    pub fn is_done(&self) -> bool {
        self.completed.is_some()
    }
}

/// Something a renderer may show.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started(usize),
    Cached(usize),
    Done(usize),
    Failed(usize),
    Log {
        step: usize,
        line: String,
    },
    Task {
        step: usize,
        id: String,
        current: i64,
        total: i64,
        done: bool,
    },
}

/// The build's steps as the status stream has described them so far.
#[derive(Debug, Default)]
pub struct Tracker {
    steps: Vec<Step>,
    by_digest: HashMap<String, usize>,
    /// Partial log lines per step (the daemon sends chunks, not lines).
    partial: HashMap<usize, String>,
    started_at: Option<SystemTime>,
}

/// Steps a tracker keeps at most, sub-tasks per step, and the length of a
/// name, id or error it keeps (what is past them is the daemon's excess).
const MAX_STEPS: usize = 10_000;
const MAX_TASKS: usize = 1_000;
const MAX_TEXT: usize = 16 << 10;

/// `text`, cut at [`MAX_TEXT`] bytes (at a character boundary).
fn capped(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_owned();
    }
    let end = (0..=MAX_TEXT)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[..end].to_owned()
}

/// Whether a daemon error only says the work was cancelled.
pub fn is_cancellation(error: &str) -> bool {
    let error = error.trim_end();
    error.ends_with("context canceled") || error.ends_with("code = Canceled")
}

/// Where the first complete line of `buf` ends (after its newline), or where
/// an overlong line is cut (at a character boundary).
fn line_end(buf: &str) -> Option<usize> {
    if let Some(nl) = buf.find('\n') {
        return Some(nl + 1);
    }
    (buf.len() > MAX_LINE).then(|| {
        (0..=MAX_LINE)
            .rev()
            .find(|&i| buf.is_char_boundary(i))
            .unwrap_or(0)
            .max(1)
    })
}

/// A daemon timestamp, or none when it is unset or cannot be a time here
/// (any i64 may arrive: adding must not overflow).
fn time(ts: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts.as_ref()?;
    if ts.seconds <= 0 {
        return None;
    }
    let nanos = ts.nanos.clamp(0, 999_999_999) as u32;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(ts.seconds as u64, nanos))
}

impl Tracker {
    pub fn new() -> Self {
        Tracker {
            started_at: Some(SystemTime::now()),
            ..Default::default()
        }
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn step(&self, index: usize) -> &Step {
        &self.steps[index]
    }

    /// When the first step started, relative to the tracker's creation.
    pub fn time_to_first_step(&self) -> Option<Duration> {
        let first = self.steps.iter().filter_map(|s| s.started).min()?;
        first.duration_since(self.started_at?).ok()
    }

    /// The step whose failure explains the build's: the first failed step
    /// that was not merely cancelled because a sibling failed first (the
    /// daemon cancels concurrent work, such as a second cache export, when
    /// one part fails, and those steps may report before the cause does).
    pub fn failed_step(&self) -> Option<&Step> {
        self.failed_step_for("")
    }

    /// [`Tracker::failed_step`] for a build the daemon failed with
    /// `daemon_message`: a step whose error that message carries comes
    /// first. A cache import that failed is never the cause: the daemon goes
    /// on without that cache (a missing pool-cache tag is the common case).
    pub fn failed_step_for(&self, daemon_message: &str) -> Option<&Step> {
        let failed = || {
            self.steps
                .iter()
                .filter(|s| s.error.is_some() && !s.name.starts_with("importing cache manifest"))
        };
        let error = |s: &&Step| s.error.as_deref().unwrap_or_default().trim().to_owned();
        failed()
            .find(|s| !error(s).is_empty() && daemon_message.contains(&error(s)))
            .or_else(|| failed().find(|s| !is_cancellation(&error(s))))
            .or_else(|| failed().next())
    }

    /// The step `digest` names, new ones added up to [`MAX_STEPS`]: the
    /// daemon chooses the digests, and a stream of new ones must not grow
    /// this without end (updates for steps past the cap are dropped).
    fn index_of(&mut self, digest: &str) -> Option<usize> {
        if let Some(&i) = self.by_digest.get(digest) {
            return Some(i);
        }
        if self.steps.len() >= MAX_STEPS {
            return None;
        }
        let i = self.steps.len();
        self.steps.push(Step {
            number: i + 1,
            digest: digest.to_owned(),
            name: String::new(),
            cached: false,
            started: None,
            completed: None,
            error: None,
            logs: VecDeque::new(),
            tasks: HashMap::new(),
        });
        self.by_digest.insert(digest.to_owned(), i);
        Some(i)
    }

    /// Folds one status update in and returns what changed.
    pub fn apply(&mut self, update: &StatusResponse) -> Vec<Event> {
        let mut events = Vec::new();
        for v in &update.vertexes {
            let Some(i) = self.index_of(&v.digest) else {
                continue;
            };
            let step = &mut self.steps[i];
            if !v.name.is_empty() {
                step.name = capped(&v.name);
            }
            let was_started = step.started.is_some();
            let was_done = step.completed.is_some();
            let was_cached = step.cached;
            if let Some(t) = time(&v.started) {
                step.started = Some(t);
            }
            if let Some(t) = time(&v.completed) {
                step.completed = Some(t);
            }
            step.cached |= v.cached;
            if !v.error.is_empty() && step.error.is_none() {
                step.error = Some(capped(&v.error));
                events.push(Event::Failed(i));
                continue;
            }
            // A step already shown finished (an image source resolved, then
            // found cached) is not shown again.
            if step.cached && !was_cached && !was_done {
                events.push(Event::Cached(i));
            } else if step.started.is_some() && !was_started {
                events.push(Event::Started(i));
            }
            if step.completed.is_some() && !was_done && !step.cached {
                events.push(Event::Done(i));
            }
        }
        for s in &update.statuses {
            let Some(i) = self.index_of(&s.vertex) else {
                continue;
            };
            let done = time(&s.completed).is_some();
            let step = &mut self.steps[i];
            let id = capped(if s.name.is_empty() { &s.id } else { &s.name });
            if step.tasks.len() >= MAX_TASKS && !step.tasks.contains_key(&id) {
                continue;
            }
            let before = step.tasks.insert(id.clone(), (s.current, s.total));
            if before != Some((s.current, s.total)) || done {
                events.push(Event::Task {
                    step: i,
                    id,
                    current: s.current,
                    total: s.total,
                    done,
                });
            }
        }
        for log in &update.logs {
            let Some(i) = self.index_of(&log.vertex) else {
                continue;
            };
            let buf = self.partial.entry(i).or_default();
            buf.push_str(&String::from_utf8_lossy(&log.msg));
            while let Some(end) = line_end(buf) {
                let line: String = buf.drain(..end).collect();
                let line = line.trim_end_matches(['\n', '\r']).to_owned();
                let step = &mut self.steps[i];
                if step.logs.len() == LOG_TAIL {
                    step.logs.pop_front();
                }
                step.logs.push_back(line.clone());
                events.push(Event::Log { step: i, line });
            }
        }
        events
    }
}

/// Shows progress; `finish` is called once, after the last update.
pub trait Renderer: Send {
    fn update(&mut self, tracker: &Tracker, update: &StatusResponse, events: &[Event]);
    fn finish(&mut self, tracker: &Tracker);
}

/// A renderer that shows nothing.
pub struct Quiet;

impl Renderer for Quiet {
    fn update(&mut self, _: &Tracker, _: &StatusResponse, _: &[Event]) {}
    fn finish(&mut self, _: &Tracker) {}
}

/// Chooses how each image's progress is shown. The CLI implements it (from
/// `--progress` and whether stderr is a terminal); a library caller may pass
/// [`Quiet`] or its own.
pub trait Progress: Sync {
    /// A renderer for one image's solve; `label` names the image when several
    /// build at once (to prefix lines, tag JSON objects).
    fn renderer(&self, label: Option<&str>) -> Box<dyn Renderer>;

    /// The claims its views share when a step several images of a build
    /// share is to be shown once (in the view of the image that reported it
    /// first; see [`Deduped`]); none: every view shows all of its solve.
    fn step_claims(&self) -> Option<Claims> {
        None
    }
}

impl Progress for Quiet {
    fn renderer(&self, _: Option<&str>) -> Box<dyn Renderer> {
        Box::new(Quiet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::moby::buildkit::v1::{Vertex, VertexLog};

    #[test]
    fn what_the_daemon_names_is_kept_within_caps() {
        let mut tracker = Tracker::new();
        let vertexes = (0..MAX_STEPS + 50)
            .map(|i| Vertex {
                digest: format!("sha256:{i}"),
                name: "n".repeat(if i == 0 { MAX_TEXT * 4 } else { 1 }),
                ..Default::default()
            })
            .collect();
        tracker.apply(&StatusResponse {
            vertexes,
            ..Default::default()
        });
        assert_eq!(tracker.steps().len(), MAX_STEPS);
        assert_eq!(tracker.step(0).name.len(), MAX_TEXT);
    }

    fn ts(s: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    }

    #[test]
    fn folds_updates_into_steps_and_events() {
        let mut t = Tracker::new();
        let ev = t.apply(&StatusResponse {
            vertexes: vec![
                Vertex {
                    digest: "a".into(),
                    name: "base".into(),
                    cached: true,
                    started: ts(10),
                    completed: ts(10),
                    ..Default::default()
                },
                Vertex {
                    digest: "b".into(),
                    name: "apt".into(),
                    started: ts(11),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        assert_eq!(ev, vec![Event::Cached(0), Event::Started(1)]);
        let ev = t.apply(&StatusResponse {
            logs: vec![VertexLog {
                vertex: "b".into(),
                msg: "line one\nline ".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(
            ev,
            vec![Event::Log {
                step: 1,
                line: "line one".into()
            }]
        );
        let ev = t.apply(&StatusResponse {
            vertexes: vec![Vertex {
                digest: "b".into(),
                name: "apt".into(),
                started: ts(11),
                completed: ts(14),
                ..Default::default()
            }],
            logs: vec![VertexLog {
                vertex: "b".into(),
                msg: "two\n".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(
            ev,
            vec![
                Event::Done(1),
                Event::Log {
                    step: 1,
                    line: "line two".into()
                }
            ]
        );
        assert_eq!(t.step(1).duration(), Some(Duration::from_secs(3)));
        assert_eq!(t.step(1).logs.len(), 2);
    }

    #[test]
    fn a_failure_is_an_event_and_a_done_step_is_not_shown_cached_again() {
        let mut t = Tracker::new();
        let ev = t.apply(&StatusResponse {
            vertexes: vec![Vertex {
                digest: "c".into(),
                name: "run".into(),
                started: ts(15),
                completed: ts(16),
                error: "exit code: 1".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(ev, vec![Event::Failed(0)]);
        assert_eq!(t.failed_step().unwrap().name, "run");
        // Done, then reported cached: one finish event, not two.
        let ev = t.apply(&StatusResponse {
            vertexes: vec![Vertex {
                digest: "d".into(),
                name: "base".into(),
                started: ts(17),
                completed: ts(17),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(ev, vec![Event::Started(1), Event::Done(1)]);
        let ev = t.apply(&StatusResponse {
            vertexes: vec![Vertex {
                digest: "d".into(),
                cached: true,
                started: ts(17),
                completed: ts(17),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(ev, vec![]);
        assert!(t.step(1).cached);
    }

    /// A vertex that ran and failed with `error`.
    fn failed(digest: &str, name: &str, error: &str) -> Vertex {
        Vertex {
            digest: digest.into(),
            name: name.into(),
            started: ts(1),
            completed: ts(2),
            error: error.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_cause_outranks_steps_cancelled_because_of_it() {
        let mut t = Tracker::new();
        t.apply(&StatusResponse {
            vertexes: vec![failed(
                "a",
                "exporting cache to client directory",
                "error writing layer blob: rpc error: code = Canceled desc = context canceled: context canceled",
            )],
            ..Default::default()
        });
        assert_eq!(t.failed_step().unwrap().digest, "a", "the only failure");
        t.apply(&StatusResponse {
            vertexes: vec![failed(
                "b",
                "exporting cache to registry",
                "failed to do request: dial tcp 127.0.0.1:1: connect: connection refused",
            )],
            ..Default::default()
        });
        assert_eq!(t.failed_step().unwrap().digest, "b");
        assert!(is_cancellation("x: context canceled\n"));
        assert!(!is_cancellation("connection refused"));
    }

    #[test]
    fn a_failed_cache_import_is_not_the_cause_and_the_daemons_words_pick_the_step() {
        let mut t = Tracker::new();
        t.apply(&StatusResponse {
            vertexes: vec![
                failed(
                    "i",
                    "importing cache manifest from 127.0.0.1:5000/x:pool-a",
                    "failed to configure registry cache importer: not found",
                ),
                failed("e", "exporting cache to registry", "push refused"),
                failed("r", "run", "exit code: 2"),
            ],
            ..Default::default()
        });
        assert_eq!(t.failed_step().unwrap().digest, "e");
        let step = t.failed_step_for("process did not complete successfully: exit code: 2");
        assert_eq!(step.unwrap().digest, "r");
        let mut only_import = Tracker::new();
        only_import.apply(&StatusResponse {
            vertexes: vec![failed("i", "importing cache manifest from x", "not found")],
            ..Default::default()
        });
        assert!(only_import.failed_step_for("something else").is_none());
    }

    #[test]
    fn any_daemon_timestamp_is_taken_without_overflow() {
        for (seconds, nanos) in [
            (i64::MAX, i32::MAX),
            (i64::MAX, -1),
            (1, i32::MIN),
            (i64::MIN, 0),
        ] {
            let _ = time(&Some(prost_types::Timestamp { seconds, nanos }));
        }
        assert!(time(&Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 5
        }))
        .is_some());
    }

    #[test]
    fn output_without_newlines_is_cut_not_buffered() {
        let mut t = Tracker::new();
        let chunk = "é".repeat(1000); // 2,000 bytes, no newline
        let mut lines = 0;
        for _ in 0..100 {
            let ev = t.apply(&StatusResponse {
                logs: vec![VertexLog {
                    vertex: "v".into(),
                    msg: chunk.clone().into(),
                    ..Default::default()
                }],
                ..Default::default()
            });
            lines += ev.len();
        }
        assert!(lines >= 12, "{lines}");
        assert!(t.partial.values().all(|b| b.len() <= MAX_LINE));
        assert!(t.steps[0].logs.iter().all(|l| l.len() <= MAX_LINE));
    }
}
