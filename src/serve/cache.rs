//! The runs the dashboard has read, each with its state brought up to date from the events
//! appended since (`Store::events_after`): listing runs every second stays proportional to
//! what changed, not to the size of their logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::{RunId, RunState};
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

    /// Every run, oldest first, with its state as of now. Call from a blocking thread.
    pub(crate) fn all<T>(
        &self,
        mut f: impl FnMut(&RunRecord, &RunState) -> T,
    ) -> Result<Vec<T>, StoreError> {
        let records = self.store.runs()?;
        let mut runs = self.lock();
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let cached = self.fresh(&mut runs, record)?;
            out.push(f(&cached.record, &cached.state));
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
