//! Run data: statuses, task results, events, and the run state that is their projection.
//!
//! The event log is the truth. [`RunState::apply`] folds one event into the state, so a run's
//! state can always be rebuilt from its events (`resume`, `show`); the executor changes its
//! state only by applying the events it records. Field names follow the predecessor's
//! `WorkflowState` so its users recognise them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::policy::Severity;

/// A run's id: `r` followed by 12 hex digits, ordered by creation time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub Arc<str>);

impl RunId {
    /// A new id from the clock and a process-wide counter: time-ordered and unique per process.
    pub fn new() -> RunId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let salt = (std::process::id() as u64).wrapping_mul(0x9E37_79B9) ^ n;
        RunId(Arc::from(format!(
            "r{:08x}{:04x}",
            millis & 0xffff_ffff,
            salt & 0xffff
        )))
    }
}

impl Default for RunId {
    fn default() -> RunId {
        RunId::new()
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    InProgress,
    /// An escalation awaits an operator's answer.
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::InProgress => "in_progress",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

impl TaskStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Pending | TaskStatus::InProgress)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// What went wrong in an attempt, in the typed form the error handler reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Timeout,
    RateLimited,
    Transient,
    NoAvailableAgent,
    InvalidInput,
    InvalidOutput,
    Template,
    AgentCrashed,
    ExitCode,
    Http,
    Rule,
    PolicyViolation,
    CircuitOpen,
    Cancelled,
    /// The `replay` provider has no recorded reply for a request.
    ReplayMiss,
    Fatal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Transient => "TRANSIENT",
            ErrorCode::NoAvailableAgent => "NO_AVAILABLE_AGENT",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::InvalidOutput => "INVALID_OUTPUT",
            ErrorCode::Template => "TEMPLATE",
            ErrorCode::AgentCrashed => "AGENT_CRASHED",
            ErrorCode::ExitCode => "EXIT_CODE",
            ErrorCode::Http => "HTTP",
            ErrorCode::Rule => "RULE",
            ErrorCode::PolicyViolation => "POLICY_VIOLATION",
            ErrorCode::CircuitOpen => "CIRCUIT_OPEN",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::ReplayMiss => "REPLAY_MISS",
            ErrorCode::Fatal => "FATAL",
        }
    }
}

/// A task attempt's failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    pub code: ErrorCode,
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// A provider's hint for how long to wait before retrying, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl TaskError {
    pub fn retryable(code: ErrorCode, message: impl Into<String>) -> TaskError {
        TaskError {
            code,
            message: message.into(),
            retryable: true,
            retry_after_ms: None,
        }
    }

    pub fn fatal(code: ErrorCode, message: impl Into<String>) -> TaskError {
        TaskError {
            code,
            message: message.into(),
            retryable: false,
            retry_after_ms: None,
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// One call to an LLM provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// The provider's name in `conductor.toml`.
    pub provider: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub duration_ms: u64,
    /// Answered from a cassette rather than by a model.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// Token usage, summed over calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Task outputs served from the response cache.
    #[serde(default)]
    pub cached: u64,
}

impl Usage {
    pub fn add(&mut self, call: &LlmCall) {
        self.calls += 1;
        self.input_tokens += call.input_tokens;
        self.output_tokens += call.output_tokens;
    }
}

/// A file an agent produced: where it went in the workspace and its content address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub path: String,
    /// SHA-256 of the content, in hex.
    pub sha256: String,
    pub size: u64,
}

/// The feedback a pass ends with (DSL.md section 5, step 6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedbackPayload {
    pub severity: Severity,
    pub summary: String,
    #[serde(default)]
    pub details: serde_json::Value,
}

/// Why a task ended SKIPPED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its `when` rule was false.
    WhenFalse,
    /// A task in its `after` list failed (or was skipped for that reason).
    UpstreamFailed,
    /// An operator (or `on_escalation = "skip"`) decided to skip it.
    Decision,
}

