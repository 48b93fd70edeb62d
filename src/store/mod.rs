//! Where runs are kept: the `Store` trait and its backends — memory, SQLite (the embedded
//! default) and PostgreSQL (many processes and machines, with workers: see `work`). A
//! backend's own types stop here; the rest of the code sees these.
//!
//! The executor appends every event before it acts on it; events produced together (several
//! completions arriving at once) are appended in one call, with what they changed, so a
//! durable backend commits them — and its projections — in one transaction.

mod error;
mod memory;
mod postgres;
mod sqlite;
pub mod work;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use error::StoreError;
pub use memory::MemoryStore;
pub use postgres::{is_postgres_url, PostgresStore};
pub use sqlite::SqliteStore;
pub use work::{WorkBatch, WorkQueue};

use crate::model::{
    Changes, DeadLetter, Event, LogChunk, RunId, RunState, RunStatus, RunSummary, Timestamp,
};

/// What a store knows about a run besides its events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub workflow: String,
    /// The workflow file as given on the command line.
    pub file: String,
    pub params: BTreeMap<String, serde_json::Value>,
    pub created_at: Timestamp,
    pub status: RunStatus,
}

/// One scheduler turn's events, what they changed, and the state after them.
pub struct Batch<'a> {
    pub events: &'a [Event],
    /// Each event serialised as one JSON line, when the store asked for them
    /// ([`Store::wants_json`]).
    pub json: &'a [String],
    pub changes: &'a Changes,
    pub state: &'a RunState,
    /// Attempts for workers that the batch dispatches, enqueued in its transaction (only a
    /// store with a [`Store::work_queue`] gets any).
    pub work: &'a WorkBatch,
}

/// Holds a run so that only one process drives it; released when dropped (or when the
/// process ends, however it ends).
pub trait RunLease: Send {}

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

/// Events written by builds before values were bounded ([`crate::limits::MAX_VALUE_DEPTH`])
/// may nest past serde_json's default limit of 128; this build reads them up to this depth
/// (measured before parsing, so the parser's recursion stays bounded).
const STORED_DEPTH: usize = 512;

/// JSON this store wrote, read back whatever depth an older build stored it at (up to
/// [`STORED_DEPTH`]).
pub(crate) fn parse_stored<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    read_stored(text, |de| T::deserialize(de))
}

