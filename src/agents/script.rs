//! The `script` agent: a function of a `use`d rhai module computes the output from the task's
//! context, in the same sandbox as rules (no file, network or process access; bounded).

use std::sync::Arc;

use super::{Agent, AgentFuture, TaskRequest};
use crate::model::{ErrorCode, TaskError};
use crate::policy::{ModuleSet, PolicyHost};

pub struct ScriptAgent {
    modules: Arc<ModuleSet>,
    function: String,
}

impl ScriptAgent {
    pub fn new(modules: Arc<ModuleSet>, function: String) -> ScriptAgent {
        ScriptAgent { modules, function }
    }
}

impl Agent for ScriptAgent {
    fn execute(&self, req: TaskRequest) -> AgentFuture {
        let modules = self.modules.clone();
        let function = self.function.clone();
        Box::pin(async move {
            let tasks = req.tasks.clone().unwrap_or_else(|| {
                req.upstream
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            serde_json::json!({ "status": "completed", "output": v }),
                        )
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            });
            let ctx = serde_json::json!({
                "task": &*req.task,
                "phase": &*req.phase,
                "attempt": req.attempt,
                "loop_count": req.loop_count,
                "params": &*req.params,
                "input": req.input,
                "tasks": tasks,
                "feedback": req.feedback.as_ref().map(|f| serde_json::json!({
                    "severity": f.severity.as_str(), "summary": f.summary, "details": f.details })),
            });
            // Bounded CPU work: off the async workers.
            let result = tokio::task::spawn_blocking(move || {
                PolicyHost::get().call_script(&modules, &function, &ctx)
            })
            .await
            .map_err(|e| {
                TaskError::fatal(ErrorCode::AgentCrashed, format!("script worker: {e}"))
            })?;
            result.map_err(|e| {
                let code = if e.limit {
                    ErrorCode::Rule
                } else {
                    ErrorCode::Fatal
                };
                TaskError::fatal(code, format!("script `{}`: {}", req.task, e.cause))
            })
        })
    }
}
