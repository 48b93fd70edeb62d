//! The PostgreSQL store: many processes on many machines share one history. The same tables
//! as SQLite (the log as one row per batch, projections, dead letters, artifacts, the cache,
//! attempt logs), plus what scale-out needs: a lease with an epoch on each run (the fencing
//! token of its scheduler), the attempt queue and the inbox of results, and the workers.
//!
//! Every batch is appended in one transaction that first locks the run's row and checks that
//! this process still holds the run at its epoch: a scheduler that lost its lease cannot write
//! a single event more. The transaction also enqueues the attempts the batch dispatches and
//! notifies listeners (`events --follow`, workers), so the log stays the only truth.

mod append;
mod conn;
mod lease;
mod notify;
mod queue;
mod read;
mod schema;
mod url;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::work::WorkQueue;
use super::{Batch, RunLease, RunRecord, Store, StoreError};
use crate::model::{DeadLetter, Event, LogChunk, RunId, RunSummary, Timestamp};
use conn::{retrying, Db, Failure};

pub use url::is_postgres_url;

/// What a process shares with the futures it runs on the store's runtime.
pub(super) struct Inner {
    db: Arc<Db>,
    /// This process, as run leases and claims name it.
    owner: String,
    /// The runs this process holds, and the epoch it holds each at.
    leases: Mutex<HashMap<RunId, u64>>,
    /// How long a run lease lasts without renewal.
    lease_ttl: Duration,
    signals: notify::Signals,
    describe: String,
}

impl Inner {
    fn epoch(&self, run: &RunId) -> Option<u64> {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run)
            .copied()
    }
}

pub struct PostgresStore {
    inner: Arc<Inner>,
    /// Drives the connections; shut down (without waiting) when the store is dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`, with optional
    /// `lease=15s` for run leases), creating or migrating the schema.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let parsed = url::parse(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("conductor-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Postgres {
                cause: format!("cannot start the connection runtime: {e}"),
            })?;
        let mut db = Db::new(parsed.config, runtime.handle().clone(), parsed.pool_size)?;
        db.patience = parsed.patience;
        let db = Arc::new(db);
        let inner = Arc::new(Inner {
            signals: notify::Signals::new(db.clone()),
            db,
            owner: owner_id(),
            leases: Mutex::new(HashMap::new()),
            lease_ttl: parsed.lease,
            describe: parsed.describe,
        });
        let store = PostgresStore {
            inner,
            runtime: Some(runtime),
        };
        let db = store.inner.db.clone();
        store
            .inner
            .db
            .block(async move { retrying(&db, migrate).await })?;
        Ok(store)
    }

    /// This process's name in leases and claims.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    fn call<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(Arc<Db>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, Failure>> + Send,
    {
        let db = self.inner.db.clone();
        self.inner
            .db
            .block(async move { retrying(&db, call).await })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `host:pid:random`: unique per process, readable in `runs.owner` and `attempt_queue.worker`.
fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}:{:04x}", std::process::id(), random() & 0xffff)
}

