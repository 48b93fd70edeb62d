//! Projection rows written in bulk. A run's task, agent, attempt and decision rows accumulate
//! here (the latest row of each task and agent, every attempt and decision) and are written
//! after the events they come from are committed: at least every [`WINDOW`] by the projector
//! thread (`projector`), in transactions of their own, and in the transaction of the batch that
//! stops the run (it finishes or waits). `runs.projected_seq` says up to which event the rows
//! are written; a resume writes what a crash left out (see `model::Changes::after`). The event
//! log itself is committed with every batch, as before.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use rusqlite::{params, Transaction};

use crate::model::{AgentRow, AttemptRow, Changes, DecisionRow, RunId, TaskRow};
use crate::store::Batch;

/// The longest projection rows wait: short, so the projector writes alongside the run rather
/// than in a few large jobs the run's last batch has to wait for.
pub(super) const WINDOW: Duration = Duration::from_millis(20);

/// Attempts that make a backlog due before its window is over.
const MAX_ATTEMPTS: usize = 2048;

/// The longest a task's PENDING row is held back (see [`Backlog::waiting`]).
const PENDING_HOLD: Duration = Duration::from_secs(1);

/// Task and attempt rows per `INSERT`: one statement's setup, binding and reset serve this many
/// rows (writing 40,000 rows took about a third less time than a statement per row, measured
/// with the store's schema). A backlog's last, partial group goes a row at a time.
const ROWS_PER_STATEMENT: usize = 32;

/// Parameters of one task row after the shared `?1` (run) and `?2` (time).
const TASK_PARAMS: usize = 4;
/// Parameters of one attempt row after the shared `?1` (run).
const ATTEMPT_PARAMS: usize = 6;

const TASKS_UPSERT: &str = "ON CONFLICT (run_id, task) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts,
    error = excluded.error, updated_at = excluded.updated_at";

/// `INSERT … VALUES` of `rows` groups of `params` numbered parameters after the `shared` ones;
/// `group(first)` writes one row's values from its first parameter's number.
fn values(rows: usize, params: usize, shared: usize, group: impl Fn(usize) -> String) -> String {
    (0..rows)
        .map(|i| group(shared + 1 + i * params))
        .collect::<Vec<_>>()
        .join(", ")
}

static TASKS_ONE: LazyLock<String> = LazyLock::new(|| tasks_insert(1));
static TASKS_MANY: LazyLock<String> = LazyLock::new(|| tasks_insert(ROWS_PER_STATEMENT));
static ATTEMPTS_ONE: LazyLock<String> = LazyLock::new(|| attempts_insert(1));
static ATTEMPTS_MANY: LazyLock<String> = LazyLock::new(|| attempts_insert(ROWS_PER_STATEMENT));

fn tasks_insert(rows: usize) -> String {
    let values = values(rows, TASK_PARAMS, 2, |p| {
        format!("(?1, ?{p}, ?{}, ?{}, ?{}, ?2)", p + 1, p + 2, p + 3)
    });
    format!(
        "INSERT INTO task_results (run_id, task, status, attempts, error, updated_at)
         VALUES {values} {TASKS_UPSERT}"
    )
}

