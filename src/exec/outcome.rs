//! What happens after an attempt: success ends the task; a failure goes through the error
//! handler (the seed's flowchart) — circuit open → dead-letter queue; non-retryable →
//! escalation; retryable with attempts left → retry after backoff; otherwise → dead-letter
//! queue. A final task releases its dependents.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::attempt::Done;
use super::breaker::Transition;
use super::dispatcher::Dispatcher;
use crate::check::ir::{OnBudget, TaskId};
use crate::model::{DeadLetter, ErrorCode, EventKind, SkipReason, TaskError, TaskStatus};
use crate::plan::Node;

impl Dispatcher {
    pub(super) fn attempt_finished(&mut self, done: Done) {
        let t = done.task;
        let rt = &mut self.tasks[t.index()];
        if std::mem::take(&mut rt.aborted) {
            return; // stopped alone (`fail_fast`): already freed and recorded
        }
        rt.abort = None;
        rt.held = None;
        let p = self.run.wf.task(self.def_id(t)).agent.index();
        let instance_name = self.pools[p].instances[done.instance as usize].clone();
        let failed = done.reached_agent.then_some(done.result.is_err());
        self.pools[p].release(done.instance, failed);
        self.running -= 1;
        self.tasks[t.index()].trace = None;
        // The output moves into the event; the error is kept for the handler too.
        let (output, error, result) = match done.result {
            Ok(v) => (Some(v), None, Ok(())),
            Err(e) => (None, Some(e.clone()), Err(e)),
        };
        self.record(EventKind::AttemptFinished {
            task: self.name(t),
            agent: instance_name,
            attempt: done.attempt,
            duration_ms: done.elapsed.as_millis() as u64,
            output,
            error,
            calls: done.calls,
            cut_off: done.cut_off,
            artifacts: done.artifacts,
            cached: done.cached,
            tail: done.tail,
        });
        if done.reached_agent {
            let transition = match &result {
                // A failure (a verdict) means the agent works: it is not the breaker's.
                Ok(_) => self.pools[p].breaker.success(t),
                Err(e) if e.failure => self.pools[p].breaker.success(t),
                // A call the budgets refused was never made: the agent is not at fault.
                Err(e) if e.code == ErrorCode::BudgetExceeded => None,
                Err(e) if e.code != ErrorCode::Cancelled => {
                    self.pools[p].breaker.failure(t, Instant::now())
                }
                Err(_) => None,
            };
            if let Some(tr) = transition {
                self.breaker_changed(p, tr);
            }
        } else {
            // The trial never reached the agent: the next dispatch becomes the trial.
            self.pools[p].breaker.abandon_trial(t);
        }
        match result {
            Ok(()) => {
                // Completed: no dead letter will want its last request, and a run of 100k
                // tasks would keep 100k of them.
                let rt = &mut self.tasks[t.index()];
                rt.last = None;
                rt.last_input = None;
                self.record(EventKind::TaskFinished {
                    task: self.name(t),
                    status: TaskStatus::Completed,
                    error: None,
                });
                self.task_final(t);
            }
            Err(error) => self.failed_attempt(t, error),
        }
        self.serve_waiters();
    }

    pub(super) fn breaker_changed(&mut self, p: usize, tr: Transition) {
        self.record(EventKind::BreakerChanged {
            agent: Arc::from(self.run.wf.agents[p].name.as_str()),
            state: tr.state,
            reason: Some(tr.reason),
        });
    }

    /// The error handler.
    pub(super) fn failed_attempt(&mut self, t: TaskId, error: TaskError) {
        let task = self.run.wf.task(self.def_id(t));
        let result = &self.state.tasks[t.index()];
        let attempt = result.attempts;
        let attempts_this_round = attempt - result.attempt_base.min(attempt);
        if self.finish.is_some() {
            self.fail_task(t, error);
        } else if error.code == ErrorCode::BudgetExceeded {
            self.over_budget(t, error);
        } else if error.failure {
            // The task ran and said no: retried only for an exit code the author listed.
            let listed = error
                .exit_code
                .is_some_and(|c| task.retry_on_exit.contains(&c));
            if listed && attempts_this_round <= task.retry {
                self.retry(t, attempt, &error);
            } else {
                self.fail_task(t, error);
            }
        } else if self.pools[task.agent.index()].breaker.is_open() {
            let name = &self.run.wf.agent(task.agent).name;
            let reason = format!("the circuit breaker of agent `{name}` opened");
            self.dead_letter(t, reason, error);
        } else if !error.retryable {
            self.escalate(t, error);
        } else if attempts_this_round <= task.retry {
            self.retry(t, attempt, &error);
        } else {
            let reason = format!("{attempt} attempt{} failed", crate::text::plural(attempt));
            self.dead_letter(t, reason, error);
        }
    }