/// Reads stored JSON with `read`, its depth bounded first (see [`parse_stored`]).
fn read_stored<T>(
    text: &str,
    read: impl FnOnce(
        &mut serde_json::Deserializer<serde_json::de::StrRead<'_>>,
    ) -> Result<T, serde_json::Error>,
) -> Result<T, String> {
    let depth = crate::limits::text_depth(text);
    if depth > STORED_DEPTH {
        return Err(format!(
            "it nests {depth} levels deep; this build reads at most {STORED_DEPTH}"
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let value = read(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// A stored JSON list of events from `first` on, read from event `after + 1`: the events
/// before it are skipped over, not decoded (a reader following a log wants the tail of a
/// batch, and decoding an event costs many times skipping it).
pub(crate) fn parse_stored_after(text: &str, first: u64, after: u64) -> Result<Vec<Event>, String> {
    let skip = (after + 1).saturating_sub(first);
    read_stored(text, |de| {
        serde::de::DeserializeSeed::deserialize(Tail { skip }, de)
    })
}

/// A JSON list whose first `skip` items are skipped.
struct Tail {
    skip: u64,
}

impl<'de> serde::de::DeserializeSeed<'de> for Tail {
    type Value = Vec<Event>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Event>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Tail {
    type Value = Vec<Event>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Event>, A::Error> {
        for _ in 0..self.skip {
            if seq.next_element::<serde::de::IgnoredAny>()?.is_none() {
                return Ok(Vec::new());
            }
        }
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(e) = seq.next_element()? {
            out.push(e);
        }
        Ok(out)
    }
}

/// Every run `keep` accepts, oldest first, with what a listing shows of it: the store's
/// [`RunSummary`] when it counts the run's last event, otherwise the run's log folded. A log
/// that cannot be read is passed to `unreadable` and listed with an empty summary, rather than
/// hiding every other run.
pub fn list_runs(
    store: &dyn Store,
    keep: impl Fn(&RunRecord) -> bool,
    mut unreadable: impl FnMut(StoreError),
) -> Result<Vec<(RunRecord, RunSummary)>, StoreError> {
    let mut out = Vec::new();
    for (record, summary) in store.listing()? {
        if !keep(&record) {
            continue;
        }
        let summary = match summary {
            Some(s) => s,
            None => match store.events(&record.id) {
                Ok(events) => RunState::from_events(&events).summary(),
                Err(e) => {
                    unreadable(e);
                    RunState::default().summary()
                }
            },
        };
        out.push((record, summary));
    }
    Ok(out)
}

/// A place runs are kept. Calls are synchronous and short; the executor makes them from its
/// dispatcher between awaits, and from workers on blocking threads.
pub trait Store: Send + Sync {
    /// Says where the store is, for headers and messages (`memory`, a file path).
    fn describe(&self) -> String;
    /// Whether the store keeps projections of the log, and so wants [`Batch::changes`].
    fn keeps_projections(&self) -> bool {
        false
    }
    /// Whether the store keeps events as JSON, and so wants [`Batch::json`].
    fn wants_json(&self) -> bool {
        false
    }
    fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    /// Appends a batch of events in order, all or none.
    fn append(&self, run: &RunId, batch: &Batch<'_>) -> Result<(), StoreError>;
    fn run(&self, run: &RunId) -> Result<RunRecord, StoreError>;
    fn events(&self, run: &RunId) -> Result<Vec<Event>, StoreError>;
    /// The events after `seq`, in order (for following a run without reading it all again).
    fn events_after(&self, run: &RunId, seq: u64) -> Result<Vec<Event>, StoreError> {
        let mut events = self.events(run)?;
        events.retain(|e| e.seq > seq);
        Ok(events)
    }
    /// Every run, oldest first.
    fn runs(&self) -> Result<Vec<RunRecord>, StoreError>;
    /// Every run, oldest first, with its [`RunSummary`] when the store kept one as of the run's
    /// last event (`None`: the caller folds the run's log, [`RunState::summary`]). This is how
    /// `conductor runs` lists runs without reading their logs.
    fn listing(&self) -> Result<Vec<(RunRecord, Option<RunSummary>)>, StoreError> {
        Ok(self.runs()?.into_iter().map(|r| (r, None)).collect())
    }

    /// Stores an artifact's content under its SHA-256 (hex); storing it again is a no-op.
    fn put_artifact(&self, sha256: &str, content: &[u8]) -> Result<(), StoreError>;
    /// An artifact's content, if stored.
    fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The response cache (`cache = true`): a task output stored under its request's key.
    fn cache_get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError>;
    fn cache_put(&self, key: &str, output: &serde_json::Value) -> Result<(), StoreError>;

    /// Dead-lettered tasks not yet dropped, of one run or of all, oldest first.
    fn dead_letters(&self, run: Option<&RunId>) -> Result<Vec<DeadLetter>, StoreError>;
    /// How many dead letters each run has not dropped. The dashboard's runs list and metrics
    /// count them on every refresh: the durable stores count rows and read no entry's body.
    fn dead_letter_counts(&self) -> Result<std::collections::HashMap<RunId, usize>, StoreError> {
        let mut counts = std::collections::HashMap::new();
        for d in self.dead_letters(None)? {
            *counts.entry(d.run_id).or_default() += 1;
        }
        Ok(counts)
    }
    /// Marks a dead letter as handled (`conductor dlq drop`); returns whether it was there.
    fn drop_dead_letter(&self, id: &str) -> Result<bool, StoreError>;
    /// Deletes finished runs created before `before`, and the artifacts no remaining run
    /// refers to; returns the ids of the runs deleted.
    fn gc(&self, before: Timestamp) -> Result<Vec<RunId>, StoreError>;
    /// Adds pieces of an attempt's output to its log.
    fn append_log(
        &self,
        run: &RunId,
        task: &str,
        attempt: u32,
        chunks: &[LogChunk],
    ) -> Result<(), StoreError>;
    /// An attempt's log, in order.
    fn logs(&self, run: &RunId, task: &str, attempt: u32) -> Result<Vec<LogChunk>, StoreError>;
    /// Up to which event a run's projections are written (`None`: the store keeps none).
    fn projected_seq(&self, _run: &RunId) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// Takes the run so this process alone drives it.
    fn lease(&self, run: &RunId) -> Result<Box<dyn RunLease>, StoreError>;
    /// Waits up to `timeout` for new events of `run` (`events --follow`); a store that cannot
    /// be told simply waits a moment, and the caller polls.
    fn wait_for_events(&self, _run: &RunId, timeout: std::time::Duration) {
        std::thread::sleep(timeout.min(std::time::Duration::from_millis(200)));
    }
    /// The queue of attempts for `conductor worker` processes, if this store has one.
    fn work_queue(&self) -> Option<std::sync::Arc<dyn WorkQueue>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_batch_is_read_from_the_event_asked_for() {
        let events: Vec<Event> = (5..=9)
            .map(|seq| Event {
                seq,
                at: Timestamp(seq),
                kind: crate::model::EventKind::Warning {
                    message: format!("w{seq}"),
                },
            })
            .collect();
        let text = serde_json::to_string(&events).unwrap();
        let seqs = |after| -> Vec<u64> {
            parse_stored_after(&text, 5, after)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        assert_eq!(seqs(0), [5, 6, 7, 8, 9], "from before the batch: all of it");
        assert_eq!(seqs(4), [5, 6, 7, 8, 9]);
        assert_eq!(seqs(6), [7, 8, 9]);
        assert_eq!(seqs(9), Vec::<u64>::new());
        assert_eq!(seqs(100), Vec::<u64>::new());
        // Damage in the part skipped is still an error: skipping parses the JSON.
        let broken = text.replacen("\"w5\"", "\"w5", 1);
        assert!(parse_stored_after(&broken, 5, 7).is_err());
    }
}
