//! Attempts of `placement = "workers"` pools: enqueued for `conductor worker` processes in the
//! transaction of the batch that dispatches them, and awaited here like local attempts — a
//! stand-in future on the dispatcher's `JoinSet` waits for the result from the store's inbox
//! and returns the same `Done` a local worker would, so the rest of the dispatcher does not
//! know the difference.
//!
//! One watcher per run reads the inbox when woken (a notification, or a poll) and expires
//! claims whose worker stopped heartbeating: such an attempt ends with a retryable
//! `AGENT_LOST` (escalated instead for an `external` task, since its side effect may have
//! happened). A stand-in that is dropped (the run stops, is cancelled, or the always phases
//! take over) asks for its attempt to be cancelled; the worker hears it at its next heartbeat.
//! A new scheduler adopts the attempts the log shows in flight whose workers still hold them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{oneshot, Notify};

use super::attempt::{self, Done};
use super::dispatcher::Dispatcher;
use crate::agents::{AgentEnv, Attempt, Trace};
use crate::check::ir::{Effect, Placement, TaskId};
use crate::model::{ArtifactRef, ErrorCode, LlmCall, OutputTail, RunId, TaskError, TaskStatus};
use crate::store::work::{Found, RemoteResult, WorkItem, WorkQueue};
use crate::store::{Store, StoreError};

/// How often the inbox is read without a notification, and lost claims looked for.
const POLL: Duration = Duration::from_millis(500);

/// One attempt as a worker receives it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RemoteJob {
    pub attempt: Attempt,
    pub timeout_ms: u64,
    /// The response cache: its key, and whether a stored output may answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<(String, bool)>,
    /// The run's files so far (the latest version of each path), fetched from the store into
    /// the worker's workspace before the attempt starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ArtifactRef>,
    /// What its model calls may spend, held by the scheduler against the run's budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance: Option<super::allowance::Grant>,
}

/// What a worker reports back: the fields of a local `Done`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RemoteOutcome {
    pub result: Result<Value, TaskError>,
    pub elapsed_ms: u64,
    pub reached_agent: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<LlmCall>,
    #[serde(default, skip_serializing_if = "crate::model::Spend::is_zero")]
    pub cut_off: crate::model::Spend,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactRef>,
    #[serde(default)]
    pub cached: bool,
    #[serde(default, skip_serializing_if = "OutputTail::is_empty")]
    pub tail: OutputTail,
}

/// Runs a claimed job in this process (a worker): the same path as a local attempt — the
/// cache, the agent under its timeout, the files of its output stored and written into
/// `env`'s workspace, its output logged to the store as it comes.
pub(crate) async fn execute(
    job: RemoteJob,
    store: Arc<dyn Store>,
    env: Arc<AgentEnv>,
) -> RemoteOutcome {
    let j = attempt::Job {
        attempt: Arc::new(job.attempt),
        timeout: Duration::from_millis(job.timeout_ms),
        cache: job.cache.map(|(key, read)| attempt::CacheUse { key, read }),
        store,
        env,
        trace: match job.allowance {
            Some(grant) => Trace::with_gate(Arc::new(super::allowance::AllowanceGate::new(grant))),
            None => Trace::default(),
        },
    };
    let done = attempt::run(j, TaskId(0), 0).await;
    RemoteOutcome {
        result: done.result,
        elapsed_ms: done.elapsed.as_millis() as u64,
        reached_agent: done.reached_agent,
        calls: done.calls,
        cut_off: done.cut_off,
        artifacts: done.artifacts,
        cached: done.cached,
        tail: done.tail,
    }
}

enum Arrival {
    Result(RemoteResult),
    /// The worker's lease ran out; the claim is expired.
    Lost,
    /// This scheduler no longer holds the run.
    Fenced(String),
}

type Key = (Arc<str>, u32);

