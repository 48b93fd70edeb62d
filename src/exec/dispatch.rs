//! From ready to running: the upstream check, `when`, the `enforce` rules, the breaker, an
//! instance of the pool (FIFO, up to `agent_wait`), then the dispatch — committed before the
//! attempt starts.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::attempt::{self, Done};
use super::breaker::Admit;
use super::context;
use super::dispatcher::Dispatcher;
use super::timers::Timer;
use super::ExecError;
use crate::agents::{self, Attempt, Preparing, Renderer, Trace};
use crate::check::ir::{Rule, RuleSource, TaskId};
use crate::model::{ErrorCode, EventKind, RunStatus, SkipReason, TaskError};
use crate::policy::{PolicyHost, Verdict};

impl Dispatcher {
    /// Moves ready tasks through `when`, `enforce` and instance assignment, then starts them.
    pub(super) fn pump(&mut self) -> Result<(), ExecError> {
        self.recheck_deferred();
        let mut starts = std::mem::take(&mut self.pending_starts);
        // A pool whose re-asked task was deferred again for the same reason: its other
        // deferred tasks wait for the next change rather than being asked in vain.
        let mut blocked = vec![false; self.pools.len()];
        while let Some(t) = self.ready.pop_front() {
            if self.finish.is_some() {
                break;
            }
            let pool = self.run.wf.task(self.def_id(t)).agent.index();
            let rechecking = std::mem::take(&mut self.tasks[t.index()].rechecking);
            if rechecking && blocked[pool] {
                self.deferred.push(t);
                continue;
            }
            if self.wrapping_up && !self.in_always_phase(t) {
                self.skip(t, SkipReason::WrapUp, Some("a budget ran out".into()));
                continue;
            }
            if self.tasks[t.index()].upstream_failed {
                let detail = self.failed_dependency(t);
                self.skip(t, SkipReason::UpstreamFailed, detail);
                continue;
            }
            if self.fans_out(t) {
                // Its instances run, each through `when`, `enforce` and an instance of the pool.
                self.expand(t);
                continue;
            }
            if self.state.tasks[t.index()].attempts == 0 && !self.passes_when(t) {
                continue;
            }
            match self.enforce(t) {
                Enforced::Go => {}
                Enforced::Violation => break,
                Enforced::Defer { rule, reason } => {
                    let again = self.state.tasks[t.index()]
                        .deferred
                        .as_ref()
                        .is_some_and(|d| d.rule == rule && d.reason == reason);
                    blocked[pool] |= rechecking && again;
                    self.defer(t, rule, reason);
                    continue;
                }
            }
            self.undefer(t);
            let agent = &self
                .run
                .wf
                .agent(self.run.wf.task(self.def_id(t)).agent)
                .kind;
            if matches!(agent, crate::check::ir::AgentKind::Approval) && !self.run.dry_run {
                // A person decides: no instance, no breaker.
                self.request_approval(t);
                continue;
            }
            match self.admit(t) {
                Admit::Go => {}
                Admit::Reject => {
                    self.reject_open(t);
                    continue;
                }
                Admit::Wait => {
                    self.wait_for_instance(t);
                    continue;
                }
            }
            match self.acquire(t) {
                Some(instance) => starts.push((t, instance)),
                None => self.wait_for_instance(t),
            }
        }
        if self.finish.is_some() {
            // A violation ends the run: nothing more is dispatched.
            return Ok(());
        }
        self.start_attempts(starts)
    }

    /// Which dependency failed, in words, for the skip's detail.
    fn failed_dependency(&self, t: TaskId) -> Option<String> {
        self.run.wf.task(self.def_id(t)).after.iter().find_map(|d| {
            let r = &self.state.tasks[d.index()];
            r.failed_for_dependents().then(|| {
                let how = if r.status == crate::model::TaskStatus::Failed {
                    "failed"
                } else {
                    "was skipped because its own upstream failed"
                };
                format!("its dependency `{}` {how}", r.task)
            })
        })
    }

