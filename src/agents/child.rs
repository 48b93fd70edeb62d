//! Child-run tasks (`task t on workflow "f.cond"`): the call names the child file, its
//! rendered params and the child run's id; running it is the application's work (it opens
//! the workflow, leases the run and drives it), handed in as a [`ChildRunner`].

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{AgentFuture, Attempt};
use crate::check::ir::ChildAgent;
use crate::model::{ErrorCode, RunId, TaskError};

/// One attempt of a child-run task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildCall {
    /// As written after `on workflow`.
    pub written: String,
    /// Resolved against the parent file's folder.
    pub path: PathBuf,
    /// The task's `params`, rendered.
    pub params: serde_json::Value,
    /// The child run's id, chosen (and recorded) by the parent before it starts.
    pub run: RunId,
}

/// Runs (or goes on with) a child run and answers with its declared outputs.
pub trait ChildRunner: Send + Sync {
    /// Runs `call.run` to its end. The returned future, dropped, stops the child: its run
    /// ends CANCELLED.
    fn run(&self, attempt: &Attempt, call: ChildCall) -> AgentFuture;
}

pub(super) fn prepare(
    c: &ChildAgent,
    task: &str,
    r: &super::Renderer<'_>,
) -> Result<ChildCall, TaskError> {
    let params = c
        .params
        .render(
            r.templates,
            r.ctx,
            &format_args!("`params` of task `{task}`"),
            r.strict,
        )
        .map_err(|e| TaskError::fatal(ErrorCode::Template, e.0))?;
    Ok(ChildCall {
        written: c.written.clone(),
        path: c.path.clone(),
        params,
        // Set by the scheduler, which records it first.
        run: RunId::from(""),
    })
}

pub(super) fn execute(
    call: ChildCall,
    attempt: &Attempt,
    runner: Option<Arc<dyn ChildRunner>>,
) -> AgentFuture {
    match runner {
        Some(r) => r.run(attempt, call),
        None => Box::pin(async {
            Err(TaskError::fatal(
                ErrorCode::Fatal,
                "child runs need the process that drives the parent run (they do not run on \
                 `conductor worker`)",
            ))
        }),
    }
}
