//! Continuing a run from its log. Everything is read from the state the log makes: completed
//! tasks never run again; a task in flight at the stop runs again unless its effect is
//! `external` (then an operator decides); a retry waiting out its backoff waits out the rest.

use std::sync::Arc;
use std::time::Duration;

use super::dispatcher::Dispatcher;
use super::{ExecError, ResumeRequest};
use crate::check::ir::{Effect, OnBudget, TaskId};
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
        self.link_instances();
        // A wrap-up the stopped process had begun goes on: its task failed over budget.
        // A raised budget (`--budget`) ends it.
        self.wrapping_up = self.state.ending.is_none()
            && request.budgets.is_empty()
            && self.state.tasks.iter().any(|t| {
                let over = t.error.as_ref().map(|e| e.code) == Some(ErrorCode::BudgetExceeded);
                let name = t.instance.as_ref().map_or(&t.task, |i| &i.of);
                over && self
                    .run
                    .wf
                    .task_by_name(name)
                    .is_some_and(|d| self.run.wf.budgets.on_budget(d) == OnBudget::WrapUp)
            });
        let wf = self.run.wf.clone();
        self.phase = self
            .state
            .current_phase
            .as_deref()
            .and_then(|p| wf.phases.iter().position(|ph| ph.name == p))
            .unwrap_or(0);
        // Refuse before anything is shown or recorded.
        if let Some(retry) = &request.retry {
            self.check_dead_letter(&retry.task, &retry.entry, &events)?;
        }
        for (scope, _) in &request.budgets {
            super::budget::check_scope(&wf, scope)?;
        }
        self.views.refresh_all(&self.state);
        self.views
            .run_changed(&self.state, self.run.env.workspace.as_deref());
        self.journal.catch_up(&events)?;
        // Observers see the history as it happened: each event with the state it made.
        self.journal.replay(&events);
        // Attempts on workers that are still alive (or finished) are awaited, not run again.
        let adopted = self.adopt_remote()?;
        // In flight when the run stopped: a crash leaves a task IN_PROGRESS, a cancellation
        // (Ctrl-C, the run timeout) CANCELLED.
        // (A fan-out task is IN_PROGRESS while its instances run: it is not rerun.)
        let (external, rerun): (Vec<TaskId>, Vec<TaskId>) = (0..self.state.tasks.len())
            .map(|i| TaskId(i as u32))
            .filter(|t| !adopted.contains(t))
            .filter(|t| {
                matches!(
                    self.status(*t),
                    TaskStatus::InProgress | TaskStatus::Cancelled
                ) && !self.fans_out(*t)
            })
            .partition(|t| wf.task(self.def_id(*t)).effect == Effect::External);
        let rerun_names = rerun.iter().map(|t| self.name(*t)).collect();
        self.record(EventKind::RunResumed { rerun: rerun_names });
        if let Some(a) = request.amended.clone() {
            self.record(EventKind::WorkflowAmended {
                from: a.from,
                to: a.to,
                changes: a.changes,
                imports: a.imports,
            });
        }
        for (scope, limits) in &request.budgets {
            self.record(EventKind::BudgetRaised {
                scope: scope.clone(),
                limits: *limits,
            });
        }
        if let Some(retry) = &request.retry {
            self.reopen_dead_letter(&retry.task, &retry.entry, &events, request.by.as_deref())?;
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
            .filter_map(|name| self.task_id(name))
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
        self.escalate_external(external, external_error, &mut decisions, by.as_deref());
        for (name, decision) in decisions {
            self.apply_decision(&name, decision, by.as_deref(), request.reason.clone())?;
        }
        self.drive_to_end().await
    }

    /// A task of the run by name: a declared task or a fan-out instance (`test[linux]`).
    pub(super) fn task_id(&self, name: &str) -> Option<TaskId> {
        self.state.task_index(name).map(|i| TaskId(i as u32))
    }

    /// Runtime state for the instances the log has expanded, each linked to its task.
    fn link_instances(&mut self) {
        self.grow_runtime();
        for i in 0..self.state.tasks.len() {
            let group = self.state.tasks[i]
                .instance
                .as_ref()
                .and_then(|inst| self.state.task_index(&inst.of));
            if let Some(g) = group {
                self.tasks[i].group = Some(TaskId(g as u32));
            }
        }
    }

    /// The log must describe this workflow: the same tasks, in the same phases and order.
    fn check_same_workflow(&self) -> Result<(), ExecError> {
        let wf = &self.run.wf;
        let declared = self.state.tasks.iter().filter(|r| r.instance.is_none());
        let same = declared.clone().count() == wf.tasks.len()
            && declared
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
    fn reopen_dead_letter(
        &mut self,
        name: &str,
        entry: &str,
        events: &[Event],
        who: Option<&str>,
    ) -> Result<(), ExecError> {
        let (t, back) = self.check_dead_letter(name, entry, events)?;
        if back {
            self.go_back(t);
        }
        // `DLQ_RETRY_BY` first: the state gives such a retry a fresh history.
        let by = match who {
            Some(who) => format!("{DLQ_RETRY_BY} {entry} by {who}"),
            None => format!("{DLQ_RETRY_BY} {entry}"),
        };
        self.reopen(t, by, None);
        Ok(())
    }

    /// Whether `dlq retry` can apply: the task failed, in the phase the run stopped in (see
    /// [`Dispatcher::retry_target`]).
    fn check_dead_letter(
        &self,
        name: &str,
        entry: &str,
        events: &[Event],
    ) -> Result<(TaskId, bool), ExecError> {
        let t = self
            .task_id(name)
            .ok_or_else(|| ExecError::UnknownTask(name.to_string()))?;
        if self.status(t) != TaskStatus::Failed {
            return Err(ExecError::NotFailed {
                task: name.to_string(),
                status: self.status(t),
                entry: entry.to_string(),
            });
        }
        Ok((t, self.retry_target(t, events)?))
    }

    /// `--decide T=retry` on a failed task.
    fn reopen_failed(
        &mut self,
        name: &str,
        events: &[Event],
        who: Option<&str>,
        reason: Option<String>,
    ) -> Result<(), ExecError> {
        let t = self
            .task_id(name)
            .ok_or_else(|| ExecError::UnknownDecisionTask(name.to_string()))?;
        if self.retry_target(t, events)? {
            self.go_back(t);
        }
        let by = match who {
            Some(who) => format!("{who} (conductor resume --decide)"),
            None => "conductor resume --decide".to_string(),
        };
        self.reopen(t, by, reason);
        Ok(())
    }

    /// Where a failed task can run again: in the phase the run stopped in (`false`), or —
    /// when the run had ended and ran its `always` phases — in the last normal phase it ran,
    /// which the run goes back to (`true`). Anywhere else is an error.
    fn retry_target(&self, t: TaskId, events: &[Event]) -> Result<bool, ExecError> {
        let wf = &self.run.wf;
        let phase = &wf.phase(wf.task(self.def_id(t)).phase).name;
        let elsewhere = |current: &str| ExecError::RetryElsewhere {
            task: self.name(t).to_string(),
            phase: phase.clone(),
            current: current.to_string(),
        };
        if self.state.ending.is_none() && !wf.phases[self.phase].always {
            return match wf.task(self.def_id(t)).phase.index() == self.phase {
                true => Ok(false),
                false => Err(elsewhere(&wf.phases[self.phase].name)),
            };
        }
        let last_normal = events.iter().rev().find_map(|e| match &e.kind {
            EventKind::PhaseEntered { phase, .. }
                if wf.phases.iter().any(|p| p.name == *phase && !p.always) =>
            {
                Some(phase.as_str())
            }
            _ => None,
        });
        match last_normal == Some(phase.as_str()) {
            true => Ok(true),
            false => Err(elsewhere(last_normal.unwrap_or("-"))),
        }
    }

    /// The run had ended: back to the phase of `t`; the `always` phases run again at the end.
    fn go_back(&mut self, t: TaskId) {
        let wf = self.run.wf.clone();
        let reset = wf
            .phases
            .iter()
            .filter(|p| p.always)
            .flat_map(|p| p.tasks.iter().map(|t| self.name(*t)))
            .collect();
        self.record(EventKind::RunReopened {
            phase: wf.phase(wf.task(self.def_id(t)).phase).name.clone(),
            reset,
        });
        self.phase = wf.task(self.def_id(t)).phase.index();
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
        // An instance runs again within its fan-out task, which is open again too (its
        // dependents, skipped when it failed, get their chance).
        let t = match self.tasks[t.index()].group {
            Some(g) => {
                if self.status(g).is_final() {
                    self.record(EventKind::Decided {
                        task: self.name(g),
                        decision: Decision::Retry,
                        by: format!("{by} (one of its instances runs again)"),
                        reason: None,
                    });
                }
                g
            }
            None => t,
        };
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
            for d in &wf.task(self.def_id(t)).after {
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
            let expanded = !self.state.tasks[t.index()].instances.is_empty();
            if self.fans_out(t) && expanded && !self.status(t).is_final() {
                // Expanded before the stop: its instances go on, none is expanded again.
                self.release_instances(t, awaiting, external, now);
                continue;
            }
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

    /// A fan-out task resumed in the middle: its open instances queue again (within
    /// `max_parallel`), a retry in its backoff waits out the rest.
    fn release_instances(&mut self, g: TaskId, awaiting: &[TaskId], external: &[TaskId], now: u64) {
        let ids: Vec<TaskId> = self.state.tasks[g.index()]
            .instances
            .iter()
            .map(|&i| TaskId(i))
            .collect();
        let limit = self
            .run
            .wf
            .task(g)
            .fan_out
            .as_ref()
            .and_then(|f| f.max_parallel)
            .unwrap_or(u32::MAX);
        let open: Vec<TaskId> = ids
            .into_iter()
            .filter(|i| !self.status(*i).is_final())
            .collect();
        let group = &mut self.tasks[g.index()];
        group.open = open.len() as u32;
        group.queued = None;
        group.running_instances = 0;
        for i in open {
            // Waiting for a decision: not queued, but counted against `max_parallel`.
            let waiting = awaiting.contains(&i) || external.contains(&i);
            if !waiting && self.tasks[g.index()].running_instances >= limit {
                self.tasks[g.index()]
                    .queued
                    .get_or_insert_default()
                    .push_back(i);
                continue;
            }
            self.tasks[g.index()].running_instances += 1;
            if waiting || self.status(i) != TaskStatus::Pending {
                continue;
            }
            match self.state.tasks[i.index()]
                .retry_due
                .filter(|d| d.at_ms > now)
            {
                Some(due) => {
                    let wait = (due.at_ms - now).min(due.delay_ms);
                    self.schedule_retry(i, Duration::from_millis(wait));
                }
                None => self.ready.push_back(i),
            }
        }
        if self.tasks[g.index()].open == 0 {
            // Every instance final, the task not yet decided: decide it now.
            self.ready.retain(|r| *r != g);
            self.finish_group(g);
        }
    }

    fn escalated_error(&self, t: TaskId) -> TaskError {
        self.state.tasks[t.index()]
            .error
            .as_deref()
            .cloned()
            .unwrap_or_else(|| TaskError::fatal(ErrorCode::Fatal, "escalated"))
    }

    /// Tasks with an `external` effect in flight at the stop: only a person knows whether the
    /// side effect happened, so they are always asked (never decided by `on_escalation`).
    fn escalate_external(
        &mut self,
        external: Vec<TaskId>,
        error: TaskError,
        decisions: &mut Vec<(String, Decision)>,
        who: Option<&str>,
    ) {
        for t in external {
            let error = error.clone();
            let name = self.name(t);
            match decisions.iter().position(|(n, _)| **n == *name) {
                // Answered on the command line already: no need to ask.
                Some(i) => {
                    let (_, decision) = decisions.remove(i);
                    let by = match who {
                        Some(who) => format!("{who} (conductor resume --decide)"),
                        None => "conductor resume --decide".to_string(),
                    };
                    self.decide(t, decision, by, None, &error);
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
            .task_id(name)
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
