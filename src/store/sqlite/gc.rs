//! Deleting old finished runs and the artifacts nothing refers to any more.

use rusqlite::{params, Transaction};

use crate::model::{RunId, Timestamp};

/// Deletes completed and failed runs created before `before` (a cancelled or waiting run can
/// still be resumed), and the artifacts no remaining run wrote.
pub(super) fn gc(tx: &Transaction<'_>, before: Timestamp) -> rusqlite::Result<Vec<RunId>> {
    let ids: Vec<String> = {
        let mut st = tx.prepare(
            "SELECT id FROM runs WHERE created_at < ?1 AND status IN ('completed', 'failed')",
        )?;
        let rows = st.query_map(params![before.0 as i64], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in &ids {
        tx.execute("DELETE FROM runs WHERE id = ?1", params![id])?;
    }
    if !ids.is_empty() {
        // Artifacts are shared by content: keep every one an attempt of a kept run wrote.
        tx.execute(
            "DELETE FROM artifacts WHERE hash NOT IN (SELECT hash FROM artifact_refs)",
            [],
        )?;
    }
    Ok(ids.into_iter().map(|id| RunId(id.into())).collect())
}