async fn migrate(db: Arc<Db>) -> Result<(), Failure> {
    let mut client = db.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&schema::MIGRATION_LOCK],
    )
    .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS conductor_schema (version BIGINT NOT NULL)")
        .await?;
    let version: i64 = match tx
        .query_opt("SELECT version FROM conductor_schema", &[])
        .await?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO conductor_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    if version > schema::SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: db_path(&db),
            found: version,
            known: schema::SCHEMA_VERSION,
        }
        .into());
    }
    for sql in &schema::MIGRATIONS[version as usize..] {
        tx.batch_execute(sql).await?;
    }
    tx.execute(
        "UPDATE conductor_schema SET version = $1",
        &[&schema::SCHEMA_VERSION],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The database as messages name it (no password).
fn db_path(db: &Db) -> std::path::PathBuf {
    let c = &db.config;
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    std::path::PathBuf::from(format!(
        "postgres://{host}/{}",
        c.get_dbname().unwrap_or("")
    ))
}

impl Store for PostgresStore {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn keeps_projections(&self) -> bool {
        true
    }

    fn wants_json(&self) -> bool {
        true
    }

    fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        let run = run.clone();
        let epoch = inner.epoch(&run.id);
        self.call(move |db| append::create_run(db, inner.clone(), run.clone(), epoch))
    }

    fn append(&self, run: &RunId, batch: &Batch<'_>) -> Result<(), StoreError> {
        let epoch = self
            .inner
            .epoch(run)
            .ok_or_else(|| StoreError::NotHeld(run.clone()))?;
        let owned = append::Owned::new(run, batch, epoch)?;
        if owned.is_empty() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let owned = Arc::new(owned);
        self.call(move |db| append::append(db, inner.clone(), owned.clone()))
    }

    fn run(&self, run: &RunId) -> Result<RunRecord, StoreError> {
        let id = run.clone();
        self.call(move |db| read::runs(db, Some(id.clone())))?
            .pop()
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))
    }

    fn events(&self, run: &RunId) -> Result<Vec<Event>, StoreError> {
        let out = self.events_after(run, 0)?;
        if out.is_empty() {
            // Unknown, or created and never started: the latter is not an error.
            self.run(run)?;
        }
        Ok(out)
    }

    fn events_after(&self, run: &RunId, seq: u64) -> Result<Vec<Event>, StoreError> {
        let id = run.clone();
        self.call(move |db| read::events_after(db, id.clone(), seq))
    }

    fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.call(|db| read::runs(db, None))
    }

    fn listing(&self) -> Result<Vec<(RunRecord, Option<RunSummary>)>, StoreError> {
        self.call(read::listing)
    }

    fn put_artifact(&self, sha256: &str, content: &[u8]) -> Result<(), StoreError> {
        let (hash, content) = (sha256.to_string(), Arc::new(content.to_vec()));
        self.call(move |db| read::put_artifact(db, hash.clone(), content.clone()))
    }

    fn artifact(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let hash = sha256.to_string();
        self.call(move |db| read::artifact(db, hash.clone()))
    }

    fn cache_get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let key = key.to_string();
        let body = self.call(move |db| read::cache_get(db, key.clone()))?;
        // An entry that no longer parses is a miss, not an error: the task runs again.
        Ok(body.and_then(|b| serde_json::from_str(&b).ok()))
    }

    fn cache_put(&self, key: &str, output: &serde_json::Value) -> Result<(), StoreError> {
        let body = serde_json::to_string(output).map_err(|e| StoreError::Postgres {
            cause: e.to_string(),
        })?;
        let key = key.to_string();
        self.call(move |db| read::cache_put(db, key.clone(), body.clone()))
    }

    fn dead_letters(&self, run: Option<&RunId>) -> Result<Vec<DeadLetter>, StoreError> {
        let run = run.cloned();
        self.call(move |db| read::dead_letters(db, run.clone()))
    }

    fn dead_letter_counts(&self) -> Result<std::collections::HashMap<RunId, usize>, StoreError> {
        self.call(read::dead_letter_counts)
    }

    fn drop_dead_letter(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.call(move |db| read::drop_dead_letter(db, id.clone()))
    }

    fn gc(&self, before: Timestamp) -> Result<Vec<RunId>, StoreError> {
        self.call(move |db| read::gc(db, before))
    }

    fn append_log(
        &self,
        run: &RunId,
        task: &str,
        attempt: u32,
        chunks: &[LogChunk],
    ) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let (run, task, chunks) = (run.clone(), task.to_string(), Arc::new(chunks.to_vec()));
        self.call(move |db| {
            read::append_log(db, run.clone(), task.clone(), attempt, chunks.clone())
        })
    }

    fn logs(&self, run: &RunId, task: &str, attempt: u32) -> Result<Vec<LogChunk>, StoreError> {
        let (run, task) = (run.clone(), task.to_string());
        self.call(move |db| read::logs(db, run.clone(), task.clone(), attempt))
    }

    fn projected_seq(&self, run: &RunId) -> Result<Option<u64>, StoreError> {
        let id = run.clone();
        let seq = self.call(move |db| read::projected_seq(db, id.clone()))?;
        seq.map(Some)
            .ok_or_else(|| StoreError::UnknownRun(run.clone()))
    }

    fn lease(&self, run: &RunId) -> Result<Box<dyn RunLease>, StoreError> {
        Ok(Box::new(lease::acquire(&self.inner, run)?))
    }

    fn wait_for_events(&self, run: &RunId, timeout: Duration) {
        self.inner.signals.wait_events(run, timeout);
    }

    fn work_queue(&self) -> Option<Arc<dyn WorkQueue>> {
        Some(Arc::new(queue::SchedulerQueue {
            inner: self.inner.clone(),
        }))
    }
}

/// A random number, different in every process.
pub(super) fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