/// The run's side of the queue: who waits for which attempt, and the watcher.
pub(super) struct Hub {
    run: RunId,
    queue: Arc<dyn WorkQueue>,
    waiting: Mutex<HashMap<Key, oneshot::Sender<Arrival>>>,
    cancels: Mutex<Vec<Key>>,
    /// Held while cancellations are sent: `close` waits for the watcher's sending to end, so
    /// none is lost when the process exits right after.
    sending: tokio::sync::Mutex<()>,
    wake: Notify,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Hub {
    pub(super) fn new(run: RunId, queue: Arc<dyn WorkQueue>) -> Arc<Hub> {
        Arc::new(Hub {
            run,
            queue,
            waiting: Mutex::default(),
            cancels: Mutex::default(),
            sending: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            watcher: Mutex::new(None),
        })
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<Key, oneshot::Sender<Arrival>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for an attempt's result from now on.
    fn register(self: &Arc<Hub>, key: Key) -> oneshot::Receiver<Arrival> {
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(key, tx);
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        if watcher.is_none() {
            let signal = self.queue.results_signal(&self.run);
            *watcher = Some(tokio::spawn(watch(Arc::downgrade(self), signal)));
        }
        rx
    }

    fn deliver(&self, key: &Key, arrival: Arrival) {
        if let Some(tx) = self.waiting().remove(key) {
            let _ = tx.send(arrival);
        }
    }

    /// Reads the inbox and the lost claims once; false when the hub should stop watching.
    async fn poll(self: &Arc<Hub>, expire: bool) {
        self.send_cancels().await;
        if self.waiting().is_empty() {
            return;
        }
        let (queue, run) = (self.queue.clone(), self.run.clone());
        let results = blocking(move || queue.take_results(&run)).await;
        match results {
            Ok(results) => {
                for r in results {
                    self.deliver(&(r.task.clone(), r.attempt), Arrival::Result(r));
                }
            }
            Err(e) => tracing::warn!("run {}: cannot read the workers' results: {e}", self.run),
        }
        if !expire {
            return;
        }
        let (queue, run) = (self.queue.clone(), self.run.clone());
        match blocking(move || queue.expire_lost(&run)).await {
            Ok(lost) => {
                for key in lost {
                    self.deliver(&key, Arrival::Lost);
                }
            }
            Err(e @ (StoreError::LeaseLost { .. } | StoreError::NotHeld(_))) => {
                let keys: Vec<Key> = self.waiting().keys().cloned().collect();
                for key in keys {
                    self.deliver(&key, Arrival::Fenced(e.to_string()));
                }
            }
            Err(e) => tracing::warn!("run {}: cannot look for lost workers: {e}", self.run),
        }
    }

    /// Sends the cancellations asked for so far.
    async fn send_cancels(&self) {
        let _sending = self.sending.lock().await;
        let keys = std::mem::take(&mut *self.cancels.lock().unwrap_or_else(|e| e.into_inner()));
        if keys.is_empty() {
            return;
        }
        let (queue, run) = (self.queue.clone(), self.run.clone());
        let _ = blocking(move || {
            for (task, attempt) in keys {
                if let Err(e) = queue.cancel(&run, &task, attempt) {
                    tracing::warn!("run {run}: cannot cancel `{task}` attempt {attempt}: {e}");
                }
            }
            Ok(())
        })
        .await;
    }

    /// The run is over here: cancellations are sent while this process still holds the run,
    /// and the watcher stops.
    pub(super) async fn close(&self) {
        self.send_cancels().await;
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            w.abort();
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Postgres {
            cause: e.to_string(),
        })
    })
}

async fn watch(hub: Weak<Hub>, signal: Arc<Notify>) {
    let mut since_expire = tokio::time::Instant::now();
    loop {
        let Some(h) = hub.upgrade() else { return };
        tokio::select! {
            _ = signal.notified() => {}
            _ = h.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        let expire = since_expire.elapsed() >= POLL;
        if expire {
            since_expire = tokio::time::Instant::now();
        }
        h.poll(expire).await;
    }
}

/// Asks for the attempt to be cancelled if its stand-in is dropped before a result came.
struct CancelOnDrop {
    hub: Arc<Hub>,
    key: Option<Key>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.hub.waiting().remove(&key);
            self.hub
                .cancels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(key);
            self.hub.wake.notify_one();
        }
    }
}

/// What the stand-in needs to turn an arrival into a `Done`.
struct StandIn {
    task: TaskId,
    instance: u32,
    attempt: u32,
    external: bool,
    store: Arc<dyn Store>,
    workspace: Option<std::path::PathBuf>,
}

