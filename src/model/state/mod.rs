//! The state of a run: a projection of its events, and the only reader of the log.
//!
//! [`RunState::apply`] folds one event into the state and reports what it changed
//! ([`Changes`]), so stores write their projections from the state, `resume` continues from it,
//! and views display it — nobody else interprets events. Field names follow the predecessor's
//! `WorkflowState` so its users recognise them.

mod apply;
mod changes;
mod summary;
mod usage;
mod view;

use crate::hashing::FastMap;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub(crate) use apply::DLQ_RETRY_BY;
pub use changes::{AgentRow, AttemptRow, Changes, DecisionRow, TaskRow};
pub use summary::RunSummary;
pub use view::RunStateView;

use super::{
    AgentStatus, AttemptRecord, BreakerState, DeadLetter, Event, FeedbackPayload, OutputTail,
    RunId, RunStatus, SkipReason, TaskError, TaskStatus, Timestamp, Usage,
};

/// The state of a run.
#[derive(Clone, Debug, Default)]
pub struct RunState {
    pub workflow_id: RunId,
    pub workflow: String,
    /// The workflow file as given when the run started.
    pub file: String,
    pub params: BTreeMap<String, serde_json::Value>,
    pub status: Option<RunStatus>,
    pub current_phase: Option<String>,
    /// Every task in declaration order.
    pub tasks: Vec<TaskResult>,
    index: FastMap<Arc<str>, usize>,
    /// Each task's pool, by task index (an attempt logged under the pool's name never found an
    /// instance).
    pools: Vec<Arc<str>>,
    pub agent_states: BTreeMap<String, AgentState>,
    pub feedback_loop_count: u32,
    pub feedback: Option<FeedbackPayload>,
    pub warnings: Vec<String>,
    pub gates: Vec<GateRecord>,
    /// Each pool's circuit breaker.
    pub breakers: BTreeMap<String, BreakerState>,
    /// Ids of this run's dead-lettered tasks.
    pub dead_letters: Vec<String>,
    /// The dead letters themselves, in order.
    pub dead_letter_entries: Vec<DeadLetter>,
    /// Tasks waiting for an operator's decision.
    pub awaiting_decision: Vec<Arc<str>>,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub error: Option<String>,
    /// LLM token usage over the whole run (every attempt, failed ones too).
    pub usage: Usage,
    /// Usage by phase name, and by feedback pass (index 0: the first pass).
    pub phase_usage: BTreeMap<String, Usage>,
    pub pass_usage: Vec<Usage>,
    /// Budget limits given again by `resume --budget`, in place of the file's.
    pub budget_raises: BTreeMap<super::BudgetScope, super::Limits>,
    /// The status the run ends with once its `always` phases have run, and its error.
    pub ending: Option<(RunStatus, Option<String>)>,
    /// The SHA-256 of the workflow source the run now follows (stored as an artifact).
    pub source: Option<String>,
    /// The imported files the run now follows, with their SHA-256 (stored as artifacts).
    pub imports: BTreeMap<String, String>,
    /// How many times `resume` continued it with a changed file.
    pub amendments: u32,
    /// Why an `always` phase failed (it turns a COMPLETED run into FAILED).
    pub always_failure: Option<String>,
    /// The run was started with `--dry-run`.
    pub dry_run: bool,
    /// Every file the run's agents wrote, in the order written.
    pub artifacts: Vec<RunArtifact>,
    /// The index in `artifacts` of the latest version of each path.
    latest_artifact: FastMap<Arc<str>, usize>,
    /// The last event applied.
    pub last_seq: u64,
    /// A child run: the run and task that started it.
    pub parent: Option<super::ParentRun>,
    /// The workflow's declared `outputs`, once rendered at its end.
    pub outputs: Option<BTreeMap<String, serde_json::Value>>,
}

/// A task's latest result, and what resuming it needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: Arc<str>,
    pub phase: Arc<str>,
    pub status: TaskStatus,
    /// The agent instance of the latest attempt.
    pub agent: Option<Arc<str>>,
    pub attempts: u32,
    pub output: serde_json::Value,
    pub error: Option<Box<TaskError>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: u64,
    /// The model calls of all its attempts, and what they cost.
    /// `None` until it spends anything (boxed: most tasks of a large run call no model).
    #[serde(default, skip_serializing_if = "no_usage")]
    pub usage: Option<Box<Usage>>,
    /// The worst case of the model calls its running attempt has reserved (`call_reserved`)
    /// and not yet settled. Still set when the log ends: the process stopped during the
    /// calls, which the budgets then count at this worst case.
    #[serde(default, skip_serializing_if = "crate::model::Spend::is_zero")]
    pub reserved: crate::model::Spend,
    /// The end of what its last attempt's program printed.
    /// `None` when it printed nothing (boxed: most tasks of a large run print nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<Box<OutputTail>>,
    /// An approval task waits for a person: what it asks, since when, for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Box<ApprovalWait>>,
    /// An `enforce` rule holds the task back: which, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<Box<Deferral>>,
    /// A fan-out instance: its task, index, key and item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Box<Instance>>,
    /// A fan-out task: its instances' places in [`RunState::tasks`], in index order, as this
    /// pass expanded them.
    #[serde(skip)]
    pub instances: Vec<u32>,
    /// This pass's failed attempts, for the dead-letter queue.
    #[serde(skip)]
    pub history: Vec<AttemptRecord>,
    /// Attempts made before the last retry decision: a decided retry gets `retry` more.
    #[serde(skip)]
    pub attempt_base: u32,
    /// A retry waiting out its backoff: when it is due and the backoff it waits.
    #[serde(skip)]
    pub retry_due: Option<RetryDue>,
    /// A child-run task: the runs it started, the latest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub child_runs: Vec<ChildRun>,
}

