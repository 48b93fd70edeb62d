//! Appending a batch: its events and, from the state changes it reports, the projection rows —
//! one transaction, so the projections never disagree with the log.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::model::RunId;
use crate::store::{check_order, Batch, StoreError};

pub(super) enum Failure {
    Store(StoreError),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        Failure::Sql(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

/// One transaction per batch: a group commit of everything the scheduler recorded in one
/// turn.
pub(super) fn append(conn: &mut Connection, run: &RunId, batch: &Batch<'_>) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let id = &*run.0;
    let exists: Option<i64> = tx
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    if exists.is_none() {
        return Err(StoreError::UnknownRun(run.clone()).into());
    }
    let last: Option<i64> = tx
        .prepare_cached(
            "SELECT last_seq FROM event_batches WHERE run_id = ?1 ORDER BY first_seq DESC LIMIT 1",
        )?
        .query_row(params![id], |r| r.get(0))
        .optional()?;
    check_order(run, last.unwrap_or(0) as u64, batch.events)?;
    let (Some(first), Some(end)) = (batch.events.first(), batch.events.last()) else {
        return Ok(());
    };
    // The batch is one row: its events written once, as a JSON array.
    let body = serde_json::to_string(batch.events).map_err(|err| StoreError::UnreadableEvent {
        run: run.clone(),
        cause: err.to_string(),
    })?;
    tx.prepare_cached(
        "INSERT INTO event_batches (run_id, first_seq, last_seq, body) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, first.seq as i64, end.seq as i64, body])?;
    project(&tx, id, batch)?;
    tx.commit()?;
    Ok(())
}

/// Writes the rows the batch changed, each from the state after the batch.
fn project(tx: &Transaction<'_>, run: &str, batch: &Batch<'_>) -> Result<(), Failure> {
    let changes = batch.changes;
    let at = batch.events.last().map_or(0, |e| e.at.0 as i64);
    if changes.run {
        tx.prepare_cached("UPDATE runs SET status = ?2 WHERE id = ?1")?
            .execute(params![run, batch.state.status().as_str()])?;
    }
    let mut task = tx.prepare_cached(
        "INSERT INTO task_results (run_id, task, status, attempts, error, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (run_id, task) DO UPDATE SET
            status = excluded.status, attempts = excluded.attempts,
            error = excluded.error, updated_at = excluded.updated_at",
    )?;
    for row in changes.task_rows(batch.state) {
        task.execute(params![
            run,
            &*row.task,
            row.status.as_str(),
            row.attempts as i64,
            row.error,
            at
        ])?;
    }
    let mut agent = tx.prepare_cached(
        "INSERT INTO agent_states (run_id, agent, status, current_task) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (run_id, agent) DO UPDATE SET
            status = excluded.status, current_task = excluded.current_task",
    )?;
    for row in changes.agent_rows(batch.state) {
        agent.execute(params![
            run,
            &*row.agent,
            row.status.as_str(),
            row.current_task.as_deref()
        ])?;
    }
    let mut attempt = tx.prepare_cached(
        "INSERT OR REPLACE INTO attempts (run_id, seq, task, attempt, agent, duration_ms, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for a in &changes.attempts {
        attempt.execute(params![
            run,
            a.seq as i64,
            &*a.task,
            a.attempt as i64,
            &*a.agent,
            a.duration_ms as i64,
            a.error
        ])?;
    }
    let mut decision = tx.prepare_cached(
        "INSERT OR REPLACE INTO decisions (run_id, seq, task, decision, decided_by, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for d in &changes.decisions {
        decision.execute(params![
            run,
            d.seq as i64,
            &*d.task,
            d.decision.as_str(),
            d.by,
            d.at.0 as i64
        ])?;
    }
    let mut artifact =
        tx.prepare_cached("INSERT OR IGNORE INTO artifact_refs (run_id, hash) VALUES (?1, ?2)")?;
    for hash in &changes.artifacts {
        artifact.execute(params![run, hash])?;
    }
    let mut dead = tx.prepare_cached(
        "INSERT OR REPLACE INTO dead_letters (id, run_id, task, pool, at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for entry in &changes.dead_letters {
        let body = serde_json::to_string(entry).unwrap_or_default();
        dead.execute(params![
            entry.id,
            run,
            &*entry.task,
            &*entry.pool,
            entry.at.0 as i64,
            body
        ])?;
    }
    Ok(())
}