/// Waits for a worker's result: the attempt's outcome, and whether the worker reported it.
async fn stand_in(
    mut guard: CancelOnDrop,
    rx: oneshot::Receiver<Arrival>,
    s: StandIn,
) -> (Done, bool) {
    let arrival = rx.await;
    guard.key = None;
    let failed = |error: TaskError| (Done::unstarted(s.task, s.attempt, s.instance, error), false);
    match arrival {
        Ok(Arrival::Result(r)) => {
            let outcome: RemoteOutcome = match serde_json::from_str(&r.body) {
                Ok(o) => o,
                Err(e) => {
                    return failed(TaskError::retryable(
                        ErrorCode::Transient,
                        format!(
                            "worker `{}` sent a result that cannot be read: {e}",
                            r.worker
                        ),
                    ))
                }
            };
            if !outcome.artifacts.is_empty() {
                if let Some(dir) = s.workspace.clone() {
                    let (store, files) = (s.store.clone(), outcome.artifacts.clone());
                    let written =
                        tokio::task::spawn_blocking(move || fetch_files(&*store, &dir, &files))
                            .await;
                    if let Ok(Err(e)) = written {
                        return failed(TaskError::retryable(ErrorCode::Transient, e));
                    }
                }
            }
            let done = Done {
                task: s.task,
                attempt: s.attempt,
                instance: s.instance,
                result: outcome.result,
                elapsed: Duration::from_millis(outcome.elapsed_ms),
                reached_agent: outcome.reached_agent,
                calls: outcome.calls,
                cut_off: outcome.cut_off,
                artifacts: outcome.artifacts,
                cached: outcome.cached,
                tail: outcome.tail,
            };
            (done, true)
        }
        Ok(Arrival::Lost) => {
            let message =
                "the worker running the attempt stopped heartbeating and its lease ran out";
            failed(if s.external {
                // The side effect may have happened: a person decides.
                TaskError::fatal(
                    ErrorCode::AgentLost,
                    format!("{message}; the task's effect is `external`, so it is not run again on its own"),
                )
            } else {
                TaskError::retryable(ErrorCode::AgentLost, message)
            })
        }
        Ok(Arrival::Fenced(why)) => failed(TaskError::retryable(ErrorCode::Transient, why)),
        Err(_) => failed(TaskError::retryable(
            ErrorCode::Transient,
            "the scheduler stopped waiting for the worker",
        )),
    }
}

/// Writes files the store holds into a workspace (the files a remote attempt produced, here;
/// the run's files, on a worker).
pub(crate) fn fetch_files(
    store: &dyn Store,
    dir: &std::path::Path,
    files: &[ArtifactRef],
) -> Result<(), String> {
    for f in files {
        let content = store
            .artifact(&f.sha256)
            .map_err(|e| format!("cannot read the file `{}` from the store: {e}", f.path))?
            .ok_or_else(|| format!("the store has no content for the file `{}`", f.path))?;
        crate::files::write_under(dir, &f.path, &content)
            .map_err(|e| format!("cannot write the file `{}`: {e}", f.path))?;
    }
    Ok(())
}

impl Dispatcher {
    /// Whether `t`'s attempts go to workers.
    pub(super) fn placed_remotely(&self, t: TaskId) -> bool {
        self.remote.is_some()
            && matches!(
                self.run
                    .wf
                    .agent(self.run.wf.task(self.def_id(t)).agent)
                    .placement,
                Placement::Workers { .. }
            )
    }

    /// Enqueues an attempt for the workers (committed with the next batch) and puts its
    /// stand-in on the worker set.
    pub(super) fn spawn_remote(
        &mut self,
        t: TaskId,
        instance: u32,
        a: Arc<Attempt>,
        cache: Option<(String, bool)>,
    ) {
        let Some(hub) = self.remote.clone() else {
            return;
        };
        let wf = self.run.wf.clone();
        let task = wf.task(self.def_id(t));
        let agent = wf.agent(task.agent);
        let allowance = match self.hold_allowance(&a) {
            Ok(allowance) => allowance,
            Err(refused) => {
                let (attempt, instance) = (a.attempt, instance);
                self.workers
                    .spawn(async move { Done::unstarted(t, attempt, instance, refused) });
                return;
            }
        };
        let job = RemoteJob {
            allowance: allowance.as_ref().map(super::allowance::Allowance::grant),
            attempt: (*a).clone(),
            timeout_ms: task.timeout.as_millis() as u64,
            cache,
            files: self
                .state
                .artifacts
                .iter()
                .filter(|f| !f.superseded)
                .map(|f| ArtifactRef {
                    path: f.path.clone(),
                    sha256: f.sha256.clone(),
                    size: f.size,
                })
                .collect(),
        };
        let labels = match &agent.placement {
            Placement::Workers { labels } => labels.clone(),
            Placement::Local => Default::default(),
        };
        self.journal.enqueue(WorkItem {
            task: a.task.clone(),
            attempt: a.attempt,
            pool: Arc::from(agent.name.as_str()),
            labels,
            body: serde_json::to_string(&job).unwrap_or_default(),
        });
        self.await_remote(&hub, t, instance, a.attempt, allowance);
    }