    /// Evaluates `when` before the first attempt; false skips the task, an error escalates it.
    fn passes_when(&mut self, t: TaskId) -> bool {
        let Some(rule) = self.run.wf.task(self.def_id(t)).when.clone() else {
            return true;
        };
        let item = self.state.tasks[t.index()]
            .instance
            .as_ref()
            .map(|i| &i.item);
        let ctx = context::when(&self.views, &self.state, &self.run.params_json, item);
        let e = PolicyHost::get().evaluate_cached(&mut self.rules, &rule.compiled, &ctx);
        match (e.verdict, e.error) {
            (_, Some(err)) => {
                let error = TaskError::fatal(
                    ErrorCode::Rule,
                    format!("`when` rule at {} failed: {}", rule.location, err.cause),
                );
                self.escalate(t, error);
                false
            }
            (Verdict::When(true), None) => true,
            _ => {
                let detail = format!(
                    "its `when` rule at {} was false (it saw loop_count {} and params {})",
                    rule.location, self.state.feedback_loop_count, self.run.params_json
                );
                self.skip(t, SkipReason::WhenFalse, Some(detail));
                false
            }
        }
    }

    /// Runs the `enforce` rules, workflow then phase: the first that defers holds the task
    /// back; the first that denies fails the run with a `PolicyViolation`.
    fn enforce(&mut self, t: TaskId) -> Enforced {
        let wf = self.run.wf.clone();
        let task = wf.task(self.def_id(t));
        let phase = wf.phase(task.phase);
        if wf.enforce.is_empty() && phase.enforce.is_empty() {
            return Enforced::Go;
        }
        let mut fields = self.enforce_fields(t);
        fields["budget"] = self.budget_json();
        let ctx = context::enforce(fields);
        for rule in wf.enforce.iter().chain(phase.enforce.iter()) {
            let e = PolicyHost::get().evaluate_cached(&mut self.rules, &rule.compiled, &ctx);
            if let Verdict::Enforce {
                allow: false,
                defer: true,
                reason,
            } = e.verdict
            {
                return Enforced::Defer {
                    rule: describe_rule(rule),
                    reason: reason.unwrap_or_else(|| "deferred".into()),
                };
            }
            if let Verdict::Enforce {
                allow: false,
                reason,
                ..
            } = e.verdict
            {
                let reason = reason.unwrap_or_else(|| "denied".into());
                let rule_name = describe_rule(rule);
                self.record(EventKind::PolicyViolation {
                    task: self.name(t),
                    rule: rule_name.clone(),
                    reason: reason.clone(),
                });
                self.finish = Some((
                    RunStatus::Failed,
                    Some(format!(
                        "policy violation: {rule_name} denied task `{}`: {reason}",
                        task.name
                    )),
                ));
                return Enforced::Violation;
            }
        }
        Enforced::Go
    }

    /// The fields of an `enforce` context for dispatching `t` now.
    fn enforce_fields(&self, t: TaskId) -> Value {
        let wf = &self.run.wf;
        let task = wf.task(self.def_id(t));
        let agent = wf.agent(task.agent);
        let pool = &self.pools[task.agent.index()];
        let running: serde_json::Map<String, Value> = wf
            .agents
            .iter()
            .map(|a| (a.name.clone(), json!(self.pools[a.id.index()].running)))
            .collect();
        json!({
            "task": {
                "name": task.name, "agent": agent.name, "phase": wf.phase(task.phase).name,
                "attempt": self.state.tasks[t.index()].attempts + 1,
                "timeout_ms": task.timeout.as_millis() as u64,
            },
            "pool": {
                "name": agent.name, "count": pool.count, "idle": pool.idle(),
                "running": pool.running, "failed": pool.failed,
                "breaker": pool.breaker.observed(Instant::now()),
            },
            "running": running,
            "running_total": self.running,
            "params": &*self.run.params_json,
            "loop_count": self.state.feedback_loop_count,
            "elapsed_ms": self.run.started.elapsed().as_millis() as u64,
        })
    }

    /// What the pool's breaker says about dispatching `t` now.
    pub(super) fn admit(&mut self, t: TaskId) -> Admit {
        let p = self.run.wf.task(self.def_id(t)).agent.index();
        // The clock is read only when it matters: this runs for every dispatch.
        if self.pools[p].breaker.is_closed() {
            return Admit::Go;
        }
        let (admit, transition) = self.pools[p].breaker.admit(t, Instant::now());
        if let Some(tr) = transition {
            self.breaker_changed(p, tr);
        }
        admit
    }

    /// Takes an idle instance of the task's pool when one is free and `max_parallel` allows.
    fn acquire(&mut self, t: TaskId) -> Option<u32> {
        if self.running >= self.run.max_parallel {
            return None;
        }
        let p = self.run.wf.task(self.def_id(t)).agent.index();
        let pool = &mut self.pools[p];
        // A half-open breaker's trial goes ahead of the tasks waiting for its outcome.
        let trial = pool.breaker.is_trial(t);
        let instance = pool.acquire(trial)?;
        self.running += 1;
        Some(instance)
    }