    /// A model call did not fit in a budget: never retried; `on_budget` says what follows.
    fn over_budget(&mut self, t: TaskId, error: TaskError) {
        let task = self.run.wf.task(self.def_id(t));
        match self.run.wf.budgets.on_budget(task) {
            OnBudget::Fail => self.fail_task(t, error),
            OnBudget::Escalate => self.escalate(t, error),
            OnBudget::WrapUp => {
                self.fail_task(t, error);
                self.wrap_up();
            }
        }
    }

    /// Stops starting work: the tasks still waiting are skipped as they come up, and the run
    /// ends with its `always` phases once the current phase is over.
    fn wrap_up(&mut self) {
        if self.wrapping_up {
            return;
        }
        self.wrapping_up = true;
        self.record(EventKind::Warning {
            message: "a budget ran out (on_budget = \"wrap_up\"): no new task, model call or \
                      feedback pass starts; the `always` phases run next"
                .into(),
        });
    }

    /// Schedules the next attempt after the task's backoff (at least what the agent asked).
    fn retry(&mut self, t: TaskId, attempt: u32, error: &TaskError) {
        let task = self.run.wf.task(self.def_id(t));
        let delay = super::backoff::delay(task.backoff, attempt, &task.name, self.run.jitter_seed)
            .max(std::time::Duration::from_millis(
                error.retry_after_ms.unwrap_or(0),
            ));
        self.record(EventKind::RetryScheduled {
            task: self.name(t),
            attempt: attempt + 1,
            delay_ms: delay.as_millis() as u64,
        });
        self.schedule_retry(t, delay);
    }

    /// Puts a task in the dead-letter queue with its attempts and last request; it ends FAILED.
    pub(super) fn dead_letter(&mut self, t: TaskId, reason: String, error: TaskError) {
        let wf = &self.run.wf;
        let task = wf.task(self.def_id(t));
        let result = &self.state.tasks[t.index()];
        let entry = DeadLetter {
            id: format!("{}:{}", self.run.id, self.state.last_seq + 1),
            run_id: self.run.id.clone(),
            task: result.task.clone(),
            phase: result.phase.clone(),
            pool: Arc::from(wf.agent(task.agent).name.as_str()),
            reason,
            attempts: result.history.clone(),
            request: self.last_request(t),
            at: self.journal.clock,
        };
        self.record(EventKind::DeadLettered { entry });
        self.fail_task(t, error);
    }

    /// The last request sent to a task's agent, as the dead-letter queue keeps it.
    fn last_request(&self, t: TaskId) -> Value {
        let rt = &self.tasks[t.index()];
        let Some(a) = &rt.last else {
            return Value::Null;
        };
        let mut request = json!({
            "instance": &*a.instance,
            "attempt": a.attempt,
            "input": rt.last_input.as_deref().cloned().unwrap_or_else(|| json!({})),
            "call": a.call.describe(),
        });
        match &a.call {
            crate::agents::AgentCall::Llm(c) => request["prompt"] = json!(c.prompt),
            crate::agents::AgentCall::Shell(s) => request["command"] = json!(s.argv),
            _ => {}
        }
        request
    }

    /// A task not dispatched because its pool's breaker is open: to the dead-letter queue.
    pub(super) fn reject_open(&mut self, t: TaskId) {
        let pool = &self
            .run
            .wf
            .agent(self.run.wf.task(self.def_id(t)).agent)
            .name;
        let reason = format!("the circuit breaker of agent `{pool}` is open");
        let error = TaskError::retryable(
            ErrorCode::CircuitOpen,
            format!("not dispatched: the circuit breaker of agent `{pool}` is open"),
        );
        self.dead_letter(t, reason, error);
    }

