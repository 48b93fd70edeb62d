//! The executor: walks a plan concurrently — phases in order, independent tasks at the same
//! time on pools of agents — with gates, dispatch policies, retries and the feedback loop.
//!
//! One scheduler task owns the run state; workers execute attempts and report back through a
//! `JoinSet`. Every state change is an event, appended to the store before the scheduler acts
//! on it. See [`run`].

pub mod artifacts;
mod context;
mod observe;
mod scheduler;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

pub use observe::{HumanView, JsonLines, Observer};

use crate::agents::AgentMode;
use crate::check::ir::Workflow;
use crate::model::{RunId, RunState};
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
    pub agents: AgentMode,
    /// The file as the user named it, for records and headers.
    pub file: String,
    /// Who answers escalations (`on_escalation = "ask"`): a terminal prompt, a test. With none,
    /// `ask` makes the run WAIT for `conductor resume --decide`, and the default is `abort`.
    pub escalations: Option<Arc<dyn Escalations>>,
    /// The run's working folder: shell agents start there unless their `workdir` says
    /// otherwise. `None`: the workflow file's folder.
    pub workspace: Option<std::path::PathBuf>,
    /// Providers for llm agents (`conductor.toml`); empty by default.
    pub config: Arc<crate::config::Config>,
    /// `--record`: every provider exchange of the run is written to this cassette.
    pub recorder: Option<Arc<crate::agents::llm::Recorder>>,
}

/// A non-retryable failure put to an operator.
#[derive(Clone, Debug)]
pub struct Escalation {
    pub run_id: RunId,
    pub task: String,
    pub attempts: u32,
    pub error: crate::model::TaskError,
}

/// A decision and who made it, or `None` when nobody can answer now.
pub type DecisionFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Option<(crate::model::Decision, String)>> + Send + 'a>,
>;

/// Answers escalations.
pub trait Escalations: Send + Sync {
    fn decide<'a>(&'a self, question: &'a Escalation) -> DecisionFuture<'a>;
}

impl RunOptions {
    pub fn new(store: Arc<dyn Store>) -> RunOptions {
        RunOptions {
            run_id: RunId::new(),
            params: BTreeMap::new(),
            store,
            observers: Vec::new(),
            cancel: CancellationToken::new(),
            agents: AgentMode::Real,
            file: String::new(),
            escalations: None,
            workspace: None,
            config: Arc::default(),
            recorder: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("missing required param `{0}`")]
    MissingParam(String),
    #[error("unknown param `{0}`")]
    UnknownParam(String),
    #[error("{0}")]
    Agent(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs a checked, planned workflow to its end and returns the final state. Errors are the
/// problems that prevent a run from starting or being recorded; a run that fails (a gate, a
/// policy violation) returns `Ok` with status FAILED.
pub async fn run(
    workflow: Arc<Workflow>,
    plan: Arc<Plan>,
    options: RunOptions,
) -> Result<RunState, ExecError> {
    let scheduler = scheduler::Scheduler::new(workflow, plan, options)?;
    scheduler.run().await
}

/// Continues a stopped run from its events (`conductor resume`), applying `decisions` to tasks
/// waiting for one; `retry` = (task, dead-letter entry) re-runs a dead-lettered task
/// (`conductor dlq retry`).
pub async fn resume(
    workflow: Arc<Workflow>,
    plan: Arc<Plan>,
    mut options: RunOptions,
    events: Vec<crate::model::Event>,
    decisions: Vec<(String, crate::model::Decision)>,
    retry: Option<(String, String)>,
) -> Result<RunState, ExecError> {
    let state = RunState::from_events(&events);
    if state.dry_run {
        // A dry run stays one: its resume must not call real agents.
        options.agents = AgentMode::DryRun;
    }
    options.run_id = state.workflow_id.clone();
    options.params = state.params.clone();
    options.file = state.file.clone();
    let scheduler = scheduler::Scheduler::new(workflow, plan, options)?;
    scheduler.resume(events, decisions, retry).await
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
        let value = match (given.get(&p.name), &p.default) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => d.to_json(),
            (None, None) => return Err(ExecError::MissingParam(p.name.clone())),
        };
        out.insert(p.name.clone(), value);
    }
    Ok(out)
}
