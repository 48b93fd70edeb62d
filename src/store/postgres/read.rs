//! Reading runs, events, dead letters and logs back; the small writes beside the log
//! (artifacts, the response cache, attempt logs, dropping a dead letter) and gc.

use std::sync::Arc;

use super::conn::{Db, Failure};
use crate::model::{
    DeadLetter, Event, LogChunk, LogStream, RunId, RunStatus, RunSummary, Timestamp,
};
use crate::store::{RunRecord, StoreError};

pub(super) async fn events_after(db: Arc<Db>, run: RunId, seq: u64) -> Result<Vec<Event>, Failure> {
    let client = db.pool.get().await?;
    let stmt = client
        .prepare_cached(
            // From the batch holding event `seq + 1` on: index seeks, not a scan of the run.
            "SELECT body FROM event_batches WHERE run_id = $1 AND first_seq >= COALESCE(
                 (SELECT MAX(first_seq) FROM event_batches WHERE run_id = $1 AND first_seq <= $2::BIGINT + 1),
                 0)
             AND last_seq > $2 ORDER BY first_seq",
        )
        .await?;
    let rows = client.query(&stmt, &[&run.as_str(), &(seq as i64)]).await?;
    let mut out = Vec::new();
    for row in rows {
        let body: &str = row.get(0);
        let batch: Vec<Event> =
            serde_json::from_str(body).map_err(|e| StoreError::UnreadableEvent {
                run: run.clone(),
                cause: e.to_string(),
            })?;
        out.extend(batch.into_iter().filter(|e| e.seq > seq));
    }
    Ok(out)
}

/// Every run (or one), oldest first.
pub(super) async fn runs(db: Arc<Db>, only: Option<RunId>) -> Result<Vec<RunRecord>, Failure> {
    let client = db.pool.get().await?;
    let sql = "SELECT id, workflow, file, params, created_at, status FROM runs
               WHERE $1::text IS NULL OR id = $1 ORDER BY created_at, id";
    let stmt = client.prepare_cached(sql).await?;
    let rows = client
        .query(&stmt, &[&only.as_ref().map(|r| r.as_str())])
        .await?;
    Ok(rows.iter().map(record).collect())
}

/// A run's record from the first six columns of a row: id, workflow, file, params,
/// created_at, status.
fn record(r: &tokio_postgres::Row) -> RunRecord {
    RunRecord {
        id: RunId(r.get::<_, String>(0).into()),
        workflow: r.get(1),
        file: r.get(2),
        params: serde_json::from_str(r.get::<_, &str>(3)).unwrap_or_default(),
        created_at: Timestamp(r.get::<_, i64>(4) as u64),
        status: RunStatus::parse(r.get::<_, &str>(5)).unwrap_or(RunStatus::Pending),
    }
}

/// Every run, oldest first, with its summary when it counts the run's last event.
pub(super) async fn listing(db: Arc<Db>) -> Result<Vec<(RunRecord, Option<RunSummary>)>, Failure> {
    let client = db.pool.get().await?;
    let sql = "SELECT id, workflow, file, params, created_at, status, summary, last_seq FROM runs
               ORDER BY created_at, id";
    let stmt = client.prepare_cached(sql).await?;
    let rows = client.query(&stmt, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let record = record(r);
            let last: i64 = r.get(7);
            // One that does not parse (written by another build) is as good as none.
            let summary = r
                .get::<_, Option<&str>>(6)
                .and_then(|s| serde_json::from_str::<RunSummary>(s).ok())
                .filter(|s| s.seq as i64 == last);
            (record, summary)
        })
        .collect())
}

pub(super) async fn projected_seq(db: Arc<Db>, run: RunId) -> Result<Option<u64>, Failure> {
    let client = db.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT projected_seq FROM runs WHERE id = $1",
            &[&run.as_str()],
        )
        .await?;
    Ok(row.map(|r| r.get::<_, i64>(0) as u64))
}

pub(super) async fn put_artifact(
    db: Arc<Db>,
    hash: String,
    content: Arc<Vec<u8>>,
) -> Result<(), Failure> {
    let client = db.pool.get().await?;
    let stmt = client
        .prepare_cached(
            "INSERT INTO artifacts (hash, size, content) VALUES ($1, $2, $3)
             ON CONFLICT (hash) DO NOTHING",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[&hash, &(content.len() as i64), &content.as_slice()],
        )
        .await?;
    Ok(())
}

pub(super) async fn artifact(db: Arc<Db>, hash: String) -> Result<Option<Vec<u8>>, Failure> {
    let client = db.pool.get().await?;
    let stmt = client
        .prepare_cached("SELECT content FROM artifacts WHERE hash = $1")
        .await?;
    Ok(client
        .query_opt(&stmt, &[&hash])
        .await?
        .map(|r| r.get::<_, Vec<u8>>(0)))
}

pub(super) async fn cache_get(db: Arc<Db>, key: String) -> Result<Option<String>, Failure> {
    let client = db.pool.get().await?;
    let stmt = client
        .prepare_cached("SELECT body FROM response_cache WHERE key = $1")
        .await?;
    Ok(client
        .query_opt(&stmt, &[&key])
        .await?
        .map(|r| r.get::<_, String>(0)))
}

