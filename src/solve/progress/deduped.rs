//! One view of many solves: when images share steps, BuildKit reports a
//! shared step to every solve that contains it (a tree of four images built
//! on one base showed its apt step four times). [`Deduped`] shows a step
//! only in the view of the solve that reported it first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Event, Renderer, Tracker};
use crate::wire::moby::buildkit::v1::StatusResponse;

/// Which solve (by label) shows each step, by the step's digest.
#[derive(Debug, Clone, Default)]
pub struct Claims(Arc<Mutex<HashMap<String, String>>>);

/// A renderer showing only the steps its solve claimed first.
pub struct Deduped {
    inner: Box<dyn Renderer>,
    /// This view's own token among the claims (one per solve: two solves of
    /// the same image, e.g. in two tiers, are two claimants).
    owner: String,
    claims: Claims,
}

impl Deduped {
    pub fn new(inner: Box<dyn Renderer>, label: Option<&str>, claims: &Claims) -> Deduped {
        Deduped {
            inner,
            owner: format!("{}#{}", label.unwrap_or_default(), crate::ids::random_id()),
            claims: claims.clone(),
        }
    }
}

impl Event {
    /// The step (a tracker index) the event is about.
    pub fn step(&self) -> usize {
        match self {
            Event::Started(i) | Event::Cached(i) | Event::Done(i) | Event::Failed(i) => *i,
            Event::Log { step, .. } | Event::Task { step, .. } => *step,
        }
    }
}

impl Renderer for Deduped {
    fn update(&mut self, tracker: &Tracker, update: &StatusResponse, events: &[Event]) {
        let mine: Vec<Event> = {
            let mut claims = self.claims.0.lock().unwrap_or_else(|e| e.into_inner());
            events
                .iter()
                .filter(|e| {
                    let digest = &tracker.step(e.step()).digest;
                    let owner = claims
                        .entry(digest.clone())
                        .or_insert_with(|| self.owner.clone());
                    *owner == self.owner
                })
                .cloned()
                .collect()
        };
        self.inner.update(tracker, update, &mine);
    }

    fn finish(&mut self, tracker: &Tracker) {
        self.inner.finish(tracker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::moby::buildkit::v1::Vertex;

    /// Records the events it is shown.
    struct Seen(Arc<Mutex<Vec<Event>>>);

    impl Renderer for Seen {
        fn update(&mut self, _: &Tracker, _: &StatusResponse, events: &[Event]) {
            self.0.lock().unwrap().extend(events.iter().cloned());
        }
        fn finish(&mut self, _: &Tracker) {}
    }

    #[test]
    fn a_shared_step_is_shown_by_the_first_solve_only() {
        let claims = Claims::default();
        let (a_seen, b_seen) = (Arc::default(), Arc::default());
        let mut a = Deduped::new(Box::new(Seen(Arc::clone(&a_seen))), Some("a"), &claims);
        let mut b = Deduped::new(Box::new(Seen(Arc::clone(&b_seen))), Some("b"), &claims);
        let update = |digest: &str| StatusResponse {
            vertexes: vec![Vertex {
                digest: digest.into(),
                name: digest.into(),
                started: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (mut ta, mut tb) = (Tracker::new(), Tracker::new());
        let feed = |t: &mut Tracker, r: &mut Deduped, d: &str| {
            let u = update(d);
            let events = t.apply(&u);
            r.update(t, &u, &events);
        };
        feed(&mut ta, &mut a, "shared");
        feed(&mut tb, &mut b, "shared");
        feed(&mut tb, &mut b, "own");
        assert_eq!(a_seen.lock().unwrap().len(), 1, "a shows the shared step");
        let b_events = b_seen.lock().unwrap();
        assert_eq!(b_events.len(), 1, "b shows only its own: {b_events:?}");
    }
}
