//! The scheduler loop: one task owns the run; workers report through a `JoinSet`.
//!
//! Per phase: ready tasks pass `when`, then the `enforce` rules, then wait (FIFO, up to
//! `agent_wait`) for an IDLE instance of their pool and a free `max_parallel` slot, then run
//! with their timeout. Results go through the error handler (retry with backoff, or FAILED);
//! a final task releases its dependents. When every task of the phase is final, the gate
//! decides; after the last phase, the feedback rule decides whether to loop.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::context::{self, Templates};
use super::{resolve_params, ExecError, Observer, RunOptions};
use crate::agents::{self, Agent, TaskRequest};
use crate::check::ir::{
    Backoff, OnEscalation, OnMaxLoops, PhaseId, Rule, RuleSource, TaskId, Workflow,
};
use crate::model::{
    now, Decision, ErrorCode, Event, EventKind, RunId, RunState, RunStatus, SkipReason, TaskError,
    TaskInfo, TaskStatus,
};
use crate::plan::{Node, Plan};
use crate::policy::{PolicyHost, RuleCache, RuleContext, RuleKind, Severity, Verdict};
use crate::store::{RunRecord, Store};

/// A question to the operator in flight: the task, its error, and the answer when it comes.
type Question = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = (TaskId, TaskError, Option<(Decision, String)>)>
            + Send
            + 'static,
    >,
>;

/// A worker's report: one finished attempt.
struct Done {
    task: TaskId,
    attempt: u32,
    instance: u32,
    result: Result<Value, TaskError>,
    elapsed: Duration,
    /// Whether the agent was called (a template error fails before it is).
    reached_agent: bool,
    calls: Vec<crate::model::LlmCall>,
    artifacts: Vec<crate::model::ArtifactRef>,
    /// Served from the response cache.
    cached: bool,
}

/// A pool's circuit breaker: closed → open after `threshold` consecutive failures → half-open
/// after `cooldown` (one trial dispatch) → closed on its success, open again on its failure.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Breaker {
    Closed,
    Open {
        until: Instant,
    },
    /// The cooldown is over; `trial` is the one task allowed through, once chosen.
    HalfOpen {
        trial: Option<TaskId>,
    },
}

/// What the breaker says about a dispatch.
enum Admit {
    Go,
    /// Open: the agent is not called, the task goes to the dead-letter queue.
    Reject,
    /// Half-open with its trial in flight: wait for the trial's outcome.
    Wait,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A retry's backoff is over.
    Retry(TaskId),
    /// A task waiting for an instance gives up (the token tells stale timers apart).
    AgentWait(TaskId, u64),
}

/// The last request a task's agent was sent, for the dead-letter queue.
#[derive(Clone, Debug)]
struct LastRequest {
    instance: Arc<str>,
    attempt: u32,
    prompt: Option<String>,
    input: Value,
    command: Option<Vec<String>>,
}

impl LastRequest {
    fn to_json(&self) -> Value {
        json!({
            "instance": &*self.instance,
            "attempt": self.attempt,
            "prompt": self.prompt,
            "input": self.input,
            "command": self.command,
        })
    }
}

/// Per-task runtime state, by `TaskId`.
#[derive(Clone, Debug)]
struct TaskRt {
    name: Arc<str>,
    status: TaskStatus,
    attempt: u32,
    /// Dependencies not yet final.
    remaining: u32,
    upstream_failed: bool,
    /// Bumped each time the task starts waiting for an instance.
    wait_token: u64,
    waiting: bool,
    /// This pass's attempts, for the dead-letter queue.
    history: Vec<crate::model::AttemptRecord>,
    /// Attempts made before the last retry decision: a decided retry gets `retry` more.
    attempt_base: u32,
    /// The last request sent to the agent, as the dead-letter queue keeps it.
    last_request: Option<LastRequest>,
    /// The LLM calls of the attempt in flight, so a run that stops still records their tokens.
    live_calls: Option<agents::CallLog>,
}

struct Pool {
    count: u32,
    idle: BTreeSet<u32>,
    waiting: VecDeque<TaskId>,
    running: u32,
    failed: u32,
    instances: Vec<Arc<str>>,
    /// Whether each instance's last attempt failed (`pool.failed` for enforce rules).
    instance_failed: Vec<bool>,
    breaker: Breaker,
    consecutive_failures: u32,
    threshold: u32,
    cooldown: Duration,
}

pub(super) struct Scheduler {
    wf: Arc<Workflow>,
    plan: Arc<Plan>,
    store: Arc<dyn Store>,
    run_id: RunId,
    state: RunState,
    batch: Vec<Event>,
    observers: Vec<Box<dyn Observer>>,
    agents: Vec<Arc<dyn Agent>>,
    pools: Vec<Pool>,
    tasks: Vec<TaskRt>,
    /// Tasks of the current phase not yet final.
    phase_open: usize,
    phase: usize,
    running: usize,
    max_parallel: usize,
    workers: JoinSet<Done>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_seq: u64,
    ready: VecDeque<TaskId>,
    templates: Templates,
    params: Arc<Value>,
    cancel: tokio_util::sync::CancellationToken,
    started: Instant,
    deadline: Instant,
    rules: RuleCache,
    /// Set when the run must stop: (status, error).
    finish: Option<(RunStatus, Option<String>)>,
    file: String,
    params_map: std::collections::BTreeMap<String, Value>,
    /// Instances handed to waiting tasks, started at the next pump (after a commit).
    pending_starts: Vec<(TaskId, u32)>,
    phase_names: Vec<Arc<str>>,
    agent_names: Vec<Arc<str>>,
    /// The wall-clock time stamped on events, read once per scheduler turn.
    clock: crate::model::Timestamp,
    escalations: Option<Arc<dyn super::Escalations>>,
    /// Escalations to put to the operator, in order.
    asks: VecDeque<(TaskId, TaskError)>,
    /// The question being asked now: the run goes on while the operator thinks.
    question: Option<Question>,
    /// Escalated tasks nobody could be asked about: the run will wait for a decision.
    awaiting: Vec<TaskId>,
    /// Retries whose backoff has not run out yet.
    retries_pending: usize,
    /// The run's working folder, where agents' files are written.
    workspace: Option<std::path::PathBuf>,
    config: Arc<crate::config::Config>,
    /// Every agent is a mock: nothing is read from or written to the response cache.
    dry_run: bool,
    /// `--record`: every provider exchange must happen, so the cache is not read (it is
    /// still filled).
    recording: bool,
}

impl Scheduler {
    pub fn new(
        wf: Arc<Workflow>,
        plan: Arc<Plan>,
        options: RunOptions,
    ) -> Result<Scheduler, ExecError> {
        let params_map = resolve_params(&wf, &options.params)?;
        let modules = Arc::new(wf.module_set.clone());
        let mut agents = Vec::with_capacity(wf.agents.len());
        let mut pools = Vec::with_capacity(wf.agents.len());
        let base = wf
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(
                || std::path::PathBuf::from("."),
                std::path::Path::to_path_buf,
            );
        let mut builder = agents::Builder::new(
            options.agents,
            &base,
            options.workspace.as_deref(),
            modules,
            &options.config,
            options.recorder.clone(),
        );
        for a in &wf.agents {
            agents.push(builder.build(a).map_err(ExecError::Agent)?);
            pools.push(Pool {
                count: a.count,
                idle: (0..a.count).collect(),
                waiting: VecDeque::new(),
                running: 0,
                failed: 0,
                instances: (0..a.count)
                    .map(|i| Arc::from(a.instance_name(i)))
                    .collect(),
                instance_failed: vec![false; a.count as usize],
                breaker: Breaker::Closed,
                consecutive_failures: 0,
                threshold: a.breaker.failures,
                cooldown: a.breaker.cooldown,
            });
        }
        let tasks = wf
            .tasks
            .iter()
            .map(|t| TaskRt {
                name: Arc::from(t.name.as_str()),
                status: TaskStatus::Pending,
                attempt: 0,
                remaining: 0,
                upstream_failed: false,
                wait_token: 0,
                waiting: false,
                history: Vec::new(),
                attempt_base: 0,
                last_request: None,
                live_calls: None,
            })
            .collect();
        let wf_agent_names = wf
            .agents
            .iter()
            .map(|a| Arc::from(a.name.as_str()))
            .collect();
        let wf_phase_names = wf
            .phases
            .iter()
            .map(|p| Arc::from(p.name.as_str()))
            .collect();
        let started = Instant::now();
        let deadline = started + wf.settings.timeout;
        let max_parallel = wf.settings.max_parallel.map_or(usize::MAX, |n| n as usize);
        Ok(Scheduler {
            params: Arc::new(Value::Object(
                params_map
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )),
            params_map,
            wf,
            plan,
            store: options.store,
            run_id: options.run_id,
            state: RunState::default(),
            batch: Vec::new(),
            observers: options.observers,
            agents,
            pools,
            tasks,
            phase_open: 0,
            phase: 0,
            running: 0,
            max_parallel,
            workers: JoinSet::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            ready: VecDeque::new(),
            templates: Templates::new(options.agents != agents::AgentMode::DryRun),
            dry_run: options.agents == agents::AgentMode::DryRun,
            recording: options.recorder.is_some(),
            cancel: options.cancel,
            started,
            deadline,
            rules: RuleCache::default(),
            finish: None,
            file: options.file,
            pending_starts: Vec::new(),
            escalations: options.escalations,
            asks: VecDeque::new(),
            question: None,
            awaiting: Vec::new(),
            retries_pending: 0,
            workspace: options.workspace.clone(),
            config: options.config.clone(),
            phase_names: wf_phase_names,
            agent_names: wf_agent_names,
            clock: now(),
        })
    }

