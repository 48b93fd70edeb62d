//! The in-memory store: for tests, benchmarks and runs nobody needs to resume.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{RunRecord, Store, StoreError};
use crate::model::{Event, RunId, RunStatus};

/// A run's log in the batches it was appended in: no giant reallocation as it grows.
#[derive(Default)]
struct Log {
    batches: Vec<Vec<Event>>,
    last: u64,
}

#[derive(Default)]
pub struct MemoryStore {
    runs: Mutex<HashMap<RunId, (RunRecord, Log)>>,
    artifacts: Mutex<HashMap<String, Vec<u8>>>,
    cache: Mutex<HashMap<String, serde_json::Value>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, (RunRecord, Log)>> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut runs = self.lock();
        if runs.contains_key(&run.id) {
            return Err(StoreError::DuplicateRun(run.id.clone()));
        }
        runs.insert(run.id.clone(), (run.clone(), Log::default()));
        Ok(())
    }

    fn append(&self, run: &RunId, events: &[Event]) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let (_, log) = runs
            .get_mut(run)
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))?;
        log.last = super::check_order(run, log.last, events)?;
        log.batches.push(events.to_vec());
        Ok(())
    }

    fn set_status(&self, run: &RunId, status: RunStatus) -> Result<(), StoreError> {
        let mut runs = self.lock();
        let (record, _) = runs
            .get_mut(run)
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))?;
        record.status = status;
        Ok(())
    }

    fn run(&self, run: &RunId) -> Result<RunRecord, StoreError> {
        self.lock()
            .get(run)
            .map(|(r, _)| r.clone())
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))
    }

    fn events(&self, run: &RunId) -> Result<Vec<Event>, StoreError> {
        self.lock()
            .get(run)
            .map(|(_, log)| log.batches.iter().flatten().cloned().collect())
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs: Vec<RunRecord> = self.lock().values().map(|(r, _)| r.clone()).collect();
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(runs)
    }

    fn put_artifact(&self, sha256: &str, content: &[u8]) -> Result<(), StoreError> {
        let mut artifacts = self.artifacts.lock().unwrap_or_else(|e| e.into_inner());
        artifacts
            .entry(sha256.to_string())
            .or_insert_with(|| content.to_vec());
        Ok(())
    }

    fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let artifacts = self.artifacts.lock().unwrap_or_else(|e| e.into_inner());
        Ok(artifacts.get(sha256).cloned())
    }

    fn cache_get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cache.get(key).cloned())
    }

    fn cache_put(&self, key: &str, output: &serde_json::Value) -> Result<(), StoreError> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(key.to_string(), output.clone());
        Ok(())
    }
}
