//! The events of a run's log. Events are appended to the store before the scheduler acts on
//! them; [`super::RunState::apply`] is the only code that interprets them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    ArtifactRef, BreakerState, Decision, LlmCall, OutputTail, RunId, RunStatus, SkipReason,
    TaskError, TaskStatus, Timestamp,
};
use crate::policy::Severity;

/// The run and task that started a child run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRun {
    pub run: RunId,
    pub task: Arc<str>,
}

/// One event of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the run's log, from 1.
    pub seq: u64,
    /// RFC 3339 wall-clock time.
    pub at: Timestamp,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    RunStarted {
        run_id: RunId,
        workflow: String,
        file: String,
        params: BTreeMap<String, serde_json::Value>,
        /// Every task in declaration order, with its phase and agent pool.
        tasks: Vec<TaskInfo>,
        /// Every agent instance, `NAME-01` upwards.
        agents: Vec<String>,
        /// `--dry-run`: every agent a mock. A resume keeps it so.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        dry_run: bool,
        /// The SHA-256 of the workflow's source, stored in the store as an artifact: a resume
        /// with a changed file compares against it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        /// A child run: the run and task that started it (`task t on workflow "f.cond"`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentRun>,
    },
    /// A child-run task starts (or, after a stop, goes on with) run `run` of `file`. Recorded
    /// and committed before the child starts, so a resumed parent awaits this same child
    /// instead of starting a second one.
    ChildRunStarted {
        task: Arc<str>,
        run: RunId,
        file: String,
        attempt: u32,
    },
    /// The workflow's declared `outputs`, rendered when its normal phases ended well: what a
    /// parent run's task sees as `output`.
    RunOutputs {
        outputs: BTreeMap<String, serde_json::Value>,
    },
    /// A fan-out task's items, before any instance is dispatched: each instance `task[key]`
    /// with its index and item. Resume, `why` and `show` read them here, never recompute them.
    FanOutExpanded {
        task: Arc<str>,
        instances: Vec<InstanceInfo>,
    },
    /// `resume --decide T=retry` on a run that had ended: it goes back to `phase` (where it
    /// ended), and its `always` phases' tasks (`reset`) will run again at the new end.
    RunReopened {
        phase: String,
        reset: Vec<Arc<str>>,
    },
    /// `resume` continued the run with a changed workflow file of the same shape ("fix and
    /// retry"): the source hashes before and after, and what changed.
    WorkflowAmended {
        from: Option<String>,
        to: String,
        changes: Vec<String>,
    },
    PhaseEntered {
        phase: String,
        loop_count: u32,
    },
    TaskSkipped {
        task: Arc<str>,
        reason: SkipReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    TaskDispatched {
        task: Arc<str>,
        agent: Arc<str>,
        attempt: u32,
    },
    /// A model call's worst case was reserved against the budgets, before the call is made.
    CallReserved {
        task: Arc<str>,
        attempt: u32,
        worst: super::Spend,
    },
    AttemptFinished {
        task: Arc<str>,
        agent: Arc<str>,
        attempt: u32,
        duration_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<TaskError>,
        /// The LLM calls the attempt made, with their token usage.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        calls: Vec<LlmCall>,
        /// Its calls that got no reply although a model may have run, at their worst case.
        #[serde(default, skip_serializing_if = "super::Spend::is_zero")]
        cut_off: super::Spend,
        /// The files the attempt produced, stored as artifacts and written to the workspace.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        artifacts: Vec<ArtifactRef>,
        /// The output came from the response cache (`cache = true`); no agent was called.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cached: bool,
        /// The end of what the attempt's program printed (its whole output is in the
        /// attempt's log: `conductor logs`).
        #[serde(default, skip_serializing_if = "OutputTail::is_empty")]
        tail: OutputTail,
    },
    RetryScheduled {
        task: Arc<str>,
        attempt: u32,
        delay_ms: u64,
    },
    TaskFinished {
        task: Arc<str>,
        status: TaskStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<TaskError>,
    },
    PolicyViolation {
        task: Arc<str>,
        rule: String,
        reason: String,
    },
    /// An `enforce` rule deferred the task: it waits, and the rule is asked again when what it
    /// sees changes.
    TaskDeferred {
        task: Arc<str>,
        rule: String,
        reason: String,
    },
    GateDecided {
        phase: String,
        pass: bool,
        reason: String,
        rule: String,
    },
    FeedbackDecided {
        severity: Severity,
        summary: String,
        #[serde(default)]
        details: serde_json::Value,
        rule: String,
    },
    LoopStarted {
        loop_count: u32,
        target: String,
    },
    Warning {
        message: String,
    },
    /// `resume --budget`: a budget's limits, raised (or lowered) for the rest of the run.
    BudgetRaised {
        scope: super::BudgetScope,
        limits: super::Limits,
    },
    /// A pool's circuit breaker changed state.
    BreakerChanged {
        agent: Arc<str>,
        state: BreakerState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A task that cannot succeed on its own was put in the dead-letter queue (it ends FAILED).
    DeadLettered {
        entry: DeadLetter,
    },
    /// A non-retryable failure was escalated.
    Escalated {
        task: Arc<str>,
        error: TaskError,
    },
    /// What happens to an escalated task, and who or what decided.
    Decided {
        task: Arc<str>,
        decision: Decision,
        by: String,
        /// Why, in the decider's words (`--reason`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An approval task waits for a person: `message` is its rendered prompt; no decision
    /// within `timeout_ms` of this event rejects it.
    ApprovalRequested {
        task: Arc<str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        timeout_ms: u64,
    },
    /// The run was continued from its log by `conductor resume`; `rerun` were in flight when
    /// it stopped and run again.
    RunResumed {
        rerun: Vec<Arc<str>>,
    },
    /// The run waits for an operator's decision on these tasks.
    RunWaiting {
        tasks: Vec<Arc<str>>,
    },
    /// The normal phases are over and the run will end with this status once its `always`
    /// phases have run (their failure can only turn COMPLETED into FAILED).
    RunEnding {
        status: RunStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    RunFinished {
        status: RunStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl EventKind {
    /// The event's name as written in the log (`"event": "task_dispatched"`).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "run_started",
            EventKind::WorkflowAmended { .. } => "workflow_amended",
            EventKind::RunReopened { .. } => "run_reopened",
            EventKind::FanOutExpanded { .. } => "fan_out_expanded",
            EventKind::ChildRunStarted { .. } => "child_run_started",
            EventKind::RunOutputs { .. } => "run_outputs",
            EventKind::PhaseEntered { .. } => "phase_entered",
            EventKind::TaskSkipped { .. } => "task_skipped",
            EventKind::TaskDispatched { .. } => "task_dispatched",
            EventKind::CallReserved { .. } => "call_reserved",
            EventKind::AttemptFinished { .. } => "attempt_finished",
            EventKind::RetryScheduled { .. } => "retry_scheduled",
            EventKind::TaskFinished { .. } => "task_finished",
            EventKind::PolicyViolation { .. } => "policy_violation",
            EventKind::TaskDeferred { .. } => "task_deferred",
            EventKind::GateDecided { .. } => "gate_decided",
            EventKind::FeedbackDecided { .. } => "feedback_decided",
            EventKind::LoopStarted { .. } => "loop_started",
            EventKind::Warning { .. } => "warning",
            EventKind::BudgetRaised { .. } => "budget_raised",
            EventKind::BreakerChanged { .. } => "breaker_changed",
            EventKind::DeadLettered { .. } => "dead_lettered",
            EventKind::Escalated { .. } => "escalated",
            EventKind::Decided { .. } => "decided",
            EventKind::ApprovalRequested { .. } => "approval_requested",
            EventKind::RunWaiting { .. } => "run_waiting",
            EventKind::RunResumed { .. } => "run_resumed",
            EventKind::RunEnding { .. } => "run_ending",
            EventKind::RunFinished { .. } => "run_finished",
        }
    }

    /// Whether the run stopped with this event (finished, or waiting for a decision).
    pub fn stops_run(&self) -> bool {
        matches!(
            self,
            EventKind::RunFinished { .. } | EventKind::RunWaiting { .. }
        )
    }

    /// The task (or task instance) the event is about, if any.
    pub fn task(&self) -> Option<&str> {
        match self {
            EventKind::TaskSkipped { task, .. }
            | EventKind::TaskDispatched { task, .. }
            | EventKind::AttemptFinished { task, .. }
            | EventKind::RetryScheduled { task, .. }
            | EventKind::TaskFinished { task, .. }
            | EventKind::PolicyViolation { task, .. }
            | EventKind::TaskDeferred { task, .. }
            | EventKind::Escalated { task, .. }
            | EventKind::ApprovalRequested { task, .. }
            | EventKind::FanOutExpanded { task, .. }
            | EventKind::ChildRunStarted { task, .. }
            | EventKind::Decided { task, .. } => Some(task),
            EventKind::DeadLettered { entry } => Some(&entry.task),
            _ => None,
        }
    }
}

/// The feedback a pass ends with (DSL.md section 5, step 6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackPayload {
    pub severity: Severity,
    pub summary: String,
    #[serde(default)]
    pub details: serde_json::Value,
}

/// One attempt of a task, as the dead-letter queue keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub agent: Option<Arc<str>>,
    pub error: Option<TaskError>,
    /// The backoff before the next attempt, when one was scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_ms: Option<u64>,
    pub duration_ms: u64,
    /// The end of what the attempt's program printed.
    #[serde(default, skip_serializing_if = "OutputTail::is_empty")]
    pub tail: OutputTail,
}

/// A dead-lettered task with everything needed to understand and retry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// `RUN_ID:SEQ`: unique, and names the run.
    pub id: String,
    pub run_id: RunId,
    pub task: Arc<str>,
    pub phase: Arc<str>,
    pub pool: Arc<str>,
    pub reason: String,
    pub attempts: Vec<AttemptRecord>,
    /// The last request as sent to the agent (prompt, input, command…).
    pub request: serde_json::Value,
    pub at: Timestamp,
}

/// One instance of a fan-out task, as its expansion records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub index: u32,
    pub key: String,
    pub item: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: Arc<str>,
    pub phase: Arc<str>,
    pub agent: Arc<str>,
}
