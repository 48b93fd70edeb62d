//! The attempt queue and the inbox: the scheduler's side ([`SchedulerQueue`], every write
//! fenced by its run lease) and the workers' side (claim, heartbeat, complete — each fenced by
//! the claim: the worker's name on a row still `claimed`).
//!
//! States of an `attempt_queue` row: `ready` (enqueued with its dispatch) → `claimed` (a
//! worker holds it, with a lease it heartbeats) → `done` (its result is in `attempt_results`);
//! or `expired` (its lease ran out: the scheduler recorded AGENT_LOST, or will rerun it) or
//! `cancelled` (the scheduler asked it to stop). Only `claimed` rows can be completed, so once
//! a row leaves `claimed` any result of its worker is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::conn::{retrying, Db, Failure};
use super::notify::{RESULTS, WORK};
use super::{Inner, PostgresStore};
use crate::model::RunId;
use crate::store::work::{Claimed, Completion, Found, RemoteResult, WorkQueue, WorkerInfo};
use crate::store::StoreError;

/// The run's scheduler must hold it at this epoch for the statement to change anything.
const FENCE: &str =
    "EXISTS (SELECT 1 FROM runs r WHERE r.id = $1 AND r.owner = $2 AND r.epoch = $3)";

pub(super) struct SchedulerQueue {
    pub inner: Arc<Inner>,
}

