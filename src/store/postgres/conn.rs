//! Connections: the pool, the runtime that drives them, and what counts as a passing outage.
//!
//! Why a runtime of the store's own: the `Store` trait is synchronous (the dispatcher calls it
//! between awaits, as it calls SQLite), while the PostgreSQL client is asynchronous. Every
//! synchronous call hands its future to this runtime and waits on a channel; the caller may be
//! a runtime thread (blocking it as a SQLite call would) or a plain thread, and the calls never
//! need the caller's runtime to make progress, so a current-thread runtime cannot deadlock on
//! them. Asynchronous callers (workers, the scheduler's inbox watcher) await the same futures
//! through [`Db::spawn`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// A failed call: an outage worth waiting out, or an answer.
#[derive(Debug)]
pub(super) enum Failure {
    /// The server went away or is restarting; the call may be repeated.
    Outage(String),
    /// Anything else: a constraint, a bad statement, a fenced write.
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        if is_outage(&e) {
            return Failure::Outage(e.to_string());
        }
        let cause = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        };
        Failure::Store(StoreError::Postgres { cause })
    }
}

impl From<PoolError> for Failure {
    fn from(e: PoolError) -> Failure {
        match e {
            PoolError::Backend(e) => e.into(),
            other => Failure::Outage(other.to_string()),
        }
    }
}

/// Errors that say "the server is not there right now" rather than "no".
fn is_outage(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
        }
        // No SQLSTATE: an I/O error on the socket, a connection refused — but not a value
        // this side could not encode or decode, which no waiting mends.
        None => {
            let text = e.to_string();
            !(text.starts_with("error serializing") || text.starts_with("error deserializing"))
        }
    }
}

/// The pool and the runtime it runs on.
pub(super) struct Db {
    pub pool: Pool,
    pub config: tokio_postgres::Config,
    rt: tokio::runtime::Handle,
    /// How long an outage is waited out before a call gives up.
    pub patience: Duration,
}

impl Db {
    pub fn new(
        config: tokio_postgres::Config,
        rt: tokio::runtime::Handle,
        size: usize,
    ) -> Result<Db, StoreError> {
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                // A connection the server closed (a restart) is seen as closed and replaced.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(5)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| StoreError::Postgres {
                cause: e.to_string(),
            })?;
        Ok(Db {
            pool,
            config,
            rt,
            patience: Duration::from_secs(60),
        })
    }

    /// Runs a future on the store's runtime and waits for it on this thread.
    pub fn block<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Postgres {
                cause: "the store's connection runtime stopped".into(),
            })
        })
    }

    /// Runs a future on the store's runtime, for an asynchronous caller on any runtime.
    pub async fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.rt.spawn(work).await.unwrap_or_else(|e| {
            Err(StoreError::Postgres {
                cause: format!("a store call stopped: {e}"),
            })
        })
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.rt
    }
}

/// Repeats `call` through outages (a restarting server, a dropped connection) until it
/// answers or `patience` runs out; the call must be safe to repeat.
pub(super) async fn retrying<T, F, Fut>(db: &Arc<Db>, mut call: F) -> Result<T, StoreError>
where
    F: FnMut(Arc<Db>) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        match call(db.clone()).await {
            Ok(v) => return Ok(v),
            Err(Failure::Store(e)) => return Err(e),
            Err(Failure::Outage(cause)) => {
                if started.elapsed() >= db.patience {
                    return Err(StoreError::Unreachable {
                        waited: crate::text::duration(db.patience),
                        cause,
                    });
                }
                tracing::warn!("PostgreSQL is unreachable ({cause}); trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}
