//! The runs the dashboard has read, each with its state brought up to date from the events
//! appended since (`Store::events_after`): listing runs every second stays proportional to
//! what changed, not to the size of their logs. A stopped run is listed from the summary its
//! store keeps (`Store::listing`), so its state is neither folded nor held for the list; the
//! states of stopped runs opened in a view are kept for the [`KEEP_STOPPED`] used last.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::{RunId, RunState, RunStatus, RunSummary};
use crate::store::{RunRecord, Store, StoreError};

/// How many states of stopped runs (finished, or waiting for someone) are kept: those opened
/// last. A run in progress is always kept, to be brought up to date from its new events.
const KEEP_STOPPED: usize = 8;

pub(crate) struct RunCache {
    store: Arc<dyn Store>,
    runs: Mutex<Runs>,
}

#[derive(Default)]
struct Runs {
    cached: HashMap<RunId, Cached>,
    /// Counts uses, to find the state used longest ago.
    clock: u64,
}

struct Cached {
    record: RunRecord,
    state: RunState,
    used: u64,
}

impl RunCache {
    pub(crate) fn new(store: Arc<dyn Store>) -> RunCache {
        RunCache {
            store,
            runs: Mutex::new(Runs::default()),
        }
    }

    /// Every run, oldest first, with its state as of now — but a stopped run whose stored
    /// summary `wanted` rejects is skipped without reading its log. Call from a blocking thread.
    pub(crate) fn states_where<T>(
        &self,
        wanted: impl Fn(&RunSummary) -> bool,
        mut f: impl FnMut(&RunRecord, &RunState) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let listing = self.store.listing()?;
        let mut runs = self.lock();
        let mut out = Vec::new();
        for (record, summary) in listing {
            if summary.as_ref().is_some_and(|s| !wanted(s)) {
                continue;
            }
            let cached = self.fresh(&mut runs, record)?;
            out.push(f(&cached.record, &cached.state));
        }
        Ok(out)
    }

    /// Every run, oldest first, as a listing shows it: the store's summary of a stopped run,
    /// the cached state of any other brought up to date. Call from a blocking thread.
    pub(crate) fn summaries<T>(
        &self,
        mut f: impl FnMut(&RunRecord, &RunSummary) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let listing = self.store.listing()?;
        let mut runs = self.lock();
        let mut out = Vec::with_capacity(listing.len());
        for (record, summary) in listing {
            match summary {
                Some(summary) => out.push(f(&record, &summary)),
                None => {
                    let cached = self.fresh(&mut runs, record)?;
                    out.push(f(&cached.record, &cached.state.summary()));
                }
            }
        }
        Ok(out)
    }

    /// One run's record and state as of now. Call from a blocking thread.
    pub(crate) fn with<T>(
        &self,
        id: &RunId,
        f: impl FnOnce(&RunRecord, &RunState) -> T,
    ) -> Result<T, StoreError> {
        let record = self.store.run(id)?;
        let mut runs = self.lock();
        let cached = self.fresh(&mut runs, record)?;
        Ok(f(&cached.record, &cached.state))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Runs> {
        // A panic while holding the map leaves states that are still consistent (each is
        // updated event by event): keep using it.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run's state brought up to date, kept; the stopped run used longest ago is let go
    /// when more than [`KEEP_STOPPED`] are kept.
    fn fresh<'a>(&self, runs: &'a mut Runs, record: RunRecord) -> Result<&'a Cached, StoreError> {
        runs.clock += 1;
        let id = record.id.clone();
        let cached = runs.cached.entry(id.clone()).or_insert_with(|| Cached {
            record: record.clone(),
            state: RunState::default(),
            used: 0,
        });
        let events = self.store.events_after(&record.id, cached.state.last_seq)?;
        for e in &events {
            cached.state.apply(e);
        }
        cached.record = record;
        cached.used = runs.clock;
        runs.let_go_of_one_stopped(&id);
        Ok(&runs.cached[&id])
    }
}