impl SchedulerQueue {
    /// The epoch this process holds `run` at; without one nothing may be written.
    fn fence(&self, run: &RunId) -> Result<(String, i64), StoreError> {
        let epoch = self
            .inner
            .epoch(run)
            .ok_or_else(|| StoreError::NotHeld(run.clone()))?;
        Ok((self.inner.owner.clone(), epoch as i64))
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

impl WorkQueue for SchedulerQueue {
    fn take_results(&self, run: &RunId) -> Result<Vec<RemoteResult>, StoreError> {
        let (owner, epoch) = self.fence(run)?;
        let run = run.to_string();
        self.call(move |db| {
            let (run, owner) = (run.clone(), owner.clone());
            async move {
                let client = db.pool.get().await?;
                let stmt = client
                    .prepare_cached(&format!(
                        "UPDATE attempt_results SET taken = TRUE
                         WHERE run_id = $1 AND NOT taken AND {FENCE}
                         RETURNING task, attempt, worker, body"
                    ))
                    .await?;
                let rows = client.query(&stmt, &[&run, &owner, &epoch]).await?;
                Ok(rows.iter().map(result_of).collect())
            }
        })
    }

    fn expire_lost(&self, run: &RunId) -> Result<Vec<(Arc<str>, u32)>, StoreError> {
        let (owner, epoch) = self.fence(run)?;
        let run = run.to_string();
        self.call(move |db| {
            let (run, owner) = (run.clone(), owner.clone());
            async move {
                let client = db.pool.get().await?;
                let stmt = client
                    .prepare_cached(&format!(
                        "UPDATE attempt_queue SET state = 'expired', finished_at = clock_timestamp()
                         WHERE run_id = $1 AND state = 'claimed'
                           AND lease_until < clock_timestamp() AND {FENCE}
                         RETURNING task, attempt"
                    ))
                    .await?;
                let rows = client.query(&stmt, &[&run, &owner, &epoch]).await?;
                Ok(rows
                    .iter()
                    .map(|r| (Arc::from(r.get::<_, &str>(0)), r.get::<_, i64>(1) as u32))
                    .collect())
            }
        })
    }

    fn find(&self, run: &RunId, task: &str, attempt: u32) -> Result<Found, StoreError> {
        let (owner, epoch) = self.fence(run)?;
        let (run, task) = (run.to_string(), task.to_string());
        self.call(move |db| {
            let (run, owner, task) = (run.clone(), owner.clone(), task.clone());
            async move {
                let mut client = db.pool.get().await?;
                let tx = client.transaction().await?;
                let key: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                    [&run, &owner, &epoch, &task, &(attempt as i64)];
                tx.execute(
                    &format!(
                        "UPDATE attempt_queue SET state = 'expired', finished_at = clock_timestamp()
                         WHERE run_id = $1 AND task = $4 AND attempt = $5 AND state = 'claimed'
                           AND lease_until < clock_timestamp() AND {FENCE}"
                    ),
                    &key,
                )
                .await?;
                let state = tx
                    .query_opt(
                        "SELECT q.state, r.worker, r.body FROM attempt_queue q
                         LEFT JOIN attempt_results r USING (run_id, task, attempt)
                         WHERE q.run_id = $1 AND q.task = $2 AND q.attempt = $3",
                        &[&run, &task, &(attempt as i64)],
                    )
                    .await?;
                tx.commit().await?;
                Ok(match state {
                    Some(row) => match (row.get::<_, &str>(0), row.get::<_, Option<String>>(2)) {
                        ("done", Some(body)) => Found::Finished(RemoteResult {
                            task: Arc::from(task.as_str()),
                            attempt,
                            worker: row.get::<_, Option<String>>(1).unwrap_or_default(),
                            body,
                        }),
                        ("ready" | "claimed", _) => Found::Alive,
                        _ => Found::Gone,
                    },
                    None => Found::Gone,
                })
            }
        })
    }

    fn cancel(&self, run: &RunId, task: &str, attempt: u32) -> Result<(), StoreError> {
        let (owner, epoch) = self.fence(run)?;
        let (run, task) = (run.to_string(), task.to_string());
        self.call(move |db| {
            let (run, owner, task) = (run.clone(), owner.clone(), task.clone());
            async move {
                let client = db.pool.get().await?;
                client
                    .execute(
                        &format!(
                            "UPDATE attempt_queue SET state = 'cancelled', finished_at = clock_timestamp()
                             WHERE run_id = $1 AND task = $4 AND attempt = $5
                               AND state IN ('ready', 'claimed') AND {FENCE}"
                        ),
                        &[&run, &owner, &epoch, &task, &(attempt as i64)],
                    )
                    .await?;
                Ok(())
            }
        })
    }

    fn results_signal(&self, run: &RunId) -> Arc<tokio::sync::Notify> {
        self.inner.signals.get(RESULTS, run.as_str())
    }

    fn orphaned_runs(&self) -> Result<Vec<RunId>, StoreError> {
        self.call(|db| async move {
            let client = db.pool.get().await?;
            let rows = client
                .query(
                    "SELECT id FROM runs
                     WHERE status IN ('pending', 'in_progress') AND last_seq > 0
                       AND (owner IS NULL OR lease_until IS NULL
                            OR lease_until < clock_timestamp())
                     ORDER BY created_at, id",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| RunId(r.get::<_, String>(0).into()))
                .collect())
        })
    }
}

fn result_of(r: &tokio_postgres::Row) -> RemoteResult {
    RemoteResult {
        task: Arc::from(r.get::<_, &str>(0)),
        attempt: r.get::<_, i64>(1) as u32,
        worker: r.get(2),
        body: r.get(3),
    }
}

/// The workers' side: asynchronous, for `conductor worker`'s loops.
impl PostgresStore {
    /// Announces a worker (and refreshes it: its row is its heartbeat).
    pub async fn register_worker(&self, w: &WorkerInfo) -> Result<(), StoreError> {
        let (w, db) = (w.clone(), self.inner.db.clone());
        let work = async move {
            retrying(&db, |db| {
                let w = w.clone();
                async move {
                    let client = db.pool.get().await?;
                    let labels = serde_json::to_string(&w.labels).unwrap_or_else(|_| "{}".into());
                    client
                        .execute(
                            "INSERT INTO workers (id, host, pid, pools, labels)
                             VALUES ($1, $2, $3, $4, $5::text::jsonb)
                             ON CONFLICT (id) DO UPDATE SET heartbeat_at = clock_timestamp()",
                            &[&w.id, &w.host, &(w.pid as i64), &w.pools.join(","), &labels],
                        )
                        .await?;
                    Ok(())
                }
            })
            .await
        };
        self.inner.db.spawn(work).await
    }

    /// Claims up to `n` ready attempts of the pools `w` serves whose required labels it has,
    /// oldest first, each with a lease of `lease`.
    pub async fn claim(
        &self,
        w: &WorkerInfo,
        n: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let db = self.inner.db.clone();
        let (id, pools) = (w.id.clone(), w.pools.clone());
        let labels = serde_json::to_string(&w.labels).unwrap_or_else(|_| "{}".into());
        let lease_ms = lease.as_millis() as f64;
        // One statement: the inner SELECT locks rows nobody else holds (SKIP LOCKED), so
        // workers claiming at once get disjoint batches and never wait for each other. Not
        // repeated after an outage: a claim whose answer was lost simply runs out its lease.
        let work = async move {
            let client = db.pool.get().await.map_err(|e| failure(e.into()))?;
            let stmt = client
                .prepare_cached(
                    "UPDATE attempt_queue q SET state = 'claimed', worker = $1,
                         claimed_at = clock_timestamp(), heartbeat_at = clock_timestamp(),
                         lease_until = clock_timestamp() + $5 * interval '1 millisecond'
                     FROM (SELECT run_id, task, attempt FROM attempt_queue
                           WHERE state = 'ready'
                             AND (cardinality($2::text[]) = 0 OR pool = ANY($2::text[]))
                             AND labels <@ $3::text::jsonb
                           ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) c
                     WHERE q.run_id = c.run_id AND q.task = c.task AND q.attempt = c.attempt
                     RETURNING q.run_id, q.task, q.attempt, q.body,
                         EXTRACT(EPOCH FROM (q.claimed_at - q.enqueued_at))::float8 * 1000",
                )
                .await
                .map_err(|e| failure(e.into()))?;
            let rows = client
                .query(&stmt, &[&id, &pools, &labels, &(n as i64), &lease_ms])
                .await
                .map_err(|e| failure(e.into()))?;
            Ok(rows
                .iter()
                .map(|r| Claimed {
                    run: RunId(r.get::<_, String>(0).into()),
                    task: Arc::from(r.get::<_, &str>(1)),
                    attempt: r.get::<_, i64>(2) as u32,
                    body: r.get(3),
                    queued_ms: r.get::<_, Option<f64>>(4).unwrap_or(0.0),
                })
                .collect())
        };
        self.inner.db.spawn(work).await
    }

    /// Renews the lease of every attempt `worker` still holds; returns them. An attempt not
    /// returned was cancelled or expired: its work should stop, and its result will be
    /// refused.
    pub async fn heartbeat(
        &self,
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<(RunId, Arc<str>, u32)>, StoreError> {
        let db = self.inner.db.clone();
        let worker = worker.to_string();
        let lease_ms = lease.as_millis() as f64;
        let work = async move {
            let client = db.pool.get().await.map_err(|e| failure(e.into()))?;
            client
                .execute(
                    "UPDATE workers SET heartbeat_at = clock_timestamp() WHERE id = $1",
                    &[&worker],
                )
                .await
                .map_err(|e| failure(e.into()))?;
            let rows = client
                .query(
                    "UPDATE attempt_queue
                     SET lease_until = clock_timestamp() + $2 * interval '1 millisecond',
                         heartbeat_at = clock_timestamp()
                     WHERE worker = $1 AND state = 'claimed'
                       -- A claim whose lease ran out is dead even before a scheduler
                       -- expires it: a worker back from a pause does not revive it.
                       AND lease_until >= clock_timestamp()
                     RETURNING run_id, task, attempt",
                    &[&worker, &lease_ms],
                )
                .await
                .map_err(|e| failure(e.into()))?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        RunId(r.get::<_, String>(0).into()),
                        Arc::from(r.get::<_, &str>(1)),
                        r.get::<_, i64>(2) as u32,
                    )
                })
                .collect())
        };
        self.inner.db.spawn(work).await
    }

    /// Completes attempts in one transaction: each only while `worker` still holds its claim
    /// (then its result goes to the inbox and the run's scheduler is woken). Returns, per
    /// completion, whether it was accepted.
    pub async fn complete(
        &self,
        worker: &str,
        done: Vec<Completion>,
    ) -> Result<Vec<bool>, StoreError> {
        let db = self.inner.db.clone();
        let worker = worker.to_string();
        let done = Arc::new(done);
        let work =
            async move { retrying(&db, |db| complete(db, worker.clone(), done.clone())).await };
        self.inner.db.spawn(work).await
    }

    /// Woken when attempts are enqueued (and after the listener reconnects).
    pub fn work_signal(&self) -> Arc<tokio::sync::Notify> {
        self.inner.signals.get(WORK, "")
    }

    /// The worker leaves: its row goes; its claims run out their leases unless completed.
    pub async fn unregister_worker(&self, worker: &str) -> Result<(), StoreError> {
        let db = self.inner.db.clone();
        let worker = worker.to_string();
        let work = async move {
            let client = db.pool.get().await.map_err(|e| failure(e.into()))?;
            client
                .execute("DELETE FROM workers WHERE id = $1", &[&worker])
                .await
                .map_err(|e| failure(e.into()))?;
            Ok(())
        };
        self.inner.db.spawn(work).await
    }
}

