//! Agents: what executes an attempt.
//!
//! Each agent kind knows two things and nothing else does: how to turn a task, its pool's
//! settings and the attempt's rendered templates into one serialisable [`AgentCall`]
//! ([`prepare`]), and how to execute that call ([`execute`]). The scheduler knows no kinds: it
//! asks for a call, hands it to a worker (in this process, or — serialised as JSON — a
//! `conductor worker` elsewhere) and records the result. Dropping an attempt's future
//! (timeout, cancellation) stops its work.

pub(crate) mod child;
mod env;
mod gate;
pub(crate) mod http;
mod identity;
pub mod llm;
mod mock;
mod process_tree;
mod script;
mod shell;
mod trace;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use env::{AgentEnv, AgentEnvOptions, SetupError};
pub use gate::{CallAsk, CallGate, CallOutcome, Reservation, Reserving};
pub use http::HttpCall;
pub use identity::idempotency_key;
pub use llm::ChatCall;
pub use mock::{dry_run_output, MockCall};
pub use script::ScriptCall;
pub use shell::ShellCall;
pub use trace::{Trace, EVENT_TAIL, LOG_HEAD, LOG_TAIL};

use crate::check::ir::{self, AgentKind, Workflow};
use crate::model::{ErrorCode, RunId, TaskError};
use crate::template::{Context, Templates};

/// One attempt as a worker receives it: who it is for, and the call to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub run_id: RunId,
    pub task: Arc<str>,
    pub phase: Arc<str>,
    /// The instance running it, e.g. `coding-01`.
    pub instance: Arc<str>,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub loop_count: u32,
    pub call: AgentCall,
}

/// Everything one attempt's agent needs, with every template rendered and nothing that points
/// into the workflow: it round-trips through JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentCall {
    Mock(MockCall),
    Shell(ShellCall),
    Http(HttpCall),
    Script(ScriptCall),
    Llm(ChatCall),
    /// What a person is asked; the scheduler waits for the answer, no worker executes it.
    Approval(ApprovalCall),
    /// A run of another workflow (`task t on workflow "f.cond"`).
    Child(child::ChildCall),
}

/// An approval task's question: its rendered `prompt`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl AgentCall {
    pub fn kind(&self) -> &'static str {
        match self {
            AgentCall::Mock(_) => "mock",
            AgentCall::Shell(_) => "shell",
            AgentCall::Http(_) => "http",
            AgentCall::Script(_) => "script",
            AgentCall::Llm(_) => "llm",
            AgentCall::Approval(_) => "approval",
            AgentCall::Child(_) => "workflow",
        }
    }

    /// Whether files in a successful output are written to the workspace: not for http
    /// agents, since a third party's answer must not write files.
    pub fn writes_files(&self) -> bool {
        !matches!(self, AgentCall::Http(_))
    }

    /// The request as the dead-letter queue keeps it (prompt, input, command…).
    pub fn describe(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// What a task's agent is asked, rendered for one attempt.
pub(crate) struct Renderer<'a> {
    pub templates: &'a Templates,
    pub ctx: &'a Context,
    /// Undefined values fail the task (false only in dry runs).
    pub strict: bool,
}

impl Renderer<'_> {
    /// Renders a template; a plain string is itself.
    pub fn render(&self, t: &ir::Template, what: &str) -> Result<String, TaskError> {
        match t.id {
            Some(id) if t.dynamic => self
                .templates
                .render(id, self.ctx, &what, self.strict)
                .map_err(|e| TaskError::fatal(ErrorCode::Template, e.0)),
            _ => Ok(t.text.clone()),
        }
    }

    pub fn render_opt(
        &self,
        t: Option<&ir::Template>,
        what: &str,
    ) -> Result<Option<String>, TaskError> {
        t.map(|t| self.render(t, what)).transpose()
    }
}

/// Whether preparing a call of `task` renders any template besides its `input` (else it needs
/// no context: the input is rendered before the call, with a context of its own).
pub(crate) fn is_templated(wf: &Workflow, task: &ir::Task) -> bool {
    let t = |t: &ir::Template| t.dynamic;
    let some = |t: Option<&ir::Template>| t.is_some_and(|t| t.dynamic);
    let agent = match &wf.agent(task.agent).kind {
        AgentKind::Llm(l) => some(l.system.as_ref()),
        AgentKind::Shell(s) => {
            s.command.iter().any(t) || some(s.workdir.as_ref()) || s.env.values().any(t)
        }
        AgentKind::Http(h) => t(&h.url) || h.headers.values().any(t) || some(h.body.as_ref()),
        AgentKind::Mock(m) => !m.output_tree.is_plain(),
        AgentKind::Child(c) => !c.params.is_plain(),
        AgentKind::Script(_) | AgentKind::Approval => false,
    };
    agent || some(task.prompt.as_deref())
}

