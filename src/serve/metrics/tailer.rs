//! The server's metrics follow every run of its store as its log grows, whichever process
//! drives it: each run's events go to its own [`MetricsObserver`]; what a run had logged
//! before the server started is history, not counted (a run first seen later is counted
//! from its first event).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::observer::{Deps, MetricsObserver};
use crate::exec::Observer;
use crate::model::{RunId, RunState, RunStatus};
use crate::serve::Server;
use crate::store::Store;

/// How often the store is read for new events.
const EVERY: Duration = Duration::from_secs(1);

/// A finished run without a stored summary (an older build's) is looked at again only every
/// this many rounds (a dead-letter retry or a decision continues it).
const FINISHED_EVERY: u32 = 10;

/// A run the server follows: its metrics observer and state while it goes on; only the event
/// it stopped at while it is stopped (its store keeps its summary), so a store of many large
/// finished runs costs neither their logs' reading nor their states' memory.
enum Tailed {
    Followed(Box<Followed>),
    Stopped { seq: u64 },
}

struct Followed {
    observer: MetricsObserver,
    state: RunState,
}

/// Reads the store's runs as they are now (their history), then follows them in the
/// background.
pub(crate) async fn spawn_tailer(server: Arc<Server>) {
    let s = server.clone();
    let runs = tokio::task::spawn_blocking(move || follow_all(&s, HashMap::new(), 0, true))
        .await
        .unwrap_or_default();
    tokio::spawn(async move {
        let mut runs = runs;
        let mut round = 0u32;
        loop {
            tokio::select! {
                _ = server.cancel.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
            round = round.wrapping_add(1);
            let s = server.clone();
            let taken = std::mem::take(&mut runs);
            match tokio::task::spawn_blocking(move || follow_all(&s, taken, round, false)).await {
                Ok(back) => runs = back,
                Err(_) => return,
            }
        }
    });
}

fn follow_all(
    server: &Server,
    mut runs: HashMap<RunId, Tailed>,
    round: u32,
    at_start: bool,
) -> HashMap<RunId, Tailed> {
    let store = &server.store;
    let Ok(listing) = store.listing() else {
        return runs;
    };
    for (record, summary) in listing {
        // Stopped (finished, or waiting for someone) at its last event, by its summary. A run in
        // progress stays followed between its turns.
        let stopped_at = summary
            .filter(|s| {
                s.status
                    .is_some_and(|st| st.is_final() || st == RunStatus::Waiting)
            })
            .map(|s| s.seq);
        // Events up to this one are history (`None`: its whole log as it is now).
        let history = match runs.get_mut(&record.id) {
            Some(Tailed::Stopped { seq }) if stopped_at == Some(*seq) => continue,
            // It went on: what it had logged is history, read again now.
            Some(Tailed::Stopped { seq }) => Some(*seq),
            Some(Tailed::Followed(f)) => {
                let last = f.state.last_seq;
                if stopped_at == Some(last) {
                    // All counted; its state is not kept while it stays stopped.
                    runs.insert(record.id, Tailed::Stopped { seq: last });
                } else if !f.state.status().is_final() || round % FINISHED_EVERY == 0 {
                    feed(&**store, &record.id, f);
                }
                continue;
            }
            None if at_start => match stopped_at {
                // Stopped before the server started: history, and not read.
                Some(seq) => {
                    runs.insert(record.id, Tailed::Stopped { seq });
                    continue;
                }
                None => None,
            },
            // First seen after the start: counted from its first event.
            None => Some(0),
        };
        let Ok(events) = store.events(&record.id) else {
            continue;
        };
        let history = history.unwrap_or_else(|| events.last().map_or(0, |e| e.seq));
        let followed = follower(server, &events, history);
        runs.insert(record.id, Tailed::Followed(Box::new(followed)));
    }
    runs
}

/// An observer of a run's metrics that has been shown its log: events up to `history` taught
/// it, the rest were counted.
fn follower(server: &Server, events: &[crate::model::Event], history: u64) -> Followed {
    let state = RunState::from_events(events);
    let deps = crate::app::load(std::path::Path::new(&state.file))
        .ok()
        .map(|l| Deps::of(&l.workflow));
    let mut observer = MetricsObserver::new(server.metrics.clone(), history, deps);
    let mut then = RunState::default();
    for e in events {
        then.apply(e);
        observer.event(e, &then);
    }
    Followed { observer, state }
}

fn feed(store: &dyn Store, run: &RunId, f: &mut Followed) {
    let Ok(events) = store.events_after(run, f.state.last_seq) else {
        return;
    };
    for e in &events {
        f.state.apply(e);
        f.observer.event(e, &f.state);
    }
}