    fn wait_for_instance(&mut self, t: TaskId) {
        let wait = self.run.wf.settings.agent_wait;
        let rt = &mut self.tasks[t.index()];
        rt.wait_token += 1;
        rt.waiting = true;
        let token = rt.wait_token;
        let p = self.run.wf.task(self.def_id(t)).agent.index();
        self.pools[p].wait(t);
        self.add_timer(wait, Timer::AgentWait(t, token));
    }

    /// Gives freed instances to waiting tasks, first come first served; they start at the
    /// next pump, after this turn's events are committed.
    pub(super) fn serve_waiters(&mut self) {
        for p in 0..self.pools.len() {
            if self.pools[p].breaker.is_closed() {
                while self.running < self.run.max_parallel {
                    let Some((t, instance)) = self.pools[p].serve_next() else {
                        break;
                    };
                    self.running += 1;
                    self.tasks[t.index()].waiting = false;
                    self.pending_starts.push((t, instance));
                }
                continue;
            }
            // Each waiter is decided against the breaker where it stands in the queue: the
            // trial goes ahead when an instance is free, the others keep their place and their
            // `agent_wait`, and an open breaker sends them to the dead-letter queue. (Their
            // `when` and `enforce` rules were decided when they queued.)
            for t in self.pools[p].waiters() {
                match self.admit(t) {
                    Admit::Wait => {}
                    Admit::Reject => {
                        self.pools[p].leave(t);
                        self.tasks[t.index()].waiting = false;
                        self.reject_open(t);
                    }
                    Admit::Go => {
                        if self.running >= self.run.max_parallel {
                            continue;
                        }
                        let Some(instance) = self.pools[p].serve(t) else {
                            continue;
                        };
                        self.running += 1;
                        self.tasks[t.index()].waiting = false;
                        self.pending_starts.push((t, instance));
                    }
                }
            }
        }
    }

    /// A task waited for an instance until `agent_wait` ran out: that counts as a failed
    /// attempt (so retries end), logged under the pool's name.
    pub(super) fn gave_up_waiting(&mut self, t: TaskId) {
        let wf = self.run.wf.clone();
        let p = wf.task(self.def_id(t)).agent.index();
        self.pools[p].leave(t);
        self.pools[p].breaker.abandon_trial(t);
        self.tasks[t.index()].waiting = false;
        let error = TaskError::retryable(
            ErrorCode::NoAvailableAgent,
            format!(
                "no instance of agent `{}` became idle within `agent_wait` ({})",
                wf.agent(wf.task(self.def_id(t)).agent).name,
                crate::text::duration(wf.settings.agent_wait)
            ),
        );
        self.gave_up(t, error);
    }

    /// An attempt that never reached an instance (its wait ran out), logged under the pool's
    /// name, then the error handler.
    pub(super) fn gave_up(&mut self, t: TaskId, error: TaskError) {
        let wf = self.run.wf.clone();
        let attempt = self.state.tasks[t.index()].attempts + 1;
        self.record(EventKind::AttemptFinished {
            task: self.name(t),
            agent: Arc::from(wf.agent(wf.task(self.def_id(t)).agent).name.as_str()),
            attempt,
            duration_ms: 0,
            output: None,
            error: Some(error.clone()),
            calls: Vec::new(),
            cut_off: Default::default(),
            artifacts: Vec::new(),
            cached: false,
            tail: Default::default(),
        });
        self.failed_attempt(t, error);
    }

    /// Records the dispatches, commits them, then hands the attempts to workers.
    fn start_attempts(&mut self, starts: Vec<(TaskId, u32)>) -> Result<(), ExecError> {
        if starts.is_empty() {
            return Ok(());
        }
        let mut started = Vec::with_capacity(starts.len());
        let mut children = false;
        for (t, instance) in starts {
            let attempt = self.state.tasks[t.index()].attempts + 1;
            let pool = self.run.wf.task(self.def_id(t)).agent.index();
            let instance_name = self.pools[pool].instances[instance as usize].clone();
            self.record(EventKind::TaskDispatched {
                task: self.name(t),
                agent: instance_name.clone(),
                attempt,
            });
            children |= self.record_child(t, attempt);
            started.push((t, instance, attempt, instance_name));
        }
        // Persist before acting: an idempotent or external task's dispatch is in the log before
        // its agent starts. A pure task (the default) may run again after a crash anyway, so
        // its dispatch joins the group commit of the next few milliseconds: it can start
        // before its dispatch is durable, and after a crash it may have run without a record —
        // never a task whose completion is recorded.
        // A child run's id is durable before the child starts: a resumed parent goes on with
        // it rather than starting a second one.
        let wf = &self.run.wf;
        if children
            || started
                .iter()
                .any(|(t, ..)| wf.task(self.def_id(*t)).effect != crate::check::ir::Effect::Pure)
        {
            self.flush()?;
        }
        // Attempts over at their first poll, handled once every attempt of the turn is out,
        // as completions that arrived together.
        let mut answered = Vec::new();
        for (t, instance, attempt, instance_name) in started {
            match self.prepare(t, attempt, instance_name) {
                Ok(a) => answered.extend(self.spawn(t, instance, a)),
                // Ctrl-C stopped its templates' rendering: the task ends CANCELLED with the
                // run, not failed.
                Err(_) if self.cancel.is_cancelled() => {}
                Err(error) => self.attempt_finished(Done::unstarted(t, attempt, instance, error)),
            }
        }
        for done in answered {
            self.attempt_finished(done);
        }
        Ok(())
    }