/// What [`prepare`] needs besides the templates.
pub(crate) struct Preparing<'a> {
    pub wf: &'a Workflow,
    pub task: &'a ir::Task,
    pub attempt: u32,
    pub loop_count: u32,
    /// The task's `input`, rendered.
    pub input: &'a serde_json::Value,
    /// The script context's `tasks`: the finished tasks as rules see them.
    pub tasks: &'a dyn Fn() -> serde_json::Value,
    pub params: &'a serde_json::Value,
    pub feedback: &'a serde_json::Value,
    pub env: &'a AgentEnv,
    /// `--dry-run`: every agent is a mock shaped like its role.
    pub dry_run: bool,
}

/// The call for one attempt of `p.task`, its templates rendered.
pub(crate) fn prepare(p: &Preparing<'_>, r: &Renderer<'_>) -> Result<AgentCall, TaskError> {
    let agent = p.wf.agent(p.task.agent);
    if p.dry_run && !matches!(agent.kind, AgentKind::Mock(_)) {
        return Ok(AgentCall::Mock(MockCall::dry_run(&agent.kind)));
    }
    Ok(match &agent.kind {
        AgentKind::Mock(m) => AgentCall::Mock(mock::prepare(m, p, r)?),
        AgentKind::Shell(s) => AgentCall::Shell(shell::prepare(s, &agent.name, r)?),
        AgentKind::Http(h) => AgentCall::Http(http::prepare(h, &agent.name, r)?),
        AgentKind::Script(s) => AgentCall::Script(script::prepare(s, p)),
        AgentKind::Llm(l) => AgentCall::Llm(llm::prepare(l, agent, p, r)?),
        AgentKind::Child(c) => AgentCall::Child(child::prepare(c, &p.task.name, r)?),
        AgentKind::Approval => AgentCall::Approval(ApprovalCall {
            message: r.render_opt(
                p.task.prompt.as_deref(),
                &format!("`prompt` of task `{}`", p.task.name),
            )?,
        }),
    })
}

pub type AgentResult = Result<serde_json::Value, TaskError>;
pub type AgentFuture = Pin<Box<dyn Future<Output = AgentResult> + Send + 'static>>;

/// Executes one attempt's call. Its LLM calls and its program's output are noted in `trace`
/// as they happen, so an attempt that is stopped still has its tokens counted and its output
/// kept.
pub fn execute(attempt: &Attempt, env: Arc<AgentEnv>, trace: Trace) -> AgentFuture {
    // Only the call is copied for the agent (the attempt's names stay shared), and only the
    // kinds that pass them on pay for the identity strings.
    let (run, task, n) = (&attempt.run_id, &attempt.task, attempt.attempt);
    match &attempt.call {
        AgentCall::Mock(m) => mock::execute(m.clone(), run, task, n, attempt.loop_count),
        AgentCall::Shell(s) => {
            let mut s = s.clone();
            // The workflow's own `env` wins over a name it happens to share.
            let mine: Vec<_> = identity::env(run, task, n)
                .into_iter()
                .filter(|(k, _)| !s.env.iter().any(|(n, _)| n == k))
                .collect();
            s.env.splice(0..0, mine);
            shell::execute(s, &env, trace)
        }
        AgentCall::Http(h) => {
            let mut h = h.clone();
            let mine: Vec<_> = identity::headers(run, task, n)
                .into_iter()
                .filter(|(k, _)| !h.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(k)))
                .collect();
            h.headers.splice(0..0, mine);
            http::execute(h, &env)
        }
        AgentCall::Script(s) => script::execute(s.clone(), env, task.clone()),
        AgentCall::Llm(c) => llm::execute(c.clone(), task.clone(), env, trace),
        AgentCall::Child(c) => child::execute(c.clone(), attempt, env.children.clone()),
        AgentCall::Approval(_) => Box::pin(async {
            Err(TaskError::fatal(
                ErrorCode::Fatal,
                "an approval is decided by a person, not executed by an agent",
            ))
        }),
    }
}

#[cfg(test)]
mod tests;