/// One event of a run. Events are appended to the store before the scheduler acts on them.
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
        /// The files the attempt produced, stored as artifacts and written to the workspace.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        artifacts: Vec<ArtifactRef>,
        /// The output came from the response cache (`cache = true`); no agent was called.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cached: bool,
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
    RunFinished {
        status: RunStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// An operator's (or `on_escalation`'s) answer to an escalation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Retry,
    Skip,
    Abort,
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Decision, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "retry" | "r" => Ok(Decision::Retry),
            "skip" | "s" => Ok(Decision::Skip),
            "abort" | "a" => Ok(Decision::Abort),
            other => Err(format!(
                "`{other}` is not a decision: use retry, skip or abort"
            )),
        }
    }
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub name: Arc<str>,
    pub phase: Arc<str>,
    pub agent: Arc<str>,
}

/// A task's latest result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: Arc<str>,
    pub phase: Arc<str>,
    pub status: TaskStatus,
    /// The agent instance of the latest attempt.
    pub agent: Option<Arc<str>>,
    pub attempts: u32,
    pub output: serde_json::Value,
    pub error: Option<TaskError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentStatus {
    Idle,
    Running,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub status: AgentStatus,
    pub current_task: Option<Arc<str>>,
    pub completed_tasks: Vec<Arc<str>>,
}

/// The state of a run: a projection of its events.
#[derive(Clone, Debug, Default)]
pub struct RunState {
    pub workflow_id: RunId,
    pub workflow: String,
    pub file: String,
    pub status: Option<RunStatus>,
    pub current_phase: Option<String>,
    pub params: BTreeMap<String, serde_json::Value>,
    /// Task results in declaration order.
    pub tasks: Vec<TaskResult>,
    index: HashMap<Arc<str>, usize>,
    pub agent_states: BTreeMap<String, AgentState>,
    pub feedback_loop_count: u32,
    pub feedback: Option<FeedbackPayload>,
    pub warnings: Vec<String>,
    pub gates: Vec<GateRecord>,
    /// Each pool's circuit breaker.
    pub breakers: BTreeMap<String, BreakerState>,
    /// Ids of this run's dead-lettered tasks.
    pub dead_letters: Vec<String>,
    /// Tasks waiting for an operator's decision.
    pub awaiting_decision: Vec<Arc<str>>,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub error: Option<String>,
    /// LLM token usage over the whole run (every attempt, failed ones too).
    pub usage: Usage,
    /// The run was started with `--dry-run`.
    pub dry_run: bool,
    /// The last event applied.
    pub last_seq: u64,
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

    fn task_mut(&mut self, name: &str) -> Option<&mut TaskResult> {
        let i = *self.index.get(name)?;
        Some(&mut self.tasks[i])
    }

