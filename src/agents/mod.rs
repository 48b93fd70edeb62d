//! Agents: what executes a task. Each pool of a workflow gets one [`Agent`] shared by its
//! instances; the executor calls it once per attempt and enforces the timeout by dropping the
//! future (so an agent's work must stop when its future is dropped).

pub(crate) mod http;
pub mod llm;
mod mock;
mod script;
mod shell;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use http::{HttpAgent, HttpCall};
pub use llm::LlmAgent;
pub use mock::{dry_run_output, MockAgent};
pub use script::ScriptAgent;
pub use shell::ShellAgent;

use crate::check::ir::{self, AgentKind};
use crate::model::{ErrorCode, FeedbackPayload, LlmCall, RunId, TaskError};

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
    /// For llm agents: the agent's own `system` prompt, rendered (else the role's).
    pub system: Option<String>,
    /// Where the attempt's LLM calls are noted, whether it succeeds, fails or times out.
    pub calls: CallLog,
}

/// The LLM calls of one attempt, shared between the agent and the executor.
#[derive(Clone, Debug, Default)]
pub struct CallLog(Arc<std::sync::Mutex<Vec<LlmCall>>>);

impl CallLog {
    pub fn push(&self, call: LlmCall) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(call);
    }

    pub fn take(&self) -> Vec<LlmCall> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
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

/// Builds the agents of a run's pools. Pools on the same LLM provider share one client.
pub struct Builder<'a> {
    pub mode: AgentMode,
    /// Where relative paths (a shell `workdir`) resolve from: the workflow's folder.
    pub base: &'a std::path::Path,
    /// The run's working folder.
    pub workspace: Option<&'a std::path::Path>,
    pub modules: Arc<crate::policy::ModuleSet>,
    pub config: &'a crate::config::Config,
    /// `--record`: every provider exchange is written to this cassette.
    pub recorder: Option<Arc<llm::Recorder>>,
    providers: std::collections::HashMap<String, Arc<dyn llm::Provider>>,
}

impl<'a> Builder<'a> {
    pub fn new(
        mode: AgentMode,
        base: &'a std::path::Path,
        workspace: Option<&'a std::path::Path>,
        modules: Arc<crate::policy::ModuleSet>,
        config: &'a crate::config::Config,
        recorder: Option<Arc<llm::Recorder>>,
    ) -> Builder<'a> {
        Builder {
            mode,
            base,
            workspace,
            modules,
            config,
            recorder,
            providers: std::collections::HashMap::new(),
        }
    }

    /// Builds the agent of a pool, or says why it cannot run here.
    pub fn build(&mut self, agent: &ir::Agent) -> Result<Arc<dyn Agent>, String> {
        if self.mode == AgentMode::DryRun {
            return Ok(Arc::new(MockAgent::dry_run(agent)));
        }
        match &agent.kind {
            AgentKind::Mock(m) => Ok(Arc::new(MockAgent::new(m))),
            AgentKind::Shell(_) => Ok(Arc::new(
                ShellAgent::new(
                    self.base.to_path_buf(),
                    self.workspace.map(std::path::Path::to_path_buf),
                )
                .without_env(
                    self.config
                        .providers
                        .values()
                        .filter_map(|p| p.api_key_env.clone()),
                ),
            )),
            AgentKind::Script(s) => Ok(Arc::new(ScriptAgent::new(
                self.modules.clone(),
                s.function.clone(),
            ))),
            AgentKind::Http(_) => Ok(Arc::new(HttpAgent::new()?)),
            AgentKind::Llm(l) => {
                let provider = match self.providers.get(&l.provider) {
                    Some(p) => p.clone(),
                    None => {
                        let p = llm::provider(&l.provider, self.config, self.recorder.as_ref())
                            .map_err(|e| format!("agent `{}`: {e}", agent.name))?;
                        self.providers.insert(l.provider.clone(), p.clone());
                        p
                    }
                };
                Ok(Arc::new(LlmAgent::new(agent, l, self.config, provider)?))
            }
        }
    }
}

/// An error for a task the agent could not start.
pub fn not_runnable(message: impl Into<String>) -> TaskError {
    TaskError::fatal(ErrorCode::Fatal, message)
}
