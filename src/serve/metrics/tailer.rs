//! The server's metrics follow every run of its store as its log grows, whichever process
//! drives it: each run's events go to its own [`MetricsObserver`]; what a run had logged
//! before the server started is history, not counted (a run first seen later is counted
//! from its first event).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::observer::{Deps, MetricsObserver};
use crate::exec::Observer;
use crate::model::{RunId, RunState};
use crate::serve::Server;
use crate::store::Store;

/// How often the store is read for new events.
const EVERY: Duration = Duration::from_secs(1);

/// A finished run is looked at again only every this many rounds (a dead-letter retry or a
/// decision continues it).
const FINISHED_EVERY: u32 = 10;

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
    mut runs: HashMap<RunId, Followed>,
    round: u32,
    at_start: bool,
) -> HashMap<RunId, Followed> {
    let store = &server.store;
    let Ok(records) = store.runs() else {
        return runs;
    };
    for record in records {
        let f = match runs.entry(record.id.clone()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let Ok(events) = store.events(&record.id) else {
                    continue;
                };
                let state = RunState::from_events(&events);
                let deps = crate::app::load(std::path::Path::new(&state.file))
                    .ok()
                    .map(|l| Deps::of(&l.workflow));
                let history = if at_start {
                    events.last().map_or(0, |e| e.seq)
                } else {
                    0
                };
                let mut observer = MetricsObserver::new(server.metrics.clone(), history, deps);
                let mut then = RunState::default();
                for e in &events {
                    then.apply(e);
                    observer.event(e, &then);
                }
                v.insert(Followed { observer, state })
            }
        };
        if f.state.status().is_final() && round % FINISHED_EVERY != 0 {
            continue;
        }
        feed(&**store, &record.id, f);
    }
    runs
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