    /// Folds one event into the state.
    pub fn apply(&mut self, event: &Event) {
        self.last_seq = event.seq;
        match &event.kind {
            EventKind::RunStarted {
                run_id,
                workflow,
                file,
                params,
                tasks,
                agents,
                dry_run,
            } => {
                self.dry_run = *dry_run;
                self.workflow_id = run_id.clone();
                self.workflow = workflow.clone();
                self.file = file.clone();
                self.params = params.clone();
                self.status = Some(RunStatus::InProgress);
                self.started_at = Some(event.at);
                self.tasks = tasks
                    .iter()
                    .map(|t| TaskResult {
                        task: t.name.clone(),
                        phase: t.phase.clone(),
                        status: TaskStatus::Pending,
                        agent: None,
                        attempts: 0,
                        output: serde_json::Value::Null,
                        error: None,
                        skip_reason: None,
                        started_at: None,
                        finished_at: None,
                        duration_ms: 0,
                    })
                    .collect();
                self.index = tasks
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.name.clone(), i))
                    .collect();
                self.agent_states = agents
                    .iter()
                    .map(|a| {
                        (
                            a.clone(),
                            AgentState {
                                status: AgentStatus::Idle,
                                current_task: None,
                                completed_tasks: Vec::new(),
                            },
                        )
                    })
                    .collect();
            }
            EventKind::PhaseEntered { phase, .. } => {
                self.current_phase = Some(phase.clone());
                // Entering a phase (again, in a later pass) starts its tasks afresh.
                for t in self.tasks.iter_mut().filter(|t| *t.phase == **phase) {
                    t.status = TaskStatus::Pending;
                    t.attempts = 0;
                    t.error = None;
                    t.skip_reason = None;
                    t.output = serde_json::Value::Null;
                    t.started_at = None;
                    t.finished_at = None;
                    t.duration_ms = 0;
                    t.agent = None;
                }
            }
            EventKind::TaskSkipped { task, reason, .. } => {
                let at = event.at;
                if let Some(t) = self.task_mut(task) {
                    t.status = TaskStatus::Skipped;
                    t.skip_reason = Some(*reason);
                    t.finished_at = Some(at);
                }
            }
            EventKind::TaskDispatched {
                task,
                agent,
                attempt,
            } => {
                let at = event.at;
                if let Some(t) = self.task_mut(task) {
                    t.status = TaskStatus::InProgress;
                    t.agent = Some(agent.clone());
                    t.attempts = *attempt;
                    if t.started_at.is_none() {
                        t.started_at = Some(at);
                    }
                }
                if let Some(a) = self.agent_states.get_mut(&**agent) {
                    a.status = AgentStatus::Running;
                    a.current_task = Some(task.clone());
                }
            }
            EventKind::AttemptFinished {
                task,
                agent,
                attempt,
                duration_ms,
                output,
                error,
                calls,
                cached,
                ..
            } => {
                let attempt = *attempt;
                for call in calls {
                    self.usage.add(call);
                }
                if *cached {
                    self.usage.cached += 1;
                }
                if let Some(t) = self.task_mut(task) {
                    t.attempts = t.attempts.max(attempt);
                    t.duration_ms += duration_ms;
                    if let Some(o) = output {
                        t.output = o.clone();
                    }
                    t.error = error.clone();
                }
                if let Some(a) = self.agent_states.get_mut(&**agent) {
                    a.status = AgentStatus::Idle;
                    a.current_task = None;
                    if error.is_none() {
                        a.completed_tasks.push(task.clone());
                    }
                }
            }
            EventKind::RetryScheduled { task, .. } => {
                if let Some(t) = self.task_mut(task) {
                    t.status = TaskStatus::Pending;
                }
            }
            EventKind::TaskFinished {
                task,
                status,
                error,
            } => {
                let at = event.at;
                if let Some(t) = self.task_mut(task) {
                    t.status = *status;
                    if error.is_some() {
                        t.error = error.clone();
                    }
                    t.finished_at = Some(at);
                }
            }
            EventKind::PolicyViolation { task, rule, reason } => {
                self.error = Some(format!(
                    "policy violation: {rule} denied task `{task}`: {reason}"
                ));
            }
            EventKind::GateDecided {
                phase,
                pass,
                reason,
                rule,
            } => {
                self.gates.push(GateRecord {
                    phase: phase.clone(),
                    loop_count: self.feedback_loop_count,
                    pass: *pass,
                    reason: reason.clone(),
                    rule: rule.clone(),
                });
            }
            EventKind::FeedbackDecided {
                severity,
                summary,
                details,
                ..
            } => {
                self.feedback = Some(FeedbackPayload {
                    severity: *severity,
                    summary: summary.clone(),
                    details: details.clone(),
                });
            }
            EventKind::LoopStarted { loop_count, .. } => {
                self.feedback_loop_count = *loop_count;
            }
            EventKind::Warning { message } => self.warnings.push(message.clone()),
            EventKind::BreakerChanged { agent, state, .. } => {
                self.breakers.insert(agent.to_string(), *state);
            }
            EventKind::DeadLettered { entry } => self.dead_letters.push(entry.id.clone()),
            EventKind::Escalated { task, error } => {
                if let Some(t) = self.task_mut(task) {
                    t.error = Some(error.clone());
                    // Not running: it waits for a decision.
                    t.status = TaskStatus::Pending;
                }
                // Until a `Decided` event: even if the process dies before the run is marked
                // WAITING, a resume knows this task needs a decision.
                if !self.awaiting_decision.contains(task) {
                    self.awaiting_decision.push(task.clone());
                }
            }
            EventKind::Decided { task, decision, .. } => {
                self.awaiting_decision.retain(|t| t != task);
                if *decision == Decision::Retry {
                    if let Some(t) = self.task_mut(task) {
                        t.status = TaskStatus::Pending;
                    }
                }
            }
            EventKind::RunResumed { rerun } => {
                self.status = Some(RunStatus::InProgress);
                self.completed_at = None;
                self.error = None;
                for name in rerun {
                    if let Some(t) = self.task_mut(name) {
                        t.status = TaskStatus::Pending;
                    }
                }
            }
            EventKind::RunWaiting { tasks } => {
                self.status = Some(RunStatus::Waiting);
                for t in tasks {
                    if !self.awaiting_decision.contains(t) {
                        self.awaiting_decision.push(t.clone());
                    }
                }
            }
            EventKind::RunFinished { status, error } => {
                self.status = Some(*status);
                self.completed_at = Some(event.at);
                if error.is_some() {
                    self.error = error.clone();
                }
                // Nothing runs after the end.
                for a in self.agent_states.values_mut() {
                    a.status = AgentStatus::Idle;
                    a.current_task = None;
                }
            }
        }
    }

    fn names_with(&self, status: TaskStatus) -> Vec<Arc<str>> {
        self.tasks
            .iter()
            .filter(|t| t.status == status)
            .map(|t| t.task.clone())
            .collect()
    }

    /// The state in the predecessor's shape (`--json`'s last line, `show --json`).
    pub fn view(&self) -> RunStateView<'_> {
        RunStateView {
            workflow_id: &self.workflow_id,
            workflow: &self.workflow,
            status: self.status(),
            current_phase: self.current_phase.as_deref(),
            pending_tasks: self
                .tasks
                .iter()
                .filter(|t| !t.status.is_final())
                .map(|t| t.task.clone())
                .collect(),
            completed_tasks: self.names_with(TaskStatus::Completed),
            failed_tasks: self.names_with(TaskStatus::Failed),
            skipped_tasks: self.names_with(TaskStatus::Skipped),
            task_results: self.tasks.iter().map(|t| (&*t.task, t)).collect(),
            agent_states: &self.agent_states,
            feedback_loop_count: self.feedback_loop_count,
            feedback: self.feedback.as_ref(),
            gates: &self.gates,
            breakers: &self.breakers,
            dead_letters: &self.dead_letters,
            awaiting_decision: &self.awaiting_decision,
            params: &self.params,
            warnings: &self.warnings,
            started_at: self.started_at,
            completed_at: self.completed_at,
            error: self.error.as_deref(),
            usage: self.usage,
        }
    }
}

