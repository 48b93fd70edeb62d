//! Creating a run and appending a batch: the run's row locked and its lease checked, the
//! events as one row, the projections and the attempts the batch dispatches (each table in one
//! statement over arrays), and the notifications — one transaction.

use std::sync::Arc;

use tokio_postgres::error::SqlState;

use super::conn::{Db, Failure};
use super::Inner;
use crate::model::RunId;
use crate::store::{check_order, Batch, RunRecord, StoreError};

/// A batch in owned form, so the call can be repeated after an outage and run on the store's
/// runtime.
pub(super) struct Owned {
    run: String,
    run_id: RunId,
    epoch: i64,
    first: i64,
    last: i64,
    body: String,
    status: Option<String>,
    /// The run's `RunSummary` as JSON, when the batch is due one.
    summary: Option<String>,
    at: i64,
    tasks: Rows4,
    agents: (Vec<String>, Vec<String>, Vec<Option<String>>),
    attempts: Owned6,
    decisions: Owned5i,
    dead: Owned5s,
    artifacts: Vec<String>,
    enqueue: OwnedQueue,
    /// Set by the first try: only a repeated call may find its own batch already there.
    tried: std::sync::atomic::AtomicBool,
}

type Rows4 = (Vec<String>, Vec<String>, Vec<i64>, Vec<Option<String>>);