    /// Records an event: applied to the state now, appended to the store at the next flush,
    /// which always comes before the scheduler acts on it.
    fn record(&mut self, kind: EventKind) {
        let event = Event {
            seq: self.state.last_seq + 1,
            at: self.clock,
            kind,
        };
        self.state.apply(&event);
        self.batch.push(event);
    }

    /// Appends the recorded events in one call (one transaction for a durable store).
    fn flush(&mut self) -> Result<(), ExecError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.store.append(&self.run_id, &self.batch)?;
        for e in &self.batch {
            for o in &mut self.observers {
                o.event(e, &self.state);
            }
        }
        self.batch.clear();
        Ok(())
    }

    pub async fn run(mut self) -> Result<RunState, ExecError> {
        self.store.create_run(&RunRecord {
            id: self.run_id.clone(),
            workflow: self.wf.name.clone(),
            file: self.file.clone(),
            params: self.params_map.clone(),
            created_at: now(),
            status: RunStatus::Pending,
        })?;
        let task_infos = self
            .wf
            .tasks
            .iter()
            .map(|t| TaskInfo {
                name: self.tasks[t.id.index()].name.clone(),
                phase: self.phase_names[t.phase.index()].clone(),
                agent: self.agent_names[t.agent.index()].clone(),
            })
            .collect();
        let instances = self
            .pools
            .iter()
            .flat_map(|p| p.instances.iter().map(|i| i.to_string()))
            .collect();
        self.record(EventKind::RunStarted {
            run_id: self.run_id.clone(),
            workflow: self.wf.name.clone(),
            file: self.file.clone(),
            params: self.params_map.clone(),
            tasks: task_infos,
            agents: instances,
            dry_run: self.dry_run,
        });
        // The run's first event is in the store before the run is marked in progress.
        self.flush()?;
        self.store.set_status(&self.run_id, RunStatus::InProgress)?;
        if self.wf.phases.is_empty() {
            self.finish = Some((RunStatus::Completed, None));
        } else {
            self.enter_phase(0);
        }
        self.finish_run().await
    }

    async fn finish_run(mut self) -> Result<RunState, ExecError> {
        let result = self.drive().await;
        // Whatever happened, stop the workers before reporting.
        self.workers.shutdown().await;
        result?;
        for o in &mut self.observers {
            o.finished(&self.state);
        }
        Ok(self.state)
    }

    /// Continues a run from its log. Tasks whose result is stored are never run again; a task
    /// that was in flight when the run stopped runs again, unless its effect is `external`:
    /// then it is escalated (an operator decides) rather than silently repeated.
    pub async fn resume(
        mut self,
        events: Vec<Event>,
        mut decisions: Vec<(String, Decision)>,
        retry: Option<(String, String)>,
    ) -> Result<RunState, ExecError> {
        self.state = RunState::from_events(&events);
        // The log must describe this workflow: same tasks, in the same phases and order.
        let same = self.state.tasks.len() == self.wf.tasks.len()
            && self
                .state
                .tasks
                .iter()
                .zip(&self.wf.tasks)
                .all(|(r, t)| *r.task == *t.name && *r.phase == *self.wf.phase(t.phase).name);
        if !same {
            return Err(ExecError::Agent(format!(
                "the workflow file `{}` no longer has the tasks run {} started with; resume \
                 needs the file as it was (start a new run for the changed workflow)",
                self.state.file, self.state.workflow_id
            )));
        }
        // Observers see the history as it happened: each event with the state it made.
        if !self.observers.is_empty() {
            let mut then = RunState::default();
            for e in &events {
                then.apply(e);
                for o in &mut self.observers {
                    o.event(e, &then);
                }
            }
        }
        let wf = self.wf.clone();
        let phase = self
            .state
            .current_phase
            .as_deref()
            .and_then(|p| wf.phases.iter().position(|ph| ph.name == p))
            .unwrap_or(0);
        self.phase = phase;
        // Tasks take their stored status; those of the current phase are re-assessed.
        let mut rerun = Vec::new();
        let mut external = Vec::new();
        for (i, result) in self.state.tasks.clone().iter().enumerate() {
            let rt = &mut self.tasks[i];
            rt.status = result.status;
            rt.attempt = result.attempts;
            rt.upstream_failed = result.skip_reason == Some(SkipReason::UpstreamFailed);
            // In flight when the run stopped: a crash leaves it IN_PROGRESS, a cancellation
            // (Ctrl-C, the run timeout) CANCELLED.
            if matches!(
                result.status,
                TaskStatus::InProgress | TaskStatus::Cancelled
            ) {
                let t = TaskId(i as u32);
                // Not final either way: it runs again, or waits for a decision.
                rt.status = TaskStatus::Pending;
                if wf.task(t).effect == crate::check::ir::Effect::External {
                    external.push(t);
                } else {
                    rt.status = TaskStatus::Pending;
                    rerun.push(rt.name.clone());
                }
            }
        }
        let retry_due = self.rebuild_history(&events);
        self.record(EventKind::RunResumed {
            rerun: rerun.clone(),
        });
        // `conductor dlq retry`: the dead-lettered task gets fresh attempts in its phase.
        if let Some((name, entry)) = &retry {
            let Some(task) = wf.task_by_name(name) else {
                return Err(ExecError::Agent(format!(
                    "no task `{name}` in this workflow"
                )));
            };
            let t = task.id;
            if self.tasks[t.index()].status != TaskStatus::Failed {
                return Err(ExecError::Agent(format!(
                    "task `{name}` is {} now, not failed: dead letter {entry} is from an earlier \
                     pass; nothing to retry",
                    self.tasks[t.index()].status.as_str()
                )));
            }
            if task.phase.index() != phase {
                return Err(ExecError::Agent(format!(
                    "task `{name}` belongs to phase `{}`, and the run is in phase `{}`: \
                     `dlq retry` re-runs a task only in the phase its run stopped in",
                    wf.phase(task.phase).name,
                    wf.phases[phase].name
                )));
            }
            let rt = &mut self.tasks[t.index()];
            rt.status = TaskStatus::Pending;
            rt.history.clear();
            rt.attempt_base = rt.attempt;
            let task_name = rt.name.clone();
            self.record(EventKind::Decided {
                task: task_name,
                decision: Decision::Retry,
                by: format!("conductor dlq retry {entry}"),
            });
            // Its dependents, skipped because it failed, get their chance again.
            let mut reopened = vec![t];
            let mut i = 0;
            while i < reopened.len() {
                let current = reopened[i];
                for &other in &wf.phases[phase].tasks {
                    let rt = &self.tasks[other.index()];
                    if wf.task(other).after.contains(&current)
                        && rt.status == TaskStatus::Skipped
                        && rt.upstream_failed
                        && !reopened.contains(&other)
                    {
                        reopened.push(other);
                    }
                }
                i += 1;
            }
            for other in reopened.into_iter().skip(1) {
                let rt = &mut self.tasks[other.index()];
                rt.status = TaskStatus::Pending;
                rt.upstream_failed = false;
                let other_name = rt.name.clone();
                // In the log too, so a crash before they run does not forget them.
                self.record(EventKind::Decided {
                    task: other_name,
                    decision: Decision::Retry,
                    by: format!("conductor dlq retry {entry} (its dependency runs again)"),
                });
            }
        }
        let phase_tasks = wf.phases[phase].tasks.clone();
        self.phase_open = phase_tasks
            .iter()
            .filter(|t| !self.tasks[t.index()].status.is_final())
            .count();
        let awaiting: Vec<TaskId> = self
            .state
            .awaiting_decision
            .iter()
            .filter_map(|name| wf.task_by_name(name).map(|t| t.id))
            .collect();
        for &t in &phase_tasks {
            let task = wf.task(t);
            let mut remaining = 0;
            let mut failed_dep = false;
            for d in &task.after {
                let rt = &self.tasks[d.index()];
                if !rt.status.is_final() {
                    remaining += 1;
                } else if rt.status == TaskStatus::Failed
                    || (rt.status == TaskStatus::Skipped && rt.upstream_failed)
                {
                    failed_dep = true;
                }
            }
            let rt = &mut self.tasks[t.index()];
            rt.remaining = remaining;
            if failed_dep {
                rt.upstream_failed = true;
            }
            if rt.status == TaskStatus::Pending
                && remaining == 0
                && !awaiting.contains(&t)
                && !external.contains(&t)
            {
                // A retry still in its backoff when the run stopped waits out the rest of it.
                let now = crate::model::now().0;
                match retry_due.get(&t).filter(|(due, _)| *due > now) {
                    Some((due, delay)) => {
                        // Wall clock: if it stepped back, wait at most the backoff itself.
                        let wait = (due - now).min(*delay);
                        self.retries_pending += 1;
                        self.add_timer(
                            Instant::now() + Duration::from_millis(wait),
                            Timer::Retry(t),
                        );
                    }
                    None => self.ready.push_back(t),
                }
            }
        }
        if self.escalations.is_some() {
            // Someone is at the terminal: put the open questions to them.
            for t in awaiting {
                let error = self.state.tasks[t.index()]
                    .error
                    .clone()
                    .unwrap_or_else(|| TaskError::fatal(ErrorCode::Fatal, "escalated"));
                if decisions
                    .iter()
                    .any(|(n, _)| *n == *self.tasks[t.index()].name)
                {
                    self.awaiting.push(t);
                } else {
                    self.asks.push_back((t, error));
                }
            }
        } else {
            self.awaiting = awaiting;
        }
        for t in external {
            let error = TaskError::fatal(
                ErrorCode::AgentCrashed,
                "the task was in flight when the run stopped, and its effect is `external`: \
                 running it again could repeat a side effect",
            );
            let name = self.tasks[t.index()].name.to_string();
            match decisions.iter().position(|(n, _)| *n == name) {
                // Answered on the command line already: no need to ask.
                Some(i) => {
                    let (_, decision) = decisions.remove(i);
                    self.record(EventKind::Escalated {
                        task: self.tasks[t.index()].name.clone(),
                        error: error.clone(),
                    });
                    self.decide(t, decision, "conductor resume --decide".into(), &error);
                }
                // Always asked, never decided by `on_escalation`: only a person knows whether
                // the side effect happened.
                None => {
                    self.record(EventKind::Escalated {
                        task: self.tasks[t.index()].name.clone(),
                        error: error.clone(),
                    });
                    self.tasks[t.index()].status = TaskStatus::Pending;
                    if self.escalations.is_some() {
                        self.asks.push_back((t, error));
                    } else {
                        self.awaiting.push(t);
                    }
                }
            }
        }
        for (name, decision) in decisions {
            let Some(task) = wf.task_by_name(&name) else {
                return Err(ExecError::Agent(format!(
                    "`--decide {name}=…`: no task `{name}` in this workflow"
                )));
            };
            let t = task.id;
            let pending: Vec<TaskId> = self.asks.iter().map(|(t, _)| *t).collect();
            if !self.awaiting.contains(&t) && !pending.contains(&t) {
                return Err(ExecError::Agent(format!(
                    "`--decide {name}=…`: task `{name}` is not waiting for a decision"
                )));
            }
            self.asks.retain(|(a, _)| *a != t);
            let error = self.state.tasks[t.index()]
                .error
                .clone()
                .unwrap_or_else(|| TaskError::fatal(ErrorCode::Fatal, "escalated"));
            self.decide(t, decision, "conductor resume --decide".into(), &error);
        }
        self.store.set_status(&self.run_id, RunStatus::InProgress)?;
        self.finish_run().await
    }

    async fn drive(&mut self) -> Result<(), ExecError> {
        // Created once: registering a timer or a cancellation waiter on every turn of the
        // loop would cost more than the rest of a turn.
        let cancel = self.cancel.clone();
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let deadline = tokio::time::sleep_until(self.deadline);
        tokio::pin!(deadline);
        let timer = tokio::time::sleep_until(self.deadline);
        tokio::pin!(timer);
        let mut timer_at: Option<Instant> = None;
        loop {
            self.clock = now();
            if self.finish.is_none() {
                self.pump()?;
            }
            if self.finish.is_none() && self.question.is_none() && !self.asks.is_empty() {
                self.ask()?;
            }
            // Work that became possible during the pump (an attempt that failed before reaching
            // its agent frees an instance for a waiter) is done now, not at the next wake-up.
            if self.finish.is_none() && (!self.pending_starts.is_empty() || !self.ready.is_empty())
            {
                continue;
            }
            if self.finish.is_none()
                && !self.awaiting.is_empty()
                && self.question.is_none()
                && self.asks.is_empty()
                && self.running == 0
                && self.ready.is_empty()
                && self.pending_starts.is_empty()
                && self.retries_pending == 0
            {
                self.finish = Some((RunStatus::Waiting, None));
            }
            if self.finish.is_none() && self.phase_open == 0 && self.running == 0 {
                self.end_phase();
                continue;
            }
            if let Some((status, error)) = self.finish.take() {
                if status == RunStatus::Waiting {
                    let tasks = self
                        .awaiting
                        .iter()
                        .map(|t| self.tasks[t.index()].name.clone())
                        .collect();
                    self.record(EventKind::RunWaiting { tasks });
                    self.flush()?;
                    self.store.set_status(&self.run_id, status)?;
                    return Ok(());
                }
                self.stop_running();
                self.record(EventKind::RunFinished { status, error });
                self.flush()?;
                self.store.set_status(&self.run_id, status)?;
                return Ok(());
            }
            self.flush()?;
            let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
            if next_timer != timer_at {
                if let Some(at) = next_timer {
                    timer.as_mut().reset(at);
                }
                timer_at = next_timer;
            }
            tokio::select! {
                biased;
                _ = &mut cancelled => {
                    self.clock = now();
                    self.record(EventKind::Warning { message: "cancelled by the operator".into() });
                    self.finish = Some((RunStatus::Cancelled, Some("cancelled by the operator".into())));
                }
                _ = &mut deadline => {
                    self.clock = now();
                    let limit = crate::check::render::dur(self.wf.settings.timeout);
                    self.finish = Some((
                        RunStatus::Cancelled,
                        Some(format!("the run exceeded its timeout of {limit}")),
                    ));
                }
                Some(joined) = self.workers.join_next(), if !self.workers.is_empty() => {
                    self.clock = now();
                    self.completed(joined);
                    // Completions that arrived together are handled, and later committed,
                    // together.
                    while let Some(joined) = self.workers.try_join_next() {
                        self.completed(joined);
                    }
                }
                _ = &mut timer, if timer_at.is_some() => {
                    self.clock = now();
                    timer_at = None;
                    self.fire_timers();
                }
                (t, error, answer) = async { self.question.as_mut().expect("guarded").await },
                    if self.question.is_some() =>
                {
                    self.clock = now();
                    self.question = None;
                    self.answered(t, &error, answer);
                }
            }
        }
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

    fn enter_phase(&mut self, k: usize) {
        self.phase = k;
        let phase = &self.wf.phases[k];
        let loop_count = self.state.feedback_loop_count;
        self.record(EventKind::PhaseEntered {
            phase: phase.name.clone(),
            loop_count,
        });
        let wf = self.wf.clone();
        let phase = wf.phase(PhaseId(k as u32));
        self.phase_open = phase.tasks.len();
        for &t in &phase.tasks {
            let rt = &mut self.tasks[t.index()];
            rt.status = TaskStatus::Pending;
            rt.attempt = 0;
            rt.upstream_failed = false;
            rt.waiting = false;
            rt.history.clear();
            rt.attempt_base = 0;
            rt.last_request = None;
            rt.remaining = wf.task(t).after.len() as u32;
            if rt.remaining == 0 {
                self.ready.push_back(t);
            }
        }
    }

    /// Moves ready tasks through `when`, `enforce` and instance assignment, then starts them.
    fn pump(&mut self) -> Result<(), ExecError> {
        let mut starts = std::mem::take(&mut self.pending_starts);
        while let Some(t) = self.ready.pop_front() {
            if self.finish.is_some() {
                break;
            }
            let rt = &self.tasks[t.index()];
            if rt.upstream_failed {
                let failed_dep = self
                    .wf
                    .task(t)
                    .after
                    .iter()
                    .find(|d| {
                        let rt = &self.tasks[d.index()];
                        rt.status == TaskStatus::Failed
                            || (rt.status == TaskStatus::Skipped && rt.upstream_failed)
                    })
                    .map(|d| {
                        let rt = &self.tasks[d.index()];
                        let how = if rt.status == TaskStatus::Failed {
                            "failed"
                        } else {
                            "was skipped because its own upstream failed"
                        };
                        format!("its dependency `{}` {how}", rt.name)
                    });
                self.skip(t, SkipReason::UpstreamFailed, failed_dep);
                continue;
            }
            if rt.attempt == 0 {
                if let Some(rule) = self.wf.task(t).when.clone() {
                    match self.evaluate_when(&rule) {
                        Ok(true) => {}
                        Ok(false) => {
                            let detail = format!(
                                "its `when` rule at {} was false (it saw loop_count {} and params {})",
                                rule.location, self.state.feedback_loop_count, self.params
                            );
                            self.skip(t, SkipReason::WhenFalse, Some(detail));
                            continue;
                        }
                        Err(error) => {
                            self.escalate(t, error);
                            continue;
                        }
                    }
                }
            }
            if !self.enforce(t) {
                break;
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
        self.start(starts)
    }

    /// Takes an idle instance of the task's pool when one is free and `max_parallel` allows.
    fn acquire(&mut self, t: TaskId) -> Option<u32> {
        let pool = &mut self.pools[self.wf.task(t).agent.index()];
        // A half-open breaker's trial goes ahead of the tasks waiting for its outcome.
        let trial = pool.breaker == (Breaker::HalfOpen { trial: Some(t) });
        if self.running >= self.max_parallel || (!pool.waiting.is_empty() && !trial) {
            return None;
        }
        let instance = pool.idle.pop_first()?;
        pool.running += 1;
        self.running += 1;
        Some(instance)
    }

    fn wait_for_instance(&mut self, t: TaskId) {
        let wait = self.wf.settings.agent_wait;
        let rt = &mut self.tasks[t.index()];
        rt.wait_token += 1;
        rt.waiting = true;
        let token = rt.wait_token;
        self.pools[self.wf.task(t).agent.index()]
            .waiting
            .push_back(t);
        self.add_timer(Instant::now() + wait, Timer::AgentWait(t, token));
    }

    /// Gives freed instances to waiting tasks, first come first served.
    fn serve_waiters(&mut self) -> Vec<(TaskId, u32)> {
        let mut starts = Vec::new();
        for p in 0..self.pools.len() {
            if self.pools[p].breaker != Breaker::Closed {
                // Each waiter is decided against the breaker where it stands in the queue:
                // the trial goes ahead when an instance is free, the others keep their place
                // and their `agent_wait`, and an open breaker sends them to the dead-letter
                // queue. (Their `when` and `enforce` rules were decided when they queued.)
                let waiting: Vec<TaskId> = self.pools[p].waiting.iter().copied().collect();
                for t in waiting {
                    match self.admit(t) {
                        Admit::Wait => {}
                        Admit::Reject => {
                            self.pools[p].waiting.retain(|w| *w != t);
                            self.tasks[t.index()].waiting = false;
                            self.reject_open(t);
                        }
                        Admit::Go => {
                            if self.running >= self.max_parallel {
                                continue;
                            }
                            let pool = &mut self.pools[p];
                            let Some(instance) = pool.idle.pop_first() else {
                                continue;
                            };
                            pool.waiting.retain(|w| *w != t);
                            pool.running += 1;
                            self.running += 1;
                            self.tasks[t.index()].waiting = false;
                            starts.push((t, instance));
                        }
                    }
                }
                continue;
            }
            while self.running < self.max_parallel {
                let pool = &mut self.pools[p];
                if pool.idle.is_empty() {
                    break;
                }
                let Some(t) = pool.waiting.pop_front() else {
                    break;
                };
                let instance = pool.idle.pop_first().expect("checked non-empty");
                pool.running += 1;
                self.running += 1;
                self.tasks[t.index()].waiting = false;
                starts.push((t, instance));
            }
        }
        starts
    }

    /// Records the dispatches, commits them, then hands the attempts to workers.
    fn start(&mut self, starts: Vec<(TaskId, u32)>) -> Result<(), ExecError> {
        if starts.is_empty() {
            return Ok(());
        }
        let mut requests = Vec::with_capacity(starts.len());
        for (t, instance) in starts {
            let rt = &mut self.tasks[t.index()];
            rt.attempt += 1;
            rt.status = TaskStatus::InProgress;
            let attempt = rt.attempt;
            let name = rt.name.clone();
            let agent_id = self.wf.task(t).agent;
            let instance_name = self.pools[agent_id.index()].instances[instance as usize].clone();
            self.record(EventKind::TaskDispatched {
                task: name,
                agent: instance_name.clone(),
                attempt,
            });
            requests.push((t, instance, attempt, instance_name));
        }
        // Persist before acting: the dispatches are in the log before any agent starts.
        self.flush()?;
        for (t, instance, attempt, instance_name) in requests {
            match self.request(t, attempt, instance_name) {
                Ok(request) => {
                    // Kept cheaply; turned into JSON only if the task is dead-lettered.
                    self.tasks[t.index()].last_request = Some(LastRequest {
                        instance: request.instance.clone(),
                        attempt: request.attempt,
                        prompt: request.prompt.clone(),
                        input: request.input.clone(),
                        command: request.shell.as_ref().map(|s| s.argv.clone()),
                    });
                    let agent = self.agents[self.wf.task(t).agent.index()].clone();
                    let timeout = self.wf.task(t).timeout;
                    let cache = (self.wf.task(t).cache && !self.dry_run).then(|| Cache {
                        key: self.cache_key(t, &request),
                        read: !self.recording,
                    });
                    // Files in an output become artifacts, except an http agent's: a third
                    // party's answer must not write into the workspace.
                    let files = !matches!(
                        self.wf.agent(self.wf.task(t).agent).kind,
                        crate::check::ir::AgentKind::Http(_)
                    );
                    let store = self.store.clone();
                    let workspace = self.workspace.clone();
                    let calls = request.calls.clone();
                    self.tasks[t.index()].live_calls = Some(calls.clone());
                    self.workers.spawn(async move {
                        let begun = Instant::now();
                        let (result, artifacts, cached) =
                            run_attempt(agent, request, timeout, cache, store, workspace, files)
                                .await;
                        Done {
                            task: t,
                            attempt,
                            instance,
                            result,
                            elapsed: begun.elapsed(),
                            reached_agent: !cached,
                            calls: calls.take(),
                            artifacts,
                            cached,
                        }
                    });
                }
                Err(error) => self.attempt_finished(Done {
                    task: t,
                    attempt,
                    instance,
                    result: Err(error),
                    elapsed: Duration::ZERO,
                    reached_agent: false,
                    calls: Vec::new(),
                    artifacts: Vec::new(),
                    cached: false,
                }),
            }
        }
        Ok(())
    }

    /// The request for one attempt, its templates rendered.
    fn request(
        &self,
        t: TaskId,
        attempt: u32,
        instance: Arc<str>,
    ) -> Result<TaskRequest, TaskError> {
        let task = self.wf.task(t);
        let needs_ctx = context::needs_template_context(&self.wf, task);
        let input_json = Value::Object(
            task.input
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        );
        let mut ctx = needs_ctx.then(|| {
            json!({
                "params": &*self.params,
                "tasks": context::tasks_json(&self.state, |r| r.status.is_final()),
                "feedback": context::feedback_json(&self.state),
                "loop_count": self.state.feedback_loop_count,
                "attempt": attempt,
            })
        });
        let input = match &ctx {
            Some(c) => {
                let what = format!("`input` of task `{}`", task.name);
                self.templates.render_value(&input_json, &what, c)?
            }
            None => input_json,
        };
        if let Some(c) = ctx.as_mut() {
            c["input"] = input.clone();
        }
        let empty = Value::Null;
        let ctx_ref = ctx.as_ref().unwrap_or(&empty);
        let prompt = match &task.prompt {
            Some(p) => Some(self.templates.render(
                p,
                &format!("`prompt` of task `{}`", task.name),
                ctx_ref,
            )?),
            None => None,
        };
        let shell = match &self.wf.agent(task.agent).kind {
            crate::check::ir::AgentKind::Shell(sh) => {
                let what =
                    |part: &str| format!("`{part}` of agent `{}`", self.wf.agent(task.agent).name);
                let argv = sh
                    .command
                    .iter()
                    .map(|t| self.templates.render(t, &what("command"), ctx_ref))
                    .collect::<Result<Vec<_>, _>>()?;
                let workdir = match &sh.workdir {
                    Some(w) => Some(self.templates.render(w, &what("workdir"), ctx_ref)?),
                    None => None,
                };
                let env = sh
                    .env
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.templates.render(v, &what("env"), ctx_ref)?)))
                    .collect::<Result<Vec<_>, TaskError>>()?;
                Some(agents::ShellCommand { argv, workdir, env })
            }
            _ => None,
        };
        let http = match &self.wf.agent(task.agent).kind {
            crate::check::ir::AgentKind::Http(h) => {
                let what =
                    |part: &str| format!("`{part}` of agent `{}`", self.wf.agent(task.agent).name);
                let url = self.templates.render(&h.url, &what("url"), ctx_ref)?;
                let headers = h
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            self.templates.render(v, &what("headers"), ctx_ref)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, TaskError>>()?;
                let body = match &h.body {
                    Some(b) => Some(self.templates.render(b, &what("body"), ctx_ref)?),
                    None => None,
                };
                Some(agents::HttpCall {
                    method: h.method.clone(),
                    url,
                    headers,
                    body,
                })
            }
            _ => None,
        };
        let system = match &self.wf.agent(task.agent).kind {
            crate::check::ir::AgentKind::Llm(l) => match &l.system {
                Some(sys) => Some(self.templates.render(
                    sys,
                    &format!("`system` of agent `{}`", self.wf.agent(task.agent).name),
                    ctx_ref,
                )?),
                None => None,
            },
            _ => None,
        };
        let upstream = task
            .after
            .iter()
            .filter_map(|d| {
                let r = &self.state.tasks[d.index()];
                (r.status == TaskStatus::Completed).then(|| (r.task.to_string(), r.output.clone()))
            })
            .collect();
        Ok(TaskRequest {
            run_id: self.run_id.clone(),
            task: self.tasks[t.index()].name.clone(),
            phase: self.phase_names[task.phase.index()].clone(),
            instance,
            attempt,
            loop_count: self.state.feedback_loop_count,
            prompt,
            input,
            upstream,
            params: self.params.clone(),
            feedback: self.state.feedback.clone(),
            shell,
            tasks: matches!(
                self.wf.agent(task.agent).kind,
                crate::check::ir::AgentKind::Script(_)
            )
            .then(|| context::tasks_json(&self.state, |r| r.status.is_final())),
            http,
            system,
            calls: agents::CallLog::default(),
        })
    }

    /// The response cache's key for a dispatch: the agent's configuration and everything
    /// rendered for this attempt (prompt, system prompt, input, command, request; for script
    /// agents the finished tasks they read).
    fn cache_key(&self, t: TaskId, request: &TaskRequest) -> String {
        use sha2::Digest;
        let agent = self.wf.agent(self.wf.task(t).agent);
        let config = match &agent.kind {
            crate::check::ir::AgentKind::Llm(l) => {
                // The provider's whole configuration (it holds no secret: only the name of the
                // variable with the key).
                let p = self.config.providers.get(&l.provider);
                json!({
                    "kind": "llm", "provider": l.provider, "model": l.model, "role": l.role.map(|r| r.as_str()),
                    "temperature": l.temperature, "max_tokens": l.max_tokens,
                    "provider_config": p.map(|p| format!("{p:?}")),
                })
            }
            crate::check::ir::AgentKind::Script(s) => {
                json!({ "kind": "script", "function": s.function, "tasks": request.tasks })
            }
            crate::check::ir::AgentKind::Mock(m) => {
                json!({ "kind": "mock", "settings": format!("{m:?}") })
            }
            other => json!({ "kind": other.name() }),
        };
        let key = json!({
            "agent": config,
            "prompt": request.prompt,
            "system": request.system,
            "input": request.input,
            "shell": request.shell.as_ref().map(|s| json!({ "argv": s.argv, "workdir": s.workdir, "env": s.env })),
            "http": request.http.as_ref().map(|h| json!({ "method": h.method, "url": h.url, "headers": h.headers, "body": h.body })),
        });
        format!("{:x}", sha2::Sha256::digest(key.to_string().as_bytes()))
    }

    fn attempt_finished(&mut self, done: Done) {
        let t = done.task;
        let agent_id = self.wf.task(t).agent;
        let pool = &mut self.pools[agent_id.index()];
        let instance_name = pool.instances[done.instance as usize].clone();
        pool.idle.insert(done.instance);
        pool.running -= 1;
        if done.reached_agent {
            pool.instance_failed[done.instance as usize] = done.result.is_err();
            pool.failed = pool.instance_failed.iter().filter(|f| **f).count() as u32;
        }
        self.running -= 1;
        let name = self.tasks[t.index()].name.clone();
        let (output, error) = match &done.result {
            Ok(v) => (Some(v.clone()), None),
            Err(e) => (None, Some(e.clone())),
        };
        // Failed attempts are kept for the dead-letter queue (a success ends the task).
        if let Some(e) = &error {
            self.tasks[t.index()]
                .history
                .push(crate::model::AttemptRecord {
                    attempt: done.attempt,
                    agent: Some(instance_name.clone()),
                    error: Some(e.clone()),
                    retry_delay_ms: None,
                    duration_ms: done.elapsed.as_millis() as u64,
                });
        }
        self.record(EventKind::AttemptFinished {
            task: name.clone(),
            agent: instance_name,
            attempt: done.attempt,
            duration_ms: done.elapsed.as_millis() as u64,
            output,
            error,
            calls: done.calls,
            artifacts: done.artifacts,
            cached: done.cached,
        });
        if done.reached_agent {
            match &done.result {
                Ok(_) => self.breaker_success(agent_id.index(), t),
                Err(e) if e.code != ErrorCode::Cancelled => {
                    self.breaker_failure(agent_id.index(), t)
                }
                Err(_) => {}
            }
        } else if self.pools[agent_id.index()].breaker == (Breaker::HalfOpen { trial: Some(t) }) {
            // The trial never reached the agent: the next dispatch becomes the trial.
            self.pools[agent_id.index()].breaker = Breaker::HalfOpen { trial: None };
        }
        match done.result {
            Ok(_) => {
                self.tasks[t.index()].status = TaskStatus::Completed;
                self.record(EventKind::TaskFinished {
                    task: name,
                    status: TaskStatus::Completed,
                    error: None,
                });
                self.task_final(t);
            }
            Err(error) => self.failed_attempt(t, error),
        }
        // Started at the next pump, after this batch is committed.
        let starts = self.serve_waiters();
        self.pending_starts.extend(starts);
    }

    /// The error handler (the seed's flowchart): circuit open → dead-letter queue;
    /// non-retryable → escalation; retryable with attempts left → retry after backoff;
    /// otherwise → dead-letter queue. Dead-lettered tasks end FAILED.
    fn failed_attempt(&mut self, t: TaskId, error: TaskError) {
        let task = self.wf.task(t);
        let attempt = self.tasks[t.index()].attempt;
        let pool = &self.pools[task.agent.index()];
        if self.finish.is_some() {
            self.fail_task(t, error);
        } else if matches!(pool.breaker, Breaker::Open { .. }) {
            let name = &self.wf.agent(task.agent).name;
            let reason = format!("the circuit breaker of agent `{name}` opened");
            self.dead_letter(t, reason, error);
        } else if !error.retryable {
            self.escalate(t, error);
        } else if attempt - self.tasks[t.index()].attempt_base.min(attempt) <= task.retry {
            let delay = backoff_delay(task.backoff, attempt, &self.tasks[t.index()].name)
                .max(Duration::from_millis(error.retry_after_ms.unwrap_or(0)));
            let delay_ms = delay.as_millis() as u64;
            let rt = &mut self.tasks[t.index()];
            rt.status = TaskStatus::Pending;
            if let Some(last) = rt.history.last_mut() {
                last.retry_delay_ms = Some(delay_ms);
            }
            self.record(EventKind::RetryScheduled {
                task: self.tasks[t.index()].name.clone(),
                attempt: attempt + 1,
                delay_ms,
            });
            self.retries_pending += 1;
            self.add_timer(Instant::now() + delay, Timer::Retry(t));
        } else {
            let reason = format!(
                "{attempt} attempt{} failed",
                if attempt == 1 { "" } else { "s" }
            );
            self.dead_letter(t, reason, error);
        }
    }

    /// Puts a task in the dead-letter queue with its attempts and last request; it ends FAILED.
    fn dead_letter(&mut self, t: TaskId, reason: String, error: TaskError) {
        let task = self.wf.task(t);
        let rt = &self.tasks[t.index()];
        let entry = crate::model::DeadLetter {
            id: format!("{}:{}", self.run_id, self.state.last_seq + 1),
            run_id: self.run_id.clone(),
            task: rt.name.clone(),
            phase: self.phase_names[task.phase.index()].clone(),
            pool: self.agent_names[task.agent.index()].clone(),
            reason,
            attempts: rt.history.clone(),
            request: rt
                .last_request
                .as_ref()
                .map_or(Value::Null, LastRequest::to_json),
            at: self.clock,
        };
        self.record(EventKind::DeadLettered { entry });
        self.fail_task(t, error);
    }

    /// A non-retryable failure: `on_escalation` decides, or the operator is asked.
    fn escalate(&mut self, t: TaskId, error: TaskError) {
        self.record(EventKind::Escalated {
            task: self.tasks[t.index()].name.clone(),
            error: error.clone(),
        });
        let mode = self
            .wf
            .settings
            .on_escalation
            .unwrap_or(if self.escalations.is_some() {
                OnEscalation::Ask
            } else {
                OnEscalation::Abort
            });
        match mode {
            OnEscalation::Skip => {
                self.decide(t, Decision::Skip, "on_escalation = \"skip\"".into(), &error)
            }
            OnEscalation::Abort => {
                let by = if self.wf.settings.on_escalation.is_some() {
                    "on_escalation = \"abort\""
                } else {
                    "on_escalation (default \"abort\": no terminal to ask)"
                };
                self.decide(t, Decision::Abort, by.into(), &error)
            }
            OnEscalation::Ask => {
                self.tasks[t.index()].status = TaskStatus::Pending;
                if self.escalations.is_some() {
                    self.asks.push_back((t, error));
                } else {
                    self.awaiting.push(t);
                }
            }
        }
    }

    /// Puts the queued escalations to the operator, one at a time.
    /// Puts the next escalation to the operator. The answer arrives in the scheduler loop, which
    /// goes on meanwhile: completions, timers, Ctrl-C and the run timeout are not held up.
    fn ask(&mut self) -> Result<(), ExecError> {
        self.flush()?;
        let Some(handler) = self.escalations.clone() else {
            // Nobody to ask: the run will wait for `conductor resume --decide`.
            let asks: Vec<TaskId> = self.asks.drain(..).map(|(t, _)| t).collect();
            self.awaiting.extend(asks);
            return Ok(());
        };
        let Some((t, error)) = self.asks.pop_front() else {
            return Ok(());
        };
        let question = super::Escalation {
            run_id: self.run_id.clone(),
            task: self.tasks[t.index()].name.to_string(),
            attempts: self.tasks[t.index()].attempt,
            error: error.clone(),
        };
        self.question = Some(Box::pin(async move {
            let answer = handler.decide(&question).await;
            (t, error, answer)
        }));
        Ok(())
    }

    fn answered(&mut self, t: TaskId, error: &TaskError, answer: Option<(Decision, String)>) {
        // (A run that ended while the question was open dropped it: no late answers here.)
        match answer {
            Some((decision, by)) => self.decide(t, decision, by, error),
            None => self.awaiting.push(t),
        }
    }

    /// Applies a decision on an escalated task, recording who or what made it.
    pub(super) fn decide(&mut self, t: TaskId, decision: Decision, by: String, error: &TaskError) {
        self.awaiting.retain(|w| *w != t);
        self.record(EventKind::Decided {
            task: self.tasks[t.index()].name.clone(),
            decision,
            by: by.clone(),
        });
        match decision {
            Decision::Retry => {
                let rt = &mut self.tasks[t.index()];
                rt.status = TaskStatus::Pending;
                rt.attempt_base = rt.attempt;
                self.ready.push_back(t);
            }
            Decision::Skip => self.skip(t, SkipReason::Decision, Some(format!("decided by {by}"))),
            Decision::Abort => {
                let name = self.tasks[t.index()].name.clone();
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

    /// What the pool's breaker says about dispatching `t` now.
    /// Rebuilds from a stopped run's log what the runtime state keeps beside the projection:
    /// each task's failed attempts of its current pass (for the dead-letter queue), the attempt
    /// count a decided retry started from, and — returned — when a retry that was waiting out
    /// its backoff is due (wall-clock milliseconds) and that backoff.
    fn rebuild_history(
        &mut self,
        events: &[Event],
    ) -> std::collections::HashMap<TaskId, (u64, u64)> {
        let mut due = std::collections::HashMap::new();
        // Attempts made so far, as the log goes.
        let mut made: std::collections::HashMap<TaskId, u32> = std::collections::HashMap::new();
        let wf = self.wf.clone();
        let id = |name: &str| wf.task_by_name(name).map(|t| t.id);
        for e in events {
            match &e.kind {
                EventKind::PhaseEntered { phase, .. } => {
                    if let Some(p) = wf.phases.iter().find(|p| &p.name == phase) {
                        for &t in &p.tasks {
                            let rt = &mut self.tasks[t.index()];
                            rt.history.clear();
                            rt.attempt_base = 0;
                            due.remove(&t);
                            made.remove(&t);
                        }
                    }
                }
                EventKind::TaskDispatched { task, attempt, .. } => {
                    if let Some(t) = id(task) {
                        due.remove(&t);
                        made.insert(t, *attempt);
                    }
                }
                EventKind::AttemptFinished {
                    task,
                    agent,
                    attempt,
                    duration_ms,
                    error: Some(error),
                    ..
                } => {
                    if let Some(t) = id(task) {
                        let n = made.entry(t).or_insert(0);
                        *n = (*n).max(*attempt);
                        // An attempt that never found an instance is logged under the pool.
                        let pool = &self.agent_names[wf.task(t).agent.index()];
                        self.tasks[t.index()]
                            .history
                            .push(crate::model::AttemptRecord {
                                attempt: *attempt,
                                agent: (agent != pool).then(|| agent.clone()),
                                error: Some(error.clone()),
                                retry_delay_ms: None,
                                duration_ms: *duration_ms,
                            });
                    }
                }
                EventKind::RetryScheduled { task, delay_ms, .. } => {
                    if let Some(t) = id(task) {
                        if let Some(last) = self.tasks[t.index()].history.last_mut() {
                            last.retry_delay_ms = Some(*delay_ms);
                        }
                        due.insert(t, (e.at.0 + delay_ms, *delay_ms));
                    }
                }
                EventKind::Decided {
                    task,
                    decision: Decision::Retry,
                    by,
                } => {
                    if let Some(t) = id(task) {
                        let rt = &mut self.tasks[t.index()];
                        rt.attempt_base = made.get(&t).copied().unwrap_or(0);
                        if by.starts_with("conductor dlq retry") {
                            rt.history.clear();
                        }
                    }
                }
                _ => {}
            }
        }
        due
    }

    /// A task not dispatched because its pool's breaker is open: to the dead-letter queue.
    fn reject_open(&mut self, t: TaskId) {
        let pool = &self.wf.agent(self.wf.task(t).agent).name;
        self.dead_letter(
            t,
            format!("the circuit breaker of agent `{pool}` is open"),
            TaskError::retryable(
                ErrorCode::CircuitOpen,
                format!("not dispatched: the circuit breaker of agent `{pool}` is open"),
            ),
        );
    }

    fn admit(&mut self, t: TaskId) -> Admit {
        let p = self.wf.task(t).agent.index();
        match self.pools[p].breaker {
            Breaker::Closed => Admit::Go,
            // The clock is read only when it matters: this runs for every dispatch.
            Breaker::Open { until } if Instant::now() < until => Admit::Reject,
            Breaker::HalfOpen { trial: Some(trial) } if trial == t => Admit::Go,
            Breaker::Open { .. } | Breaker::HalfOpen { trial: None } => {
                let was_open = matches!(self.pools[p].breaker, Breaker::Open { .. });
                self.pools[p].breaker = Breaker::HalfOpen { trial: Some(t) };
                if was_open {
                    self.record(EventKind::BreakerChanged {
                        agent: self.agent_names[p].clone(),
                        state: crate::model::BreakerState::HalfOpen,
                        reason: Some("the cooldown is over: one trial dispatch".into()),
                    });
                }
                Admit::Go
            }
            Breaker::HalfOpen { trial: Some(_) } => Admit::Wait,
        }
    }

    fn breaker_success(&mut self, p: usize, t: TaskId) {
        let pool = &mut self.pools[p];
        pool.consecutive_failures = 0;
        // Only the trial's outcome decides a half-open breaker.
        if pool.breaker == (Breaker::HalfOpen { trial: Some(t) }) {
            pool.breaker = Breaker::Closed;
            self.record(EventKind::BreakerChanged {
                agent: self.agent_names[p].clone(),
                state: crate::model::BreakerState::Closed,
                reason: Some("the trial dispatch succeeded".into()),
            });
        }
    }

    fn breaker_failure(&mut self, p: usize, t: TaskId) {
        let pool = &mut self.pools[p];
        pool.consecutive_failures += 1;
        let reason = match pool.breaker {
            Breaker::HalfOpen { trial: Some(trial) } if trial == t => {
                Some("the trial dispatch failed".to_string())
            }
            Breaker::Closed if pool.consecutive_failures >= pool.threshold => Some(format!(
                "{} consecutive failure{}",
                pool.consecutive_failures,
                if pool.consecutive_failures == 1 {
                    ""
                } else {
                    "s"
                }
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            pool.breaker = Breaker::Open {
                until: Instant::now() + pool.cooldown,
            };
            self.record(EventKind::BreakerChanged {
                agent: self.agent_names[p].clone(),
                state: crate::model::BreakerState::Open,
                reason: Some(reason),
            });
        }
    }

    fn fail_task(&mut self, t: TaskId, error: TaskError) {
        self.tasks[t.index()].status = TaskStatus::Failed;
        self.record(EventKind::TaskFinished {
            task: self.tasks[t.index()].name.clone(),
            status: TaskStatus::Failed,
            error: Some(error),
        });
        self.task_final(t);
    }

    fn skip(&mut self, t: TaskId, reason: SkipReason, detail: Option<String>) {
        let rt = &mut self.tasks[t.index()];
        rt.status = TaskStatus::Skipped;
        if reason == SkipReason::UpstreamFailed {
            rt.upstream_failed = true;
        }
        self.record(EventKind::TaskSkipped {
            task: self.tasks[t.index()].name.clone(),
            reason,
            detail,
        });
        self.task_final(t);
    }

    /// A task reached a final status: release its dependents.
    fn task_final(&mut self, t: TaskId) {
        // INVARIANT: each task of the phase becomes final once per pass; the saturation only
        // keeps a log that breaks it (an old dead letter, a hand-edited store) from crashing.
        self.phase_open = self.phase_open.saturating_sub(1);
        let failed = match self.tasks[t.index()].status {
            TaskStatus::Failed => true,
            TaskStatus::Skipped => self.tasks[t.index()].upstream_failed,
            _ => false,
        };
        let node = self.plan.task_nodes[t.index()];
        let plan = self.plan.clone();
        let mut dependents: Vec<TaskId> = plan
            .dependents(node)
            .filter_map(|n| match plan.node(n) {
                Node::Task { task, .. } => Some(task),
                Node::Gate { .. } => None,
            })
            .collect();
        // Released in declaration order, so ties dispatch as written.
        dependents.sort_unstable();
        for d in dependents {
            let rt = &mut self.tasks[d.index()];
            if rt.status.is_final() || rt.remaining == 0 {
                continue; // already decided in this pass
            }
            if failed {
                rt.upstream_failed = true;
            }
            rt.remaining -= 1;
            if rt.remaining == 0 {
                self.ready.push_back(d);
            }
        }
    }

    fn add_timer(&mut self, at: Instant, timer: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, timer)));
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Retry(t) => {
                    self.retries_pending = self.retries_pending.saturating_sub(1);
                    if self.tasks[t.index()].status == TaskStatus::Pending {
                        self.ready.push_back(t);
                    }
                }
                Timer::AgentWait(t, token) => {
                    let rt = &self.tasks[t.index()];
                    if rt.waiting && rt.wait_token == token {
                        let pool = &mut self.pools[self.wf.task(t).agent.index()];
                        pool.waiting.retain(|w| *w != t);
                        if pool.breaker == (Breaker::HalfOpen { trial: Some(t) }) {
                            // The trial gave up waiting: the next dispatch becomes the trial.
                            pool.breaker = Breaker::HalfOpen { trial: None };
                        }
                        self.tasks[t.index()].waiting = false;
                        let agent = &self.wf.agent(self.wf.task(t).agent).name;
                        // Waiting in vain counts as an attempt, so retries end.
                        let rt = &mut self.tasks[t.index()];
                        rt.attempt += 1;
                        let attempt = rt.attempt;
                        let error = TaskError::retryable(
                            ErrorCode::NoAvailableAgent,
                            format!(
                                "no instance of agent `{agent}` became idle within `agent_wait` ({})",
                                crate::check::render::dur(self.wf.settings.agent_wait)
                            ),
                        );
                        // Waiting is not running: the attempt took no agent time.
                        let waited = 0;
                        self.tasks[t.index()]
                            .history
                            .push(crate::model::AttemptRecord {
                                attempt,
                                agent: None,
                                error: Some(error.clone()),
                                retry_delay_ms: None,
                                duration_ms: waited,
                            });
                        // The attempt that never found an instance is in the log too, under
                        // the pool's name.
                        self.record(EventKind::AttemptFinished {
                            task: self.tasks[t.index()].name.clone(),
                            agent: self.agent_names[self.wf.task(t).agent.index()].clone(),
                            attempt,
                            duration_ms: waited,
                            output: None,
                            error: Some(error.clone()),
                            calls: Vec::new(),
                            artifacts: Vec::new(),
                            cached: false,
                        });
                        self.failed_attempt(t, error);
                    }
                }
            }
        }
    }

    /// Evaluates `when`; an error in the rule fails the task with the rule's cause.
    fn evaluate_when(&mut self, rule: &Rule) -> Result<bool, TaskError> {
        let ctx = RuleContext::from_json(
            RuleKind::When,
            &json!({
                "tasks": context::tasks_json(&self.state, |r| r.status.is_final()),
                "params": &*self.params,
                "loop_count": self.state.feedback_loop_count,
                "feedback": context::feedback_json(&self.state),
            }),
        );
        let e = PolicyHost::get().evaluate_cached(&mut self.rules, &rule.compiled, &ctx);
        match (e.verdict, e.error) {
            (_, Some(err)) => Err(TaskError::fatal(
                ErrorCode::Rule,
                format!("`when` rule at {} failed: {}", rule.location, err.cause),
            )),
            (Verdict::When(run), None) => Ok(run),
            _ => Ok(false),
        }
    }

    /// Runs the `enforce` rules, workflow then phase. A deny fails the run with a
    /// `PolicyViolation`; returns whether the dispatch may go on.
    fn enforce(&mut self, t: TaskId) -> bool {
        let wf = self.wf.clone();
        let task = wf.task(t);
        let phase = wf.phase(task.phase);
        if wf.enforce.is_empty() && phase.enforce.is_empty() {
            return true;
        }
        let agent = wf.agent(task.agent);
        let pool = &self.pools[task.agent.index()];
        let running: serde_json::Map<String, Value> = wf
            .agents
            .iter()
            .map(|a| (a.name.clone(), json!(self.pools[a.id.index()].running)))
            .collect();
        let ctx = RuleContext::from_json(
            RuleKind::Enforce,
            &json!({
                "task": {
                    "name": task.name, "agent": agent.name, "phase": phase.name,
                    "attempt": self.tasks[t.index()].attempt + 1,
                    "timeout_ms": task.timeout.as_millis() as u64,
                },
                "pool": {
                    "name": agent.name, "count": pool.count, "idle": pool.idle.len(),
                    "running": pool.running, "failed": pool.failed,
                    // An open breaker whose cooldown is over lets the next dispatch through as
                    // its trial, so a rule sees it as half-open.
                    "breaker": match pool.breaker {
                        Breaker::Closed => "closed",
                        Breaker::Open { until } if Instant::now() < until => "open",
                        Breaker::Open { .. } | Breaker::HalfOpen { .. } => "half_open",
                    },
                },
                "running": running,
                "running_total": self.running,
                "params": &*self.params,
                "loop_count": self.state.feedback_loop_count,
                "elapsed_ms": self.started.elapsed().as_millis() as u64,
            }),
        );
        for rule in wf.enforce.iter().chain(phase.enforce.iter()) {
            let e = PolicyHost::get().evaluate_cached(&mut self.rules, &rule.compiled, &ctx);
            if let Verdict::Enforce {
                allow: false,
                reason,
            } = e.verdict
            {
                let reason = reason.unwrap_or_else(|| "denied".into());
                let rule_name = describe_rule(rule);
                self.record(EventKind::PolicyViolation {
                    task: self.tasks[t.index()].name.clone(),
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
                return false;
            }
        }
        true
    }

    /// Every task of the phase is final: the gate decides.
    fn end_phase(&mut self) {
        let wf = self.wf.clone();
        let phase = &wf.phases[self.phase];
        let total = phase.tasks.len();
        let count = |s: TaskStatus| {
            phase
                .tasks
                .iter()
                .filter(|t| self.tasks[t.index()].status == s)
                .count()
        };
        let completed = count(TaskStatus::Completed);
        let failed = count(TaskStatus::Failed);
        let skipped = count(TaskStatus::Skipped);
        let rate = if total == 0 {
            1.0
        } else {
            completed as f64 / total as f64
        };
        let (pass, reason, rule_name) = match &phase.gate {
            Some(rule) => {
                let ctx = RuleContext::from_json(
                    RuleKind::Gate,
                    &json!({
                        "phase": phase.name, "total": total, "completed": completed,
                        "failed": failed, "skipped": skipped, "success_rate": rate,
                        "tasks": context::tasks_json(&self.state, |r| r.status.is_final()),
                        "params": &*self.params, "loop_count": self.state.feedback_loop_count,
                    }),
                );
                let e = PolicyHost::get().evaluate_cached(&mut self.rules, &rule.compiled, &ctx);
                match e.verdict {
                    Verdict::Gate { pass, reason } => (
                        pass,
                        reason.unwrap_or_else(|| "the gate rule passed".into()),
                        describe_rule(rule),
                    ),
                    _ => (
                        false,
                        "the gate rule gave no verdict".into(),
                        describe_rule(rule),
                    ),
                }
            }
            None => {
                let min = phase
                    .min_success_rate
                    .unwrap_or(wf.settings.min_success_rate);
                let pass = total == 0 || rate >= min;
                (
                    pass,
                    format!(
                        "success rate {:.2} ({completed} of {total} completed) {} the minimum {min}",
                        rate,
                        if pass { "meets" } else { "is below" }
                    ),
                    "default gate".to_string(),
                )
            }
        };
        self.record(EventKind::GateDecided {
            phase: phase.name.clone(),
            pass,
            reason: reason.clone(),
            rule: rule_name,
        });
        if !pass {
            self.finish = Some((
                RunStatus::Failed,
                Some(format!(
                    "the gate of phase `{}` failed: {reason}",
                    phase.name
                )),
            ));
            return;
        }
        if self.phase + 1 < wf.phases.len() {
            self.enter_phase(self.phase + 1);
        } else {
            self.decide_feedback();
        }
    }

    /// After the last phase: loop back, or finish.
    fn decide_feedback(&mut self) {
        let wf = self.wf.clone();
        let loop_count = self.state.feedback_loop_count;
        let max = wf.settings.max_feedback_loops;
        let (severity, summary, details, rule_name) = match &wf.feedback {
            Some(f) => {
                let ctx = RuleContext::from_json(
                    RuleKind::Feedback,
                    &json!({
                        "tasks": context::tasks_json(&self.state, |_| true),
                        "params": &*self.params, "loop_count": loop_count, "max_loops": max,
                    }),
                );
                let e = PolicyHost::get().evaluate_cached(&mut self.rules, &f.rule.compiled, &ctx);
                match e.verdict {
                    Verdict::Feedback { severity, summary } => {
                        (severity, summary, Value::Null, describe_rule(&f.rule))
                    }
                    _ => (
                        Severity::Critical,
                        "the feedback rule gave no verdict".into(),
                        Value::Null,
                        describe_rule(&f.rule),
                    ),
                }
            }
            None => default_feedback(&wf, &self.state),
        };
        self.record(EventKind::FeedbackDecided {
            severity,
            summary: summary.clone(),
            details,
            rule: rule_name,
        });
        if severity >= Severity::Error {
            if loop_count < max {
                let target = wf.feedback.as_ref().map_or(PhaseId(0), |f| f.target);
                self.record(EventKind::LoopStarted {
                    loop_count: loop_count + 1,
                    target: wf.phase(target).name.clone(),
                });
                self.enter_phase(target.index());
                return;
            }
            let message = format!(
                "feedback is still `{severity}` after {max} loop{} (the limit): {summary}",
                if max == 1 { "" } else { "s" }
            );
            match wf.settings.on_max_loops {
                OnMaxLoops::Complete => {
                    self.record(EventKind::Warning {
                        message: message.clone(),
                    });
                    self.finish = Some((RunStatus::Completed, None));
                }
                OnMaxLoops::Fail => self.finish = Some((RunStatus::Failed, Some(message))),
            }
            return;
        }
        self.finish = Some((RunStatus::Completed, None));
    }

    /// Stops every running attempt; their tasks end CANCELLED.
    fn stop_running(&mut self) {
        self.workers.abort_all();
        let in_flight: Vec<TaskId> = (0..self.tasks.len())
            .map(|i| TaskId(i as u32))
            .filter(|t| self.tasks[t.index()].status == TaskStatus::InProgress)
            .collect();
        for t in in_flight {
            self.tasks[t.index()].status = TaskStatus::Cancelled;
            // Tokens already spent by the stopped attempt are still spent.
            let calls = self.tasks[t.index()]
                .live_calls
                .take()
                .map(|c| c.take())
                .unwrap_or_default();
            if !calls.is_empty() {
                let rt = &self.tasks[t.index()];
                let agent = rt.last_request.as_ref().map_or_else(
                    || self.agent_names[self.wf.task(t).agent.index()].clone(),
                    |r| r.instance.clone(),
                );
                self.record(EventKind::AttemptFinished {
                    task: rt.name.clone(),
                    agent,
                    attempt: rt.attempt,
                    duration_ms: 0,
                    output: None,
                    error: Some(TaskError::fatal(ErrorCode::Cancelled, "the run stopped")),
                    calls,
                    artifacts: Vec::new(),
                    cached: false,
                });
            }
            self.record(EventKind::TaskFinished {
                task: self.tasks[t.index()].name.clone(),
                status: TaskStatus::Cancelled,
                error: Some(TaskError::fatal(ErrorCode::Cancelled, "the run stopped")),
            });
        }
    }
}

/// A dispatch's place in the response cache.
struct Cache {
    key: String,
    /// Whether a stored output may answer (not while recording a cassette).
    read: bool,
}

/// One attempt on a worker: the response cache, the agent under its timeout, then the files of
/// a successful output stored and written. Store and file I/O run on blocking threads.
async fn run_attempt(
    agent: Arc<dyn Agent>,
    request: TaskRequest,
    timeout: Duration,
    cache: Option<Cache>,
    store: Arc<dyn Store>,
    workspace: Option<std::path::PathBuf>,
    files: bool,
) -> (
    Result<Value, TaskError>,
    Vec<crate::model::ArtifactRef>,
    bool,
) {
    let blocking = |f: Box<dyn FnOnce() -> Result<Value, TaskError> + Send>| async move {
        tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
            Err(TaskError::retryable(
                ErrorCode::Transient,
                format!("a store operation failed: {e}"),
            ))
        })
    };
    let mut hit = None;
    if let Some(c) = cache.as_ref().filter(|c| c.read) {
        let (store, key) = (store.clone(), c.key.clone());
        let found = blocking(Box::new(move || {
            Ok(match store.cache_get(&key) {
                Ok(Some(v)) => v,
                Ok(None) => Value::Null,
                Err(e) => {
                    tracing::warn!("response cache unavailable: {e}");
                    Value::Null
                }
            })
        }))
        .await;
        hit = found.ok().filter(|v| !v.is_null());
    }
    let cached = hit.is_some();
    let result = match hit {
        Some(output) => Ok(output),
        None => match tokio::time::timeout(timeout, agent.execute(request)).await {
            Ok(result) => result,
            Err(_) => Err(TaskError::retryable(
                ErrorCode::Timeout,
                format!(
                    "the attempt took longer than its timeout of {}",
                    crate::check::render::dur(timeout)
                ),
            )),
        },
    };
    let output = match result {
        Ok(output) => output,
        Err(e) => return (Err(e), Vec::new(), cached),
    };
    let mut artifacts = Vec::new();
    // Most outputs have no files: no trip to a blocking thread for them.
    if files && output.get("files").is_some_and(Value::is_array) {
        let (store, out) = (store.clone(), output.clone());
        let saved = tokio::task::spawn_blocking(move || {
            super::artifacts::save(&*store, workspace.as_deref(), &out)
        })
        .await
        .unwrap_or_else(|e| {
            Err(TaskError::retryable(
                ErrorCode::Transient,
                format!("saving the task's files failed: {e}"),
            ))
        });
        match saved {
            Ok(saved) => artifacts = saved,
            Err(e) => return (Err(e), Vec::new(), cached),
        }
    }
    if let (Some(c), false) = (cache, cached) {
        let value = output.clone();
        let _ = blocking(Box::new(move || {
            if let Err(e) = store.cache_put(&c.key, &value) {
                tracing::warn!("cannot fill the response cache: {e}");
            }
            Ok(Value::Null)
        }))
        .await;
    }
    (Ok(output), artifacts, cached)
}