fn attempts_insert(rows: usize) -> String {
    let values = values(rows, ATTEMPT_PARAMS, 1, |p| {
        format!(
            "(?1, ?{p}, ?{}, ?{}, ?{}, ?{}, ?{})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5
        )
    });
    format!(
        "INSERT OR REPLACE INTO attempts (run_id, seq, task, attempt, agent, duration_ms, error)
         VALUES {values}"
    )
}

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
    /// By the task's index in the run: merging compares integers, not names.
    tasks: BTreeMap<usize, TaskRow>,
    /// Rows of tasks that are PENDING, held back up to [`PENDING_HOLD`] (from `waiting_since`)
    /// while newer rows replace them: a run's start makes every task's row PENDING, and most
    /// of those were written only to be overwritten a few milliseconds later (a 20k-task chain,
    /// whole process on SQLite: 174 → 142 ms without them, medians of 13 alternated). They go
    /// with the batch that stops the run, and a resume writes every task's row anyway.
    waiting: BTreeMap<usize, TaskRow>,
    waiting_since: Option<Instant>,
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
        for (i, row) in changes.indexed_task_rows(batch.state) {
            if row.status == crate::model::TaskStatus::Pending {
                b.tasks.remove(&i);
                b.waiting.insert(i, row);
                b.waiting_since.get_or_insert_with(Instant::now);
            } else {
                b.waiting.remove(&i);
                b.tasks.insert(i, row);
            }
        }
        for row in changes.agent_rows(batch.state) {
            b.agents.insert(row.agent.clone(), row);
        }
        b.attempts.extend(changes.attempts.iter().cloned());
        b.decisions.extend(changes.decisions.iter().cloned());
        b.at = batch.events.last().map_or(b.at, |e| e.at.0 as i64);
        b.due()
    }

    /// Writes a run's rows in `tx` — the held PENDING rows too when `all` (the batch stops the
    /// run) or when their hold is over — and that they are written up to event `seq`; they
    /// are forgotten once it commits ([`Backlogs::written`], with the same `all`).
    pub fn write(
        &mut self,
        tx: &Transaction<'_>,
        run: &RunId,
        seq: u64,
        all: bool,
    ) -> rusqlite::Result<()> {
        match self.0.get_mut(run) {
            Some(b) => {
                let held = b.hold_back(all);
                let written = b.write(tx, run, Some(seq));
                b.waiting = held;
                written
            }
            None => Ok(()),
        }
    }

    /// Takes a run's rows, to be written elsewhere; PENDING rows whose hold is not over stay.
    pub fn take(&mut self, run: &RunId) -> Option<Backlog> {
        let mut b = self.0.remove(run)?;
        let held = b.hold_back(false);
        if !held.is_empty() {
            let mut rest = Backlog::empty(b.at);
            rest.waiting = held;
            rest.waiting_since = b.waiting_since.take();
            self.0.insert(run.clone(), rest);
        }
        Some(b)
    }

    /// The rows were committed (`all`: held PENDING rows too).
    pub fn written(&mut self, run: &RunId, all: bool) {
        if all {
            self.0.remove(run);
        } else if let Some(b) = self.take(run) {
            drop(b);
        }
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
            waiting: BTreeMap::new(),
            waiting_since: None,
            agents: BTreeMap::new(),
            attempts: Vec::new(),
            decisions: Vec::new(),
            at,
        }
    }

    fn len(&self) -> usize {
        self.tasks.len() + self.agents.len() + self.attempts.len() + self.decisions.len()
    }

    /// Whether the rows should be written: they waited their window or the attempts are
    /// many — or PENDING rows waited their hold.
    fn due(&self) -> bool {
        let rows = self.len() > 0
            && (self.since.elapsed() >= WINDOW || self.attempts.len() >= MAX_ATTEMPTS);
        rows || self
            .waiting_since
            .is_some_and(|t| t.elapsed() >= PENDING_HOLD)
    }

    /// Takes the PENDING rows that stay held back (none when `all`, or when their hold is
    /// over: then they join the rows to write).
    fn hold_back(&mut self, all: bool) -> BTreeMap<usize, TaskRow> {
        if self.waiting.is_empty() {
            return BTreeMap::new();
        }
        if !all
            && self
                .waiting_since
                .is_some_and(|t| t.elapsed() < PENDING_HOLD)
        {
            return std::mem::take(&mut self.waiting);
        }
        self.waiting_since = None;
        // The two sets never share a task (`merge`).
        self.tasks.append(&mut self.waiting);
        BTreeMap::new()
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
        let tasks: Vec<&TaskRow> = b.tasks.values().collect();
        let mut full = tasks.chunks_exact(ROWS_PER_STATEMENT);
        if full.len() > 0 {
            let mut many = tx.prepare_cached(&TASKS_MANY)?;
            many.raw_bind_parameter(1, id)?;
            many.raw_bind_parameter(2, b.at)?;
            for chunk in full.by_ref() {
                for (i, row) in chunk.iter().enumerate() {
                    let at = 3 + i * TASK_PARAMS;
                    many.raw_bind_parameter(at, &*row.task)?;
                    many.raw_bind_parameter(at + 1, row.status.as_str())?;
                    many.raw_bind_parameter(at + 2, row.attempts as i64)?;
                    many.raw_bind_parameter(at + 3, row.error.as_deref())?;
                }
                many.raw_execute()?;
            }
        }
        let mut task = tx.prepare_cached(&TASKS_ONE)?;
        for row in full.remainder() {
            task.execute(params![
                id,
                b.at,
                &*row.task,
                row.status.as_str(),
                row.attempts as i64,
                row.error
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
        let mut full = b.attempts.chunks_exact(ROWS_PER_STATEMENT);
        if full.len() > 0 {
            let mut many = tx.prepare_cached(&ATTEMPTS_MANY)?;
            many.raw_bind_parameter(1, id)?;
            for chunk in full.by_ref() {
                for (i, a) in chunk.iter().enumerate() {
                    let at = 2 + i * ATTEMPT_PARAMS;
                    many.raw_bind_parameter(at, a.seq as i64)?;
                    many.raw_bind_parameter(at + 1, &*a.task)?;
                    many.raw_bind_parameter(at + 2, a.attempt as i64)?;
                    many.raw_bind_parameter(at + 3, &*a.agent)?;
                    many.raw_bind_parameter(at + 4, a.duration_ms as i64)?;
                    many.raw_bind_parameter(at + 5, a.error.as_deref())?;
                }
                many.raw_execute()?;
            }
        }
        let mut attempt = tx.prepare_cached(&ATTEMPTS_ONE)?;
        for a in full.remainder() {
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