impl Owned {
    pub fn new(run: &RunId, batch: &Batch<'_>, epoch: u64) -> Result<Owned, StoreError> {
        let (first, last) = match (batch.events.first(), batch.events.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => (0, 0),
        };
        if first > 0 {
            check_order(run, first - 1, batch.events)?;
        }
        let body = if batch.json.len() == batch.events.len() {
            format!("[{}]", batch.json.join(","))
        } else {
            serde_json::to_string(batch.events).map_err(|err| StoreError::UnreadableEvent {
                run: run.clone(),
                cause: err.to_string(),
            })?
        };
        let c = batch.changes;
        let mut tasks: Rows4 = Default::default();
        for row in c.task_rows(batch.state) {
            tasks.0.push(row.task.to_string());
            tasks.1.push(row.status.as_str().to_string());
            tasks.2.push(row.attempts as i64);
            tasks.3.push(row.error);
        }
        let mut agents: (Vec<String>, Vec<String>, Vec<Option<String>>) = Default::default();
        for row in c.agent_rows(batch.state) {
            agents.0.push(row.agent.to_string());
            agents.1.push(row.status.as_str().to_string());
            agents.2.push(row.current_task.map(|t| t.to_string()));
        }
        let mut attempts: Owned6 = Default::default();
        for a in &c.attempts {
            attempts.0.push(a.seq as i64);
            attempts.1.push(a.task.to_string());
            attempts.2.push(a.attempt as i64);
            attempts.3.push(a.agent.to_string());
            attempts.4.push(a.duration_ms as i64);
            attempts.5.push(a.error.clone());
        }
        let mut decisions: Owned5i = Default::default();
        for d in &c.decisions {
            decisions.0.push(d.seq as i64);
            decisions.1.push(d.task.to_string());
            decisions.2.push(d.decision.as_str().to_string());
            decisions.3.push(d.by.clone());
            decisions.4.push(d.at.0 as i64);
        }
        let mut dead: Owned5s = Default::default();
        for entry in &c.dead_letters {
            dead.0.push(entry.id.clone());
            dead.1.push(entry.task.to_string());
            dead.2.push(entry.pool.to_string());
            dead.3.push(entry.at.0 as i64);
            dead.4
                .push(serde_json::to_string(entry).unwrap_or_default());
        }
        let mut artifacts = c.artifacts.clone();
        artifacts.sort_unstable();
        artifacts.dedup();
        let mut enqueue: OwnedQueue = Default::default();
        for w in &batch.work.enqueue {
            enqueue.0.push(w.task.to_string());
            enqueue.1.push(w.attempt as i64);
            enqueue.2.push(w.pool.to_string());
            enqueue
                .3
                .push(serde_json::to_string(&w.labels).unwrap_or_else(|_| "{}".into()));
            enqueue.4.push(w.body.clone());
        }
        Ok(Owned {
            run: run.to_string(),
            run_id: run.clone(),
            epoch: epoch as i64,
            first: first as i64,
            last: last as i64,
            body,
            status: c.run.then(|| batch.state.status().as_str().to_string()),
            summary: batch
                .state
                .summary_due(c.run)
                .then(|| serde_json::to_string(&batch.state.summary()).ok())
                .flatten(),
            at: batch.events.last().map_or(0, |e| e.at.0 as i64),
            tasks,
            agents,
            attempts,
            decisions,
            dead,
            artifacts,
            enqueue,
            tried: Default::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.first == 0 && self.enqueue.0.is_empty()
    }
}

type Owned6 = (
    Vec<i64>,
    Vec<String>,
    Vec<i64>,
    Vec<String>,
    Vec<i64>,
    Vec<Option<String>>,
);
type Owned5i = (Vec<i64>, Vec<String>, Vec<String>, Vec<String>, Vec<i64>);
type Owned5s = (Vec<String>, Vec<String>, Vec<String>, Vec<i64>, Vec<String>);
type OwnedQueue = (Vec<String>, Vec<i64>, Vec<String>, Vec<String>, Vec<String>);

pub(super) async fn create_run(
    db: Arc<Db>,
    inner: Arc<Inner>,
    run: RunRecord,
    epoch: Option<u64>,
) -> Result<(), Failure> {
    let client = db.pool.get().await?;
    let params = serde_json::to_string(&run.params).unwrap_or_else(|_| "{}".into());
    let owner = epoch.map(|_| inner.owner.clone());
    let ttl = inner.lease_ttl.as_millis() as f64;
    let result = client
        .execute(
            "INSERT INTO runs (id, workflow, file, params, created_at, status, owner, epoch,
                               lease_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                     CASE WHEN $7::text IS NULL THEN NULL
                          ELSE clock_timestamp() + $9 * interval '1 millisecond' END)",
            &[
                &run.id.as_str(),
                &run.workflow,
                &run.file,
                &params,
                &(run.created_at.0 as i64),
                &run.status.as_str(),
                &owner,
                &(epoch.unwrap_or(0) as i64),
                &ttl,
            ],
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            Err(StoreError::DuplicateRun(run.id.clone()).into())
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn append(db: Arc<Db>, inner: Arc<Inner>, b: Arc<Owned>) -> Result<(), Failure> {
    let repeated = b.tried.swap(true, std::sync::atomic::Ordering::Relaxed);
    let mut client = db.pool.get().await?;
    let tx = client.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT owner, epoch, last_seq FROM runs WHERE id = $1 FOR UPDATE")
        .await?;
    let Some(row) = tx.query_opt(&lock, &[&b.run]).await? else {
        return Err(StoreError::UnknownRun(b.run_id.clone()).into());
    };
    let (owner, epoch, last): (Option<String>, i64, i64) = (row.get(0), row.get(1), row.get(2));
    // INVARIANT: the row lock is held to the commit, so a takeover (which bumps the epoch)
    // waits for this batch, and after it no batch of the old epoch commits.
    if owner.as_deref() != Some(inner.owner.as_str()) || epoch != b.epoch {
        return Err(StoreError::LeaseLost {
            run: b.run_id.clone(),
            epoch: b.epoch as u64,
        }
        .into());
    }
    if b.first > 0 {
        if repeated && b.first <= last {
            // A repeated call whose first try committed (its answer was lost with the
            // connection) finds its own batch; anything else is out of order.
            let same = tx
                .query_opt(
                    "SELECT 1 FROM event_batches
                     WHERE run_id = $1 AND first_seq = $2 AND last_seq = $3 AND epoch = $4",
                    &[&b.run, &b.first, &b.last, &b.epoch],
                )
                .await?;
            if same.is_some() {
                return Ok(());
            }
        }
        if b.first != last + 1 {
            return Err(StoreError::OutOfOrder {
                run: b.run_id.clone(),
                last: last as u64,
                got: b.first as u64,
            }
            .into());
        }
        let insert = tx
            .prepare_cached(
                "INSERT INTO event_batches (run_id, first_seq, last_seq, epoch, body)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await?;
        tx.execute(&insert, &[&b.run, &b.first, &b.last, &b.epoch, &b.body])
            .await?;
    }
    let ttl = inner.lease_ttl.as_millis() as f64;
    let update = tx
        .prepare_cached(
            "UPDATE runs SET last_seq = GREATEST(last_seq, $2), projected_seq = GREATEST(last_seq, $2),
                status = COALESCE($3, status), summary = COALESCE($5, summary),
                lease_until = clock_timestamp() + $4 * interval '1 millisecond'
             WHERE id = $1",
        )
        .await?;
    tx.execute(&update, &[&b.run, &b.last, &b.status, &ttl, &b.summary])
        .await?;
    projections(&tx, &b).await?;
    if !b.enqueue.0.is_empty() {
        let q = &b.enqueue;
        let enqueue = tx
            .prepare_cached(
                "INSERT INTO attempt_queue (run_id, task, attempt, pool, labels, body, epoch)
                 SELECT $1, t.task, t.attempt, t.pool, t.labels::jsonb, t.body, $7
                 FROM unnest($2::text[], $3::int8[], $4::text[], $5::text[], $6::text[])
                     AS t(task, attempt, pool, labels, body)",
            )
            .await?;
        tx.execute(&enqueue, &[&b.run, &q.0, &q.1, &q.2, &q.3, &q.4, &b.epoch])
            .await?;
        tx.execute("SELECT pg_notify('conductor_work', '')", &[])
            .await?;
    }
    if b.first > 0 {
        let notify = tx
            .prepare_cached("SELECT pg_notify('conductor_events', $1)")
            .await?;
        tx.execute(&notify, &[&b.run]).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The projection rows of the batch, one statement per table.
async fn projections(tx: &deadpool_postgres::Transaction<'_>, b: &Owned) -> Result<(), Failure> {
    if !b.tasks.0.is_empty() {
        let t = &b.tasks;
        let s = tx
            .prepare_cached(
                "INSERT INTO task_results (run_id, task, status, attempts, error, updated_at)
                 SELECT $1, t.task, t.status, t.attempts, t.error, $6
                 FROM unnest($2::text[], $3::text[], $4::int8[], $5::text[])
                     AS t(task, status, attempts, error)
                 ON CONFLICT (run_id, task) DO UPDATE SET status = excluded.status,
                     attempts = excluded.attempts, error = excluded.error,
                     updated_at = excluded.updated_at",
            )
            .await?;
        tx.execute(&s, &[&b.run, &t.0, &t.1, &t.2, &t.3, &b.at])
            .await?;
    }
    if !b.agents.0.is_empty() {
        let a = &b.agents;
        let s = tx
            .prepare_cached(
                "INSERT INTO agent_states (run_id, agent, status, current_task)
                 SELECT $1, t.agent, t.status, t.current
                 FROM unnest($2::text[], $3::text[], $4::text[]) AS t(agent, status, current)
                 ON CONFLICT (run_id, agent) DO UPDATE SET status = excluded.status,
                     current_task = excluded.current_task",
            )
            .await?;
        tx.execute(&s, &[&b.run, &a.0, &a.1, &a.2]).await?;
    }
    if !b.attempts.0.is_empty() {
        let a = &b.attempts;
        let s = tx
            .prepare_cached(
                "INSERT INTO attempts (run_id, seq, task, attempt, agent, duration_ms, error)
                 SELECT $1, t.* FROM unnest($2::int8[], $3::text[], $4::int8[], $5::text[],
                                            $6::int8[], $7::text[])
                     AS t(seq, task, attempt, agent, duration_ms, error)
                 ON CONFLICT (run_id, seq) DO UPDATE SET task = excluded.task,
                     attempt = excluded.attempt, agent = excluded.agent,
                     duration_ms = excluded.duration_ms, error = excluded.error",
            )
            .await?;
        tx.execute(&s, &[&b.run, &a.0, &a.1, &a.2, &a.3, &a.4, &a.5])
            .await?;
    }
    if !b.decisions.0.is_empty() {
        let d = &b.decisions;
        let s = tx
            .prepare_cached(
                "INSERT INTO decisions (run_id, seq, task, decision, decided_by, at)
                 SELECT $1, t.* FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[],
                                            $6::int8[])
                     AS t(seq, task, decision, decided_by, at)
                 ON CONFLICT (run_id, seq) DO UPDATE SET task = excluded.task,
                     decision = excluded.decision, decided_by = excluded.decided_by,
                     at = excluded.at",
            )
            .await?;
        tx.execute(&s, &[&b.run, &d.0, &d.1, &d.2, &d.3, &d.4])
            .await?;
    }
    if !b.dead.0.is_empty() {
        let d = &b.dead;
        let s = tx
            .prepare_cached(
                "INSERT INTO dead_letters (id, run_id, task, pool, at, body)
                 SELECT t.id, $1, t.task, t.pool, t.at, t.body
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[], $6::text[])
                     AS t(id, task, pool, at, body)
                 ON CONFLICT (id) DO UPDATE SET task = excluded.task, pool = excluded.pool,
                     at = excluded.at, body = excluded.body, dropped = FALSE",
            )
            .await?;
        tx.execute(&s, &[&b.run, &d.0, &d.1, &d.2, &d.3, &d.4])
            .await?;
    }
    if !b.artifacts.is_empty() {
        let s = tx
            .prepare_cached(
                "INSERT INTO artifact_refs (run_id, hash) SELECT $1, h FROM unnest($2::text[]) AS h
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&s, &[&b.run, &b.artifacts]).await?;
    }
    Ok(())
}