pub(super) async fn cache_put(db: Arc<Db>, key: String, body: String) -> Result<(), Failure> {
    let client = db.pool.get().await?;
    let stmt = client
        .prepare_cached(
            "INSERT INTO response_cache (key, body, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET body = excluded.body, created_at = excluded.created_at",
        )
        .await?;
    client
        .execute(&stmt, &[&key, &body, &(Timestamp::now().0 as i64)])
        .await?;
    Ok(())
}

/// Dead letters not yet dropped, oldest first.
pub(super) async fn dead_letters(
    db: Arc<Db>,
    run: Option<RunId>,
) -> Result<Vec<DeadLetter>, Failure> {
    let client = db.pool.get().await?;
    let rows = client
        .query(
            "SELECT body FROM dead_letters WHERE NOT dropped AND ($1::text IS NULL OR run_id = $1)
             ORDER BY at, n",
            &[&run.as_ref().map(|r| r.as_str())],
        )
        .await?;
    // A row that does not parse is skipped rather than hiding every other entry.
    Ok(rows
        .iter()
        .filter_map(|r| serde_json::from_str(r.get::<_, &str>(0)).ok())
        .collect())
}

/// [`dead_letters`]' count per run, without reading an entry's body.
pub(super) async fn dead_letter_counts(
    db: Arc<Db>,
) -> Result<std::collections::HashMap<RunId, usize>, Failure> {
    let client = db.pool.get().await?;
    let rows = client
        .query(
            "SELECT run_id, COUNT(*) FROM dead_letters WHERE NOT dropped GROUP BY run_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let n: i64 = r.get(1);
            (RunId(r.get::<_, String>(0).into()), n as usize)
        })
        .collect())
}

pub(super) async fn drop_dead_letter(db: Arc<Db>, id: String) -> Result<bool, Failure> {
    let client = db.pool.get().await?;
    let n = client
        .execute(
            "UPDATE dead_letters SET dropped = TRUE WHERE id = $1 AND NOT dropped",
            &[&id],
        )
        .await?;
    Ok(n > 0)
}

/// Deletes completed and failed runs created before `before` (a cancelled or waiting run can
/// still be resumed), and the artifacts no remaining run wrote.
pub(super) async fn gc(db: Arc<Db>, before: Timestamp) -> Result<Vec<RunId>, Failure> {
    let mut client = db.pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "DELETE FROM runs WHERE created_at < $1 AND status IN ('completed', 'failed')
             RETURNING id",
            &[&(before.0 as i64)],
        )
        .await?;
    if !rows.is_empty() {
        // Artifacts are shared by content: keep every one an attempt of a kept run wrote.
        tx.execute(
            "DELETE FROM artifacts a
             WHERE NOT EXISTS (SELECT 1 FROM artifact_refs r WHERE r.hash = a.hash)",
            &[],
        )
        .await?;
    }
    tx.commit().await?;
    let mut ids: Vec<RunId> = rows
        .iter()
        .map(|r| RunId(r.get::<_, String>(0).into()))
        .collect();
    ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(ids)
}

pub(super) async fn append_log(
    db: Arc<Db>,
    run: RunId,
    task: String,
    attempt: u32,
    chunks: Arc<Vec<LogChunk>>,
) -> Result<(), Failure> {
    let client = db.pool.get().await?;
    let seqs: Vec<i64> = chunks.iter().map(|c| c.seq as i64).collect();
    let streams: Vec<&str> = chunks.iter().map(|c| c.stream.as_str()).collect();
    let data: Vec<&[u8]> = chunks.iter().map(|c| c.data.as_slice()).collect();
    let stmt = client
        .prepare_cached(
            "INSERT INTO attempt_logs (run_id, task, attempt, seq, stream, data)
             SELECT $1, $2, $3, t.seq, t.stream, t.data
             FROM unnest($4::int8[], $5::text[], $6::bytea[]) AS t(seq, stream, data)
             ON CONFLICT (run_id, task, attempt, seq) DO UPDATE SET stream = excluded.stream,
                 data = excluded.data",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &run.as_str(),
                &task,
                &(attempt as i64),
                &seqs,
                &streams,
                &data,
            ],
        )
        .await?;
    Ok(())
}

pub(super) async fn logs(
    db: Arc<Db>,
    run: RunId,
    task: String,
    attempt: u32,
) -> Result<Vec<LogChunk>, Failure> {
    let client = db.pool.get().await?;
    let stmt = client
        .prepare_cached(
            "SELECT seq, stream, data FROM attempt_logs
             WHERE run_id = $1 AND task = $2 AND attempt = $3 ORDER BY seq",
        )
        .await?;
    let rows = client
        .query(&stmt, &[&run.as_str(), &task, &(attempt as i64)])
        .await?;
    Ok(rows
        .iter()
        .map(|r| LogChunk {
            seq: r.get::<_, i64>(0) as u32,
            stream: LogStream::parse(r.get::<_, &str>(1)).unwrap_or(LogStream::Marker),
            data: r.get(2),
        })
        .collect())
}
