//! Running child runs (`task t on workflow "f.cond"`) for the executor: each child is a run
//! of its own in the parent's store — its own id, lease, log and workspace — started (or,
//! after a crash, resumed) the way `conductor run` and `conductor resume` do. Each child is
//! driven on a task of its own; the parent's attempt awaits it, and dropping that attempt
//! (the parent cancelled, failed or timed out) cancels the child, whose run then ends
//! CANCELLED. The process waits for its children to end before it exits ([`Children::wait`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{AppError, StoreSpec};
use crate::agents::child::{ChildCall, ChildRunner};
use crate::agents::{AgentFuture, Attempt};
use crate::config::Config;
use crate::exec::{ResumeRequest, RunOptions};
use crate::model::{ErrorCode, ParentRun, RunState, RunStatus, TaskError};
use crate::store::Store;

/// The child runs of one process, and how to start them.
pub(crate) struct Children {
    store: Arc<dyn Store>,
    spec: StoreSpec,
    /// `--config FILE`, for the children too.
    config: Option<PathBuf>,
    /// The parent's second stop: children end at once too, without their `always` phases (a
    /// first stop cancels them, and their `always` phases run).
    halt: CancellationToken,
    running: Mutex<Vec<JoinHandle<()>>>,
    me: std::sync::Weak<Children>,
}

impl Children {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        spec: StoreSpec,
        config: Option<PathBuf>,
        halt: CancellationToken,
    ) -> Arc<Children> {
        Arc::new_cyclic(|me| Children {
            store,
            spec,
            config,
            halt,
            running: Mutex::new(Vec::new()),
            me: me.clone(),
        })
    }

    /// Waits until every child run this process started has ended (a cancelled parent's
    /// children record their CANCELLED end before the process exits).
    pub(crate) async fn wait(&self) {
        loop {
            let handles: Vec<JoinHandle<()>> = match self.running.lock() {
                Ok(mut r) => std::mem::take(&mut *r),
                Err(_) => return,
            };
            if handles.is_empty() {
                return;
            }
            for h in handles {
                let _ = h.await;
            }
        }
    }

    /// Drives child run `call.run` to its end: starts it, or goes on with it when the log
    /// already has it (the parent was resumed), or only reads its end when it has one.
    async fn drive(
        self: Arc<Self>,
        parent: ParentRun,
        call: ChildCall,
        cancel: CancellationToken,
    ) -> Result<Value, TaskError> {
        let id = call.run.clone();
        let events = self.store.events(&id).unwrap_or_default();
        let state = if events.is_empty() {
            self.start(parent, &call, cancel).await
        } else {
            let state = RunState::from_events(&events);
            match state.status() {
                RunStatus::Completed | RunStatus::Failed => Ok(state),
                _ => self.resume(&call, events, cancel).await,
            }
        };
        let state = state.map_err(|e| {
            TaskError::fatal(
                ErrorCode::Fatal,
                format!("child run {id} of `{}` could not run: {e}", call.written),
            )
        })?;
        outcome(&call, &state)
    }

    fn options(&self, call: &ChildCall, cancel: CancellationToken) -> RunOptions {
        let mut options = RunOptions::new(self.store.clone());
        options.run_id = call.run.clone();
        options.cancel = cancel;
        options.halt = self.halt.child_token();
        options.file = call.path.display().to_string();
        options.workspace = match self.spec {
            StoreSpec::Memory => super::workspace::temporary(&call.run),
            _ => super::workspace::create(&self.spec, &call.run),
        };
        options.children = self.me.upgrade().map(|c| c as Arc<dyn ChildRunner>);
        options
    }

    async fn start(
        &self,
        parent: ParentRun,
        call: &ChildCall,
        cancel: CancellationToken,
    ) -> Result<RunState, AppError> {
        let loaded = super::load(&call.path)?;
        let params = match &call.params {
            Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => Default::default(),
        };
        crate::exec::resolve_params(&loaded.workflow, &params)?;
        let config = Config::from_process_env(self.config.as_deref(), &call.path)?;
        let _lease = self.store.lease(&call.run)?;
        let mut options = self.options(call, cancel);
        options.params = params;
        options.config = Arc::new(config);
        options.parent = Some(parent);
        options.source = Some(super::amend::store_source(&*self.store, &loaded.source)?);
        let state =
            crate::exec::run(Arc::new(loaded.workflow), Arc::new(loaded.plan), options).await?;
        Ok(state)
    }

    async fn resume(
        &self,
        call: &ChildCall,
        events: Vec<crate::model::Event>,
        cancel: CancellationToken,
    ) -> Result<RunState, AppError> {
        let loaded = super::load(&call.path)?;
        let config = Config::from_process_env(self.config.as_deref(), &call.path)?;
        let _lease = self.store.lease(&call.run)?;
        let mut options = self.options(call, cancel);
        options.config = Arc::new(config);
        let workspace = options.workspace.clone();
        let state = crate::exec::resume(
            Arc::new(loaded.workflow),
            Arc::new(loaded.plan),
            options,
            events,
            ResumeRequest::default(),
        )
        .await;
        self.forget_workspace(workspace);
        Ok(state?)
    }

    /// A child in the memory store works in a temporary folder, removed after it, as its
    /// parent's is.
    fn forget_workspace(&self, workspace: Option<PathBuf>) {
        if let (StoreSpec::Memory, Some(dir)) = (&self.spec, workspace) {
            super::workspace::remove_temporary(&dir);
        }
    }
}

impl ChildRunner for Children {
    fn run(&self, attempt: &Attempt, call: ChildCall) -> AgentFuture {
        let Some(me) = self.me.upgrade() else {
            return Box::pin(async {
                Err(TaskError::fatal(ErrorCode::Fatal, "the run is ending"))
            });
        };
        let parent = ParentRun {
            run: attempt.run_id.clone(),
            task: attempt.task.clone(),
        };
        let cancel = CancellationToken::new();
        // The attempt dropped (cancelled, timed out): the child is cancelled, and ends on its
        // own task, recording its end.
        let guard = cancel.clone().drop_guard();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(async move {
            let _ = tx.send(me.drive(parent, call, cancel).await);
        });
        if let Ok(mut r) = self.running.lock() {
            r.retain(|h| !h.is_finished());
            r.push(handle);
        }
        Box::pin(async move {
            let _guard = guard;
            rx.await.unwrap_or_else(|_| {
                Err(TaskError::fatal(
                    ErrorCode::Fatal,
                    "the child run stopped without an outcome",
                ))
            })
        })
    }
}

/// A finished child run as its parent task sees it: its outputs, or why it did not complete.
fn outcome(call: &ChildCall, state: &RunState) -> Result<Value, TaskError> {
    let id = &state.workflow_id;
    let written = &call.written;
    match state.status() {
        RunStatus::Completed => Ok(Value::Object(
            state
                .outputs
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        )),
        RunStatus::Cancelled => Err(TaskError::fatal(
            ErrorCode::Cancelled,
            format!("child run {id} of `{written}` was cancelled"),
        )),
        RunStatus::Waiting => Err(TaskError::fatal(
            ErrorCode::Fatal,
            format!(
                "child run {id} of `{written}` waits for a decision (`conductor resume {id} \
                 --decide …`)"
            ),
        )),
        _ => Err(TaskError::fatal(
            ErrorCode::Fatal,
            format!(
                "child run {id} of `{written}` failed: {}",
                state.error.as_deref().unwrap_or("no reason recorded")
            ),
        )),
    }
}
