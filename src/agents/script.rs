//! The `script` agent: a function of a `use`d rhai module computes the output from the task's
//! context, in the same sandbox as rules (no file, network or process access; bounded).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{AgentEnv, AgentFuture, Preparing};
use crate::check::ir;
use crate::model::{ErrorCode, TaskError};
use crate::policy::PolicyHost;

/// One script attempt: the modules' source (so a worker elsewhere can compile them), the
/// function, and the context it is called with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptCall {
    pub function: String,
    pub modules: Vec<Arc<str>>,
    pub ctx: serde_json::Value,
}

/// Identifies a set of module sources, to compile each set once per process.
pub(super) fn modules_hash(sources: &[Arc<str>]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sources.hash(&mut h);
    h.finish()
}

/// The call for one attempt: the context of DSL.md (task, phase, attempt, loop_count, params,
/// input, tasks, feedback).
pub(super) fn prepare(s: &ir::ScriptAgent, p: &Preparing<'_>) -> ScriptCall {
    let ctx = serde_json::json!({
        "task": p.task.name,
        "phase": p.wf.phase(p.task.phase).name,
        "attempt": p.attempt,
        "loop_count": p.loop_count,
        "params": p.params,
        "input": p.input,
        "tasks": (p.tasks)(),
        "feedback": p.feedback,
    });
    ScriptCall {
        function: s.function.clone(),
        modules: p.wf.module_sources(),
        ctx,
    }
}

/// Calls the function off the async workers (it is bounded CPU work).
pub(super) fn execute(call: ScriptCall, env: Arc<AgentEnv>, task: Arc<str>) -> AgentFuture {
    Box::pin(async move {
        let modules = env.modules(&call.modules)?;
        let function = call.function.clone();
        // Dropped when the attempt ends — its timeout or a cancel drops this future — which
        // stops the script, rather than leaving it to compute on a thread the process waits
        // for when it exits.
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let flag = stop.0.clone();
        let result = tokio::task::spawn_blocking(move || {
            PolicyHost::get().call_script(&modules, &function, &call.ctx, flag)
        })
        .await
        .map_err(|e| TaskError::fatal(ErrorCode::AgentCrashed, format!("script worker: {e}")))?;
        result.map_err(|e| {
            let code = if e.limit {
                ErrorCode::Rule
            } else {
                ErrorCode::Fatal
            };
            TaskError::fatal(code, format!("script `{task}`: {}", e.cause))
        })
    })
}

/// Raises its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
