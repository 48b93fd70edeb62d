//! Attempts handed to `conductor worker` processes, as the scheduler and the workers see the
//! queue: backend-neutral types; only the PostgreSQL store implements them.
//!
//! The protocol in one paragraph (docs/distributed.md has it in full): the scheduler enqueues
//! an attempt in the same transaction as the events that dispatch it, fenced by its run lease;
//! a worker claims it (`FOR UPDATE SKIP LOCKED`), heartbeats a lease on it, and completes it
//! only while its claim is valid; the result lands in an inbox that only the run's scheduler
//! turns into an event. A claim whose lease runs out is expired by the scheduler (fenced by
//! its own lease), after which the worker's result is refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::StoreError;
use crate::model::RunId;

/// One attempt to enqueue with the batch that dispatches it.
#[derive(Clone, Debug)]
pub struct WorkItem {
    pub task: Arc<str>,
    pub attempt: u32,
    /// The agent (pool) name workers select on with `--pool`.
    pub pool: Arc<str>,
    /// Labels a worker must have (`labels = { k = "v" }` on the pool).
    pub labels: BTreeMap<String, String>,
    /// The job as the worker receives it (JSON).
    pub body: String,
}

/// Queue writes that ride on a batch, in its transaction.
#[derive(Clone, Debug, Default)]
pub struct WorkBatch {
    pub enqueue: Vec<WorkItem>,
}

impl WorkBatch {
    pub fn is_empty(&self) -> bool {
        self.enqueue.is_empty()
    }

    pub fn clear(&mut self) {
        self.enqueue.clear();
    }
}

/// A worker's result, from the inbox.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteResult {
    pub task: Arc<str>,
    pub attempt: u32,
    pub worker: String,
    /// The outcome as the worker sent it (JSON).
    pub body: String,
}

/// What a new scheduler finds of an attempt the log shows in flight.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    /// Still queued, or claimed by a worker that heartbeats: wait for its result.
    Alive,
    /// Finished: its result, not yet in the log.
    Finished(RemoteResult),
    /// Its worker's lease ran out (now expired, so its result will be refused), it was
    /// cancelled, or it was never enqueued: it did not and will not finish.
    Gone,
}

/// The scheduler's side of the queue. Every write is fenced by the caller's run lease.
pub trait WorkQueue: Send + Sync {
    /// Results that arrived since the last call, marked taken (a new scheduler reads them by
    /// attempt instead, with [`WorkQueue::find`]).
    fn take_results(&self, run: &RunId) -> Result<Vec<RemoteResult>, StoreError>;
    /// Expires the run's claims whose lease ran out; returns them as (task, attempt).
    fn expire_lost(&self, run: &RunId) -> Result<Vec<(Arc<str>, u32)>, StoreError>;
    /// Where an attempt stands, expiring it first if its worker's lease ran out.
    fn find(&self, run: &RunId, task: &str, attempt: u32) -> Result<Found, StoreError>;
    /// Asks for an attempt to stop: a queued one is never claimed, a claimed one is stopped at
    /// its worker's next heartbeat, and its result is refused.
    fn cancel(&self, run: &RunId, task: &str, attempt: u32) -> Result<(), StoreError>;
    /// Woken when results for the run arrive (and now and then regardless).
    fn results_signal(&self, run: &RunId) -> Arc<tokio::sync::Notify>;
    /// Unfinished runs that no scheduler holds (a crashed one's lease ran out), oldest first.
    fn orphaned_runs(&self) -> Result<Vec<RunId>, StoreError>;
}

/// A worker as it registers.
#[derive(Clone, Debug)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// The pools it serves; empty: every pool.
    pub pools: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// An attempt a worker claimed.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub run: RunId,
    pub task: Arc<str>,
    pub attempt: u32,
    pub body: String,
    /// How long it waited in the queue, by the database's clock.
    pub queued_ms: f64,
}

/// A finished attempt, as a worker reports it.
#[derive(Clone, Debug)]
pub struct Completion {
    pub run: RunId,
    pub task: Arc<str>,
    pub attempt: u32,
    pub body: String,
}