impl Runs {
    /// With more than [`KEEP_STOPPED`] stopped runs kept besides `keep`, forgets the one used
    /// longest ago.
    fn let_go_of_one_stopped(&mut self, keep: &RunId) {
        let stopped = |c: &Cached| {
            let status = c.state.status();
            status.is_final() || status == RunStatus::Waiting
        };
        let mut count = 0;
        let mut oldest: Option<(&RunId, u64)> = None;
        for (id, c) in self
            .cached
            .iter()
            .filter(|(id, c)| *id != keep && stopped(c))
        {
            count += 1;
            if oldest.is_none_or(|(_, used)| c.used < used) {
                oldest = Some((id, c.used));
            }
        }
        if count > KEEP_STOPPED {
            if let Some(id) = oldest.map(|(id, _)| id.clone()) {
                self.cached.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Changes, Event, EventKind, RunStatus, Timestamp};
    use crate::store::{Batch, MemoryStore};

    fn record(id: &str) -> RunRecord {
        RunRecord {
            id: RunId(id.into()),
            workflow: "w".into(),
            file: "w.cond".into(),
            params: Default::default(),
            created_at: Timestamp(1),
            status: RunStatus::InProgress,
        }
    }

    fn append(store: &MemoryStore, id: &str, kind: EventKind) {
        let events = [Event {
            seq: 1,
            at: Timestamp(2),
            kind,
        }];
        let state = RunState::from_events(&events);
        let batch = Batch {
            events: &events,
            json: &[],
            changes: &Changes::default(),
            state: &state,
            work: &Default::default(),
        };
        store.append(&RunId(id.into()), &batch).unwrap();
    }

    #[test]
    fn a_stopped_run_is_listed_from_its_summary_and_its_state_is_not_kept() {
        let store = Arc::new(MemoryStore::new());
        for id in ["done", "going"] {
            store.create_run(&record(id)).unwrap();
        }
        let finished = EventKind::RunFinished {
            status: RunStatus::Completed,
            error: None,
        };
        append(&store, "done", finished);
        let warning = EventKind::Warning {
            message: "still going".into(),
        };
        append(&store, "going", warning);
        let cache = RunCache::new(store);
        let listed = cache
            .summaries(|r, s| (r.id.to_string(), s.status, s.seq))
            .unwrap();
        assert_eq!(
            listed,
            [
                ("done".to_string(), Some(RunStatus::Completed), 1),
                ("going".to_string(), None, 1)
            ]
        );
        let held: Vec<String> = cache.lock().cached.keys().map(|k| k.to_string()).collect();
        assert_eq!(
            held,
            ["going"],
            "only the run in progress is folded and kept"
        );
        let asked = cache
            .states_where(|s| !s.waiting.is_empty(), |r, _| r.id.to_string())
            .unwrap();
        assert_eq!(asked, ["going"], "the stopped run waits for nobody");
    }

    #[test]
    fn the_states_of_the_stopped_runs_opened_last_are_kept_and_no_more() {
        let store = Arc::new(MemoryStore::new());
        let ids: Vec<String> = (0..12).map(|i| format!("r{i:02}")).collect();
        for id in &ids {
            store.create_run(&record(id)).unwrap();
            let finished = EventKind::RunFinished {
                status: RunStatus::Completed,
                error: None,
            };
            append(&store, id, finished);
        }
        store.create_run(&record("going")).unwrap();
        let cache = RunCache::new(store);
        // Opened in order, r00 opened again after r05, then the run in progress.
        for id in ids.iter().take(6).chain([&ids[0]]).chain(&ids[6..]) {
            let seq = cache
                .with(&RunId(id.as_str().into()), |_, s| s.last_seq)
                .unwrap();
            assert_eq!(seq, 1);
        }
        cache.with(&RunId("going".into()), |_, _| ()).unwrap();
        let mut held: Vec<String> = cache.lock().cached.keys().map(|k| k.to_string()).collect();
        held.sort();
        assert_eq!(
            held,
            ["going", "r00", "r05", "r06", "r07", "r08", "r09", "r10", "r11"],
            "the 8 stopped runs used last, and the run in progress"
        );
    }
}
