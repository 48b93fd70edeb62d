//! The durable store: one SQLite file (WAL mode), a versioned schema migrated forward on open.
//!
//! The event log is the truth: `events` holds every event of every run as JSON, in order.
//! `runs`, `dead_letters` and the projection tables (`task_results`, `attempts`,
//! `agent_states`, `decisions`) are written from the state changes of each batch, in the same
//! transaction as its events, so they never disagree with the log. With `synchronous =
//! NORMAL` a committed batch survives the process being killed at any point (it may be lost
//! only to a power failure before the next checkpoint).

mod append;
mod backlog;
mod body;
mod busy;
mod checkpoint;
mod gc;
mod lock;
mod projector;
mod read;
mod schema;

/// Prepared statements a connection keeps: more than the store has.
const STATEMENTS: usize = 48;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use super::{Batch, RunLease, RunRecord, Store, StoreError};
use crate::model::{DeadLetter, Event, LogChunk, RunId, RunSummary, Timestamp};
use schema::{MIGRATIONS, SCHEMA_VERSION};

pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// Appends waiting for `conn`: the projector lets them go first.
    appending: Arc<AtomicUsize>,
    /// Started by the first append: writes projection rows on a thread of its own (`None` when
    /// the thread cannot start).
    projector: std::sync::OnceLock<Option<projector::Projector>>,
    /// Started by the first append: checkpoints the WAL on a thread of its own, so the
    /// writer never waits for a checkpoint's fsync.
    checkpointer: std::sync::OnceLock<checkpoint::Checkpointer>,
    /// Projection rows waiting to be written in bulk.
    backlogs: Mutex<backlog::Backlogs>,
}

impl SqliteStore {
    /// Opens (creating when missing) the store at `path`, migrating its schema forward.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::CannotCreate {
                path: dir.to_path_buf(),
                cause: e.to_string(),
            })?;
        }
        // An existing file SQLite cannot open or write is a permission problem (the file, its
        // folder, or the WAL files beside it), not damage.
        let not_a_store = |e: rusqlite::Error| {
            let code = e.sqlite_error_code();
            let access = matches!(
                code,
                Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly)
            );
            if access && path.is_file() {
                StoreError::NotWritable {
                    path: path.to_path_buf(),
                    cause: e.to_string(),
                }
            } else {
                StoreError::NotAStore {
                    path: path.to_path_buf(),
                    cause: e.to_string(),
                }
            }
        };
        let conn = Connection::open(path).map_err(not_a_store)?;
        conn.busy_timeout(busy::BUSY_TIMEOUT).map_err(not_a_store)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(not_a_store)?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(not_a_store)?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(not_a_store)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(not_a_store)?;
        // Statement journals (a multi-row upsert of the projector keeps one) stay in memory
        // rather than spilling to an unlinked file under /var/tmp: a 20k-task run wrote 354
        // pages there. They hold only the pages one statement changes.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(not_a_store)?;
        // Every statement the store runs stays prepared (the default keeps 16).
        conn.set_prepared_statement_cache_capacity(STATEMENTS);
        // Reading the schema proves the header and the schema pages are sound without
        // scanning the file (a full integrity check costs milliseconds per megabyte, on every
        // command); damage elsewhere is reported by the statement that meets it.
        conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(not_a_store)?;
        let store = SqliteStore {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
            appending: Arc::new(AtomicUsize::new(0)),
            projector: std::sync::OnceLock::new(),
            checkpointer: std::sync::OnceLock::new(),
            backlogs: Mutex::new(backlog::Backlogs::default()),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves a usable connection behind.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The projector, started the first time a run is leased or appended to.
    fn projector(&self) -> Option<&projector::Projector> {
        self.projector
            .get_or_init(|| {
                projector::Projector::start(&self.path, self.conn.clone(), self.appending.clone())
            })
            .as_ref()
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            cause: e.to_string(),
        }
    }

    /// Runs `f` in a write transaction, waiting for the write lock as [`busy`] says.
    fn write<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.lock();
        let tx = busy::begin(&conn, &self.path)?;
        let out = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let conn = self.lock();
        let err = |e: rusqlite::Error| self.err(e);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        // The write lock up front, so two processes opening a new store wait for each other
        // instead of failing.
        let tx = busy::begin(&conn, &self.path)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(migration).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

