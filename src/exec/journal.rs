//! The run's journal: every event is applied to the state when it is recorded, appended to
//! the store with what it changed at the next flush — always before the scheduler acts on
//! it — and then shown to the observers.

use std::sync::Arc;

use super::observe::Observer;
use crate::model::{Changes, Event, EventKind, RunId, RunState, Timestamp};
use crate::store::{Batch, Store, StoreError, WorkBatch};

/// How long events may wait to be committed when nothing acts on them yet (a pure task's
/// dispatch; see `dispatch`): the bound on group commit's delay.
pub(super) const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

/// A batch this large is committed without waiting for the window.
const MAX_BATCH: usize = 4096;

pub(super) struct Journal {
    run_id: RunId,
    store: Arc<dyn Store>,
    batch: Vec<Event>,
    /// The batch's events as JSON lines, when anyone wants them.
    json: Vec<String>,
    /// When the oldest uncommitted event was recorded.
    pending_since: Option<tokio::time::Instant>,
    changes: Changes,
    /// Attempts for workers, enqueued with the next batch.
    work: WorkBatch,
    pub observers: Vec<Box<dyn Observer>>,
    /// The wall-clock time stamped on events, read once per scheduler turn.
    pub clock: Timestamp,
    /// Secret params' values, replaced in every event.
    redactor: Option<Arc<crate::secrets::Redactor>>,
}

impl Journal {
    pub(super) fn new(
        run_id: RunId,
        store: Arc<dyn Store>,
        observers: Vec<Box<dyn Observer>>,
    ) -> Journal {
        let track = store.keeps_projections();
        Journal {
            run_id,
            store,
            batch: Vec::new(),
            json: Vec::new(),
            pending_since: None,
            changes: Changes {
                rows: track,
                ..Changes::default()
            },
            work: WorkBatch::default(),
            observers,
            clock: Timestamp::now(),
            redactor: None,
        }
    }

    pub(super) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// When the oldest event not yet committed was recorded, if any.
    pub(super) fn pending_since(&self) -> Option<tokio::time::Instant> {
        self.pending_since
    }

    /// Whether the events waiting to be committed should be committed before the dispatcher
    /// waits: many of them, or the oldest has waited its window.
    pub(super) fn commit_due(&self) -> bool {
        self.batch.len() >= MAX_BATCH
            || self
                .pending_since
                .is_some_and(|t| t.elapsed() >= COMMIT_WINDOW)
    }

    /// Records an event: applied to the state now, appended at the next flush.
    /// Secret values are replaced in every event before anything sees it.
    pub(super) fn with_redactor(mut self, redactor: Arc<crate::secrets::Redactor>) -> Journal {
        self.redactor = (!redactor.is_empty()).then_some(redactor);
        self
    }

    pub(super) fn record(&mut self, state: &mut RunState, kind: EventKind) {
        let kind = match &self.redactor {
            Some(r) => redacted(r, kind),
            None => kind,
        };
        let event = Event {
            seq: state.last_seq + 1,
            at: self.clock,
            kind,
        };
        state.apply_tracked(&event, &mut self.changes);
        if self.batch.is_empty() {
            self.pending_since = Some(tokio::time::Instant::now());
        }
        self.batch.push(event);
    }

    /// Rows the store's projections lack (a run resumed after a crash), written with the next
    /// batch.
    pub(super) fn catch_up(&mut self, events: &[Event]) -> Result<(), StoreError> {
        if !self.changes.rows {
            return Ok(());
        }
        let Some(seq) = self.store.projected_seq(&self.run_id)? else {
            return Ok(());
        };
        if events.last().is_some_and(|e| e.seq > seq) {
            self.changes.merge(Changes::after(events, seq));
        }
        Ok(())
    }

    /// How many task changes are noted so far in this batch.
    pub fn touched_count(&self) -> usize {
        self.changes.tasks.len()
    }

    /// The tasks changed since `from` (a [`Journal::touched_count`]).
    pub fn touched_since(&self, from: usize) -> &[usize] {
        self.changes.tasks.get(from..).unwrap_or(&[])
    }

    /// Appends the recorded events in one call (one transaction for a durable store), then
    /// shows them to the observers.
    pub(super) fn flush(&mut self, state: &RunState) -> Result<(), StoreError> {
        if self.batch.is_empty() && self.work.is_empty() {
            return Ok(());
        }
        let json_observers = self.observers.iter().any(|o| o.wants_json());
        self.json.clear();
        if self.store.wants_json() || json_observers {
            self.json.extend(
                self.batch
                    .iter()
                    .map(|e| serde_json::to_string(e).unwrap_or_default()),
            );
        }
        self.store.append(
            &self.run_id,
            &Batch {
                events: &self.batch,
                json: &self.json,
                changes: &self.changes,
                state,
                work: &self.work,
            },
        )?;
        self.changes.clear();
        self.work.clear();
        self.pending_since = None;
        for (i, e) in self.batch.iter().enumerate() {
            for o in &mut self.observers {
                o.event(e, state);
                if let (true, Some(line)) = (json_observers, self.json.get(i)) {
                    o.json_line(line);
                }
            }
        }
        for o in &mut self.observers {
            o.batch_end();
        }
        self.batch.clear();
        Ok(())
    }

