//! Continuing a run from its log. Everything is read from the state the log makes: completed
//! tasks never run again; a task in flight at the stop runs again unless its effect is
//! `external` (then an operator decides); a retry waiting out its backoff waits out the rest.

use std::sync::Arc;
use std::time::Duration;

use super::dispatcher::Dispatcher;
use super::{ExecError, ResumeRequest};
use crate::check::ir::{Effect, TaskId};
use crate::model::{
    Decision, ErrorCode, Event, EventKind, RunState, TaskError, TaskStatus, DLQ_RETRY_BY,
};

impl Dispatcher {
    pub(super) async fn resume(
        mut self,
        events: Vec<Event>,
        request: ResumeRequest,
    ) -> Result<RunState, ExecError> {
        self.state = RunState::from_events(&events);
        self.check_same_workflow()?;
        self.views.refresh_all(&self.state);
        self.views
            .run_changed(&self.state, self.run.env.workspace.as_deref());
        self.journal.catch_up(&events)?;
        // Observers see the history as it happened: each event with the state it made.
        self.journal.replay(&events);
        let wf = self.run.wf.clone();
        self.phase = self
            .state
            .current_phase
            .as_deref()
            .and_then(|p| wf.phases.iter().position(|ph| ph.name == p))
            .unwrap_or(0);
        // Attempts on workers that are still alive (or finished) are awaited, not run again.
        let adopted = self.adopt_remote()?;
        // In flight when the run stopped: a crash leaves a task IN_PROGRESS, a cancellation
        // (Ctrl-C, the run timeout) CANCELLED.
        let (external, rerun): (Vec<TaskId>, Vec<TaskId>) = (0..wf.tasks.len())
            .map(|i| TaskId(i as u32))
            .filter(|t| !adopted.contains(t))
            .filter(|t| {
                matches!(
                    self.status(*t),
                    TaskStatus::InProgress | TaskStatus::Cancelled
                )
            })
            .partition(|t| wf.task(*t).effect == Effect::External);
        let rerun_names = rerun.iter().map(|t| self.name(*t)).collect();
        self.record(EventKind::RunResumed { rerun: rerun_names });
        if let Some(retry) = &request.retry {
            self.reopen_dead_letter(&retry.task, &retry.entry)?;
        }
        let awaiting: Vec<TaskId> = self
            .state
            .awaiting_decision
            .iter()
            .filter_map(|name| wf.task_by_name(name).map(|t| t.id))
            .collect();
        // Escalated first, so their dependents see them as not final.
        let external_error = TaskError::fatal(
            ErrorCode::AgentCrashed,
            "the task was in flight when the run stopped, and its effect is `external`: \
             running it again could repeat a side effect",
        );
        for &t in &external {
            self.record(EventKind::Escalated {
                task: self.name(t),
                error: external_error.clone(),
            });
        }
        if self.state.ending.is_some() {
            self.views.show_all(&self.state);
        }
        match self.state.ending.is_some() && !wf.phases[self.phase].always {
            // Stopped between the end of the normal phases and the first `always` one.
            true => match wf.phases.iter().position(|p| p.always) {
                Some(first) => self.enter_phase(first),
                None => self.next_always(),
            },
            false => self.release_phase(&awaiting, &external),
        }
        let mut decisions = request.decisions;
        for t in awaiting {
            let asked = !decisions.iter().any(|(n, _)| **n == *self.name(t));
            if asked {
                let error = self.escalated_error(t);
                self.escalations.put(t, error);
            } else {
                self.escalations.wait(t);
            }
        }
        self.escalate_external(external, external_error, &mut decisions);
        for (name, decision) in decisions {
            self.apply_decision(&name, decision)?;
        }
        self.drive_to_end().await
    }

    /// The log must describe this workflow: the same tasks, in the same phases and order.
    fn check_same_workflow(&self) -> Result<(), ExecError> {
        let wf = &self.run.wf;
        let same = self.state.tasks.len() == wf.tasks.len()
            && self
                .state
                .tasks
                .iter()
                .zip(&wf.tasks)
                .all(|(r, t)| *r.task == *t.name && *r.phase == *wf.phase(t.phase).name);
        if same {
            Ok(())
        } else {
            Err(ExecError::ChangedWorkflow {
                file: self.state.file.clone(),
                run: self.state.workflow_id.clone(),
            })
        }
    }

