//! The durable store: one SQLite file (WAL mode), a versioned schema migrated forward on open.
//!
//! The event log is the truth: `events` holds every event of every run as JSON, in order.
//! `runs` and `dead_letters` are indexes kept in the same transaction as the events they come
//! from, so they never disagree with the log. With `synchronous = NORMAL` a committed batch
//! survives the process being killed at any point (it may be lost only to a power failure
//! before the next checkpoint).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::{RunRecord, Store, StoreError};
use crate::model::{DeadLetter, Event, EventKind, RunId, RunStatus, Timestamp};

/// The schema version this build writes. Each migration moves the schema one version forward.
const SCHEMA_VERSION: i64 = 2;

const MIGRATIONS: &[&str] = &[
    // 1: runs, the event log, and the indexes derived from it.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        file TEXT NOT NULL,
        params TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        status TEXT NOT NULL
    );
    CREATE TABLE events (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task TEXT NOT NULL,
        pool TEXT NOT NULL,
        at INTEGER NOT NULL,
        body TEXT NOT NULL,
        dropped INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX dead_letters_run ON dead_letters(run_id);
    CREATE TABLE response_cache (
        key TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE artifacts (
        hash TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        content BLOB NOT NULL
    );",
    // 2: queryable projections of the log, kept in the same transaction as the events:
    // each task's latest result, every attempt, each agent instance, every decision.
    "CREATE TABLE task_results (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (run_id, task)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        task TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        agent TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        error TEXT,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE agent_states (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        agent TEXT NOT NULL,
        status TEXT NOT NULL,
        current_task TEXT,
        PRIMARY KEY (run_id, agent)
    ) WITHOUT ROWID;
    CREATE TABLE decisions (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        task TEXT NOT NULL,
        decision TEXT NOT NULL,
        decided_by TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;",
];

pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn backend(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("`{}`: {e}", path.display()))
}

