//! Projection rows written in bulk. A run's task, agent, attempt and decision rows accumulate
//! here (the latest row of each task and agent, every attempt and decision) and are written in
//! the transaction of a later batch: at least every [`WINDOW`], and with the batch that
//! stops the run (it finishes or waits). `runs.projected_seq` says up to
//! which event the rows are written; a resume writes what a crash left out (see
//! `model::Changes::after`). The event log itself is committed with every batch, as before.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rusqlite::{params, Transaction};

use crate::model::{AgentRow, AttemptRow, Changes, DecisionRow, RunId, TaskRow};
use crate::store::Batch;

/// The longest projection rows wait.
pub(super) const WINDOW: Duration = Duration::from_millis(250);

/// Rows waiting to be written, per run.
#[derive(Default)]
pub(super) struct Backlogs(HashMap<RunId, Backlog>);

struct Backlog {
    since: Instant,
    tasks: BTreeMap<std::sync::Arc<str>, TaskRow>,
    agents: BTreeMap<std::sync::Arc<str>, AgentRow>,
    attempts: Vec<AttemptRow>,
    decisions: Vec<DecisionRow>,
    /// The time of the last event merged, for `updated_at`.
    at: i64,
}

impl Backlogs {
    /// Adds a batch's rows; returns whether the run's backlog is due to be written now.
    pub fn merge(&mut self, run: &RunId, batch: &Batch<'_>) -> bool {
        let b = self.0.entry(run.clone()).or_insert_with(|| Backlog {
            since: Instant::now(),
            tasks: BTreeMap::new(),
            agents: BTreeMap::new(),
            attempts: Vec::new(),
            decisions: Vec::new(),
            at: 0,
        });
        let changes: &Changes = batch.changes;
        for row in changes.task_rows(batch.state) {
            b.tasks.insert(row.task.clone(), row);
        }
        for row in changes.agent_rows(batch.state) {
            b.agents.insert(row.agent.clone(), row);
        }
        b.attempts.extend(changes.attempts.iter().cloned());
        b.decisions.extend(changes.decisions.iter().cloned());
        b.at = batch.events.last().map_or(b.at, |e| e.at.0 as i64);
        // Written when the run stops (or waits), so a stopped run's projections are complete.
        let stops = {
            let status = batch.state.status();
            status.is_final() || status == crate::model::RunStatus::Waiting
        };
        stops || b.since.elapsed() >= WINDOW || b.attempts.len() >= 8192
    }

    /// Writes a run's waiting rows in `tx`; they are forgotten once it commits
    /// ([`Backlogs::written`]).
    pub fn write(&self, tx: &Transaction<'_>, run: &RunId, seq: u64) -> rusqlite::Result<()> {
        let Some(b) = self.0.get(run) else {
            return Ok(());
        };
        let id = &*run.0;
        let mut task = tx.prepare_cached(
            "INSERT INTO task_results (run_id, task, status, attempts, error, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (run_id, task) DO UPDATE SET
                status = excluded.status, attempts = excluded.attempts,
                error = excluded.error, updated_at = excluded.updated_at",
        )?;
        for row in b.tasks.values() {
            task.execute(params![
                id,
                &*row.task,
                row.status.as_str(),
                row.attempts as i64,
                row.error,
                b.at
            ])?;
        }
        let mut agent = tx.prepare_cached(
            "INSERT INTO agent_states (run_id, agent, status, current_task) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (run_id, agent) DO UPDATE SET
                status = excluded.status, current_task = excluded.current_task",
        )?;
        for row in b.agents.values() {
            agent.execute(params![
                id,
                &*row.agent,
                row.status.as_str(),
                row.current_task.as_deref()
            ])?;
        }
        let mut attempt = tx.prepare_cached(
            "INSERT OR REPLACE INTO attempts (run_id, seq, task, attempt, agent, duration_ms, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for a in &b.attempts {
            attempt.execute(params![
                id,
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
        for d in &b.decisions {
            decision.execute(params![
                id,
                d.seq as i64,
                &*d.task,
                d.decision.as_str(),
                d.by,
                d.at.0 as i64
            ])?;
        }
        tx.prepare_cached("UPDATE runs SET projected_seq = ?2 WHERE id = ?1")?
            .execute(params![id, seq as i64])?;
        Ok(())
    }

    /// The rows were committed.
    pub fn written(&mut self, run: &RunId) {
        self.0.remove(run);
    }

    /// A batch failed to commit: its run's rows are dropped rather than written for events
    /// the log does not have (`projected_seq` stays behind, and a resume catches up).
    pub fn drop_run(&mut self, run: &RunId) {
        self.0.remove(run);
    }
}
