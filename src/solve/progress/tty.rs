//! `--progress tty`: a live view on the terminal — a spinner per running step
//! with its latest log line, and a line per finished step (cached or timed).

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Event, Renderer, Tracker};
use crate::units::human_duration;
use crate::wire::moby::buildkit::v1::StatusResponse;

pub struct TtyRenderer {
    multi: MultiProgress,
    bars: HashMap<usize, ProgressBar>,
    style: ProgressStyle,
    /// `"[IMAGE] "` when several images build at once.
    prefix: String,
}

/// One screen for every renderer of the process (images building at once).
fn screen() -> MultiProgress {
    static SCREEN: std::sync::OnceLock<MultiProgress> = std::sync::OnceLock::new();
    SCREEN
        .get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)))
        .clone()
}

impl TtyRenderer {
    pub fn new(label: Option<String>) -> Self {
        let style =
            ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {wide_msg} {elapsed:>5}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
        TtyRenderer {
            multi: screen(),
            bars: HashMap::new(),
            style,
            prefix: label.map(|l| format!("[{l}] ")).unwrap_or_default(),
        }
    }

    fn bar(&mut self, tracker: &Tracker, i: usize) -> &ProgressBar {
        let step = tracker.step(i);
        let (multi, style, prefix) = (&self.multi, &self.style, &self.prefix);
        self.bars.entry(i).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(format!("{prefix}#{} {}", step.number, step.name));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        })
    }

    fn finish_line(&mut self, i: usize, line: String) {
        if let Some(bar) = self.bars.remove(&i) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        let _ = self.multi.println(format!("{}{line}", self.prefix));
    }
}

fn shorten(line: &str, max: usize) -> String {
    let line = line.trim();
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        let mut s: String = line.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

impl Renderer for TtyRenderer {
    fn update(&mut self, tracker: &Tracker, _update: &StatusResponse, events: &[Event]) {
        for event in events {
            match event {
                Event::Started(i) => {
                    self.bar(tracker, *i);
                }
                Event::Cached(i) => {
                    let s = tracker.step(*i);
                    self.finish_line(*i, format!("  CACHED #{} {}", s.number, s.name));
                }
                Event::Done(i) => {
                    let s = tracker.step(*i);
                    let took = s.duration().map(human_duration).unwrap_or_default();
                    self.finish_line(*i, format!("  ✔ #{} {} {took}", s.number, s.name));
                }
                Event::Failed(i) => {
                    let s = tracker.step(*i);
                    let mut text = format!(
                        "  ✘ #{} {}: {}",
                        s.number,
                        s.name,
                        s.error.as_deref().unwrap_or("")
                    );
                    for line in &s.logs {
                        text.push_str(&format!("\n      {line}"));
                    }
                    self.finish_line(*i, text);
                }
                Event::Log { step, line } => {
                    let msg = shorten(line, 100);
                    self.bar(tracker, *step).set_message(msg);
                }
                Event::Task {
                    step,
                    id,
                    current,
                    total,
                    done: false,
                } if *total > 0 => {
                    let msg = format!(
                        "{} {}/{}",
                        shorten(id, 40),
                        crate::units::human_bytes(*current as u64),
                        crate::units::human_bytes(*total as u64)
                    );
                    self.bar(tracker, *step).set_message(msg);
                }
                Event::Task { .. } => {}
            }
        }
    }

    fn finish(&mut self, _tracker: &Tracker) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
    }
}
