//! Where runs are kept: the `Store` trait and its backends.
//!
//! The executor appends every event before it acts on it; events produced together (several
//! completions arriving at once) are appended in one call, so a durable backend can commit them
//! in one transaction. This module's types are the only ones the rest of the code sees: a
//! backend's own types (rusqlite, redis) stop here.

mod memory;
mod sqlite;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use sqlite::{RunLock, SqliteStore};

use crate::model::{DeadLetter, Event, EventKind, RunId, RunStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run `{0}` is not in the store")]
    UnknownRun(RunId),
    #[error("run `{0}` is already in the store")]
    DuplicateRun(RunId),
    #[error("event {got} of run `{run}` does not follow event {last}")]
    OutOfOrder { run: RunId, last: u64, got: u64 },
    #[error("store error: {0}")]
    Backend(String),
}

/// What a store knows about a run besides its events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub workflow: String,
    /// The workflow file as given on the command line.
    pub file: String,
    pub params: BTreeMap<String, serde_json::Value>,
    pub created_at: crate::model::Timestamp,
    pub status: RunStatus,
}

/// Checks that `events` continue a log whose last event is `last`; returns the new last.
pub(crate) fn check_order(run: &RunId, mut last: u64, events: &[Event]) -> Result<u64, StoreError> {
    for e in events {
        if e.seq != last + 1 {
            return Err(StoreError::OutOfOrder {
                run: run.clone(),
                last,
                got: e.seq,
            });
        }
        last = e.seq;
    }
    Ok(last)
}

/// A place runs are kept. Calls are synchronous and short; the executor makes them from its
/// scheduler task between awaits.
pub trait Store: Send + Sync {
    /// Says where the store is, for headers and messages (`memory`, a file path).
    fn describe(&self) -> String;
    fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    /// Appends events in order, all or none.
    fn append(&self, run: &RunId, events: &[Event]) -> Result<(), StoreError>;
    fn set_status(&self, run: &RunId, status: RunStatus) -> Result<(), StoreError>;
    fn run(&self, run: &RunId) -> Result<RunRecord, StoreError>;
    fn events(&self, run: &RunId) -> Result<Vec<Event>, StoreError>;
    fn runs(&self) -> Result<Vec<RunRecord>, StoreError>;

    /// Stores an artifact's content under its SHA-256 (hex); storing it again is a no-op.
    fn put_artifact(&self, sha256: &str, content: &[u8]) -> Result<(), StoreError>;
    /// An artifact's content, if stored.
    fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The response cache (`cache = true`): a task output stored under its request's key.
    fn cache_get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError>;
    fn cache_put(&self, key: &str, output: &serde_json::Value) -> Result<(), StoreError>;

    /// Dead-lettered tasks, of one run or of all, oldest first. Entries are kept as
    /// `DeadLettered` events; a backend may index them.
    fn dead_letters(&self, run: Option<&RunId>) -> Result<Vec<DeadLetter>, StoreError> {
        let runs = match run {
            Some(r) => vec![r.clone()],
            None => self.runs()?.into_iter().map(|r| r.id).collect(),
        };
        let mut out = Vec::new();
        for r in runs {
            for e in self.events(&r)? {
                if let EventKind::DeadLettered { entry } = e.kind {
                    out.push(entry);
                }
            }
        }
        Ok(out)
    }
}
