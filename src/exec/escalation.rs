//! Escalation: a non-retryable failure is decided by `on_escalation`, or put to the operator
//! (one question at a time; the run goes on while they think), or — with nobody to ask — the
//! run waits for `conductor resume --decide`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::dispatcher::Dispatcher;
use super::observe::{Escalation, Operator};
use super::ExecError;
use crate::check::ir::{OnEscalation, TaskId};
use crate::model::{Decision, EventKind, RunState, RunStatus, SkipReason, TaskError};

type Answer = (TaskId, TaskError, Option<(Decision, String)>);
type Question = Pin<Box<dyn Future<Output = Answer> + Send + 'static>>;

/// The escalations of a run: who can answer, what is still to ask, what is being asked, and
/// what waits for a decision from outside.
pub(super) struct Escalations {
    operator: Option<Arc<dyn Operator>>,
    asks: VecDeque<(TaskId, TaskError)>,
    question: Option<Question>,
    waiting: Vec<TaskId>,
}

impl Escalations {
    pub(super) fn new(operator: Option<Arc<dyn Operator>>) -> Escalations {
        Escalations {
            operator,
            asks: VecDeque::new(),
            question: None,
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
        answer
    }

    /// Puts `t` to the operator, or — with none — leaves it waiting for a decision.
    pub(super) fn put(&mut self, t: TaskId, error: TaskError) {
        if self.operator.is_some() {
            self.asks.push_back((t, error));
        } else {
            self.waiting.push(t);
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

    /// `t` was decided.
    pub(super) fn close(&mut self, t: TaskId) {
        self.waiting.retain(|w| *w != t);
        self.asks.retain(|(a, _)| *a != t);
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
            OnEscalation::Skip => {
                self.decide(t, Decision::Skip, "on_escalation = \"skip\"".into(), &error)
            }
            OnEscalation::Abort => {
                let by = if configured.is_some() {
                    "on_escalation = \"abort\""
                } else {
                    "on_escalation (default \"abort\": no terminal to ask)"
                };
                self.decide(t, Decision::Abort, by.into(), &error)
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
        let (Some(operator), Some((t, error))) = (
            self.escalations.operator.clone(),
            self.escalations.asks.pop_front(),
        ) else {
            return Ok(());
        };
        let question = Escalation {
            run_id: self.run.id.clone(),
            task: self.name(t).to_string(),
            attempts: self.state.tasks[t.index()].attempts,
            error: error.clone(),
        };
        self.escalations.question = Some(Box::pin(async move {
            let answer = operator.decide(&question).await;
            (t, error, answer)
        }));
        Ok(())
    }

    /// The operator answered (or could not: the task waits for `resume --decide`).
    pub(super) fn answered(&mut self, (t, error, answer): Answer) {
        match answer {
            Some((decision, by)) => self.decide(t, decision, by, &error),
            None => self.escalations.wait(t),
        }
    }

    /// Applies a decision on an escalated task, recording who or what made it.
    pub(super) fn decide(&mut self, t: TaskId, decision: Decision, by: String, error: &TaskError) {
        self.escalations.close(t);
        self.record(EventKind::Decided {
            task: self.name(t),
            decision,
            by: by.clone(),
        });
        match decision {
            Decision::Retry => self.ready.push_back(t),
            Decision::Skip => self.skip(t, SkipReason::Decision, Some(format!("decided by {by}"))),
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
