//! `conductor worker`: a process on any machine that executes attempts of the pools placed on
//! workers. It claims attempts in batches (`FOR UPDATE SKIP LOCKED`, so workers never take the
//! same one), runs each as the scheduler would run it locally (the serialised `AgentCall`,
//! under its timeout, its output logged to the store), heartbeats a lease on every attempt it
//! holds, and completes an attempt only while its claim is still valid: an attempt its
//! scheduler expired (the lease ran out) or cancelled is stopped at the next heartbeat, and a
//! result that arrives anyway is refused by the store, never recorded.
//!
//! Each run gets a workspace of its own on the worker (`DIR/runs/RUN/work`): the run's files
//! are fetched there from the store's artifacts before an attempt starts, and the files an
//! attempt produces go back as artifacts with its result.

mod options;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(crate) use options::WorkerOptions;

use crate::agents::{AgentEnv, AgentEnvOptions};
use crate::config::Config;
use crate::exec::remote::{self, RemoteJob, RemoteOutcome};
use crate::model::{ErrorCode, RunId, TaskError};
use crate::store::work::{Claimed, Completion, WorkerInfo};
use crate::store::{PostgresStore, Store, StoreError};

/// An attempt this worker holds.
type Key = (RunId, Arc<str>, u32);

/// What the worker's loops share.
struct Shared {
    store: Arc<PostgresStore>,
    info: WorkerInfo,
    options: WorkerOptions,
    config: Arc<Config>,
    /// The attempts running: how to stop each, and when it was claimed.
    running: Mutex<HashMap<Key, (tokio::task::AbortHandle, Instant)>>,
    /// Woken when an attempt ends (a slot is free).
    freed: Notify,
    /// One agent environment per run (its workspace, its providers).
    envs: Mutex<HashMap<RunId, Arc<AgentEnv>>>,
    /// Per-attempt timings for the benchmark (`--stats`).
    stats: Option<Mutex<std::fs::File>>,
}

