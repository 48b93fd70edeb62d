//! The dispatcher: the one task that owns a run's state and reacts to what happens — an
//! attempt finishes, a timer fires, the operator answers, the run is cancelled or times out.
//!
//! It works in turns: in one turn it does all the work it can (releases, rules, dispatches,
//! the error handler), commits the turn's events, and then waits for the next message. The
//! concepts live beside it: `dispatch` (ready → running), `outcome` (the error handler),
//! `escalation`, `phases` (gates and feedback), `resume`, and the pure parts `pool`,
//! `breaker`, `timers` and `backoff`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::attempt::Done;
use super::escalation::Escalations;
use super::journal::Journal;
use super::pool::Pool;
use super::timers::{Timer, Timers};
use super::{ExecError, RunOptions};
use crate::agents::{AgentEnv, AgentEnvOptions, Attempt, Trace};
use crate::check::ir::{TaskId, Workflow};
use crate::model::{now, EventKind, RunId, RunState, RunStatus, TaskInfo, TaskStatus};
use crate::plan::Plan;
use crate::policy::RuleCache;
use crate::store::RunRecord;

/// Turns in a row (attempts answered at their first poll: a chain of mock tasks) before the
/// dispatcher goes through its `select` once, as if it had waited.
const TURNS_BEFORE_YIELD: u32 = 64;

/// What does not change during a run.
pub(super) struct Run {
    pub wf: Arc<Workflow>,
    pub plan: Arc<Plan>,
    pub id: RunId,
    pub file: String,
    pub params: std::collections::BTreeMap<String, Value>,
    /// `params` as one JSON object, shared by every context.
    pub params_json: Arc<Value>,
    pub dry_run: bool,
    /// `--record`: every provider exchange must happen, so the cache is not read.
    pub recording: bool,
    pub started: Instant,
    pub deadline: Instant,
    pub max_parallel: usize,
    /// The SHA-256 of the workflow's stored source.
    pub source: Option<String>,
    /// A child run: the run and task that started it.
    pub parent: Option<crate::model::ParentRun>,
    /// The imported files and their SHA-256, already stored as artifacts.
    pub imports: std::collections::BTreeMap<String, String>,
    /// Mixed into every backoff's jitter.
    pub jitter_seed: u64,
    /// Whether preparing each task's call renders a template, by `TaskId`.
    pub templated: Vec<bool>,
    pub env: Arc<AgentEnv>,
}

/// Per-task runtime state the log does not keep, by `TaskId` (fan-out instances after the
/// declared tasks).
#[derive(Clone, Debug, Default)]
pub(super) struct TaskRt {
    /// A fan-out instance: the declared task it is an instance of.
    pub group: Option<TaskId>,
    /// A fan-out task: its instances not yet final, and those waiting for `max_parallel`.
    pub open: u32,
    /// (Boxed, made on first use: one task in a run of 100k has instances to queue, and an
    /// empty `VecDeque` is 32 bytes in every task's slot.)
    #[allow(clippy::box_collection)]
    pub queued: Option<Box<std::collections::VecDeque<TaskId>>>,
    pub running_instances: u32,
    /// The running attempt's worker and the instance of the pool it holds, so that one
    /// attempt can be stopped alone (`fail_fast`).
    pub abort: Option<tokio::task::AbortHandle>,
    pub held: Option<u32>,
    /// Its attempt was stopped alone: the worker's result, if it still comes, is dropped.
    pub aborted: bool,
    /// Dependencies not yet final.
    pub remaining: u32,
    /// A dependency failed (or was skipped because its own upstream failed).
    pub upstream_failed: bool,
    /// Bumped each time the task starts waiting for an instance.
    pub wait_token: u64,
    pub waiting: bool,
    /// The last attempt sent to the agent, for the dead-letter queue.
    pub last: Option<Arc<Attempt>>,
    /// The rendered input of that attempt; `None` for `{}` (most tasks have no input, and a
    /// `Value` is 32 bytes in every task's slot).
    pub last_input: Option<Box<Value>>,
    /// What the attempt in flight has done so far (its model calls, its output), so a run
    /// that stops still records them.
    pub trace: Option<Trace>,
    /// The token of the `agent_wait` of the deferral it is in, if deferred.
    pub deferred_token: Option<u64>,
    /// It is going through its rules again after a deferral.
    pub rechecking: bool,
}

