//! The in-memory store: for tests, benchmarks and runs nobody needs to resume.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::{Batch, RunLease, RunRecord, Store, StoreError};
use crate::model::{
    DeadLetter, Event, LogChunk, RunId, RunState, RunStatus, RunSummary, Timestamp,
};

/// A run's log in the batches it was appended in: no giant reallocation as it grows.
#[derive(Default)]
struct Log {
    batches: Vec<Kept>,
    last: u64,
    /// As of the last batch that was due one ([`RunState::summary_due`]).
    summary: Option<RunSummary>,
}

/// A batch as kept: its events, or — when it came with their JSON lines, because `--json`
/// prints them — those lines in one string. The lines take under half the memory of the events
/// (a 100,000-task run: 82 MB of events, 38 MB of lines) and cost nothing more to keep;
/// reading them back parses them.
enum Kept {
    Events(Vec<Event>),
    /// One compact JSON object per event, each ended by `\n` (serde_json escapes newlines
    /// inside strings, so a line is an event).
    Lines(String),
}

impl Kept {
    fn new(batch: &Batch<'_>) -> Kept {
        if batch.json.len() != batch.events.len() || batch.json.iter().any(String::is_empty) {
            return Kept::Events(batch.events.to_vec());
        }
        let mut text = String::with_capacity(batch.json.iter().map(|l| l.len() + 1).sum());
        for line in batch.json {
            text.push_str(line);
            text.push('\n');
        }
        Kept::Lines(text)
    }

    fn read(&self, run: &RunId, out: &mut Vec<Event>) -> Result<(), StoreError> {
        match self {
            Kept::Events(events) => out.extend(events.iter().cloned()),
            Kept::Lines(text) => {
                for line in text.lines() {
                    let event =
                        super::parse_stored(line).map_err(|cause| StoreError::UnreadableEvent {
                            run: run.clone(),
                            cause,
                        })?;
                    out.push(event);
                }
            }
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct MemoryStore {
    runs: Mutex<HashMap<RunId, (RunRecord, Log)>>,
    artifacts: Mutex<HashMap<String, Vec<u8>>>,
    cache: Mutex<HashMap<String, serde_json::Value>>,
    dropped: Mutex<HashSet<String>>,
    logs: Mutex<HashMap<(RunId, String, u32), Vec<LogChunk>>>,
}

/// A panic while holding a lock leaves plain data behind; keep using it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct NoLease;
impl RunLease for NoLease {}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut runs = lock(&self.runs);
        if runs.contains_key(&run.id) {
            return Err(StoreError::DuplicateRun(run.id.clone()));
        }
        runs.insert(run.id.clone(), (run.clone(), Log::default()));
        Ok(())
    }

    fn append(&self, run: &RunId, batch: &Batch<'_>) -> Result<(), StoreError> {
        let mut runs = lock(&self.runs);
        let (record, log) = runs
            .get_mut(run)
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))?;
        log.last = super::check_order(run, log.last, batch.events)?;
        log.batches.push(Kept::new(batch));
        record.status = batch.state.status();
        if batch.state.summary_due(batch.changes.run) {
            log.summary = Some(batch.state.summary());
        }
        Ok(())
    }

    fn run(&self, run: &RunId) -> Result<RunRecord, StoreError> {
        lock(&self.runs)
            .get(run)
            .map(|(r, _)| r.clone())
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))
    }

    fn events(&self, run: &RunId) -> Result<Vec<Event>, StoreError> {
        let runs = lock(&self.runs);
        let (_, log) = runs
            .get(run)
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))?;
        let mut out = Vec::new();
        for batch in &log.batches {
            batch.read(run, &mut out)?;
        }
        Ok(out)
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs: Vec<RunRecord> = lock(&self.runs).values().map(|(r, _)| r.clone()).collect();
        runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(runs)
    }

    fn listing(&self) -> Result<Vec<(RunRecord, Option<RunSummary>)>, StoreError> {
        let runs = lock(&self.runs);
        let mut out: Vec<(RunRecord, Option<RunSummary>)> = runs
            .values()
            .map(|(r, log)| {
                let fresh = log.summary.as_ref().filter(|s| s.seq == log.last);
                (r.clone(), fresh.cloned())
            })
            .collect();
        out.sort_by(|(a, _), (b, _)| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    fn put_artifact(&self, sha256: &str, content: &[u8]) -> Result<(), StoreError> {
        lock(&self.artifacts)
            .entry(sha256.to_string())
            .or_insert_with(|| content.to_vec());
        Ok(())
    }

    fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.artifacts).get(sha256).cloned())
    }

    fn cache_get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(lock(&self.cache).get(key).cloned())
    }

    fn cache_put(&self, key: &str, output: &serde_json::Value) -> Result<(), StoreError> {
        lock(&self.cache).insert(key.to_string(), output.clone());
        Ok(())
    }

    fn dead_letters(&self, run: Option<&RunId>) -> Result<Vec<DeadLetter>, StoreError> {
        let runs = match run {
            Some(r) => vec![r.clone()],
            None => self.runs()?.into_iter().map(|r| r.id).collect(),
        };
        let dropped = lock(&self.dropped).clone();
        let mut out = Vec::new();
        for r in runs {
            let state = RunState::from_events(&self.events(&r)?);
            out.extend(
                state
                    .dead_letter_entries
                    .into_iter()
                    .filter(|d| !dropped.contains(&d.id)),
            );
        }
        Ok(out)
    }

    fn drop_dead_letter(&self, id: &str) -> Result<bool, StoreError> {
        let known = self.dead_letters(None)?.iter().any(|d| d.id == id);
        Ok(known && lock(&self.dropped).insert(id.to_string()))
    }

    fn gc(&self, before: Timestamp) -> Result<Vec<RunId>, StoreError> {
        let mut runs = lock(&self.runs);
        let old: Vec<RunId> = runs
            .values()
            .filter(|(r, _)| {
                r.created_at < before
                    && matches!(r.status, RunStatus::Completed | RunStatus::Failed)
            })
            .map(|(r, _)| r.id.clone())
            .collect();
        for id in &old {
            runs.remove(id);
        }
        Ok(old)
    }

    fn append_log(
        &self,
        run: &RunId,
        task: &str,
        attempt: u32,
        chunks: &[LogChunk],
    ) -> Result<(), StoreError> {
        lock(&self.logs)
            .entry((run.clone(), task.to_string(), attempt))
            .or_default()
            .extend(chunks.iter().cloned());
        Ok(())
    }

    fn logs(&self, run: &RunId, task: &str, attempt: u32) -> Result<Vec<LogChunk>, StoreError> {
        Ok(lock(&self.logs)
            .get(&(run.clone(), task.to_string(), attempt))
            .cloned()
            .unwrap_or_default())
    }

    fn lease(&self, _run: &RunId) -> Result<Box<dyn RunLease>, StoreError> {
        Ok(Box::new(NoLease))
    }
}
