//! The runs the dashboard has read, each with its state brought up to date from the events
//! appended since (`Store::events_after`): listing runs every second stays proportional to
//! what changed, not to the size of their logs. A stopped run is listed from the summary its
//! store keeps (`Store::listing`), so its state is neither folded nor held for the list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::{RunId, RunState, RunSummary};
use crate::store::{RunRecord, Store, StoreError};

pub(crate) struct RunCache {
    store: Arc<dyn Store>,
    runs: Mutex<HashMap<RunId, Cached>>,
}

struct Cached {
    record: RunRecord,
    state: RunState,
}

impl RunCache {
    pub(crate) fn new(store: Arc<dyn Store>) -> RunCache {
        RunCache {
            store,
            runs: Mutex::new(HashMap::new()),
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
                Some(summary) => {
                    // The run has stopped since it was cached: its state is read again if a
                    // view asks for it, not kept for the list.
                    runs.remove(&record.id);
                    out.push(f(&record, &summary));
                }
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Cached>> {
        // A panic while holding the map leaves states that are still consistent (each is
        // updated event by event): keep using it.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh<'a>(
        &self,
        runs: &'a mut HashMap<RunId, Cached>,
        record: RunRecord,
    ) -> Result<&'a Cached, StoreError> {
        let cached = runs.entry(record.id.clone()).or_insert_with(|| Cached {
            record: record.clone(),
            state: RunState::default(),
        });
        let events = self.store.events_after(&record.id, cached.state.last_seq)?;
        for e in &events {
            cached.state.apply(e);
        }
        cached.record = record;
        Ok(cached)
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
        let held: Vec<String> = cache.lock().keys().map(|k| k.to_string()).collect();
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
}