    /// The attempt's call, its templates rendered.
    pub(super) fn prepare(
        &mut self,
        t: TaskId,
        attempt: u32,
        instance: Arc<str>,
    ) -> Result<Attempt, TaskError> {
        let wf = self.run.wf.clone();
        let task = wf.task(self.def_id(t));
        // Rendering is part of the attempt: its task's timeout bounds it too.
        let _limit = crate::template::time_limit(task.timeout);
        let strict = !self.run.dry_run;
        let params = &*self.run.params_json;
        let input = match task.input.as_deref() {
            None => Value::Object(Default::default()),
            Some(crate::check::ir::Input {
                tree: crate::template::Tree::Plain(v),
                ..
            }) => v.clone(),
            Some(input) => {
                let item = self.state.tasks[t.index()]
                    .instance
                    .as_ref()
                    .map(|i| &i.item);
                let ctx = context::template(&self.views, attempt, None, item);
                input
                    .tree
                    .render(
                        &wf.templates,
                        &ctx,
                        &format_args!("`input` of task `{}`", task.name),
                        strict,
                    )
                    .map_err(|e| TaskError::fatal(ErrorCode::Template, e.0))?
            }
        };
        // A context only for tasks that render something: most calls are plain.
        let ctx = if self.run.templated[self.def_id(t).index()] {
            let item = self.state.tasks[t.index()]
                .instance
                .as_ref()
                .map(|i| &i.item);
            context::template(&self.views, attempt, Some(&input), item)
        } else {
            crate::template::Context::default()
        };
        let feedback = context::feedback_json(&self.state);
        let state = &self.state;
        let tasks = || context::finished_tasks(state);
        let preparing = Preparing {
            wf: &wf,
            task,
            attempt,
            loop_count: self.state.feedback_loop_count,
            input: &input,
            tasks: &tasks,
            params,
            feedback: &feedback,
            env: &self.run.env,
            dry_run: self.run.dry_run,
        };
        let renderer = Renderer {
            templates: &wf.templates,
            ctx: &ctx,
            strict,
        };
        let mut call = agents::prepare(&preparing, &renderer)?;
        self.child_call(t, &mut call);
        self.tasks[t.index()].last_input =
            (input.as_object().is_none_or(|o| !o.is_empty())).then(|| Box::new(input));
        Ok(Attempt {
            run_id: self.run.id.clone(),
            task: self.name(t),
            phase: self.state.tasks[t.index()].phase.clone(),
            instance,
            attempt,
            loop_count: self.state.feedback_loop_count,
            call,
        })
    }