    /// `conductor dlq retry`: the dead-lettered task gets fresh attempts in its phase, and its
    /// dependents skipped because it failed get their chance again.
    fn reopen_dead_letter(&mut self, name: &str, entry: &str) -> Result<(), ExecError> {
        let wf = self.run.wf.clone();
        let task = wf
            .task_by_name(name)
            .ok_or_else(|| ExecError::UnknownTask(name.to_string()))?;
        let t = task.id;
        if self.status(t) != TaskStatus::Failed {
            return Err(ExecError::NotFailed {
                task: name.to_string(),
                status: self.status(t),
                entry: entry.to_string(),
            });
        }
        if task.phase.index() != self.phase {
            return Err(ExecError::OtherPhase {
                task: name.to_string(),
                phase: wf.phase(task.phase).name.clone(),
                current: wf.phases[self.phase].name.clone(),
            });
        }
        self.record(EventKind::Decided {
            task: self.name(t),
            decision: Decision::Retry,
            by: format!("{DLQ_RETRY_BY} {entry}"),
        });
        let mut reopened = vec![t];
        let mut i = 0;
        while i < reopened.len() {
            let current = reopened[i];
            for &other in &wf.phases[self.phase].tasks {
                let r = &self.state.tasks[other.index()];
                if wf.task(other).after.contains(&current)
                    && r.status == TaskStatus::Skipped
                    && r.failed_for_dependents()
                    && !reopened.contains(&other)
                {
                    reopened.push(other);
                }
            }
            i += 1;
        }
        for other in reopened.into_iter().skip(1) {
            // In the log too, so a crash before they run does not forget them.
            self.record(EventKind::Decided {
                task: self.name(other),
                decision: Decision::Retry,
                by: format!("{DLQ_RETRY_BY} {entry} (its dependency runs again)"),
            });
        }
        Ok(())
    }

    /// Counts what the current phase still waits for and queues the tasks that can go now; a
    /// retry still in its backoff when the run stopped waits out the rest of it.
    fn release_phase(&mut self, awaiting: &[TaskId], external: &[TaskId]) {
        let wf = self.run.wf.clone();
        let phase_tasks = &wf.phases[self.phase].tasks;
        self.phase_open = phase_tasks
            .iter()
            .filter(|t| !self.status(**t).is_final())
            .count();
        let now = crate::model::now().0;
        for &t in phase_tasks {
            let mut remaining = 0;
            let mut failed_dep = false;
            for d in &wf.task(t).after {
                let r = &self.state.tasks[d.index()];
                if !r.status.is_final() {
                    remaining += 1;
                } else if r.failed_for_dependents() {
                    failed_dep = true;
                }
            }
            let rt = &mut self.tasks[t.index()];
            rt.remaining = remaining;
            rt.upstream_failed = failed_dep;
            if self.status(t) != TaskStatus::Pending
                || remaining > 0
                || awaiting.contains(&t)
                || external.contains(&t)
            {
                continue;
            }
            match self.state.tasks[t.index()]
                .retry_due
                .filter(|d| d.at_ms > now)
            {
                // Wall clock: if it stepped back, wait at most the backoff itself.
                Some(due) => {
                    let wait = (due.at_ms - now).min(due.delay_ms);
                    self.schedule_retry(t, Duration::from_millis(wait));
                }
                None => self.ready.push_back(t),
            }
        }
    }

    fn escalated_error(&self, t: TaskId) -> TaskError {
        self.state.tasks[t.index()]
            .error
            .clone()
            .unwrap_or_else(|| TaskError::fatal(ErrorCode::Fatal, "escalated"))
    }

    /// Tasks with an `external` effect in flight at the stop: only a person knows whether the
    /// side effect happened, so they are always asked (never decided by `on_escalation`).
    fn escalate_external(
        &mut self,
        external: Vec<TaskId>,
        error: TaskError,
        decisions: &mut Vec<(String, Decision)>,
    ) {
        for t in external {
            let error = error.clone();
            let name = self.name(t);
            match decisions.iter().position(|(n, _)| **n == *name) {
                // Answered on the command line already: no need to ask.
                Some(i) => {
                    let (_, decision) = decisions.remove(i);
                    self.decide(t, decision, "conductor resume --decide".into(), &error);
                }
                None => self.escalations.put(t, error),
            }
        }
    }

    /// `--decide TASK=…` on a task waiting for a decision.
    fn apply_decision(&mut self, name: &str, decision: Decision) -> Result<(), ExecError> {
        let t = self
            .run
            .wf
            .task_by_name(name)
            .map(|t| t.id)
            .ok_or_else(|| ExecError::UnknownDecisionTask(name.to_string()))?;
        if !self.escalations.is_open(t) {
            return Err(ExecError::NotWaiting(name.to_string()));
        }
        let error = self.escalated_error(t);
        self.decide(t, decision, "conductor resume --decide".into(), &error);
        Ok(())
    }
}

/// A dead-lettered task to retry (`conductor dlq retry`).
#[derive(Clone, Debug)]
pub struct DlqRetry {
    pub task: Arc<str>,
    /// The dead letter's id.
    pub entry: String,
}
