//! Waiting for the write lock. Several processes may write one store (concurrent runs, `gc`,
//! `dlq drop`); SQLite lets one write at a time. Every write takes the lock up front (`BEGIN
//! IMMEDIATE`: a deferred transaction that reads first and then writes gets `SQLITE_BUSY` at
//! once, without waiting), waits for it with SQLite's busy handler and, when that gives up,
//! again with a backoff of our own — SQLite's handler is unfair, so a writer can lose the race
//! to busier ones many times over. Only a wait longer than [`STORE_LOCK_WAIT`] is an error, and
//! it names the store and the wait. Once held, the lock is not waited for again: in WAL mode
//! the statements and the commit of a transaction that holds it do not need another lock.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::limits::STORE_LOCK_WAIT;
use crate::store::StoreError;

/// How long SQLite's own busy handler waits on one statement, on every connection (reads
/// included, which are not retried here: in WAL mode they wait only while a connection
/// recovers the WAL); a write's loop here waits on after it.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest pause between two tries for the lock.
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Whether an error means another connection holds a lock.
pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Begins a write transaction on the store at `path`, waiting up to [`STORE_LOCK_WAIT`].
pub(super) fn begin<'c>(conn: &'c Connection, path: &Path) -> Result<Transaction<'c>, StoreError> {
    begin_within(conn, path, STORE_LOCK_WAIT)
}

pub(super) fn begin_within<'c>(
    conn: &'c Connection,
    path: &Path,
    limit: Duration,
) -> Result<Transaction<'c>, StoreError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        match Transaction::new_unchecked(conn, TransactionBehavior::Immediate) {
            Ok(tx) => return Ok(tx),
            Err(e) if is_busy(&e) => {
                let waited = start.elapsed();
                if waited >= limit {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                        waited: format!("{:.1} s", waited.as_secs_f64()),
                    });
                }
                // A pause that varies between processes, so they do not retry in step.
                let jitter = u64::from(std::process::id() ^ start.elapsed().subsec_nanos()) % 5;
                std::thread::sleep((pause + Duration::from_millis(jitter)).min(limit - waited));
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path: path.to_path_buf(),
                    cause: e.to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_held_longer_than_the_bound_is_an_error_naming_the_store_and_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let holder = Connection::open(&path).unwrap();
        holder.pragma_update(None, "journal_mode", "WAL").unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let waiter = Connection::open(&path).unwrap();
        waiter.busy_timeout(Duration::from_millis(50)).unwrap();
        let start = Instant::now();
        let err = begin_within(&waiter, &path, Duration::from_millis(400)).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(400));
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(
            text.contains("stayed locked") && text.contains(" s"),
            "{text}"
        );
        // Released, the lock is taken.
        holder.execute_batch("COMMIT").unwrap();
        begin_within(&waiter, &path, Duration::from_millis(400))
            .unwrap()
            .commit()
            .unwrap();
    }
}