impl Shared {
    fn running(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Key, (tokio::task::AbortHandle, Instant)>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves until `cancel`: then claims nothing more, lets the attempts it holds finish and
/// report, and leaves.
pub(crate) async fn serve(
    store: Arc<PostgresStore>,
    options: WorkerOptions,
    config: Config,
    cancel: CancellationToken,
) -> Result<(), StoreError> {
    let info = WorkerInfo {
        id: store.owner().to_string(),
        host: store.owner().split(':').next().unwrap_or("").to_string(),
        pid: std::process::id(),
        pools: options.pools.clone(),
        labels: options.labels.clone(),
    };
    store.register_worker(&info).await?;
    let stats = match &options.stats {
        Some(path) => Some(Mutex::new(std::fs::File::create(path).map_err(|e| {
            StoreError::Io {
                path: path.clone(),
                cause: e.to_string(),
            }
        })?)),
        None => None,
    };
    let shared = Arc::new(Shared {
        store,
        info,
        options,
        config: Arc::new(config),
        running: Mutex::default(),
        freed: Notify::new(),
        envs: Mutex::default(),
        stats,
    });
    tracing::info!("worker {} serving", shared.info.id);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let completer = tokio::spawn(complete_loop(shared.clone(), done_rx));
    let heartbeat = tokio::spawn(heartbeat_loop(shared.clone()));
    let result = claim_loop(&shared, done_tx, &cancel).await;
    // The completer ends once every attempt's sender is gone (all attempts reported).
    let _ = completer.await;
    heartbeat.abort();
    let _ = shared.store.unregister_worker(&shared.info.id).await;
    result
}

/// Claims while there are free slots, and waits for work, a free slot or a poll otherwise.
async fn claim_loop(
    shared: &Arc<Shared>,
    done: mpsc::UnboundedSender<Completion>,
    cancel: &CancellationToken,
) -> Result<(), StoreError> {
    let work = shared.store.work_signal();
    let mut attempts = JoinSet::new();
    let mut last_error: Option<Instant> = None;
    loop {
        // Reap finished attempts (their results went to the completer already).
        while attempts.try_join_next().is_some() {}
        if cancel.is_cancelled() {
            break;
        }
        let free = shared
            .options
            .concurrency
            .saturating_sub(shared.running().len());
        let mut full = false;
        if free > 0 {
            let want = free.min(shared.options.batch);
            match shared
                .store
                .claim(&shared.info, want, shared.options.lease)
                .await
            {
                Ok(claimed) => {
                    full = claimed.len() == want;
                    for c in claimed {
                        start(shared, &mut attempts, c, done.clone());
                    }
                }
                Err(e) => {
                    if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!("cannot claim attempts: {e}");
                        last_error = Some(Instant::now());
                    }
                }
            }
        }
        if full && shared.running().len() < shared.options.concurrency {
            continue; // more may be waiting: claim again at once
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = work.notified() => {}
            _ = shared.freed.notified(), if free == 0 || full => {}
            _ = tokio::time::sleep(shared.options.poll) => {}
        }
    }
    drop(done);
    while attempts.join_next().await.is_some() {}
    Ok(())
}

/// Starts one claimed attempt.
fn start(
    shared: &Arc<Shared>,
    attempts: &mut JoinSet<()>,
    c: Claimed,
    done: mpsc::UnboundedSender<Completion>,
) {
    let claimed_at = Instant::now();
    let key: Key = (c.run.clone(), c.task.clone(), c.attempt);
    let s = shared.clone();
    // Registered before it can finish: the task removes its own entry.
    let mut running = shared.running();
    let handle = attempts.spawn(async move {
        let started = claimed_at.elapsed();
        let outcome = run_one(&s, &c).await;
        if let Some(stats) = &s.stats {
            use std::io::Write;
            let mut f = stats.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(
                f,
                "{:.3} {:.3}",
                c.queued_ms,
                started.as_secs_f64() * 1000.0
            );
        }
        s.running()
            .remove(&(c.run.clone(), c.task.clone(), c.attempt));
        s.freed.notify_one();
        let _ = done.send(Completion {
            run: c.run,
            task: c.task,
            attempt: c.attempt,
            body: serde_json::to_string(&outcome).unwrap_or_default(),
        });
    });
    running.insert(key, (handle, claimed_at));
}

async fn run_one(s: &Arc<Shared>, c: &Claimed) -> RemoteOutcome {
    let unstarted = |error: TaskError| RemoteOutcome {
        result: Err(error),
        elapsed_ms: 0,
        reached_agent: false,
        calls: Vec::new(),
        cut_off: Default::default(),
        artifacts: Vec::new(),
        cached: false,
        tail: Default::default(),
    };
    let job: RemoteJob = match serde_json::from_str(&c.body) {
        Ok(j) => j,
        Err(e) => {
            return unstarted(TaskError::fatal(
                ErrorCode::InvalidInput,
                format!("worker {}: the attempt cannot be read ({e}); is this worker older than its scheduler?", s.info.id),
            ))
        }
    };
    let env = match env_for(s, &c.run) {
        Ok(env) => env,
        Err(e) => return unstarted(TaskError::retryable(ErrorCode::Transient, e)),
    };
    if !job.files.is_empty() {
        let (store, files) = (s.store.clone(), job.files.clone());
        let dir = env.workspace.clone().unwrap_or_default();
        let fetched =
            tokio::task::spawn_blocking(move || remote::fetch_files(&*store, &dir, &files)).await;
        match fetched {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return unstarted(TaskError::retryable(ErrorCode::Transient, e)),
            Err(e) => return unstarted(TaskError::retryable(ErrorCode::Transient, e.to_string())),
        }
    }
    let store: Arc<dyn Store> = s.store.clone();
    remote::execute(job, store, env).await
}

/// The run's environment on this worker: its workspace, created on first use.
fn env_for(s: &Shared, run: &RunId) -> Result<Arc<AgentEnv>, String> {
    let mut envs = s.envs.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = envs.get(run) {
        return Ok(env.clone());
    }
    let dir = s.options.dir.join("runs").join(run.as_str()).join("work");
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the workspace `{}`: {e}", dir.display()))?;
    let dir: PathBuf = std::path::absolute(&dir).unwrap_or(dir);
    let env = Arc::new(AgentEnv::new(AgentEnvOptions {
        base: dir.clone(),
        workspace: Some(dir),
        config: s.config.clone(),
        recorder: None,
        // A workflow with secret params keeps its pools in the scheduler's process (see
        // `exec::remote::hub_for`): nothing secret reaches a worker to redact.
        redactor: Arc::default(),
        secret_env: Vec::new(),
        // Child runs stay with the process that drives their parent.
        children: None,
    }));
    envs.insert(run.clone(), env.clone());
    Ok(env)
}

/// Reports finished attempts in batches; a refused result is said so and dropped.
async fn complete_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Completion>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let keys: Vec<(RunId, Arc<str>, u32)> = batch
            .iter()
            .map(|c| (c.run.clone(), c.task.clone(), c.attempt))
            .collect();
        match shared.store.complete(&shared.info.id, batch).await {
            Ok(accepted) => {
                for ((run, task, attempt), ok) in keys.iter().zip(accepted) {
                    if !ok {
                        tracing::warn!(
                            "run {run}: the result of `{task}` attempt {attempt} was refused: this worker's claim on it is no longer valid (its lease ran out or it was cancelled)"
                        );
                    }
                }
            }
            Err(e) => {
                // Given up after waiting out an outage: the claims run out their leases and
                // the scheduler handles them as lost.
                tracing::warn!("cannot report {} result(s): {e}", keys.len());
            }
        }
    }
}

/// Renews the leases of the attempts held; stops those the worker no longer holds.
async fn heartbeat_loop(shared: Arc<Shared>) {
    let every = shared.options.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        // Only attempts claimed before this heartbeat can be missing from its answer.
        let asked = Instant::now();
        let held = match shared
            .store
            .heartbeat(&shared.info.id, shared.options.lease)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!("cannot renew the leases of the attempts held: {e}");
                continue;
            }
        };
        let held: HashSet<Key> = held.into_iter().collect();
        let mut running = shared.running();
        let gone: Vec<Key> = running
            .iter()
            .filter(|(k, (_, claimed))| *claimed < asked && !held.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            // Cancelled by its scheduler, or expired: its result would be refused.
            if let Some((h, _)) = running.remove(&key) {
                tracing::info!(
                    "run {}: stopping `{}` attempt {}: this worker no longer holds it",
                    key.0,
                    key.1,
                    key.2
                );
                h.abort();
                shared.freed.notify_one();
            }
        }
    }
}