    pub(super) fn fail_task(&mut self, t: TaskId, error: TaskError) {
        self.record(EventKind::TaskFinished {
            task: self.name(t),
            status: TaskStatus::Failed,
            error: Some(error),
        });
        self.task_final(t);
    }

    pub(super) fn skip(&mut self, t: TaskId, reason: SkipReason, detail: Option<String>) {
        if reason == SkipReason::UpstreamFailed {
            self.tasks[t.index()].upstream_failed = true;
        }
        self.record(EventKind::TaskSkipped {
            task: self.name(t),
            reason,
            detail,
        });
        self.task_final(t);
    }

    /// A task reached a final status: release its dependents, in declaration order.
    pub(super) fn task_final(&mut self, t: TaskId) {
        if let Some(g) = self.tasks[t.index()].group {
            // An instance: its fan-out task keeps count; only that task has dependents.
            return self.instance_final(t, g);
        }
        // INVARIANT: each task of the phase becomes final once per pass; the saturation only
        // keeps a log that breaks it (an old dead letter, a hand-edited store) from crashing.
        self.phase_open = self.phase_open.saturating_sub(1);
        let failed = self.state.tasks[t.index()].failed_for_dependents();
        let plan = self.run.plan.clone();
        let mut dependents = std::mem::take(&mut self.scratch);
        dependents.clear();
        dependents.extend(plan.dependents(plan.task_nodes[t.index()]).filter_map(|n| {
            match plan.node(n) {
                Node::Task { task, .. } => Some(task),
                Node::Gate { .. } => None,
            }
        }));
        dependents.sort_unstable();
        for &d in &dependents {
            if self.status(d).is_final() || self.tasks[d.index()].remaining == 0 {
                continue; // already decided in this pass
            }
            let rt = &mut self.tasks[d.index()];
            if failed {
                rt.upstream_failed = true;
            }
            rt.remaining -= 1;
            if rt.remaining == 0 {
                self.ready.push_back(d);
            }
        }
        self.scratch = dependents;
    }

    /// Ends an attempt the run's stop interrupted: its tokens are still spent, its task ends
    /// CANCELLED.
    pub(super) fn cancel_attempt(&mut self, t: TaskId) {
        self.cancel_attempt_because(t, "the run stopped");
    }

    /// Ends `t`'s running attempt and the task CANCELLED, saying why.
    pub(super) fn cancel_attempt_because(&mut self, t: TaskId, why: &str) {
        let trace = self.tasks[t.index()].trace.take().unwrap_or_default();
        let calls = trace.take_calls();
        // A call it is making counts at its worst case.
        let cut_off = trace.cut_off();
        let (mut chunks, tail) = trace.finish();
        for c in &mut chunks {
            c.data = self.run.env.redactor.redact_bytes(&c.data).into_owned();
        }
        let attempt = self.state.tasks[t.index()].attempts;
        if !chunks.is_empty() {
            let task = self.name(t);
            let store = self.journal.store();
            if let Err(e) = store.append_log(&self.run.id, &task, attempt, &chunks) {
                tracing::warn!("cannot store the output of `{task}`: {e}");
            }
        }
        let stopped = TaskError::fatal(ErrorCode::Cancelled, why);
        if !calls.is_empty() || !tail.is_empty() || !cut_off.is_zero() {
            let agent = self.tasks[t.index()].last.as_ref().map_or_else(
                || {
                    Arc::from(
                        self.run
                            .wf
                            .agent(self.run.wf.task(self.def_id(t)).agent)
                            .name
                            .as_str(),
                    )
                },
                |a| a.instance.clone(),
            );
            self.record(EventKind::AttemptFinished {
                task: self.name(t),
                agent,
                attempt,
                duration_ms: 0,
                output: None,
                error: Some(stopped.clone()),
                calls,
                cut_off,
                artifacts: Vec::new(),
                cached: false,
                tail,
            });
        }
        self.record(EventKind::TaskFinished {
            task: self.name(t),
            status: TaskStatus::Cancelled,
            error: Some(stopped),
        });
    }
}