/// The default feedback: the highest `severity` in the outputs of the last phase's tasks.
fn default_feedback(wf: &Workflow, state: &RunState) -> (Severity, String, Value, String) {
    let last = wf.phases.last().map(|p| p.name.as_str()).unwrap_or("");
    let mut worst = Severity::Ok;
    let mut summary = String::new();
    let mut details = serde_json::Map::new();
    for t in state.tasks.iter().filter(|t| &*t.phase == last) {
        let Some(sev) = t
            .output
            .get("severity")
            .and_then(Value::as_str)
            .and_then(Severity::parse)
        else {
            continue;
        };
        details.insert(t.task.to_string(), json!(sev.as_str()));
        if sev > worst || summary.is_empty() && sev == worst {
            worst = sev;
            summary = t.output.get("summary").and_then(Value::as_str).map_or_else(
                || format!("task `{}` reported `{sev}`", t.task),
                str::to_string,
            );
        }
    }
    if summary.is_empty() {
        summary = "no task of the last phase reported a severity".into();
    }
    (
        worst,
        summary,
        Value::Object(details),
        "default feedback".into(),
    )
}

fn describe_rule(rule: &Rule) -> String {
    match &rule.source {
        RuleSource::Named { name, .. } => format!("`{name}(…)` at {}", rule.location),
        RuleSource::Inline(_) => format!("rule at {}", rule.location),
    }
}

/// The delay before attempt `attempt + 1`: fixed, or doubling from `initial` up to `max` with
/// ±25% jitter drawn from the task and attempt (so runs are reproducible).
pub(crate) fn backoff_delay(backoff: Backoff, attempt: u32, task: &str) -> Duration {
    match backoff {
        Backoff::Fixed(d) => d,
        Backoff::Exponential { initial, max } => {
            let exp = initial.saturating_mul(1u32 << (attempt.saturating_sub(1)).min(20));
            let base = exp.min(max);
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in task.bytes().chain(attempt.to_le_bytes()) {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
            let jitter = (h % 501) as f64 / 1000.0 + 0.75; // 0.75 ..= 1.25
            base.mul_f64(jitter).min(max)
        }
    }
}
