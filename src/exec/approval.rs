//! Approval tasks: a person decides. When its turn comes the task's `prompt` is rendered and
//! recorded (`approval_requested`), then put to the operator at the terminal — or, with nobody
//! to ask, the run waits for `conductor resume RUN --decide TASK=approve|reject`. The decision,
//! who made it and why become the task's output (`{ decision, by, reason }`); a rejection is
//! the task's verdict (FAILED, not retried). No decision within the task's `timeout` rejects.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::dispatcher::Dispatcher;
use super::escalation::Ask;
use super::observe::Reply;
use super::timers::Timer;
use crate::agents::AgentCall;
use crate::check::ir::TaskId;
use crate::model::{Decision, ErrorCode, EventKind, TaskError, TaskStatus};

impl Dispatcher {
    /// An approval task's turn: its question is rendered and recorded, then asked.
    pub(super) fn request_approval(&mut self, t: TaskId) {
        let wf = self.run.wf.clone();
        let task = wf.task(self.def_id(t));
        let attempt = self.state.tasks[t.index()].attempts + 1;
        let pool: Arc<str> = Arc::from(wf.agent(task.agent).name.as_str());
        let message = match self.prepare(t, attempt, pool) {
            Ok(a) => match a.call {
                AgentCall::Approval(c) => c.message,
                _ => None,
            },
            Err(error) => return self.gave_up(t, error),
        };
        self.record(EventKind::ApprovalRequested {
            task: self.name(t),
            message: message.clone(),
            timeout_ms: task.timeout.as_millis() as u64,
        });
        self.await_approval(t, message, task.timeout);
    }

    /// Puts an approval to the operator (or leaves it waiting); after `left` it is rejected.
    pub(super) fn await_approval(&mut self, t: TaskId, message: Option<String>, left: Duration) {
        self.add_timer(left, Timer::ApprovalDue(t));
        self.escalations.put_ask(t, Ask::Approval(message));
    }

    /// An approval's timeout: rejected, unless decided meanwhile.
    pub(super) fn approval_due(&mut self, t: TaskId) {
        if self.state.tasks[t.index()].approval.is_none() {
            return;
        }
        let timeout = crate::text::duration(self.run.wf.task(self.def_id(t)).timeout);
        self.decide_approval(
            t,
            Reply {
                decision: Decision::Reject,
                by: format!("the approval's timeout of {timeout}"),
                reason: Some(format!("no decision within {timeout}")),
            },
        );
    }

    /// Applies an answer to an approval task: approve completes it, reject fails it (its
    /// output says who and why in both cases); skip and abort work as for an escalation.
    pub(super) fn decide_approval(&mut self, t: TaskId, reply: Reply) {
        let Reply {
            decision,
            by,
            reason,
        } = reply;
        if !decision.is_approval() {
            let error = TaskError::failure(
                ErrorCode::Rejected,
                format!("the approval was not given ({} by {by})", decision.as_str()),
            );
            return self.decide(t, decision, by, reason, &error);
        }
        let requested = self.state.tasks[t.index()]
            .approval
            .as_ref()
            .map_or(self.journal.clock, |a| a.requested_at);
        self.escalations.close(t);
        self.record(EventKind::Decided {
            task: self.name(t),
            decision,
            by: by.clone(),
            reason: reason.clone(),
        });
        let output = json!({ "decision": decision.as_str(), "by": by, "reason": reason });
        let error = (decision == Decision::Reject).then(|| {
            let why = reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            TaskError::failure(ErrorCode::Rejected, format!("rejected by {by}{why}"))
        });
        let wf = self.run.wf.clone();
        self.record(EventKind::AttemptFinished {
            task: self.name(t),
            agent: Arc::from(wf.agent(wf.task(self.def_id(t)).agent).name.as_str()),
            attempt: self.state.tasks[t.index()].attempts + 1,
            duration_ms: self.journal.clock.0.saturating_sub(requested.0),
            output: Some(output),
            error: error.clone(),
            calls: Vec::new(),
            cut_off: Default::default(),
            artifacts: Vec::new(),
            cached: false,
            tail: Default::default(),
        });
        self.record(EventKind::TaskFinished {
            task: self.name(t),
            status: if error.is_some() {
                TaskStatus::Failed
            } else {
                TaskStatus::Completed
            },
            error,
        });
        self.task_final(t);
    }
}
