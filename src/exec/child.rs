//! The parent's side of child runs: the child's id is chosen and recorded (and committed)
//! before the child starts, so that a parent resumed after a crash goes on with that same
//! child; and a run's declared `outputs` are rendered and recorded when it completes.

use std::collections::BTreeMap;

use super::dispatcher::Dispatcher;
use crate::agents::AgentCall;
use crate::check::ir::{AgentKind, TaskId};
use crate::model::{EventKind, RunStatus};

impl Dispatcher {
    /// For a child-run task about to be dispatched: records which run its attempt is — the
    /// child an interrupted attempt had started, or a new one. Returns whether it recorded.
    pub(super) fn record_child(&mut self, t: TaskId, attempt: u32) -> bool {
        let wf = self.run.wf.clone();
        let AgentKind::Child(c) = &wf.agent(wf.task(self.def_id(t)).agent).kind else {
            return false;
        };
        if self.run.dry_run {
            return false;
        }
        let open = self.state.tasks[t.index()]
            .child_runs
            .last()
            .filter(|c| c.open)
            .map(|c| c.run.clone());
        self.record(EventKind::ChildRunStarted {
            task: self.name(t),
            run: open.unwrap_or_default(),
            file: c.written.clone(),
            attempt,
        });
        true
    }

    /// The child run an attempt's call is for, as recorded by [`Self::record_child`].
    pub(super) fn child_call(&self, t: TaskId, call: &mut AgentCall) {
        if let AgentCall::Child(c) = call {
            if let Some(last) = self.state.tasks[t.index()].child_runs.last() {
                c.run = last.run.clone();
            }
        }
    }

    /// A completing run's `outputs`, rendered and recorded; a failure to render fails the run.
    pub(super) fn run_outputs(
        &mut self,
        status: RunStatus,
        error: Option<String>,
    ) -> (RunStatus, Option<String>) {
        let wf = self.run.wf.clone();
        if status != RunStatus::Completed || wf.settings.outputs.is_empty() {
            return (status, error);
        }
        let ctx = super::context::template(&self.views, 0, None, None);
        let mut outputs = BTreeMap::new();
        for (name, tree) in &wf.settings.outputs {
            let what = format!("output `{name}` of the workflow");
            match tree.render(&wf.templates, &ctx, &what, !self.run.dry_run) {
                Ok(v) => {
                    outputs.insert(name.clone(), v);
                }
                Err(e) => return (RunStatus::Failed, Some(e.0)),
            }
        }
        self.record(EventKind::RunOutputs { outputs });
        (status, error)
    }
}
