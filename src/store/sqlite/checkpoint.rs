//! WAL checkpoints on a thread of their own. With `synchronous = NORMAL` a commit writes the
//! WAL without an fsync; the fsyncs happen at checkpoints, and with SQLite's automatic
//! checkpoints they happen inside whichever commit crosses the threshold — on the scheduler's
//! thread. Here a separate connection checkpoints (PASSIVE: it never blocks the writer) soon
//! after anything was appended, at most once per [`PACE`], and once more when the store is
//! dropped.
//!
//! Checkpointing often keeps what is left to checkpoint small. The connection that closes the
//! store last checkpoints what is left (and fsyncs it) before the process can exit, so what is
//! left is what an exit waits for. With a checkpoint every 256 appends, as before, most of a
//! 20k-task run was left: `conductor run --json` spent 45–60 ms between its last line of output
//! and its exit, on that final checkpoint; 5–15 ms with a checkpoint at most every 20 ms.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shortest time between two checkpoints: bounds their fsyncs (two each) to about a
/// hundred a second however fast batches are appended. 2, 5, 10, 20 and 50 ms all ended the
/// run's tail; 20 was among the fastest whole runs (alternated, 15 rounds).
const PACE: Duration = Duration::from_millis(20);

pub(super) struct Checkpointer {
    appends: Arc<AtomicU64>,
    /// Dropping it stops the thread.
    wake: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub fn start(path: &Path) -> Checkpointer {
        let appends = Arc::new(AtomicU64::new(0));
        let (wake, rx) = mpsc::sync_channel::<()>(1);
        let path = path.to_path_buf();
        let counter = appends.clone();
        let spawned = std::thread::Builder::new()
            .name("conductor-checkpoint".into())
            .spawn(move || run(&path, &counter, &rx));
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::warn!(
                    "cannot start the checkpoint thread ({e}); SQLite checkpoints itself"
                );
                None
            }
        };
        Checkpointer {
            appends,
            wake: Some(wake),
            thread,
        }
    }

    /// One more batch was committed.
    pub fn appended(&self) {
        self.appends.fetch_add(1, Ordering::Relaxed);
        // A full channel already holds a wake-up.
        let Some(wake) = &self.wake else { return };
        if let Err(TrySendError::Disconnected(())) = wake.try_send(()) {
            tracing::debug!("the checkpoint thread is gone");
        }
    }
}

impl Drop for Checkpointer {
    /// Stops the thread and waits for it. Its connection closes after the store's own, so it
    /// is the last one: closing it checkpoints what is left and removes the write-ahead log.
    /// Without the wait the process exited first, and every run left its WAL behind (20 MB
    /// after a 20k-task run), with the last batches in it and maybe a checkpoint half done —
    /// safe while the WAL stays, but the database file alone was behind the log.
    fn drop(&mut self) {
        self.wake.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(path: &Path, appends: &AtomicU64, rx: &mpsc::Receiver<()>) {
    let Ok(conn) = rusqlite::Connection::open(path) else {
        return;
    };
    let _ = conn.busy_timeout(super::busy::BUSY_TIMEOUT);
    let mut done = 0;
    let mut last: Option<Instant> = None;
    loop {
        let mut stop = rx.recv().is_err();
        // Batches appended within the pace share a checkpoint.
        if let (false, Some(wait)) = (stop, last.and_then(|t| PACE.checked_sub(t.elapsed()))) {
            stop = wait_or_stop(rx, wait).is_err();
        }
        let now = appends.load(Ordering::Relaxed);
        if now != done || stop {
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            done = now;
            last = Some(Instant::now());
        }
        if stop {
            return;
        }
    }
}

/// Sleeps for `wait`, or less if the store is dropped meanwhile.
fn wait_or_stop(rx: &mpsc::Receiver<()>, wait: Duration) -> Result<(), RecvTimeoutError> {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        match rx.recv_timeout(left) {
            // A wake-up within the pace: the checkpoint after it covers it.
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => return Ok(()),
            Err(e @ RecvTimeoutError::Disconnected) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One append is enough: its pages reach the database file while the store stays open.
    #[test]
    fn an_append_is_checkpointed_while_the_store_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = rusqlite::Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer
            .execute_batch("CREATE TABLE t (x BLOB); INSERT INTO t VALUES (zeroblob(400000));")
            .unwrap();
        let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
        assert!(size() < 100_000, "nothing is checkpointed yet");
        let checkpointer = Checkpointer::start(&path);
        checkpointer.appended();
        let begun = Instant::now();
        while size() < 400_000 {
            assert!(
                begun.elapsed() < Duration::from_secs(10),
                "the append was not checkpointed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let count: i64 = writer
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1);
    }
}