pub(super) struct Dispatcher {
    pub run: Run,
    pub state: RunState,
    pub journal: Journal,
    pub tasks: Vec<TaskRt>,
    pub pools: Vec<Pool>,
    pub timers: Timers,
    /// Tasks ready to go through `when`, `enforce` and instance assignment.
    pub ready: VecDeque<TaskId>,
    /// A final task's dependents, gathered here rather than in a new vector each time.
    pub scratch: Vec<TaskId>,
    /// Instances handed to waiting tasks, started at the next pump (after a commit).
    pub pending_starts: Vec<(TaskId, u32)>,
    /// Attempts running, over all pools (`max_parallel`).
    pub running: usize,
    /// Retries whose backoff has not run out yet.
    pub retries_pending: usize,
    /// The phase being run, and how many of its tasks are not final.
    pub phase: usize,
    pub phase_open: usize,
    pub workers: JoinSet<Done>,
    pub escalations: Escalations,
    pub rules: RuleCache,
    /// What templates and `when` rules see of the finished tasks.
    pub views: super::context::Views,
    /// Tasks an `enforce` rule deferred, in the order they were deferred.
    pub deferred: Vec<TaskId>,
    /// Counts recorded events (deferrals aside): what rules see has changed when it moves.
    pub epoch: u64,
    /// The epoch of the last deferral.
    pub deferred_epoch: u64,
    /// Set when the run must stop: (status, error).
    pub finish: Option<(RunStatus, Option<String>)>,
    /// The attempts on workers, when a pool is placed on them.
    pub remote: Option<Arc<super::remote::Hub>>,
    pub(super) cancel: tokio_util::sync::CancellationToken,
    /// A second stop: no `always` phases.
    halt: tokio_util::sync::CancellationToken,
    /// The operator cancelled once: the `always` phases run, unless `halt` comes too.
    cancelled_once: bool,
    halted: bool,
    /// The run's budgets, opened at the first dispatch (after a resume has rebuilt the state
    /// they are seeded from); `Some(None)`: the run has none.
    pub ledger: Option<Option<Arc<super::budget::Ledger>>>,
    /// Reservations of model calls to record before the calls are made.
    pub reservations: (
        tokio::sync::mpsc::UnboundedSender<super::budget::ToRecord>,
        tokio::sync::mpsc::UnboundedReceiver<super::budget::ToRecord>,
    ),
    /// A budget with `on_budget = "wrap_up"` ran out: no new task or pass starts; the
    /// `always` phases run once what runs has finished.
    pub wrapping_up: bool,
}

