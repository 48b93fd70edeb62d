//! Agents: what executes a task. Each pool of a workflow gets one [`Agent`] shared by its
//! instances; the executor calls it once per attempt and enforces the timeout by dropping the
//! future (so an agent's work must stop when its future is dropped).

mod http;
mod mock;
mod script;
mod shell;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use http::{HttpAgent, HttpCall};
pub use mock::{dry_run_output, MockAgent};
pub use script::ScriptAgent;
pub use shell::ShellAgent;

use crate::check::ir::{self, AgentKind};
use crate::model::{ErrorCode, FeedbackPayload, RunId, TaskError};

/// Everything an agent gets for one attempt.
#[derive(Clone, Debug)]
pub struct TaskRequest {
    pub run_id: RunId,
    pub task: Arc<str>,
    pub phase: Arc<str>,
    /// The instance running it, e.g. `coding-01`.
    pub instance: Arc<str>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub loop_count: u32,
    /// The rendered prompt (llm agents).
    pub prompt: Option<String>,
    /// The task's `input`, its templates rendered.
    pub input: serde_json::Value,
    /// Outputs of the tasks in its `after` list, by name.
    pub upstream: serde_json::Map<String, serde_json::Value>,
    pub params: Arc<serde_json::Value>,
    pub feedback: Option<FeedbackPayload>,
    /// For shell agents: the command with its templates rendered.
    pub shell: Option<ShellCommand>,
    /// For script agents: every finished task of the run, as rules see `tasks`.
    pub tasks: Option<serde_json::Value>,
    /// For http agents: the request with its templates rendered.
    pub http: Option<HttpCall>,
}

/// A shell agent's command for one attempt: argv (each element one argument), the working
/// directory and extra environment.
#[derive(Clone, Debug, PartialEq)]
pub struct ShellCommand {
    pub argv: Vec<String>,
    pub workdir: Option<String>,
    pub env: Vec<(String, String)>,
}

pub type AgentResult = Result<serde_json::Value, TaskError>;
pub type AgentFuture = Pin<Box<dyn Future<Output = AgentResult> + Send + 'static>>;

/// Executes tasks for one pool.
pub trait Agent: Send + Sync {
    fn execute(&self, request: TaskRequest) -> AgentFuture;
}

/// How agents are made for a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AgentMode {
    /// Each pool's declared kind.
    #[default]
    Real,
    /// Every pool becomes a zero-latency mock with outputs shaped like its role's
    /// (`conductor run --dry-run`): exercises rules, gates and loops without side effects.
    DryRun,
}

/// Builds the agent of a pool, or says why it cannot run here. `base` is the folder relative
/// paths (a shell `workdir`) resolve from; `workspace` is the run's working folder.
pub fn build(
    agent: &ir::Agent,
    mode: AgentMode,
    base: &std::path::Path,
    workspace: Option<&std::path::Path>,
    modules: &Arc<crate::policy::ModuleSet>,
) -> Result<Arc<dyn Agent>, String> {
    if mode == AgentMode::DryRun {
        return Ok(Arc::new(MockAgent::dry_run(agent)));
    }
    match &agent.kind {
        AgentKind::Mock(m) => Ok(Arc::new(MockAgent::new(m))),
        AgentKind::Shell(_) => Ok(Arc::new(ShellAgent::new(
            base.to_path_buf(),
            workspace.map(std::path::Path::to_path_buf),
        ))),
        AgentKind::Script(s) => Ok(Arc::new(ScriptAgent::new(
            modules.clone(),
            s.function.clone(),
        ))),
        AgentKind::Http(_) => Ok(Arc::new(HttpAgent::new()?)),
        other => Err(format!(
            "agent `{}` is a `{}` agent, which this build cannot run yet; use `--dry-run` to \
             replace every agent with a mock",
            agent.name,
            other.name()
        )),
    }
}

/// An error for a task the agent could not start.
pub fn not_runnable(message: impl Into<String>) -> TaskError {
    TaskError::fatal(ErrorCode::Fatal, message)
}
