//! Escalation: a non-retryable failure is decided by `on_escalation`, or put to the operator
//! (one question at a time; the run goes on while they think), or — with nobody to ask — the
//! run waits for `conductor resume --decide`. Approval tasks are put the same way.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::dispatcher::Dispatcher;
use super::observe::{ApprovalQuestion, Escalation, Operator, Reply};
use super::ExecError;
use crate::check::ir::{OnEscalation, TaskId};
use crate::model::{Decision, EventKind, RunState, RunStatus, SkipReason, TaskError};

/// What a task waits for a decision on.
#[derive(Clone, Debug)]
pub(super) enum Ask {
    /// A failure nobody decided: retry, skip or abort.
    Escalation(TaskError),
    /// An approval task, with its message: approve or reject.
    Approval(Option<String>),
}

pub(super) type Answer = (TaskId, Ask, Option<Reply>);
type Question = Pin<Box<dyn Future<Output = Answer> + Send + 'static>>;

/// The escalations of a run: who can answer, what is still to ask, what is being asked, and
/// what waits for a decision from outside.
pub(super) struct Escalations {
    operator: Option<Arc<dyn Operator>>,
    asks: VecDeque<(TaskId, Ask)>,
    question: Option<Question>,
    /// The task the open question is about.
    asked: Option<TaskId>,
    waiting: Vec<TaskId>,
}

impl Escalations {
    pub(super) fn new(operator: Option<Arc<dyn Operator>>) -> Escalations {
        Escalations {
            operator,
            asks: VecDeque::new(),
            question: None,
            asked: None,
            waiting: Vec::new(),
        }
    }

    pub fn operator(&self) -> Option<Arc<dyn Operator>> {
        self.operator.clone()
    }

    pub fn has_operator(&self) -> bool {
        self.operator.is_some()
    }

    /// A question is open.
    pub(super) fn asking(&self) -> bool {
        self.question.is_some()
    }

    /// Tasks wait for a decision from outside the run.
    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty() && self.asks.is_empty()
    }

    /// The open question's answer.
    pub(super) async fn answer(&mut self) -> Answer {
        let answer = match self.question.as_mut() {
            Some(q) => q.await,
            None => std::future::pending().await,
        };
        self.question = None;
        self.asked = None;
        answer
    }

    /// Puts `t` to the operator, or — with none — leaves it waiting for a decision.
    pub(super) fn put(&mut self, t: TaskId, error: TaskError) {
        self.put_ask(t, Ask::Escalation(error));
    }

    pub(super) fn put_ask(&mut self, t: TaskId, ask: Ask) {
        if self.operator.is_some() {
            self.asks.push_back((t, ask));
        } else {
            self.wait(t);
        }
    }

    /// Leaves `t` waiting for a decision from outside the run.
    pub(super) fn wait(&mut self, t: TaskId) {
        if !self.waiting.contains(&t) {
            self.waiting.push(t);
        }
    }

    /// Whether `t` waits for a decision, asked or not yet asked.
    pub(super) fn is_open(&self, t: TaskId) -> bool {
        self.waiting.contains(&t) || self.asks.iter().any(|(a, _)| *a == t)
    }

    /// `t` was decided (an open question about it is withdrawn: its timeout decided).
    pub(super) fn close(&mut self, t: TaskId) {
        self.waiting.retain(|w| *w != t);
        self.asks.retain(|(a, _)| *a != t);
        if self.asked == Some(t) {
            self.question = None;
            self.asked = None;
        }
    }

    /// The names of the tasks waiting, for `run_waiting`.
    pub(super) fn waiting_names(&self, state: &RunState) -> Vec<Arc<str>> {
        self.waiting
            .iter()
            .map(|t| state.tasks[t.index()].task.clone())
            .collect()
    }
}

impl Dispatcher {
    /// A non-retryable failure: `on_escalation` decides, or the operator is asked.
    pub(super) fn escalate(&mut self, t: TaskId, error: TaskError) {
        self.record(EventKind::Escalated {
            task: self.name(t),
            error: error.clone(),
        });
        let configured = self.run.wf.settings.on_escalation;
        let mode = configured.unwrap_or(if self.escalations.has_operator() {
            OnEscalation::Ask
        } else {
            OnEscalation::Abort
        });
        match mode {
            OnEscalation::Skip => self.decide(
                t,
                Decision::Skip,
                "on_escalation = \"skip\"".into(),
                None,
                &error,
            ),
            OnEscalation::Abort => {
                let by = if configured.is_some() {
                    "on_escalation = \"abort\""
                } else {
                    "on_escalation (default \"abort\": no terminal to ask)"
                };
                self.decide(t, Decision::Abort, by.into(), None, &error)
            }
            OnEscalation::Ask => self.escalations.put(t, error),
        }
    }

    /// Puts the next escalation to the operator. The answer arrives in the dispatcher's loop,
    /// which goes on meanwhile: completions, timers, Ctrl-C and the run timeout are not held
    /// up.
    pub(super) fn ask_next(&mut self) -> Result<(), ExecError> {
        if self.escalations.asking() || self.escalations.asks.is_empty() {
            return Ok(());
        }
        self.flush()?;
        let (Some(operator), Some((t, ask))) = (
            self.escalations.operator.clone(),
            self.escalations.asks.pop_front(),
        ) else {
            return Ok(());
        };
        let run_id = self.run.id.clone();
        let task = self.name(t).to_string();
        self.escalations.asked = Some(t);
        self.escalations.question = Some(match ask {
            Ask::Escalation(error) => {
                let question = Escalation {
                    run_id,
                    task,
                    attempts: self.state.tasks[t.index()].attempts,
                    error: error.clone(),
                };
                Box::pin(async move {
                    let answer = operator.decide(&question).await;
                    let reply = answer.map(|(decision, by)| Reply {
                        decision,
                        by,
                        reason: None,
                    });
                    (t, Ask::Escalation(error), reply)
                })
            }
            Ask::Approval(message) => {
                let question = ApprovalQuestion {
                    run_id,
                    task,
                    message: message.clone(),
                };
                Box::pin(async move {
                    let reply = operator.approve(&question).await;
                    (t, Ask::Approval(message), reply)
                })
            }
        });
        Ok(())
    }

    /// The operator answered (or could not: the task waits for `resume --decide`).
    pub(super) fn answered(&mut self, (t, ask, reply): Answer) {
        match (reply, ask) {
            (Some(r), Ask::Escalation(error)) => self.decide(t, r.decision, r.by, r.reason, &error),
            (Some(r), Ask::Approval(_)) => self.decide_approval(t, r),
            (None, _) => self.escalations.wait(t),
        }
    }

    /// Applies a decision on an escalated task, recording who or what made it.
    pub(super) fn decide(
        &mut self,
        t: TaskId,
        decision: Decision,
        by: String,
        reason: Option<String>,
        error: &TaskError,
    ) {
        self.escalations.close(t);
        self.record(EventKind::Decided {
            task: self.name(t),
            decision,
            by: by.clone(),
            reason,
        });
        match decision {
            Decision::Retry => self.ready.push_back(t),
            Decision::Skip => self.skip(t, SkipReason::Decision, Some(format!("decided by {by}"))),
            // Only approvals are approved or rejected; callers check before deciding.
            Decision::Approve | Decision::Reject => {}
            Decision::Abort => {
                let name = self.name(t);
                self.fail_task(t, error.clone());
                self.finish = Some((
                    RunStatus::Failed,
                    Some(format!(
                        "task `{name}` failed ({error}); the run was aborted by {by}"
                    )),
                ));
            }
        }
    }
}
