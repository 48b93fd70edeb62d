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
        // In flight when the run stopped: a crash leaves a task IN_PROGRESS, a cancellation
        // (Ctrl-C, the run timeout) CANCELLED.
        let (external, rerun): (Vec<TaskId>, Vec<TaskId>) = (0..wf.tasks.len())
            .map(|i| TaskId(i as u32))
            .filter(|t| {
                matches!(
                    self.status(*t),
                    TaskStatus::InProgress | TaskStatus::Cancelled
                )
            })
            .partition(|t| wf.task(*t).effect == Effect::External);
        let rerun_names = rerun.iter().map(|t| self.name(*t)).collect();
        self.record(EventKind::RunResumed { rerun: rerun_names });
        if let Some(a) = request.amended.clone() {
            self.record(EventKind::WorkflowAmended {
                from: a.from,
                to: a.to,
                changes: a.changes,
            });
        }
        if let Some(retry) = &request.retry {
            self.reopen_dead_letter(&retry.task, &retry.entry)?;
        }
        // `--decide T=retry` on a task that failed (not one waiting for a decision): fresh
        // attempts, with the file as it is now — the way to fix and retry.
        let mut decisions = request.decisions;
        let failed: Vec<String> = decisions
            .iter()
            .filter(|(name, d)| {
                *d == Decision::Retry
                    && !self.state.awaiting_decision.iter().any(|a| **a == **name)
                    && self.state.task(name).map(|t| t.status) == Some(TaskStatus::Failed)
            })
            .map(|(name, _)| name.clone())
            .collect();
        decisions.retain(|(name, _)| !failed.contains(name));
        for name in failed {
            self.reopen_failed(
                &name,
                &events,
                request.by.as_deref(),
                request.reason.clone(),
            )?;
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
        let now = crate::model::now().0;
        for t in awaiting {
            let asked = !decisions.iter().any(|(n, _)| **n == *self.name(t));
            if let Some(wait) = self.state.tasks[t.index()].approval.clone() {
                // Its timeout counts from the request, across stops.
                let left = Duration::from_millis(wait.due_ms().saturating_sub(now));
                self.add_timer(left, super::timers::Timer::ApprovalDue(t));
                if asked {
                    self.escalations
                        .put_ask(t, super::escalation::Ask::Approval(wait.message));
                } else {
                    self.escalations.wait(t);
                }
            } else if asked {
                let error = self.escalated_error(t);
                self.escalations.put(t, error);
            } else {
                self.escalations.wait(t);
            }
        }
        let by = request.by.clone();
        self.escalate_external(external, external_error, &mut decisions);
        for (name, decision) in decisions {
            self.apply_decision(&name, decision, by.as_deref(), request.reason.clone())?;
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
        self.reopen(t, format!("{DLQ_RETRY_BY} {entry}"), None);
        Ok(())
    }

    /// `--decide T=retry` on a failed task: in the phase the run stopped in — or, when the
    /// run had ended, in the last normal phase it ran (the run goes back there, and its
    /// `always` phases will run again at the new end).
    fn reopen_failed(
        &mut self,
        name: &str,
        events: &[Event],
        who: Option<&str>,
        reason: Option<String>,
    ) -> Result<(), ExecError> {
        let wf = self.run.wf.clone();
        let task = wf
            .task_by_name(name)
            .ok_or_else(|| ExecError::UnknownDecisionTask(name.to_string()))?;
        let phase = wf.phase(task.phase);
        if self.state.ending.is_some() || wf.phases[self.phase].always {
            let last_normal = events.iter().rev().find_map(|e| match &e.kind {
                EventKind::PhaseEntered { phase, .. }
                    if wf.phases.iter().any(|p| p.name == *phase && !p.always) =>
                {
                    Some(phase.clone())
                }
                _ => None,
            });
            if last_normal.as_deref() != Some(phase.name.as_str()) {
                return Err(ExecError::RetryElsewhere {
                    task: name.to_string(),
                    phase: phase.name.clone(),
                    current: last_normal.unwrap_or_default(),
                });
            }
            let reset = wf
                .phases
                .iter()
                .filter(|p| p.always)
                .flat_map(|p| p.tasks.iter().map(|t| self.name(*t)))
                .collect();
            self.record(EventKind::RunReopened {
                phase: phase.name.clone(),
                reset,
            });
            self.phase = task.phase.index();
        } else if task.phase.index() != self.phase {
            return Err(ExecError::RetryElsewhere {
                task: name.to_string(),
                phase: phase.name.clone(),
                current: wf.phases[self.phase].name.clone(),
            });
        }
        let by = match who {
            Some(who) => format!("{who} (conductor resume --decide)"),
            None => "conductor resume --decide".to_string(),
        };
        self.reopen(task.id, by, reason);
        Ok(())
    }

    /// Gives a failed task fresh attempts, and its dependents skipped because it failed their
    /// chance again; each decision is in the log, so a crash before they run forgets none.
    fn reopen(&mut self, t: TaskId, by: String, reason: Option<String>) {
        let wf = self.run.wf.clone();
        self.record(EventKind::Decided {
            task: self.name(t),
            decision: Decision::Retry,
            by: by.clone(),
            reason,
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
            self.record(EventKind::Decided {
                task: self.name(other),
                decision: Decision::Retry,
                by: format!("{by} (its dependency runs again)"),
                reason: None,
            });
        }
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
                    self.decide(
                        t,
                        decision,
                        "conductor resume --decide".into(),
                        None,
                        &error,
                    );
                }
                None => self.escalations.put(t, error),
            }
        }
    }

    /// `--decide TASK=…` on a task waiting for a decision: retry, skip or abort for an
    /// escalation; approve, reject, skip or abort for an approval.
    fn apply_decision(
        &mut self,
        name: &str,
        decision: Decision,
        who: Option<&str>,
        reason: Option<String>,
    ) -> Result<(), ExecError> {
        let t = self
            .run
            .wf
            .task_by_name(name)
            .map(|t| t.id)
            .ok_or_else(|| ExecError::UnknownDecisionTask(name.to_string()))?;
        if !self.escalations.is_open(t) {
            return Err(ExecError::NotWaiting(name.to_string()));
        }
        let approval = self.state.tasks[t.index()].approval.is_some();
        let wrong = |what, expected| ExecError::WrongDecision {
            task: name.to_string(),
            decision: decision.as_str(),
            what,
            expected,
        };
        if approval && decision == Decision::Retry {
            return Err(wrong(
                "waits for an approval",
                "approve, reject, skip or abort",
            ));
        }
        if !approval && decision.is_approval() {
            return Err(wrong("is not an approval task", "retry, skip or abort"));
        }
        let by = match who {
            Some(who) => format!("{who} (conductor resume --decide)"),
            None => "conductor resume --decide".to_string(),
        };
        if approval {
            let reply = super::observe::Reply {
                decision,
                by,
                reason,
            };
            self.decide_approval(t, reply);
        } else {
            let error = self.escalated_error(t);
            self.decide(t, decision, by, reason, &error);
        }
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
