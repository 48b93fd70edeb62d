//! The executor: walks a plan concurrently — phases in order, independent tasks at the same
//! time on pools of agents — with gates, dispatch policies, retries and the feedback loop.
//!
//! One dispatcher owns the run state; workers execute attempts and report back. Every state
//! change is an event, appended to the store before the dispatcher acts on it. See [`run`]
//! and [`resume`].

mod allowance;
mod approval;
mod artifacts;
mod attempt;
mod backoff;
mod breaker;
mod budget;
mod child;
mod context;
mod defer;
mod dispatch;
mod dispatcher;
mod escalation;
mod fanout;
mod journal;
mod observe;
mod outcome;
mod phases;
mod pool;
pub(crate) mod remote;
mod resume;
mod timers;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use observe::{
    ApprovalQuestion, DecisionFuture, Escalation, Observer, Operator, Reply, ReplyFuture,
};
pub use resume::DlqRetry;
// How the dashboard names a gate's or the feedback's rule, as the events do.
pub(crate) use dispatch::describe_rule;

use crate::agents::SetupError;
use crate::check::ir::Workflow;
use crate::config::Config;
use crate::model::{Decision, Event, RunId, RunState, TaskStatus};
use crate::plan::Plan;
use crate::store::{Store, StoreError};

/// How to run a workflow.
pub struct RunOptions {
    pub run_id: RunId,
    /// Values for the workflow's params, as JSON; defaults fill the rest.
    pub params: BTreeMap<String, serde_json::Value>,
    pub store: Arc<dyn Store>,
    pub observers: Vec<Box<dyn Observer>>,
    /// Cancelling it (Ctrl-C) cancels the run: running tasks are stopped, the run ends
    /// CANCELLED with its record kept.
    pub cancel: CancellationToken,
    /// A second stop: the run ends CANCELLED at once, without its `always` phases (a first
    /// `cancel` runs them). The same token as `cancel` makes one stop final.
    pub halt: CancellationToken,
    /// Every agent is a zero-latency mock shaped like its role (`--dry-run`).
    pub dry_run: bool,
    /// The file as the user named it, for records and headers.
    pub file: String,
    /// Who answers escalations (`on_escalation = "ask"`): a terminal prompt, a test. With none,
    /// `ask` makes the run WAIT for `conductor resume --decide`, and the default is `abort`.
    pub operator: Option<Arc<dyn Operator>>,
    /// The run's working folder: shell agents start there unless their `workdir` says
    /// otherwise, and files are written there. `None`: the workflow file's folder.
    pub workspace: Option<std::path::PathBuf>,
    /// Providers for llm agents (`conductor.toml`); empty by default.
    pub config: Arc<Config>,
    /// `--record`: every provider exchange of the run is written to this cassette.
    pub recorder: Option<Arc<crate::agents::llm::Recorder>>,
    /// Seeds the backoff jitter, for tests that need reproducible delays; by default each
    /// process draws its own, so retries of many runs do not fall in step.
    pub jitter_seed: Option<u64>,
    /// The SHA-256 of the workflow's source, already stored in the store as an artifact.
    pub source: Option<String>,
    /// Runs the workflow's child-run tasks (`on workflow "f.cond"`); without it they fail.
    pub children: Option<Arc<dyn crate::agents::child::ChildRunner>>,
    /// This run is a child run: the run and task that started it.
    pub parent: Option<crate::model::ParentRun>,
    /// The imported files and their SHA-256, already stored as artifacts.
    pub imports: BTreeMap<String, String>,
}

impl RunOptions {
    pub fn new(store: Arc<dyn Store>) -> RunOptions {
        let cancel = CancellationToken::new();
        RunOptions {
            run_id: RunId::new(),
            params: BTreeMap::new(),
            store,
            observers: Vec::new(),
            halt: cancel.clone(),
            cancel,
            dry_run: false,
            file: String::new(),
            operator: None,
            workspace: None,
            config: Arc::default(),
            recorder: None,
            jitter_seed: None,
            source: None,
            children: None,
            parent: None,
            imports: BTreeMap::new(),
        }
    }
}

/// What `resume` is asked to do besides continuing.
#[derive(Clone, Debug, Default)]
pub struct ResumeRequest {
    /// Answers to escalations and approvals: (task, decision).
    pub decisions: Vec<(String, Decision)>,
    /// Why (`--reason`), recorded with each of `decisions`.
    pub reason: Option<String>,
    /// Who decides, for the record (an approval's output names them).
    pub by: Option<String>,
    /// The workflow file changed since the run started, keeping its shape.
    pub amended: Option<Amendment>,
    /// `conductor dlq retry`: a dead-lettered task to run again.
    pub retry: Option<DlqRetry>,
    /// `--budget`: budgets given new limits (the quantities set replace the file's).
    pub budgets: Vec<(crate::model::BudgetScope, crate::model::Limits)>,
}

/// A changed workflow file a resume goes on with: the stored sources before and after, and
/// what changed in words.
#[derive(Clone, Debug, Default)]
pub struct Amendment {
    pub from: Option<String>,
    pub to: String,
    pub changes: Vec<String>,
    /// The imported files the run follows from now on.
    pub imports: BTreeMap<String, String>,
}