impl SqliteStore {
    /// Opens (creating when missing) the store at `path`, migrating its schema forward.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!("cannot create `{}`: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(|e| backend(path, e))?;
        let not_a_store = |e: rusqlite::Error| {
            StoreError::Backend(format!(
                "`{}` is not a Conductor store, or it is damaged: {e}",
                path.display()
            ))
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| backend(path, e))?;
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
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(not_a_store)?;
        if check != "ok" {
            return Err(StoreError::Backend(format!(
                "`{}` is damaged: {check}",
                path.display()
            )));
        }
        let store = SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let err = |e: rusqlite::Error| backend(&self.path, e);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "`{}` was written by a newer Conductor (schema {version}; this build knows {SCHEMA_VERSION})",
                self.path.display()
            )));
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        // IMMEDIATE: take the write lock up front, so two processes opening a new store wait
        // for each other instead of failing.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
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

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        backend(&self.path, e)
    }

    /// Marks a dead letter as handled (`conductor dlq drop`); returns whether it existed.
    pub fn drop_dead_letter(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .lock()
            .execute(
                "UPDATE dead_letters SET dropped = 1 WHERE id = ?1 AND dropped = 0",
                params![id],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Deletes finished runs created before `before`, and the artifacts no remaining run
    /// refers to; returns the ids of the runs deleted (their workspaces are the caller's).
    pub fn gc(&self, before: Timestamp) -> Result<Vec<RunId>, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let ids: Vec<String> = {
            let mut st = tx
                .prepare(
                    "SELECT id FROM runs WHERE created_at < ?1 AND status IN ('completed', 'failed')",
                )
                .map_err(|e| self.err(e))?;
            let rows = st
                .query_map(params![before.0 as i64], |r| r.get(0))
                .map_err(|e| self.err(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?
        };
        for id in &ids {
            tx.execute("DELETE FROM runs WHERE id = ?1", params![id])
                .map_err(|e| self.err(e))?;
        }
        if !ids.is_empty() {
            // Artifacts are shared by content: keep every one an attempt of a kept run wrote.
            tx.execute(
                "DELETE FROM artifacts WHERE hash NOT IN (
                    SELECT json_extract(a.value, '$.sha256')
                    FROM events, json_each(events.body, '$.artifacts') AS a
                    WHERE events.kind = 'attempt_finished'
                )",
                [],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(ids.into_iter().map(|id| RunId(id.into())).collect())
    }
}

/// Keeps the projection tables (schema 2) in step with one event, inside the batch's transaction.
fn project(tx: &rusqlite::Transaction<'_>, run: &str, e: &Event) -> rusqlite::Result<()> {
    let at = e.at.0 as i64;
    match &e.kind {
        EventKind::TaskDispatched {
            task,
            agent,
            attempt,
        } => {
            tx.prepare_cached(
                "INSERT INTO task_results (run_id, task, status, attempts, updated_at) VALUES (?1, ?2, 'in_progress', ?3, ?4)
                 ON CONFLICT (run_id, task) DO UPDATE SET status = 'in_progress', attempts = ?3, updated_at = ?4",
            )?
            .execute(params![run, &**task, *attempt as i64, at])?;
            tx.prepare_cached(
                "INSERT INTO agent_states (run_id, agent, status, current_task) VALUES (?1, ?2, 'RUNNING', ?3)
                 ON CONFLICT (run_id, agent) DO UPDATE SET status = 'RUNNING', current_task = ?3",
            )?
            .execute(params![run, &**agent, &**task])?;
        }
        EventKind::AttemptFinished {
            task,
            agent,
            attempt,
            duration_ms,
            error,
            ..
        } => {
            let error = error.as_ref().map(|e| e.to_string());
            tx.prepare_cached(
                "INSERT OR REPLACE INTO attempts (run_id, seq, task, attempt, agent, duration_ms, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![run, e.seq as i64, &**task, *attempt as i64, &**agent, *duration_ms as i64, error])?;
            tx.prepare_cached(
                "UPDATE agent_states SET status = 'IDLE', current_task = NULL WHERE run_id = ?1 AND agent = ?2",
            )?
            .execute(params![run, &**agent])?;
        }
        EventKind::TaskFinished {
            task,
            status,
            error,
        } => {
            let error = error.as_ref().map(|e| e.to_string());
            tx.prepare_cached(
                "INSERT INTO task_results (run_id, task, status, error, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (run_id, task) DO UPDATE SET status = ?3, error = ?4, updated_at = ?5",
            )?
            .execute(params![run, &**task, status.as_str(), error, at])?;
        }
        EventKind::TaskSkipped { task, .. } => {
            tx.prepare_cached(
                "INSERT INTO task_results (run_id, task, status, updated_at) VALUES (?1, ?2, 'skipped', ?3)
                 ON CONFLICT (run_id, task) DO UPDATE SET status = 'skipped', updated_at = ?3",
            )?
            .execute(params![run, &**task, at])?;
        }
        // Entering a phase (again, in a later pass) starts its tasks afresh, as in `RunState`.
        // The phase of each task is in the run's first event.
        EventKind::PhaseEntered { phase, .. } => {
            tx.prepare_cached(
                "UPDATE task_results SET status = 'pending', attempts = 0, error = NULL, updated_at = ?3
                 WHERE run_id = ?1 AND task IN (
                    SELECT json_extract(t.value, '$.name')
                    FROM events, json_each(events.body, '$.tasks') AS t
                    WHERE events.run_id = ?1 AND events.seq = 1 AND events.kind = 'run_started'
                      AND json_extract(t.value, '$.phase') = ?2
                 )",
            )?
            .execute(params![run, phase, at])?;
        }
        // Waiting out a backoff: not running.
        EventKind::RetryScheduled { task, .. } => {
            tx.prepare_cached(
                "UPDATE task_results SET status = 'pending', updated_at = ?3
                 WHERE run_id = ?1 AND task = ?2",
            )?
            .execute(params![run, &**task, at])?;
        }
        // The run is over: no instance is running any more.
        EventKind::RunFinished { .. } => {
            tx.prepare_cached(
                "UPDATE agent_states SET status = 'IDLE', current_task = NULL WHERE run_id = ?1",
            )?
            .execute(params![run])?;
        }
        // Waiting for a decision: not running.
        EventKind::Escalated { task, error } => {
            tx.prepare_cached(
                "UPDATE task_results SET status = 'pending', error = ?3, updated_at = ?4
                 WHERE run_id = ?1 AND task = ?2",
            )?
            .execute(params![run, &**task, error.to_string(), at])?;
        }
        // A resumed run: the attempts in flight at the stop are over; their tasks run again.
        EventKind::RunResumed { rerun } => {
            tx.prepare_cached(
                "UPDATE agent_states SET status = 'IDLE', current_task = NULL WHERE run_id = ?1",
            )?
            .execute(params![run])?;
            for task in rerun {
                tx.prepare_cached(
                    "UPDATE task_results SET status = 'pending', updated_at = ?3
                     WHERE run_id = ?1 AND task = ?2",
                )?
                .execute(params![run, &**task, at])?;
            }
        }
        EventKind::Decided { task, decision, by } => {
            let decision = match decision {
                crate::model::Decision::Retry => "retry",
                crate::model::Decision::Skip => "skip",
                crate::model::Decision::Abort => "abort",
            };
            tx.prepare_cached(
                "INSERT OR REPLACE INTO decisions (run_id, seq, task, decision, decided_by, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![run, e.seq as i64, &**task, decision, by, at])?;
            // A retry (an operator's, or `dlq retry`'s) makes the task pending again.
            if decision == "retry" {
                tx.prepare_cached(
                    "UPDATE task_results SET status = 'pending', updated_at = ?3
                     WHERE run_id = ?1 AND task = ?2",
                )?
                .execute(params![run, &**task, at])?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn status_text(s: RunStatus) -> &'static str {
    s.as_str()
}

fn parse_status(s: &str) -> RunStatus {
    match s {
        "in_progress" => RunStatus::InProgress,
        "waiting" => RunStatus::Waiting,
        "completed" => RunStatus::Completed,
        "failed" => RunStatus::Failed,
        "cancelled" => RunStatus::Cancelled,
        _ => RunStatus::Pending,
    }
}

fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::RunStarted { .. } => "run_started",
        EventKind::PhaseEntered { .. } => "phase_entered",
        EventKind::TaskSkipped { .. } => "task_skipped",
        EventKind::TaskDispatched { .. } => "task_dispatched",
        EventKind::AttemptFinished { .. } => "attempt_finished",
        EventKind::RetryScheduled { .. } => "retry_scheduled",
        EventKind::TaskFinished { .. } => "task_finished",
        EventKind::PolicyViolation { .. } => "policy_violation",
        EventKind::GateDecided { .. } => "gate_decided",
        EventKind::FeedbackDecided { .. } => "feedback_decided",
        EventKind::LoopStarted { .. } => "loop_started",
        EventKind::Warning { .. } => "warning",
        EventKind::BreakerChanged { .. } => "breaker_changed",
        EventKind::DeadLettered { .. } => "dead_lettered",
        EventKind::Escalated { .. } => "escalated",
        EventKind::Decided { .. } => "decided",
        EventKind::RunWaiting { .. } => "run_waiting",
        EventKind::RunResumed { .. } => "run_resumed",
        EventKind::RunFinished { .. } => "run_finished",
    }
}

impl Store for SqliteStore {
    fn put_artifact(&self, sha256: &str, content: &[u8]) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT OR IGNORE INTO artifacts (hash, size, content) VALUES (?1, ?2, ?3)",
                params![sha256, content.len() as i64, content],
            )
            .map_err(|e| self.err(e))?;
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
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO response_cache (key, body, created_at) VALUES (?1, ?2, ?3)",
                params![key, body, crate::model::Timestamp::now().0 as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let params_json = serde_json::to_string(&run.params).map_err(|e| self.err(e))?;
        let result = self.lock().execute(
            "INSERT INTO runs (id, workflow, file, params, created_at, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                &*run.id.0,
                run.workflow,
                run.file,
                params_json,
                run.created_at.0 as i64,
                status_text(run.status)
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::DuplicateRun(run.id.clone()))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// One transaction per batch: a group commit of everything the scheduler recorded in one
    /// turn.
    fn append(&self, run: &RunId, events: &[Event]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        {
            let last: Option<i64> = tx
                .prepare_cached("SELECT MAX(seq) FROM events WHERE run_id = ?1")
                .and_then(|mut st| st.query_row(params![&*run.0], |r| r.get(0)))
                .map_err(|e| self.err(e))?;
            let exists: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
                .and_then(|mut st| st.query_row(params![&*run.0], |r| r.get(0)).optional())
                .map_err(|e| self.err(e))?;
            if exists.is_none() {
                return Err(StoreError::UnknownRun(run.clone()));
            }
            super::check_order(run, last.unwrap_or(0) as u64, events)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (run_id, seq, at, kind, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| self.err(e))?;
            for e in events {
                let body = serde_json::to_string(e).map_err(|err| self.err(err))?;
                insert
                    .execute(params![
                        &*run.0,
                        e.seq as i64,
                        e.at.0 as i64,
                        kind_name(&e.kind),
                        body
                    ])
                    .map_err(|err| self.err(err))?;
                project(&tx, &run.0, e).map_err(|err| self.err(err))?;
                match &e.kind {
                    EventKind::DeadLettered { entry } => {
                        let body = serde_json::to_string(entry).map_err(|err| self.err(err))?;
                        tx.execute(
                            "INSERT OR REPLACE INTO dead_letters (id, run_id, task, pool, at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![entry.id, &*run.0, &*entry.task, &*entry.pool, entry.at.0 as i64, body],
                        )
                        .map_err(|err| self.err(err))?;
                    }
                    EventKind::RunFinished { status, .. } => {
                        tx.execute(
                            "UPDATE runs SET status = ?2 WHERE id = ?1",
                            params![&*run.0, status_text(*status)],
                        )
                        .map_err(|err| self.err(err))?;
                    }
                    EventKind::RunResumed { .. } => {
                        tx.execute(
                            "UPDATE runs SET status = 'in_progress' WHERE id = ?1",
                            params![&*run.0],
                        )
                        .map_err(|err| self.err(err))?;
                    }
                    EventKind::RunWaiting { .. } => {
                        tx.execute(
                            "UPDATE runs SET status = 'waiting' WHERE id = ?1",
                            params![&*run.0],
                        )
                        .map_err(|err| self.err(err))?;
                    }
                    _ => {}
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    fn set_status(&self, run: &RunId, status: RunStatus) -> Result<(), StoreError> {
        let n = self
            .lock()
            .execute(
                "UPDATE runs SET status = ?2 WHERE id = ?1",
                params![&*run.0, status_text(status)],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(StoreError::UnknownRun(run.clone()));
        }
        Ok(())
    }

    fn run(&self, run: &RunId) -> Result<RunRecord, StoreError> {
        self.runs_where("WHERE id = ?1", Some(&run.0))?
            .pop()
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))
    }

    fn events(&self, run: &RunId) -> Result<Vec<Event>, StoreError> {
        let out = self.read_events(run)?;
        if out.is_empty() {
            // An unknown run, or one created but never started (killed before its first
            // commit): the latter has no events, and that is not an error.
            self.run(run)?;
        }
        Ok(out)
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.runs_where("", None)
    }

    fn dead_letters(&self, run: Option<&RunId>) -> Result<Vec<DeadLetter>, StoreError> {
        let conn = self.lock();
        let (sql, arg) = match run {
            Some(r) => (
                "SELECT body FROM dead_letters WHERE dropped = 0 AND run_id = ?1 ORDER BY at, rowid",
                Some(r.0.to_string()),
            ),
            None => (
                "SELECT body FROM dead_letters WHERE dropped = 0 ORDER BY at, rowid",
                None,
            ),
        };
        let mut stmt = conn.prepare(sql).map_err(|e| self.err(e))?;
        let map = |r: &rusqlite::Row<'_>| r.get::<_, String>(0);
        let rows: Vec<String> = match arg {
            Some(a) => stmt.query_map(params![a], map),
            None => stmt.query_map([], map),
        }
        .map_err(|e| self.err(e))?
        .collect::<Result<_, _>>()
        .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|b| serde_json::from_str(b).map_err(|e| self.err(e)))
            .collect()
    }
}

impl SqliteStore {
    /// The events of a run, in order; the connection is released before returning.
    fn read_events(&self, run: &RunId) -> Result<Vec<Event>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT body FROM events WHERE run_id = ?1 ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![&*run.0], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let body = row.map_err(|e| self.err(e))?;
            let event: Event = serde_json::from_str(&body)
                .map_err(|e| self.err(format!("an event of run `{run}` cannot be read: {e}")))?;
            out.push(event);
        }
        Ok(out)
    }

    fn runs_where(&self, filter: &str, arg: Option<&str>) -> Result<Vec<RunRecord>, StoreError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT id, workflow, file, params, created_at, status FROM runs {filter} ORDER BY created_at, id"
        );
        let mut stmt = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let map = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
            ))
        };
        let rows: Vec<_> = match arg {
            Some(a) => stmt.query_map(params![a], map),
            None => stmt.query_map([], map),
        }
        .map_err(|e| self.err(e))?
        .collect::<Result<_, _>>()
        .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|(id, workflow, file, params, created, status)| RunRecord {
                id: RunId(id.into()),
                workflow,
                file,
                params: serde_json::from_str(&params).unwrap_or_default(),
                created_at: Timestamp(created as u64),
                status: parse_status(&status),
            })
            .collect())
    }
}

/// Holds a run so two processes cannot drive it at once: an exclusive lock on a file beside
/// the store, released by the OS when the process ends, however it ends.
pub struct RunLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl RunLock {
    pub fn acquire(store: &Path, run: &RunId) -> Result<RunLock, StoreError> {
        let dir = store
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("locks");
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Backend(format!("cannot create `{}`: {e}", dir.display())))?;
        let path = dir.join(format!("{run}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Backend(format!("cannot open `{}`: {e}", path.display())))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(RunLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StoreError::Backend(format!(
                "run `{run}` is being driven by another process (lock `{}`)",
                path.display()
            ))),
            Err((_, e)) => Err(StoreError::Backend(format!(
                "cannot lock `{}`: {e}",
                path.display()
            ))),
        }
    }
}
