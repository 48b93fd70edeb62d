//! Appending a batch: its events and, from the state changes it reports, the projection rows —
//! one transaction, so the projections never disagree with the log.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::backlog::{self, Backlog, Backlogs};
use super::body::{self, Stored};
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

/// What a batch does with its run's projection rows (see `backlog`).
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Rows {
    /// Written in the batch's transaction when they are due.
    Inline,
    /// Returned when they are due, for the projector; written in the transaction of a batch
    /// that stops the run.
    Deferred,
    /// Not written (the projector failed for this run).
    Dropped,
}

/// One transaction per batch: a group commit of everything the scheduler recorded in one
/// turn. Returns the run's projection rows when they are due and [`Rows::Deferred`], with the
/// event they are written up to.
pub(super) fn append(
    conn: &Connection,
    path: &std::path::Path,
    backlogs: &mut Backlogs,
    run: &RunId,
    batch: &Batch<'_>,
    rows: Rows,
) -> Result<Option<(Backlog, u64)>, Failure> {
    let tx = super::busy::begin(conn, path)?;
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
        return Ok(None);
    };
    // The batch is one row: its events, serialised once for every reader, as a JSON array.
    let events = if batch.json.len() == batch.events.len() {
        None
    } else {
        Some(
            serde_json::to_string(batch.events).map_err(|err| StoreError::UnreadableEvent {
                run: run.clone(),
                cause: err.to_string(),
            })?,
        )
    };
    let fill = |body: &mut String| match &events {
        Some(events) => body.push_str(events),
        None => {
            body.reserve(batch.json.iter().map(|l| l.len() + 1).sum::<usize>() + 2);
            body.push('[');
            for (i, line) in batch.json.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(line);
            }
            body.push(']');
        }
    };
    let mut insert = tx.prepare_cached(
        "INSERT INTO event_batches (run_id, first_seq, last_seq, body) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let seqs = (first.seq as i64, end.seq as i64);
    body::with_stored(fill, |stored| match stored {
        Stored::Text(text) => insert.execute(params![id, seqs.0, seqs.1, text]),
        Stored::Compressed(blob) => insert.execute(params![id, seqs.0, seqs.1, blob]),
    })?;
    drop(insert);
    indexes(&tx, id, batch)?;
    let due = backlogs.merge(run, batch);
    if rows == Rows::Dropped {
        tx.commit()?;
        backlogs.drop_run(run);
        return Ok(None);
    }
    let stops = backlog::stops(batch);
    let now = stops || (due && rows == Rows::Inline);
    if now {
        backlogs.write(&tx, run, end.seq, stops)?;
    }
    tx.commit()?;
    if now {
        backlogs.written(run, stops);
        return Ok(None);
    }
    Ok(due
        .then(|| backlogs.take(run))
        .flatten()
        .map(|b| (b, end.seq)))
}

/// The rows commands rely on at once: the run's status, its dead letters (`dlq`) and the
/// artifacts it wrote (`gc`). The projections go through the backlog.
fn indexes(tx: &Transaction<'_>, run: &str, batch: &Batch<'_>) -> Result<(), Failure> {
    let changes = batch.changes;
    if batch.state.summary_due(changes.run) {
        // Written with the events it counts, so it is never ahead of the log.
        let summary = serde_json::to_string(&batch.state.summary()).ok();
        tx.prepare_cached("UPDATE runs SET status = ?2, summary = ?3 WHERE id = ?1")?
            .execute(params![run, batch.state.status().as_str(), summary])?;
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