impl Store for SqliteStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn keeps_projections(&self) -> bool {
        true
    }

    fn wants_json(&self) -> bool {
        true
    }

    fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let params_json = serde_json::to_string(&run.params).map_err(|e| self.err(e))?;
        let conn = self.lock();
        let tx = busy::begin(&conn, &self.path)?;
        let result = tx.execute(
            "INSERT INTO runs (id, workflow, file, params, created_at, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                &*run.id.0,
                run.workflow,
                run.file,
                params_json,
                run.created_at.0 as i64,
                run.status.as_str()
            ],
        );
        match result {
            Ok(_) => tx.commit().map_err(|e| self.err(e)),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::DuplicateRun(run.id.clone()))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn append(&self, run: &RunId, batch: &Batch<'_>) -> Result<(), StoreError> {
        let checkpointer = self.checkpointer.get_or_init(|| {
            // From now on this connection leaves checkpoints to the checkpointer.
            let _ = self.lock().pragma_update(None, "wal_autocheckpoint", 0);
            checkpoint::Checkpointer::start(&self.path)
        });
        let projector = self.projector();
        let stops = backlog::stops(batch);
        let rows = match projector {
            None => append::Rows::Inline,
            Some(p) => {
                if stops {
                    // The run's last rows are written with this batch, after its jobs.
                    p.drain(run);
                }
                if let Err(e) = p.check(run) {
                    self.backlogs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .drop_run(run);
                    return Err(e);
                }
                if p.broken(run) {
                    append::Rows::Dropped
                } else {
                    append::Rows::Deferred
                }
            }
        };
        self.appending.fetch_add(1, Ordering::AcqRel);
        let conn = self.lock();
        self.appending.fetch_sub(1, Ordering::AcqRel);
        let mut backlogs = self.backlogs.lock().unwrap_or_else(|e| e.into_inner());
        let due =
            append::append(&conn, &self.path, &mut backlogs, run, batch, rows).map_err(|e| {
                backlogs.drop_run(run);
                match e {
                    append::Failure::Store(e) => e,
                    append::Failure::Sql(e) => self.err(e),
                }
            })?;
        drop(backlogs);
        drop(conn);
        checkpointer.appended();
        if let Some(p) = projector {
            if let Some((rows, seq)) = due {
                p.submit(run.clone(), rows, seq);
            }
            if stops {
                p.forget(run);
            }
        }
        Ok(())
    }

    fn run(&self, run: &RunId) -> Result<RunRecord, StoreError> {
        read::runs(&self.lock(), Some(run))
            .map_err(|e| self.err(e))?
            .pop()
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))
    }

    fn events(&self, run: &RunId) -> Result<Vec<Event>, StoreError> {
        let out = self.events_after(run, 0)?;
        if out.is_empty() {
            // An unknown run, or one created but never started (killed before its first
            // commit): the latter has no events, and that is not an error.
            self.run(run)?;
        }
        Ok(out)
    }

    fn events_after(&self, run: &RunId, seq: u64) -> Result<Vec<Event>, StoreError> {
        read::events_after(&self.lock(), run, seq).map_err(|e| match e {
            read::Failure::Sql(e) => self.err(e),
            read::Failure::Store(e) => e,
        })
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        read::runs(&self.lock(), None).map_err(|e| self.err(e))
    }

    fn listing(&self) -> Result<Vec<(RunRecord, Option<RunSummary>)>, StoreError> {
        read::listing(&self.lock()).map_err(|e| self.err(e))
    }

    fn put_artifact(&self, sha256: &str, content: &[u8]) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO artifacts (hash, size, content) VALUES (?1, ?2, ?3)",
                params![sha256, content.len() as i64, content],
            )
        })?;
        Ok(())
    }

    fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.lock()
            .query_row(
                "SELECT content FROM artifacts WHERE hash = ?1",
                params![sha256],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn cache_get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let body: Option<String> = self
            .lock()
            .query_row(
                "SELECT body FROM response_cache WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        // An entry that no longer parses is a miss, not an error: the task runs again.
        Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
    }

    fn cache_put(&self, key: &str, output: &serde_json::Value) -> Result<(), StoreError> {
        let body = serde_json::to_string(output).map_err(|e| self.err(e))?;
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO response_cache (key, body, created_at) VALUES (?1, ?2, ?3)",
                params![key, body, Timestamp::now().0 as i64],
            )
        })?;
        Ok(())
    }

    fn dead_letters(&self, run: Option<&RunId>) -> Result<Vec<DeadLetter>, StoreError> {
        read::dead_letters(&self.lock(), run).map_err(|e| self.err(e))
    }

    fn dead_letter_counts(&self) -> Result<std::collections::HashMap<RunId, usize>, StoreError> {
        read::dead_letter_counts(&self.lock()).map_err(|e| self.err(e))
    }

    fn drop_dead_letter(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.write(|tx| {
            tx.execute(
                "UPDATE dead_letters SET dropped = 1 WHERE id = ?1 AND dropped = 0",
                params![id],
            )
        })?;
        Ok(n > 0)
    }

    fn gc(&self, before: Timestamp) -> Result<Vec<RunId>, StoreError> {
        self.write(|tx| gc::gc(tx, before))
    }

    fn projected_seq(&self, run: &RunId) -> Result<Option<u64>, StoreError> {
        let seq: i64 = self
            .lock()
            .query_row(
                "SELECT projected_seq FROM runs WHERE id = ?1",
                params![&*run.0],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))?;
        Ok(Some(seq as u64))
    }

    fn append_log(
        &self,
        run: &RunId,
        task: &str,
        attempt: u32,
        chunks: &[LogChunk],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO attempt_logs (run_id, task, attempt, seq, stream, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for c in chunks {
                insert.execute(params![
                    &*run.0,
                    task,
                    attempt as i64,
                    c.seq as i64,
                    c.stream.as_str(),
                    c.data
                ])?;
            }
            Ok(())
        })
    }

    fn logs(&self, run: &RunId, task: &str, attempt: u32) -> Result<Vec<LogChunk>, StoreError> {
        read::logs(&self.lock(), run, task, attempt).map_err(|e| self.err(e))
    }

    fn lease(&self, run: &RunId) -> Result<Box<dyn RunLease>, StoreError> {
        let lock = lock::RunLock::acquire(&self.path, run)?;
        let projector = self.projector();
        if let Some(p) = projector {
            // A new driver writes what the tables lack from `projected_seq` on.
            p.forget(run);
        }
        Ok(Box::new(lock::Held {
            _lock: lock,
            run: run.clone(),
            projector: projector.map(projector::Projector::handle),
        }))
    }
}