    /// Hands an attempt to a worker; returns how it ended when it was over at its first poll
    /// (see [`answers_at_once`]).
    fn spawn(&mut self, t: TaskId, instance: u32, a: Attempt) -> Option<Done> {
        let ledger = self.ledger();
        let task = self.run.wf.task(self.def_id(t));
        let a = Arc::new(a);
        let trace = match ledger {
            Some(l) => Trace::with_gate(l.gate(&self.run.wf, task, a.task.clone(), a.attempt)),
            None => Trace::default(),
        };
        let rt = &mut self.tasks[t.index()];
        rt.last = Some(a.clone());
        rt.trace = Some(trace.clone());
        if self.placed_remotely(t) {
            let cache = (task.cache && !self.run.dry_run).then(|| {
                let key = attempt::cache_key(&self.run.env.config, &a_call(&self.tasks[t.index()]));
                (key, !self.run.recording)
            });
            self.spawn_remote(t, instance, a, cache);
            return None;
        }
        let at_once = answers_at_once(&a.call);
        let job = attempt::Job {
            attempt: a,
            timeout: task.timeout,
            cache: (task.cache && !self.run.dry_run).then(|| attempt::CacheUse {
                key: attempt::cache_key(&self.run.env.config, &a_call(&self.tasks[t.index()])),
                read: !self.run.recording,
            }),
            store: self.journal.store().clone(),
            env: self.run.env.clone(),
            trace,
        };
        let mut work = Box::pin(attempt::run(job, t, instance));
        let rt = &mut self.tasks[t.index()];
        rt.held = Some(instance);
        rt.aborted = false;
        if at_once {
            // Polled once here: an agent that needs no time answers now, without a task of its
            // own (whose completion would wake this one from the runtime's other thread: a
            // zero-latency chain spent a fifth of its time switching threads). A future asked
            // to wait is polled again by its worker, which registers the worker's waker.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                work.as_mut().poll(&mut cx)
            }));
            match first {
                Ok(std::task::Poll::Ready(done)) => return Some(done),
                Ok(std::task::Poll::Pending) => {}
                // As a worker that panicked (`Dispatcher::completed`).
                Err(_) => {
                    self.finish = Some((
                        RunStatus::Failed,
                        Some("internal error: an agent worker panicked".into()),
                    ));
                    return None;
                }
            }
        }
        let handle = self.workers.spawn(work);
        self.tasks[t.index()].abort = Some(handle);
        None
    }

    fn in_always_phase(&self, t: TaskId) -> bool {
        let wf = &self.run.wf;
        wf.phase(wf.task(self.def_id(t)).phase).always
    }

    /// What rules see as `budget` (an empty map without budgets).
    pub(super) fn budget_json(&mut self) -> Value {
        self.ledger().map_or_else(|| json!({}), |l| l.left_json())
    }

    /// The run's budgets, opened from the state the first time they are needed.
    pub(super) fn ledger(&mut self) -> Option<Arc<super::budget::Ledger>> {
        if self.ledger.is_none() {
            let l = super::budget::Ledger::new(
                &self.run.wf,
                self.run.env.config.clone(),
                &self.state,
                self.reservations.0.clone(),
            );
            self.ledger = Some(l.map(Arc::new));
        }
        self.ledger.clone().flatten()
    }

    /// A model call's reservation: on record before the call is made, so a process killed
    /// during the call leaves it counted.
    pub(super) fn reserved(&mut self, r: super::budget::ToRecord) -> Result<(), ExecError> {
        self.record(EventKind::CallReserved {
            task: r.task,
            attempt: r.attempt,
            worst: r.worst,
        });
        self.flush()?;
        // The attempt may have been stopped meanwhile: then nobody waits.
        let _ = r.recorded.send(());
        Ok(())
    }

    /// When a retry's backoff is due, or at once.
    pub(super) fn schedule_retry(&mut self, t: TaskId, delay: Duration) {
        self.retries_pending += 1;
        self.add_timer(delay, Timer::Retry(t));
    }
}

fn a_call(rt: &super::dispatcher::TaskRt) -> Value {
    rt.last.as_ref().map_or(Value::Null, |a| a.call.describe())
}

/// What the `enforce` rules said about a dispatch.
pub(super) enum Enforced {
    Go,
    /// A deny: the run ends.
    Violation,
    /// Not now: the task waits.
    Defer {
        rule: String,
        reason: String,
    },
}

/// A rule as messages name it: `` `name(…)` at FILE:L:C `` or `rule at FILE:L:C`.
pub(crate) fn describe_rule(rule: &Rule) -> String {
    match &rule.source {
        RuleSource::Named { name, .. } => format!("`{name}(…)` at {}", rule.location),
        RuleSource::Inline(_) => format!("rule at {}", rule.location),
    }
}

/// Whether an attempt is polled once where it is dispatched before it gets a worker: an agent
/// that may answer at once and otherwise only starts its work in its first poll (a mock, or
/// its latency's timer; an HTTP or model call). Not one that does blocking work there (a shell
/// command forks its program, a child run starts a run) or never answers at once (a script
/// compiles its modules and runs on a blocking thread).
fn answers_at_once(call: &agents::AgentCall) -> bool {
    use agents::AgentCall;
    match call {
        AgentCall::Mock(_) | AgentCall::Http(_) | AgentCall::Llm(_) | AgentCall::Approval(_) => {
            true
        }
        AgentCall::Shell(_) | AgentCall::Child(_) | AgentCall::Script(_) => false,
    }
}
