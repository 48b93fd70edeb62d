//! Projection rows written on a thread of their own. A run is one scheduler thread, and on it
//! every append waits for SQLite; writing a run's projection rows there (a row per task and per
//! attempt) cost a fifth of a zero-latency run. The projector writes them on the machine's
//! other core, through the store's one connection, a few hundred rows at a time: an append waits
//! at most for one such part, and goes first when both want the connection (the transaction
//! commits before it; while nobody waits, one transaction holds up to 16 parts).
//!
//! Order is kept: rows are handed over only after the events they come from are committed,
//! jobs are written in the order they were handed over, and a batch that stops its run waits
//! for the run's jobs before it writes its last rows itself ([`Projector::drain`]), as does a
//! lease of the run when it is released (so no job of a run outlives its driver).
//! `runs.projected_seq` moves with a job's last transaction, so a crash in the middle of a job
//! leaves it behind and a resume writes the rows again (every row is an upsert).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rusqlite::Connection;

use super::backlog::Backlog;
use crate::model::RunId;
use crate::store::StoreError;

/// Rows per part of a job: a quarter of a millisecond of writing, what an append may wait.
const ROWS_PER_TRANSACTION: usize = 128;

/// The most parts one transaction holds (when no append is waiting).
const PARTS_PER_COMMIT: usize = 16;

/// Jobs waiting before an append waits for the projector (the rows of a run are produced
/// faster than a slow disk takes them).
const MAX_QUEUED: usize = 4;

/// A run's rows, written up to event `seq`.
struct Job {
    run: RunId,
    rows: Backlog,
    seq: u64,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Jobs handed over and not yet written (or dropped), per run.
    pending: HashMap<RunId, usize>,
    /// The store is being dropped: write what is queued, then stop.
    stop: bool,
    /// Runs a job of which could not be written: why, and whether an append reported it.
    /// Nothing more is written for them until they stop or are taken again (their
    /// `projected_seq` stays behind, and a resume writes the rows again).
    failed: HashMap<RunId, (String, bool)>,
}

impl Queue {
    /// One job of `run` is written or dropped.
    fn settle(&mut self, run: &RunId) {
        if let Some(n) = self.pending.get_mut(run) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(run);
            }
        }
    }
}

pub(super) struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.changed.wait(q).unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every job of `run` handed over is written (or dropped).
    pub fn drain(&self, run: &RunId) {
        let mut q = self.lock();
        while q.pending.contains_key(run) {
            q = self.wait(q);
        }
    }
}

pub(super) struct Projector {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Projector {
    /// Starts the thread; `None` when it cannot start (the rows are then written with the
    /// batches, as before).
    pub fn start(
        path: &Path,
        conn: Arc<Mutex<Connection>>,
        appending: Arc<AtomicUsize>,
    ) -> Option<Projector> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        });
        let inner = shared.clone();
        let at = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("conductor-projector".into())
            .spawn(move || work(&at, &conn, &appending, &inner));
        match thread {
            Ok(thread) => Some(Projector {
                shared,
                thread: Some(thread),
                path: path.to_path_buf(),
            }),
            Err(e) => {
                tracing::warn!("cannot start the projector thread ({e}); projections are written with the events");
                None
            }
        }
    }

    /// What a lease of the store keeps, to wait for its run's rows when it is released.
    pub fn handle(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Hands over a run's rows, committed up to event `seq`. Waits while the projector is
    /// [`MAX_QUEUED`] jobs behind.
    pub fn submit(&self, run: RunId, rows: Backlog, seq: u64) {
        let mut q = self.shared.lock();
        while q.jobs.len() >= MAX_QUEUED {
            q = self.shared.wait(q);
        }
        if !q.failed.contains_key(&run) {
            *q.pending.entry(run.clone()).or_default() += 1;
            q.jobs.push_back(Job { run, rows, seq });
            self.shared.changed.notify_all();
        }
    }

    /// Waits until every job of `run` handed over is written.
    pub fn drain(&self, run: &RunId) {
        self.shared.drain(run);
    }

    /// Whether rows of `run` could not be written: then none are written until it stops or is
    /// taken again.
    pub fn broken(&self, run: &RunId) -> bool {
        self.shared.lock().failed.contains_key(run)
    }

    /// Why rows of `run` could not be written, the first time it is asked after it happened.
    pub fn check(&self, run: &RunId) -> Result<(), StoreError> {
        let mut q = self.shared.lock();
        match q.failed.get_mut(run) {
            Some((cause, reported @ false)) => {
                *reported = true;
                Err(StoreError::Io {
                    path: self.path.clone(),
                    cause: format!("writing the run's projection rows: {cause}"),
                })
            }
            _ => Ok(()),
        }
    }

    /// `run` stopped, or is taken by a new driver (which writes what the tables lack, from
    /// `projected_seq` on): its rows are written again.
    pub fn forget(&self, run: &RunId) {
        self.shared.lock().failed.remove(run);
    }
}

impl Drop for Projector {
    /// Writes what is queued, then stops.
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn work(path: &Path, conn: &Mutex<Connection>, appending: &AtomicUsize, shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.lock();
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    // A slot is free for a waiting `submit`.
                    shared.changed.notify_all();
                    break job;
                }
                if q.stop {
                    return;
                }
                q = shared.wait(q);
            }
        };
        let run = job.run.clone();
        // A panic is a failure of this job, not of the thread: appends and drains must never
        // wait for a thread that is gone.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write(path, conn, appending, job)
        }))
        .unwrap_or_else(|_| Err("the projector thread panicked".into()));
        let mut q = shared.lock();
        q.settle(&run);
        if let Err(cause) = result {
            tracing::warn!("the projection rows of run {run} could not be written: {cause}");
            let dropped = q.jobs.iter().filter(|j| j.run == run).count();
            q.jobs.retain(|j| j.run != run);
            for _ in 0..dropped {
                q.settle(&run);
            }
            q.failed.insert(run, (cause, false));
        }
        shared.changed.notify_all();
    }
}

/// Writes a job a few hundred rows at a time; the last part moves `projected_seq`. Parts go on
/// in one transaction while no append waits, up to [`PARTS_PER_COMMIT`]: every commit writes
/// the pages it touched to the log again, and a 20k-task run's rows in commits of 128 took a
/// tenth of the whole run more than in commits of 2,048.
fn write(
    path: &Path,
    conn: &Mutex<Connection>,
    appending: &AtomicUsize,
    job: Job,
) -> Result<(), String> {
    let parts = job.rows.split(ROWS_PER_TRANSACTION);
    let last = parts.len() - 1;
    let mut parts = parts.into_iter().enumerate().peekable();
    while parts.peek().is_some() {
        // An append waiting for the connection goes first (it waits for whoever holds the
        // connection; a long read may, so the projector backs off to sleeping).
        let mut spins = 0u32;
        while appending.load(Ordering::Acquire) > 0 {
            if spins < 64 {
                std::thread::yield_now();
                spins += 1;
            } else {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
        let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = super::busy::begin(&conn, path).map_err(|e| e.to_string())?;
        let mut written = 0;
        // One part at least; then more while nobody waits to append.
        while let Some((i, part)) = parts.next_if(|_| {
            written == 0 || (written < PARTS_PER_COMMIT && appending.load(Ordering::Acquire) == 0)
        }) {
            part.write(&tx, &job.run, (i == last).then_some(job.seq))
                .map_err(|e| e.to_string())?;
            written += 1;
        }
        tx.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}