fn failure(f: Failure) -> StoreError {
    match f {
        Failure::Store(e) => e,
        Failure::Outage(cause) => StoreError::Unreachable {
            waited: "0s".into(),
            cause,
        },
    }
}

async fn complete(
    db: Arc<Db>,
    worker: String,
    done: Arc<Vec<Completion>>,
) -> Result<Vec<bool>, Failure> {
    let mut client = db.pool.get().await?;
    let tx = client.transaction().await?;
    let runs: Vec<&str> = done.iter().map(|d| d.run.as_str()).collect();
    let tasks: Vec<&str> = done.iter().map(|d| &*d.task).collect();
    let attempts: Vec<i64> = done.iter().map(|d| d.attempt as i64).collect();
    let bodies: Vec<&str> = done.iter().map(|d| d.body.as_str()).collect();
    // A repeated call (its first try committed, the answer lost) finds its rows `done` by
    // this worker with a result: accepted then too.
    let stmt = tx
        .prepare_cached(
            "WITH c AS (
                 SELECT * FROM unnest($2::text[], $3::text[], $4::int8[], $5::text[])
                     WITH ORDINALITY AS t(run_id, task, attempt, body, i)),
             upd AS (
                 UPDATE attempt_queue q SET state = 'done', finished_at = clock_timestamp()
                 FROM c
                 WHERE q.run_id = c.run_id AND q.task = c.task AND q.attempt = c.attempt
                   AND q.worker = $1 AND q.state = 'claimed'
                   AND q.lease_until >= clock_timestamp()
                 RETURNING q.run_id, q.task, q.attempt, c.body, c.i),
             ins AS (
                 INSERT INTO attempt_results (run_id, task, attempt, worker, body)
                 SELECT run_id, task, attempt, $1, body FROM upd
                 ON CONFLICT DO NOTHING
                 RETURNING run_id)
             SELECT upd.i, upd.run_id FROM upd
             UNION ALL
             SELECT c.i, NULL FROM c JOIN attempt_results r
                 ON r.run_id = c.run_id AND r.task = c.task AND r.attempt = c.attempt
                 AND r.worker = $1",
        )
        .await?;
    let rows = tx
        .query(&stmt, &[&worker, &runs, &tasks, &attempts, &bodies])
        .await?;
    let mut accepted = vec![false; done.len()];
    let mut woken = BTreeMap::new();
    for r in &rows {
        let i = r.get::<_, i64>(0) as usize;
        if let Some(slot) = accepted.get_mut(i.wrapping_sub(1)) {
            *slot = true;
        }
        if let Some(run) = r.get::<_, Option<String>>(1) {
            woken.insert(run, ());
        }
    }
    let notify = tx
        .prepare_cached("SELECT pg_notify('conductor_results', $1)")
        .await?;
    for run in woken.keys() {
        tx.execute(&notify, &[run]).await?;
    }
    tx.commit().await?;
    Ok(accepted)
}