impl Dispatcher {
    pub(super) fn new(
        wf: Arc<Workflow>,
        plan: Arc<Plan>,
        options: RunOptions,
    ) -> Result<Dispatcher, ExecError> {
        let params = super::resolve_params(&wf, &options.params)?;
        let base = wf
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(
                || std::path::PathBuf::from("."),
                std::path::Path::to_path_buf,
            );
        let secret = |p: &&crate::check::ir::Param| p.secret;
        let secrets: Vec<(&str, String)> = wf
            .params
            .iter()
            .filter(secret)
            .filter_map(|p| {
                let text = match params.get(&p.name)? {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some((p.name.as_str(), text))
            })
            .collect();
        let keys: Vec<(String, String)> = options
            .config
            .providers
            .values()
            .filter_map(|p| p.api_key_env.clone())
            .filter_map(|name| std::env::var(&name).ok().map(|key| (name, key)))
            .collect();
        let redactor = Arc::new(
            crate::secrets::Redactor::new(secrets.iter().map(|(n, v)| (*n, v.as_str())))
                .with_keys(keys.iter().map(|(n, k)| (n.as_str(), k.as_str()))),
        );
        let env = AgentEnv::new(AgentEnvOptions {
            base,
            workspace: options.workspace.clone(),
            config: options.config.clone(),
            recorder: options.recorder.clone(),
            redactor: redactor.clone(),
            secret_env: wf
                .params
                .iter()
                .filter(secret)
                .filter_map(|p| p.env.clone())
                .collect(),
            children: options.children.clone(),
        });
        env.prepare_for(&wf, options.dry_run)?;
        let remote = super::remote::hub_for(&wf, &options)?;
        let started = Instant::now();
        let run = Run {
            params_json: Arc::new(Value::Object(
                params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            )),
            params,
            id: options.run_id.clone(),
            file: options.file,
            dry_run: options.dry_run,
            recording: options.recorder.is_some(),
            started,
            deadline: started + wf.settings.timeout,
            max_parallel: wf.settings.max_parallel.map_or(usize::MAX, |n| n as usize),
            env: Arc::new(env),
            source: options.source.clone(),
            parent: options.parent.clone(),
            imports: options.imports.clone(),
            jitter_seed: options
                .jitter_seed
                .unwrap_or_else(super::backoff::random_seed),
            templated: wf
                .tasks
                .iter()
                .map(|t| crate::agents::is_templated(&wf, t))
                .collect(),
            wf: wf.clone(),
            plan,
        };
        let views = super::context::Views::new(
            wf.tasks.iter().map(|t| Arc::from(t.name.as_str())),
            &run.params_json,
            &wf.tasks_read,
        );
        Ok(Dispatcher {
            views,
            deferred: Vec::new(),
            epoch: 0,
            deferred_epoch: 0,
            pools: wf.agents.iter().map(Pool::new).collect(),
            tasks: vec![TaskRt::default(); wf.tasks.len()],
            journal: Journal::new(options.run_id, options.store, options.observers)
                .with_redactor(redactor),
            state: RunState::default(),
            timers: Timers::default(),
            ready: VecDeque::new(),
            scratch: Vec::new(),
            pending_starts: Vec::new(),
            running: 0,
            retries_pending: 0,
            phase: 0,
            phase_open: 0,
            workers: JoinSet::new(),
            escalations: Escalations::new(options.operator),
            rules: RuleCache::default(),
            finish: None,
            remote,
            cancel: options.cancel,
            halt: options.halt,
            cancelled_once: false,
            halted: false,
            ledger: None,
            reservations: tokio::sync::mpsc::unbounded_channel(),
            wrapping_up: false,
            run,
        })
    }

    /// Records an event: applied to the state now, committed at the next flush; the views of
    /// the tasks it changed follow.
    pub(super) fn record(&mut self, kind: EventKind) {
        if !matches!(kind, EventKind::TaskDeferred { .. }) {
            self.epoch += 1;
        }
        let from = self.journal.touched_count();
        self.journal.record(&mut self.state, kind);
        for &i in self.journal.touched_since(from) {
            self.views.refresh(&self.state, i);
        }
    }

    /// Commits the recorded events.
    pub(super) fn flush(&mut self) -> Result<(), ExecError> {
        Ok(self.journal.flush(&self.state)?)
    }

    /// A task's name as events carry it.
    pub(super) fn name(&self, t: TaskId) -> Arc<str> {
        self.state.tasks[t.index()].task.clone()
    }

    pub(super) fn status(&self, t: TaskId) -> TaskStatus {
        self.state.tasks[t.index()].status
    }

    /// Starts the run: records it, enters the first phase, and drives it to its end.
    pub(super) async fn start(mut self) -> Result<RunState, ExecError> {
        let wf = self.run.wf.clone();
        self.journal.store().create_run(&RunRecord {
            id: self.run.id.clone(),
            workflow: wf.name.clone(),
            file: self.run.file.clone(),
            params: self.stored_params(),
            created_at: now(),
            status: RunStatus::Pending,
        })?;
        // One name per phase and per pool, shared by their tasks here and in the state.
        let phases: Vec<Arc<str>> = wf
            .phases
            .iter()
            .map(|p| Arc::from(p.name.as_str()))
            .collect();
        let pools: Vec<Arc<str>> = wf
            .agents
            .iter()
            .map(|a| Arc::from(a.name.as_str()))
            .collect();
        let tasks = wf
            .tasks
            .iter()
            .map(|t| TaskInfo {
                name: Arc::from(t.name.as_str()),
                phase: phases[t.phase.index()].clone(),
                agent: pools[t.agent.index()].clone(),
            })
            .collect();
        let agents = self
            .pools
            .iter()
            .flat_map(|p| p.instances.iter().map(|i| i.to_string()))
            .collect();
        self.record(EventKind::RunStarted {
            run_id: self.run.id.clone(),
            workflow: wf.name.clone(),
            file: self.run.file.clone(),
            params: self.stored_params(),
            tasks,
            agents,
            dry_run: self.run.dry_run,
            source: self.run.source.clone(),
            parent: self.run.parent.clone(),
            imports: self.run.imports.clone(),
        });
        // The run's first event is in the store before anything else happens.
        self.flush()?;
        self.views
            .run_changed(&self.state, self.run.env.workspace.as_deref());
        match wf.phases.iter().position(|p| !p.always) {
            Some(first) => self.enter_phase(first),
            None => self.finish = Some((RunStatus::Completed, None)),
        }
        self.drive_to_end().await
    }

    /// The params as the log keeps them: secret ones masked.
    fn stored_params(&self) -> std::collections::BTreeMap<String, Value> {
        let mut params = self.run.params.clone();
        for p in self.run.wf.params.iter().filter(|p| p.secret) {
            if let Some(v) = params.get_mut(&p.name) {
                *v = Value::String(crate::secrets::MASK.to_string());
            }
        }
        params
    }

    pub(super) async fn drive_to_end(mut self) -> Result<RunState, ExecError> {
        let result = self.drive().await;
        // Whatever happened, stop the workers before reporting.
        self.workers.shutdown().await;
        if let Some(remote) = &self.remote {
            remote.close().await;
        }
        result?;
        self.journal.finished(&self.state);
        Ok(self.state)
    }

    async fn drive(&mut self) -> Result<(), ExecError> {
        // Created once: registering a timer or a cancellation waiter on every turn of the
        // loop would cost more than the rest of a turn.
        let cancel = self.cancel.clone();
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let halt = self.halt.clone();
        let halted = halt.cancelled();
        tokio::pin!(halted);
        let deadline = tokio::time::sleep_until(self.run.deadline);
        tokio::pin!(deadline);
        let timer = tokio::time::sleep_until(self.run.deadline);
        tokio::pin!(timer);
        let mut timer_at: Option<Instant> = None;
        let commit = tokio::time::sleep_until(self.run.deadline);
        tokio::pin!(commit);
        let mut commit_at: Option<Instant> = None;
        // Turns in a row that made more work possible at once.
        let mut streak = 0;
        loop {
            self.journal.clock = now();
            if self.turn()? {
                streak += 1;
                if streak < TURNS_BEFORE_YIELD {
                    continue;
                }
            }
            // After that many, the loop goes on through the commit and the `select` below as
            // if it had waited, so events are committed within their window, a cancel is seen
            // and the runtime runs its other tasks.
            let yielding = std::mem::take(&mut streak) >= TURNS_BEFORE_YIELD;
            if let Some((status, error)) = self.finish.take() {
                // An operator's cancel still runs the `always` phases; a second stop, or the
                // run's timeout, does not.
                let cancel_runs_always =
                    status == RunStatus::Cancelled && self.cancelled_once && !self.halted;
                if self.state.ending.is_none()
                    && (matches!(status, RunStatus::Completed | RunStatus::Failed)
                        || cancel_runs_always)
                    && self.run.wf.always_phases().next().is_some()
                {
                    // The normal phases are over: what still runs of them stops, then the
                    // `always` phases run.
                    self.halt_work();
                    if self.start_always(status, error.clone()) {
                        continue;
                    }
                }
                return self.stop(status, error);
            }
            // Group commit: events nothing acts on yet wait up to the commit window, so one
            // commit serves many turns.
            // (Nothing in flight: the dispatcher may wait long, so they go now — unless it only
            // passes through, with more to do at once.)
            if self.journal.commit_due() || (self.workers.is_empty() && !yielding) {
                self.flush()?;
            }
            let due = self
                .journal
                .pending_since()
                .map(|t| t + super::journal::COMMIT_WINDOW);
            if due != commit_at {
                if let Some(at) = due {
                    commit.as_mut().reset(at);
                }
                commit_at = due;
            }
            let next_timer = self.timers.next();
            if next_timer != timer_at {
                if let Some(at) = next_timer {
                    timer.as_mut().reset(at);
                }
                timer_at = next_timer;
            }
            tokio::select! {
                biased;
                _ = &mut halted, if !self.halted => {
                    self.journal.clock = now();
                    self.halted = true;
                    if !self.cancelled_once {
                        self.record(EventKind::Warning { message: "cancelled by the operator".into() });
                    }
                    self.finish = Some((RunStatus::Cancelled, Some("cancelled by the operator".into())));
                }
                _ = &mut cancelled, if !self.cancelled_once => {
                    self.journal.clock = now();
                    self.cancelled_once = true;
                    let message = if self.state.ending.is_none() && self.run.wf.always_phases().next().is_some() {
                        "cancelled by the operator; the `always` phases run now (stop again to skip them)"
                    } else {
                        "cancelled by the operator"
                    };
                    self.record(EventKind::Warning { message: message.into() });
                    self.finish = Some((RunStatus::Cancelled, Some("cancelled by the operator".into())));
                }
                _ = &mut deadline => {
                    self.journal.clock = now();
                    let limit = crate::text::duration(self.run.wf.settings.timeout);
                    self.finish = Some((
                        RunStatus::Cancelled,
                        Some(format!("the run exceeded its timeout of {limit}")),
                    ));
                }
                Some(joined) = self.workers.join_next(), if !self.workers.is_empty() => {
                    self.journal.clock = now();
                    self.completed(joined);
                    // Completions that arrived together are handled, and committed, together.
                    while let Some(joined) = self.workers.try_join_next() {
                        self.completed(joined);
                    }
                }
                _ = &mut commit, if commit_at.is_some() => {
                    commit_at = None;
                    self.flush()?;
                }
                _ = &mut timer, if timer_at.is_some() => {
                    self.journal.clock = now();
                    timer_at = None;
                    self.fire_timers();
                }
                Some(r) = self.reservations.1.recv() => {
                    self.journal.clock = now();
                    self.reserved(r)?;
                }
                answer = self.escalations.answer(), if self.escalations.asking() => {
                    self.journal.clock = now();
                    self.answered(answer);
                }
                _ = tokio::task::yield_now(), if yielding => {}
            }
        }
    }

    /// Does the work that can be done now; returns whether more became possible at once.
    fn turn(&mut self) -> Result<bool, ExecError> {
        if self.finish.is_some() {
            return Ok(false);
        }
        self.pump()?;
        if self.finish.is_none() {
            self.ask_next()?;
        }
        // Work that became possible during the pump (an attempt that failed before reaching
        // its agent frees an instance for a waiter) is done now, not at the next wake-up.
        if self.finish.is_none() && (!self.pending_starts.is_empty() || !self.ready.is_empty()) {
            return Ok(true);
        }
        if self.finish.is_none() && self.idle() && self.escalations.has_waiting() {
            self.finish = Some((RunStatus::Waiting, None));
        }
        if self.finish.is_none() && self.phase_open == 0 && self.running == 0 {
            self.end_phase();
            return Ok(true);
        }
        Ok(false)
    }

    /// Nothing runs, nothing is queued, no question is open and no retry is pending.
    fn idle(&self) -> bool {
        !self.escalations.asking()
            && self.running == 0
            && self.ready.is_empty()
            && self.pending_starts.is_empty()
            && self.retries_pending == 0
    }

    /// Ends the run (or leaves it waiting for a decision) and commits the last events.
    fn stop(&mut self, status: RunStatus, error: Option<String>) -> Result<(), ExecError> {
        if status == RunStatus::Waiting {
            let tasks = self.escalations.waiting_names(&self.state);
            self.record(EventKind::RunWaiting { tasks });
        } else {
            self.stop_running();
            let (status, error) = self.run_outputs(status, error);
            self.record(EventKind::RunFinished { status, error });
        }
        self.flush()
    }

    /// Stops every attempt and forgets every queue, leaving every instance idle: the normal
    /// phases are over (their running tasks end CANCELLED).
    fn halt_work(&mut self) {
        self.stop_running();
        self.workers.detach_all();
        for pool in &mut self.pools {
            pool.reset();
        }
        self.running = 0;
        self.ready.clear();
        self.pending_starts.clear();
        self.deferred.clear();
        self.retries_pending = 0;
        self.escalations = super::escalation::Escalations::new(self.escalations.operator());
    }

    fn completed(&mut self, joined: Result<Done, tokio::task::JoinError>) {
        match joined {
            Ok(done) => self.attempt_finished(done),
            // A worker that panicked: its task is identified by the abort handle's id only,
            // so the panic is reported as a run error.
            Err(e) if e.is_panic() => {
                self.finish = Some((
                    RunStatus::Failed,
                    Some("internal error: an agent worker panicked".into()),
                ));
            }
            Err(_) => {}
        }
    }

    fn fire_timers(&mut self) {
        for timer in self.timers.due(Instant::now()) {
            match timer {
                Timer::Retry(t) => {
                    self.retries_pending = self.retries_pending.saturating_sub(1);
                    let here = self.run.wf.task(self.def_id(t)).phase.index() == self.phase;
                    if here && self.status(t) == TaskStatus::Pending {
                        self.ready.push_back(t);
                    }
                }
                Timer::Deferred(t, token) => self.deferred_too_long(t, token),
                Timer::ApprovalDue(t) => self.approval_due(t),
                Timer::AgentWait(t, token) => {
                    let rt = &self.tasks[t.index()];
                    if rt.waiting && rt.wait_token == token {
                        self.gave_up_waiting(t);
                    }
                }
            }
        }
    }

    /// Stops every running attempt; their tasks end CANCELLED.
    fn stop_running(&mut self) {
        self.workers.abort_all();
        let in_flight: Vec<TaskId> = (0..self.tasks.len())
            .map(|i| TaskId(i as u32))
            .filter(|t| self.status(*t) == TaskStatus::InProgress)
            .collect();
        for t in in_flight {
            self.cancel_attempt(t);
        }
    }

    /// When a retry of `t` that waits out its backoff is due.
    /// The declared task whose settings `t` runs with: itself, or — for a fan-out instance —
    /// the task it is an instance of.
    pub(super) fn def_id(&self, t: TaskId) -> TaskId {
        self.tasks.get(t.index()).and_then(|r| r.group).unwrap_or(t)
    }

    pub(super) fn add_timer(&mut self, after: Duration, timer: Timer) {
        self.timers.add(Instant::now() + after, timer);
    }
}