    /// An attempt for a worker: enqueued in the transaction of the next batch, with (or after)
    /// the event that dispatches it.
    pub(super) fn enqueue(&mut self, item: crate::store::work::WorkItem) {
        if self.batch.is_empty() && self.work.is_empty() {
            self.pending_since = Some(tokio::time::Instant::now());
        }
        self.work.enqueue.push(item);
    }

    /// Shows a resumed run's history to the observers, each event with the state it made.
    pub(super) fn replay(&mut self, events: &[Event]) {
        if self.observers.is_empty() {
            return;
        }
        let json = self.observers.iter().any(|o| o.wants_json());
        let mut then = RunState::default();
        for e in events {
            then.apply(e);
            let line = if json {
                serde_json::to_string(e).unwrap_or_default()
            } else {
                String::new()
            };
            for o in &mut self.observers {
                o.event(e, &then);
                if json {
                    o.json_line(&line);
                }
            }
        }
        for o in &mut self.observers {
            o.batch_end();
        }
    }

    pub(super) fn finished(&mut self, state: &RunState) {
        for o in &mut self.observers {
            o.finished(state);
        }
    }
}

/// An event with secret values replaced: through its JSON, since a value can be anywhere (an
/// output, an error, a rendered command in a dead letter).
fn redacted(r: &crate::secrets::Redactor, kind: EventKind) -> EventKind {
    let Ok(mut value) = serde_json::to_value(&kind) else {
        return kind;
    };
    // String by string, so a replacement can never break the JSON around it.
    if !redact_strings(r, &mut value) {
        return kind;
    }
    serde_json::from_value(value).unwrap_or_else(|e| {
        // The secret equals one of the event's own words (a status, a field's tag): the event
        // cannot be kept safely.
        tracing::warn!("an event held a secret value and could not be redacted: {e}");
        EventKind::Warning {
            message: "an event held a secret param's value and was withheld".into(),
        }
    })
}

/// Redacts every string in `v` (keys included); whether anything changed.
fn redact_strings(r: &crate::secrets::Redactor, v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => match r.redact(s) {
            std::borrow::Cow::Owned(clean) => {
                *s = clean;
                true
            }
            std::borrow::Cow::Borrowed(_) => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, i| redact_strings(r, i) | changed),
        Value::Object(map) => {
            let mut changed = false;
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let Some(mut inner) = map.remove(&k) else {
                    continue;
                };
                changed |= redact_strings(r, &mut inner);
                let key = match r.redact(&k) {
                    std::borrow::Cow::Owned(clean) => {
                        changed = true;
                        clean
                    }
                    std::borrow::Cow::Borrowed(_) => k,
                };
                map.insert(key, inner);
            }
            changed
        }
        Value::Number(n) => {
            let text = n.to_string();
            if matches!(r.redact(&text), std::borrow::Cow::Owned(_)) {
                *v = Value::String(r.redact(&text).into_owned());
                true
            } else {
                false
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_that_looks_like_json_syntax_is_redacted_and_the_event_kept() {
        let r = crate::secrets::Redactor::new([("tricky", "\",\"status\":\"")]);
        let kind = EventKind::TaskFinished {
            task: "deploy".into(),
            status: crate::model::TaskStatus::Failed,
            error: Some(crate::model::TaskError::fatal(
                crate::model::ErrorCode::ExitCode,
                "printed \",\"status\":\" then quit",
            )),
        };
        let EventKind::TaskFinished { error, status, .. } = redacted(&r, kind) else {
            panic!("the event was withheld");
        };
        assert_eq!(status, crate::model::TaskStatus::Failed);
        let message = error.unwrap().message;
        assert!(!message.contains("status"), "{message}");
        assert!(message.contains("[secret param tricky]"), "{message}");
        // A secret written as a number in an output is redacted too.
        let r = crate::secrets::Redactor::new([("pin", "12345678")]);
        let mut v = serde_json::json!({ "out": { "pin": 12345678, "list": [1, 12345678] } });
        assert!(redact_strings(&r, &mut v));
        assert!(!v.to_string().contains("12345678"), "{v}");
    }
}