/// A run a child-run task started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildRun {
    pub run: RunId,
    pub file: String,
    pub attempt: u32,
    /// Started and not yet finished in this log: a resumed parent goes on with it.
    #[serde(skip)]
    pub open: bool,
}

/// What makes a task an instance of a fan-out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The fan-out task.
    pub of: Arc<str>,
    pub index: u32,
    pub key: String,
    pub item: serde_json::Value,
}

/// An approval task waiting for a decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalWait {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub requested_at: Timestamp,
    pub timeout_ms: u64,
}

impl ApprovalWait {
    /// When no decision rejects it, in milliseconds since the epoch.
    pub fn due_ms(&self) -> u64 {
        self.requested_at.0.saturating_add(self.timeout_ms)
    }
}

/// Why a task waits: the `enforce` rule that deferred it and its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferral {
    pub rule: String,
    pub reason: String,
}

/// When a scheduled retry is due (wall clock) and the backoff it waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryDue {
    pub at_ms: u64,
    pub delay_ms: u64,
}

fn no_usage(usage: &Option<Box<Usage>>) -> bool {
    usage.as_deref().is_none_or(Usage::is_zero)
}

/// What a task that spent nothing shows as its usage.
static NO_USAGE: Usage = Usage::ZERO;

/// What a task that printed nothing shows as its tail.
static NO_TAIL: OutputTail = OutputTail {
    stdout: String::new(),
    stderr: String::new(),
};

impl TaskResult {
    /// The model calls of all its attempts, and what they cost.
    pub fn usage(&self) -> &Usage {
        self.usage.as_deref().unwrap_or(&NO_USAGE)
    }

    /// The end of what its last attempt printed (empty when nothing).
    pub fn tail(&self) -> &OutputTail {
        self.tail.as_deref().unwrap_or(&NO_TAIL)
    }

    fn new(task: Arc<str>, phase: Arc<str>) -> TaskResult {
        TaskResult {
            task,
            phase,
            status: TaskStatus::Pending,
            agent: None,
            attempts: 0,
            output: serde_json::Value::Null,
            error: None,
            skip_reason: None,
            started_at: None,
            finished_at: None,
            duration_ms: 0,
            usage: None,
            reserved: Default::default(),
            deferred: None,
            approval: None,
            instance: None,
            instances: Vec::new(),
            tail: None,
            history: Vec::new(),
            attempt_base: 0,
            retry_due: None,
            child_runs: Vec::new(),
        }
    }

    /// Whether it counts as failed for its dependents: FAILED, or skipped because its own
    /// upstream failed.
    pub fn failed_for_dependents(&self) -> bool {
        self.status == TaskStatus::Failed
            || (self.status == TaskStatus::Skipped
                && self.skip_reason == Some(SkipReason::UpstreamFailed))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub status: AgentStatus,
    pub current_task: Option<Arc<str>>,
    pub completed_tasks: Vec<Arc<str>>,
}

/// One file of a run, as `conductor artifacts` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunArtifact {
    /// Shared with the state's index of the latest write to each path.
    pub path: Arc<str>,
    pub sha256: Arc<str>,
    pub size: u64,
    /// The task whose output it was, its attempt, and the feedback loop it ran in.
    pub task: Arc<str>,
    pub attempt: u32,
    pub loop_count: u32,
    /// A later write to the same path replaced it in the workspace.
    pub superseded: bool,
}

/// A gate decision, kept for `show`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    pub phase: String,
    pub loop_count: u32,
    pub pass: bool,
    pub reason: String,
    pub rule: String,
}

impl RunState {
    /// Rebuilds a run's state from its events.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> RunState {
        let mut state = RunState::default();
        for e in events {
            state.apply(e);
        }
        state
    }

    pub fn status(&self) -> RunStatus {
        self.status.unwrap_or(RunStatus::Pending)
    }

    pub fn task(&self, name: &str) -> Option<&TaskResult> {
        self.index.get(name).map(|&i| &self.tasks[i])
    }

    /// The index of a task in [`RunState::tasks`].
    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    fn task_mut(&mut self, name: &str) -> Option<(usize, &mut TaskResult)> {
        let i = *self.index.get(name)?;
        Some((i, &mut self.tasks[i]))
    }

    /// How many tasks have this status.
    /// Units of work with this status: tasks and fan-out instances, not the groups that hold
    /// the instances (they would count every instance twice).
    pub fn count(&self, status: TaskStatus) -> usize {
        self.tasks
            .iter()
            .filter(|t| t.status == status && t.instances.is_empty())
            .count()
    }

    /// A fan-out task's instances of this pass: how many, and how many have each status (in
    /// the order of [`TaskStatus`], only those present).
    pub fn instance_counts(&self, task: &str) -> (usize, Vec<(TaskStatus, usize)>) {
        let Some(t) = self.task(task) else {
            return (0, Vec::new());
        };
        let mut counts: Vec<(TaskStatus, usize)> = Vec::new();
        for &i in &t.instances {
            let s = self.tasks[i as usize].status;
            match counts.iter_mut().find(|(k, _)| *k == s) {
                Some((_, n)) => *n += 1,
                None => counts.push((s, 1)),
            }
        }
        counts.sort_by_key(|(s, _)| *s as u8);
        (t.instances.len(), counts)
    }
}

#[cfg(test)]
mod tests;
