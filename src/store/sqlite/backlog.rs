//! Projection rows written in bulk. A run's task, agent, attempt and decision rows accumulate
//! here (the latest row of each task and agent, every attempt and decision) and are written
//! after the events they come from are committed: at least every [`WINDOW`] by the projector
//! thread (`projector`), in transactions of their own, and in the transaction of the batch that
//! stops the run (it finishes or waits). `runs.projected_seq` says up to which event the rows
//! are written; a resume writes what a crash left out (see `model::Changes::after`). The event
//! log itself is committed with every batch, as before.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rusqlite::{params, Transaction};

use crate::model::{AgentRow, AttemptRow, Changes, DecisionRow, RunId, TaskRow};
use crate::store::Batch;

/// The longest projection rows wait: short, so the projector writes alongside the run rather
/// than in a few large jobs the run's last batch has to wait for.
pub(super) const WINDOW: Duration = Duration::from_millis(20);

/// Attempts that make a backlog due before its window is over.
const MAX_ATTEMPTS: usize = 2048;

/// Whether `batch` stops its run (it finishes or waits): its rows are written with it, so a
/// stopped run's projections are complete.
pub(super) fn stops(batch: &Batch<'_>) -> bool {
    let status = batch.state.status();
    status.is_final() || status == crate::model::RunStatus::Waiting
}

/// Rows waiting to be written, per run.
#[derive(Default)]
pub(super) struct Backlogs(HashMap<RunId, Backlog>);

pub(super) struct Backlog {
    since: Instant,
    tasks: BTreeMap<std::sync::Arc<str>, TaskRow>,
    agents: BTreeMap<std::sync::Arc<str>, AgentRow>,
    attempts: Vec<AttemptRow>,
    decisions: Vec<DecisionRow>,
    /// The time of the last event merged, for `updated_at`.
    at: i64,
}

impl Backlogs {
    /// Adds a batch's rows; returns whether the run's backlog has waited long enough, or grown
    /// large enough, to be written.
    pub fn merge(&mut self, run: &RunId, batch: &Batch<'_>) -> bool {
        let b = self
            .0
            .entry(run.clone())
            .or_insert_with(|| Backlog::empty(0));
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
        b.since.elapsed() >= WINDOW || b.attempts.len() >= MAX_ATTEMPTS
    }

    /// Writes a run's waiting rows in `tx`, and that they are written up to event `seq`;
    /// they are forgotten once it commits ([`Backlogs::written`]).
    pub fn write(&self, tx: &Transaction<'_>, run: &RunId, seq: u64) -> rusqlite::Result<()> {
        match self.0.get(run) {
            Some(b) => b.write(tx, run, Some(seq)),
            None => Ok(()),
        }
    }

    /// Takes a run's waiting rows, to be written elsewhere.
    pub fn take(&mut self, run: &RunId) -> Option<Backlog> {
        self.0.remove(run)
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

impl Backlog {
    fn empty(at: i64) -> Backlog {
        Backlog {
            since: Instant::now(),
            tasks: BTreeMap::new(),
            agents: BTreeMap::new(),
            attempts: Vec::new(),
            decisions: Vec::new(),
            at,
        }
    }

    fn len(&self) -> usize {
        self.tasks.len() + self.agents.len() + self.attempts.len() + self.decisions.len()
    }

    /// The same rows as backlogs of at most `rows` rows each, in order (at least one).
    pub fn split(self, rows: usize) -> Vec<Backlog> {
        let rows = rows.max(1);
        let at = self.at;
        let mut out = Vec::with_capacity(self.len() / rows + 1);
        let mut cur = Backlog::empty(at);
        let next = |cur: &mut Backlog, out: &mut Vec<Backlog>| {
            if cur.len() >= rows {
                out.push(std::mem::replace(cur, Backlog::empty(at)));
            }
        };
        for (k, row) in self.tasks {
            next(&mut cur, &mut out);
            cur.tasks.insert(k, row);
        }
        for (k, row) in self.agents {
            next(&mut cur, &mut out);
            cur.agents.insert(k, row);
        }
        for row in self.attempts {
            next(&mut cur, &mut out);
            cur.attempts.push(row);
        }
        for row in self.decisions {
            next(&mut cur, &mut out);
            cur.decisions.push(row);
        }
        out.push(cur);
        out
    }

    /// Writes these rows in `tx` and, when `seq` is given, that the run's rows are written up
    /// to that event.
    pub fn write(
        &self,
        tx: &Transaction<'_>,
        run: &RunId,
        seq: Option<u64>,
    ) -> rusqlite::Result<()> {
        let b = self;
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
        if let Some(seq) = seq {
            // Never backwards, whatever wrote last.
            tx.prepare_cached(
                "UPDATE runs SET projected_seq = MAX(projected_seq, ?2) WHERE id = ?1",
            )?
            .execute(params![id, seq as i64])?;
        }
        Ok(())
    }
}