    /// The allowance of an llm attempt sent to a worker, when the run has budgets: held now
    /// and recorded with the attempt (one commit), or refused.
    fn hold_allowance(
        &mut self,
        a: &Attempt,
    ) -> Result<Option<super::allowance::Allowance>, TaskError> {
        let crate::agents::AgentCall::Llm(call) = &a.call else {
            return Ok(None);
        };
        let replays = self
            .run
            .env
            .provider(&call.provider)
            .is_ok_and(|p| p.replays());
        let Some(ledger) = self.ledger().filter(|_| !replays) else {
            return Ok(None);
        };
        let wf = self.run.wf.clone();
        let t = self.task_id(&a.task);
        let Some(task) = t.map(|t| wf.task(self.def_id(t))) else {
            return Ok(None);
        };
        let allowance = ledger.allowance(&wf, task, &crate::agents::llm::first_ask(call))?;
        self.record(crate::model::EventKind::CallReserved {
            task: a.task.clone(),
            attempt: a.attempt,
            worst: allowance.grant().worst,
        });
        Ok(Some(allowance))
    }

    fn await_remote(
        &mut self,
        hub: &Arc<Hub>,
        t: TaskId,
        instance: u32,
        attempt: u32,
        allowance: Option<super::allowance::Allowance>,
    ) {
        let key: Key = (self.name(t), attempt);
        let rx = hub.register(key.clone());
        let guard = CancelOnDrop {
            hub: hub.clone(),
            key: Some(key),
        };
        let s = StandIn {
            task: t,
            instance,
            attempt,
            external: self.run.wf.task(self.def_id(t)).effect == Effect::External,
            store: self.journal.store().clone(),
            workspace: self.run.env.workspace.clone(),
        };
        self.workers.spawn(async move {
            let (mut done, reported) = stand_in(guard, rx, s).await;
            if let Some(allowance) = allowance {
                if !reported {
                    // Lost or cut off: its calls may have been made, at most the allowance.
                    done.cut_off = allowance.grant().worst;
                }
                let spent = done
                    .calls
                    .iter()
                    .fold(done.cut_off, |s, c| s.plus(c.spend()));
                allowance.settle(spent);
            }
            done
        });
    }

    /// On resume: the attempts the log shows in flight on workers that are still alive (queued,
    /// or held by a worker that heartbeats) or finished with a result not yet in the log are
    /// adopted — awaited again instead of run again. Returns them; the others are left to the
    /// usual resume (run again, or escalated for `external` tasks), their claims expired.
    pub(super) fn adopt_remote(&mut self) -> Result<Vec<TaskId>, StoreError> {
        let Some(hub) = self.remote.clone() else {
            return Ok(Vec::new());
        };
        let mut adopted = Vec::new();
        // Fan-out instances included: they follow the declared tasks in the state.
        for i in 0..self.state.tasks.len() {
            let t = TaskId(i as u32);
            let r = &self.state.tasks[i];
            if r.status != TaskStatus::InProgress || self.fans_out(t) || !self.placed_remotely(t) {
                continue;
            }
            let (attempt, agent) = (r.attempts, r.agent.clone());
            let p = self.run.wf.task(self.def_id(t)).agent.index();
            let Some(instance) =
                agent.and_then(|a| self.pools[p].instances.iter().position(|n| *n == a))
            else {
                continue;
            };
            let found = hub.queue.find(&self.run.id, &self.name(t), attempt)?;
            if found == Found::Gone || !self.pools[p].take(instance as u32) {
                continue;
            }
            self.running += 1;
            // Its allowance, on record, counts in full in the budgets rebuilt from the log.
            self.await_remote(&hub, t, instance as u32, attempt, None);
            if let Found::Finished(result) = found {
                hub.deliver(&(self.name(t), attempt), Arrival::Result(result));
            }
            adopted.push(t);
        }
        Ok(adopted)
    }
}

/// The run's hub when one of its pools is placed on workers; an error when the store cannot
/// hand attempts to workers. A dry run stays in this process.
pub(super) fn hub_for(
    wf: &crate::check::ir::Workflow,
    options: &super::RunOptions,
) -> Result<Option<Arc<Hub>>, super::ExecError> {
    let remote = wf
        .agents
        .iter()
        .find(|a| matches!(a.placement, Placement::Workers { .. }));
    let Some(pool) = remote.filter(|_| !options.dry_run) else {
        return Ok(None);
    };
    // Attempts travel rendered, through the store: a secret would be stored on the way.
    if let Some(p) = wf.params.iter().find(|p| p.secret) {
        return Err(super::ExecError::SecretsToWorkers {
            pool: pool.name.clone(),
            param: p.name.clone(),
        });
    }
    match options.store.work_queue() {
        Some(queue) => Ok(Some(Hub::new(options.run_id.clone(), queue))),
        None => Err(StoreError::NoWorkers {
            store: options.store.describe(),
        }
        .into()),
    }
}
