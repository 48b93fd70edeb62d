//! WAL checkpoints on a thread of their own. With `synchronous = NORMAL` a commit writes the
//! WAL without an fsync; the fsyncs happen at checkpoints, and with SQLite's automatic
//! checkpoints they happen inside whichever commit crosses the threshold — on the scheduler's
//! thread. Here a separate connection checkpoints (PASSIVE: it never blocks the writer) when
//! enough was appended, and once more when the store is dropped.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// Checkpoint after this many appends, or after a quiet interval.
const APPENDS_PER_CHECKPOINT: u64 = 256;
const INTERVAL: Duration = Duration::from_millis(250);

pub(super) struct Checkpointer {
    appends: Arc<AtomicU64>,
    /// Dropping it stops the thread.
    wake: mpsc::SyncSender<()>,
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
        if let Err(e) = spawned {
            tracing::warn!("cannot start the checkpoint thread ({e}); SQLite checkpoints itself");
        }
        Checkpointer { appends, wake }
    }

    /// One more batch was committed.
    pub fn appended(&self) {
        let n = self.appends.fetch_add(1, Ordering::Relaxed) + 1;
        if n % APPENDS_PER_CHECKPOINT == 0 {
            let _ = self.wake.try_send(());
        }
    }
}

fn run(path: &Path, appends: &AtomicU64, rx: &mpsc::Receiver<()>) {
    let Ok(conn) = rusqlite::Connection::open(path) else {
        return;
    };
    let _ = conn.busy_timeout(super::busy::BUSY_TIMEOUT);
    let mut done = 0;
    loop {
        let stop = matches!(
            rx.recv_timeout(INTERVAL),
            Err(RecvTimeoutError::Disconnected)
        );
        let now = appends.load(Ordering::Relaxed);
        if now != done || stop {
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            done = now;
        }
        if stop {
            return;
        }
    }
}