/// The serialised run state, with the seed's field names.
#[derive(Debug, Serialize)]
pub struct RunStateView<'a> {
    pub workflow_id: &'a RunId,
    pub workflow: &'a str,
    pub status: RunStatus,
    pub current_phase: Option<&'a str>,
    pub pending_tasks: Vec<Arc<str>>,
    pub completed_tasks: Vec<Arc<str>>,
    pub failed_tasks: Vec<Arc<str>>,
    pub skipped_tasks: Vec<Arc<str>>,
    pub task_results: indexmap::IndexMap<&'a str, &'a TaskResult>,
    pub agent_states: &'a BTreeMap<String, AgentState>,
    pub feedback_loop_count: u32,
    pub feedback: Option<&'a FeedbackPayload>,
    pub gates: &'a [GateRecord],
    pub breakers: &'a BTreeMap<String, BreakerState>,
    pub dead_letters: &'a [String],
    pub awaiting_decision: &'a [Arc<str>],
    pub params: &'a BTreeMap<String, serde_json::Value>,
    pub warnings: &'a [String],
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub error: Option<&'a str>,
    pub usage: Usage,
}

/// A wall-clock time in milliseconds since the Unix epoch; written as RFC 3339.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
    }

    pub fn system_time(self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.0)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.system_time())
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        let time = humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)?;
        Ok(Timestamp(
            time.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        ))
    }
}

/// The current wall-clock time.
pub fn now() -> Timestamp {
    Timestamp::now()
}