/// Why a run could not start, continue or be recorded. A run that fails (a gate, a policy
/// violation) is not an error: it returns its final state with status FAILED.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("missing required param `{0}`")]
    MissingParam(String),
    #[error("pool `{pool}` is placed on workers, and secret param `{param}` would travel to them in its attempts; keep the pools of a workflow with secret params local (`placement = \"local\"`)")]
    SecretsToWorkers { pool: String, param: String },
    #[error(
        "missing param `{name}`: give `--param {name}=…` or set the environment variable `{env}`"
    )]
    MissingParamEnv { name: String, env: String },
    #[error("missing secret param `{0}`: secret values are not stored, so a resume needs it again: `--param {0}=…`")]
    MissingSecret(String),
    #[error("`--param {0}=…` on resume: the run keeps the value it started with; only secret params are given again")]
    ParamOnResume(String),
    #[error("unknown param `{0}`")]
    UnknownParam(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the workflow file `{file}` no longer has the tasks run {run} started with; resume needs the file as it was (start a new run for the changed workflow)")]
    ChangedWorkflow { file: String, run: RunId },
    #[error("no task `{0}` in this workflow")]
    UnknownTask(String),
    #[error("`--budget {0}…`: the workflow sets no such budget (budgets it sets: {1})")]
    UnknownBudget(String, String),
    #[error("task `{task}` is {} now, not failed: dead letter {entry} is from an earlier pass; nothing to retry", status.as_str())]
    NotFailed {
        task: String,
        status: TaskStatus,
        entry: String,
    },
    #[error("task `{task}` belongs to phase `{phase}`, and the run stopped in phase `{current}`: a failed task is retried only in the phase its run stopped in")]
    RetryElsewhere {
        task: String,
        phase: String,
        current: String,
    },
    #[error("`--decide {0}=…`: no task `{0}` in this workflow")]
    UnknownDecisionTask(String),
    #[error("`--decide {0}=…`: task `{0}` is not waiting for a decision")]
    NotWaiting(String),
    #[error("`--decide {task}={decision}`: task `{task}` {what}; decide {expected}")]
    WrongDecision {
        task: String,
        decision: &'static str,
        what: &'static str,
        expected: &'static str,
    },
}

/// Runs a checked, planned workflow to its end and returns the final state.
pub async fn run(
    workflow: Arc<Workflow>,
    plan: Arc<Plan>,
    options: RunOptions,
) -> Result<RunState, ExecError> {
    dispatcher::Dispatcher::new(workflow, plan, options)?
        .start()
        .await
}

/// Continues a stopped run from its events (`conductor resume`, `conductor dlq retry`).
pub async fn resume(
    workflow: Arc<Workflow>,
    plan: Arc<Plan>,
    mut options: RunOptions,
    events: Vec<Event>,
    request: ResumeRequest,
) -> Result<RunState, ExecError> {
    let state = RunState::from_events(&events);
    // A dry run stays one: its resume must not call real agents.
    options.dry_run |= state.dry_run;
    options.run_id = state.workflow_id.clone();
    // The log has every param but the secret ones (masked): those come again from
    // `--param` or their environment variable.
    let given = std::mem::take(&mut options.params);
    if let Some(unknown) = given
        .keys()
        .find(|n| !workflow.params.iter().any(|p| &p.name == *n))
    {
        return Err(ExecError::UnknownParam(unknown.clone()));
    }
    let mut params = state.params.clone();
    for p in &workflow.params {
        match (p.secret, given.get(&p.name)) {
            (true, Some(v)) => {
                params.insert(p.name.clone(), v.clone());
            }
            (true, None) => {
                params.remove(&p.name);
            }
            (false, Some(_)) => return Err(ExecError::ParamOnResume(p.name.clone())),
            (false, None) => {}
        }
    }
    options.params = params;
    options.file = state.file.clone();
    dispatcher::Dispatcher::new(workflow, plan, options)?
        .resume(events, request)
        .await
}

/// Checks `--param` values against the workflow's params and fills defaults.
pub fn resolve_params(
    wf: &Workflow,
    given: &BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, serde_json::Value>, ExecError> {
    for name in given.keys() {
        if !wf.params.iter().any(|p| &p.name == name) {
            return Err(ExecError::UnknownParam(name.clone()));
        }
    }
    let mut out = BTreeMap::new();
    for p in &wf.params {
        let from_env = || {
            let name = p.env.as_ref()?;
            std::env::var(name).ok().map(serde_json::Value::String)
        };
        let value = match (given.get(&p.name), &p.default) {
            (Some(v), _) => v.clone(),
            _ if from_env().is_some() => from_env().unwrap_or_default(),
            (None, Some(d)) => d.to_json(),
            (None, None) => {
                return Err(match (&p.env, p.secret) {
                    (Some(env), _) => ExecError::MissingParamEnv {
                        name: p.name.clone(),
                        env: env.clone(),
                    },
                    (None, true) => ExecError::MissingSecret(p.name.clone()),
                    (None, false) => ExecError::MissingParam(p.name.clone()),
                })
            }
        };
        out.insert(p.name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
