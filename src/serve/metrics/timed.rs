//! A store that times its appends: `conductor_store_append_seconds`.
//!
//! INVARIANT: every method of [`Store`] is forwarded, the provided ones too — a default left
//! in place would change what the wrapped store does (projections, JSON lines).

use std::sync::Arc;

use super::Metrics;
use crate::model::{DeadLetter, Event, LogChunk, RunId, RunSummary, Timestamp};
use crate::store::{Batch, RunLease, RunRecord, Store, StoreError};

pub(crate) struct TimedStore {
    inner: Arc<dyn Store>,
    seconds: metrics::Histogram,
}

impl TimedStore {
    pub(crate) fn new(inner: Arc<dyn Store>, metrics: Metrics) -> TimedStore {
        TimedStore {
            inner,
            seconds: metrics.histogram("conductor_store_append_seconds", &[]),
        }
    }
}

impl Store for TimedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn keeps_projections(&self) -> bool {
        self.inner.keeps_projections()
    }
    fn wants_json(&self) -> bool {
        self.inner.wants_json()
    }
    fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.inner.create_run(run)
    }
    fn append(&self, run: &RunId, batch: &Batch<'_>) -> Result<(), StoreError> {
        let start = std::time::Instant::now();
        let result = self.inner.append(run, batch);
        self.seconds.record(start.elapsed().as_secs_f64());
        result
    }
    fn run(&self, run: &RunId) -> Result<RunRecord, StoreError> {
        self.inner.run(run)
    }
    fn events(&self, run: &RunId) -> Result<Vec<Event>, StoreError> {
        self.inner.events(run)
    }
    fn events_after(&self, run: &RunId, seq: u64) -> Result<Vec<Event>, StoreError> {
        self.inner.events_after(run, seq)
    }
    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.runs()
    }
    fn listing(&self) -> Result<Vec<(RunRecord, Option<RunSummary>)>, StoreError> {
        self.inner.listing()
    }
    fn put_artifact(&self, sha256: &str, content: &[u8]) -> Result<(), StoreError> {
        self.inner.put_artifact(sha256, content)
    }
    fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.artifact(sha256)
    }
    fn cache_get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.cache_get(key)
    }
    fn cache_put(&self, key: &str, output: &serde_json::Value) -> Result<(), StoreError> {
        self.inner.cache_put(key, output)
    }
    fn dead_letters(&self, run: Option<&RunId>) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(run)
    }
    fn dead_letter_counts(&self) -> Result<std::collections::HashMap<RunId, usize>, StoreError> {
        self.inner.dead_letter_counts()
    }
    fn drop_dead_letter(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.drop_dead_letter(id)
    }
    fn gc(&self, before: Timestamp) -> Result<Vec<RunId>, StoreError> {
        self.inner.gc(before)
    }
    fn append_log(
        &self,
        run: &RunId,
        task: &str,
        attempt: u32,
        chunks: &[LogChunk],
    ) -> Result<(), StoreError> {
        self.inner.append_log(run, task, attempt, chunks)
    }
    fn logs(&self, run: &RunId, task: &str, attempt: u32) -> Result<Vec<LogChunk>, StoreError> {
        self.inner.logs(run, task, attempt)
    }
    fn projected_seq(&self, run: &RunId) -> Result<Option<u64>, StoreError> {
        self.inner.projected_seq(run)
    }
    fn lease(&self, run: &RunId) -> Result<Box<dyn RunLease>, StoreError> {
        self.inner.lease(run)
    }
}
