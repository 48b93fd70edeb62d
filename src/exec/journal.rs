//! The run's journal: every event is applied to the state when it is recorded, appended to
//! the store with what it changed at the next flush — always before the scheduler acts on
//! it — and then shown to the observers.

use std::sync::Arc;

use super::observe::Observer;
use crate::model::{Changes, Event, EventKind, RunId, RunState, Timestamp};
use crate::store::{Batch, Store, StoreError};

pub(super) struct Journal {
    run_id: RunId,
    store: Arc<dyn Store>,
    batch: Vec<Event>,
    changes: Changes,
    pub observers: Vec<Box<dyn Observer>>,
    /// The wall-clock time stamped on events, read once per scheduler turn.
    pub clock: Timestamp,
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
            changes: Changes {
                rows: track,
                ..Changes::default()
            },
            observers,
            clock: Timestamp::now(),
        }
    }

    pub(super) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Records an event: applied to the state now, appended at the next flush.
    pub(super) fn record(&mut self, state: &mut RunState, kind: EventKind) {
        let event = Event {
            seq: state.last_seq + 1,
            at: self.clock,
            kind,
        };
        state.apply_tracked(&event, &mut self.changes);
        self.batch.push(event);
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
        if self.batch.is_empty() {
            return Ok(());
        }
        self.store.append(
            &self.run_id,
            &Batch {
                events: &self.batch,
                changes: &self.changes,
                state,
            },
        )?;
        self.changes.clear();
        for e in &self.batch {
            for o in &mut self.observers {
                o.event(e, state);
            }
        }
        self.batch.clear();
        Ok(())
    }

    /// Shows a resumed run's history to the observers, each event with the state it made.
    pub(super) fn replay(&mut self, events: &[Event]) {
        if self.observers.is_empty() {
            return;
        }
        let mut then = RunState::default();
        for e in events {
            then.apply(e);
            for o in &mut self.observers {
                o.event(e, &then);
            }
        }
    }

    pub(super) fn finished(&mut self, state: &RunState) {
        for o in &mut self.observers {
            o.finished(state);
        }
    }
}
