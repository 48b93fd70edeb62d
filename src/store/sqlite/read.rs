//! Reading runs, events and dead letters back.

use rusqlite::{params, Connection};

use crate::model::{
    DeadLetter, Event, LogChunk, LogStream, RunId, RunStatus, RunSummary, Timestamp,
};
use crate::store::{parse_stored_after, RunRecord, StoreError};

pub(super) enum Failure {
    Store(StoreError),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        Failure::Sql(e)
    }
}

/// The events of a run after `seq`, in order.
pub(super) fn events_after(
    conn: &Connection,
    run: &RunId,
    seq: u64,
) -> Result<Vec<Event>, Failure> {
    let mut stmt = conn.prepare_cached(
        // From the batch holding event `seq + 1` on: two seeks on the primary key, not a scan of
        // every batch's `last_seq`.
        "SELECT first_seq, body FROM event_batches WHERE run_id = ?1 AND first_seq >= COALESCE(
             (SELECT MAX(first_seq) FROM event_batches WHERE run_id = ?1 AND first_seq <= ?2 + 1),
             0)
         AND last_seq > ?2 ORDER BY first_seq",
    )?;
    let mut rows = stmt.query(params![&*run.0, seq as i64])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let first: i64 = row.get(0)?;
        let unreadable = |cause| {
            Failure::Store(StoreError::UnreadableEvent {
                run: run.clone(),
                cause,
            })
        };
        let body = super::body::decode(row.get_ref(1)?)
            .map_err(|cause| unreadable(format!("batch from event {first}: {cause}")))?;
        // A batch's events are numbered on from its first (`check_order`).
        let batch = parse_stored_after(&body, first.max(0) as u64, seq).map_err(unreadable)?;
        out.extend(batch.into_iter().filter(|e| e.seq > seq));
    }
    Ok(out)
}

/// Every run (or one), oldest first.
pub(super) fn runs(conn: &Connection, only: Option<&RunId>) -> rusqlite::Result<Vec<RunRecord>> {
    let filter = if only.is_some() { "WHERE id = ?1" } else { "" };
    let sql = format!(
        "SELECT id, workflow, file, params, created_at, status FROM runs {filter} ORDER BY created_at, id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let map = record;
    let rows = match only {
        Some(id) => stmt.query_map(params![&*id.0], map)?,
        None => stmt.query_map([], map)?,
    };
    rows.collect()
}

/// A run's record from the first six columns of a row: id, workflow, file, params,
/// created_at, status.
fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: RunId(r.get::<_, String>(0)?.into()),
        workflow: r.get(1)?,
        file: r.get(2)?,
        params: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
        created_at: Timestamp(r.get::<_, i64>(4)? as u64),
        status: RunStatus::parse(&r.get::<_, String>(5)?).unwrap_or(RunStatus::Pending),
    })
}

/// Every run, oldest first, with its summary when it counts the run's last event.
pub(super) fn listing(conn: &Connection) -> rusqlite::Result<Vec<(RunRecord, Option<RunSummary>)>> {
    let mut stmt = conn.prepare_cached(
        // The last batch's `last_seq`: one seek on the primary key per run.
        "SELECT id, workflow, file, params, created_at, status, summary,
             (SELECT last_seq FROM event_batches WHERE run_id = runs.id
              ORDER BY first_seq DESC LIMIT 1)
         FROM runs ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([], |r| {
        let record = record(r)?;
        let last = r.get::<_, Option<i64>>(7)?;
        // One that does not parse (written by another build) is as good as none.
        let summary = r
            .get::<_, Option<String>>(6)?
            .and_then(|s| serde_json::from_str::<RunSummary>(&s).ok())
            .filter(|s| Some(s.seq as i64) == last);
        Ok((record, summary))
    })?;
    rows.collect()
}

/// Dead letters not yet dropped, oldest first.
pub(super) fn dead_letters(
    conn: &Connection,
    run: Option<&RunId>,
) -> rusqlite::Result<Vec<DeadLetter>> {
    let filter = if run.is_some() { "AND run_id = ?1" } else { "" };
    let sql =
        format!("SELECT body FROM dead_letters WHERE dropped = 0 {filter} ORDER BY at, rowid");
    let mut stmt = conn.prepare_cached(&sql)?;
    let map = |r: &rusqlite::Row<'_>| r.get::<_, String>(0);
    let rows: Vec<String> = match run {
        Some(id) => stmt
            .query_map(params![&*id.0], map)?
            .collect::<Result<_, _>>()?,
        None => stmt.query_map([], map)?.collect::<Result<_, _>>()?,
    };
    // A row that does not parse is skipped rather than hiding every other entry.
    Ok(rows
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect())
}

/// [`dead_letters`]' count per run, through the `dead_letters_run` index (no body is read).
pub(super) fn dead_letter_counts(
    conn: &Connection,
) -> rusqlite::Result<std::collections::HashMap<RunId, usize>> {
    let mut stmt = conn.prepare_cached(
        "SELECT run_id, COUNT(*) FROM dead_letters WHERE dropped = 0 GROUP BY run_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            RunId(r.get::<_, String>(0)?.into()),
            r.get::<_, i64>(1)? as usize,
        ))
    })?;
    rows.collect()
}

/// An attempt's log, in order.
pub(super) fn logs(
    conn: &Connection,
    run: &RunId,
    task: &str,
    attempt: u32,
) -> rusqlite::Result<Vec<LogChunk>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, stream, data FROM attempt_logs
         WHERE run_id = ?1 AND task = ?2 AND attempt = ?3 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![&*run.0, task, attempt as i64], |r| {
        Ok(LogChunk {
            seq: r.get::<_, i64>(0)? as u32,
            stream: LogStream::parse(&r.get::<_, String>(1)?).unwrap_or(LogStream::Marker),
            data: r.get(2)?,
        })
    })?;
    rows.collect()
}
