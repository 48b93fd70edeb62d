//! Deferral: an `enforce` rule may answer `defer(reason)`. The task then waits — its
//! `agent_wait` runs — and the rules are asked again whenever something they can see has
//! changed (an event other than a deferral was recorded), or when its wait runs out.

use super::dispatcher::Dispatcher;
use super::timers::Timer;
use crate::check::ir::TaskId;
use crate::model::{ErrorCode, EventKind, TaskError};

impl Dispatcher {
    /// Holds `t` back; records why when that is new.
    pub(super) fn defer(&mut self, t: TaskId, rule: String, reason: String) {
        let same = self.state.tasks[t.index()]
            .deferred
            .as_ref()
            .is_some_and(|d| d.rule == rule && d.reason == reason);
        if !same {
            self.record(EventKind::TaskDeferred {
                task: self.name(t),
                rule,
                reason,
            });
        }
        let rt = &mut self.tasks[t.index()];
        if rt.deferred_token.is_none() {
            // The first deferral of this wait starts its `agent_wait`.
            rt.wait_token += 1;
            rt.deferred_token = Some(rt.wait_token);
            let token = rt.wait_token;
            self.add_timer(self.run.wf.settings.agent_wait, Timer::Deferred(t, token));
        }
        self.deferred.push(t);
        self.deferred_epoch = self.epoch;
    }

    /// `t` passed its rules: its deferral (if any) is over.
    pub(super) fn undefer(&mut self, t: TaskId) {
        self.tasks[t.index()].deferred_token = None;
    }

    /// Deferred tasks go through their rules again when something changed since.
    pub(super) fn recheck_deferred(&mut self) {
        if self.deferred.is_empty() || self.epoch == self.deferred_epoch {
            return;
        }
        for t in std::mem::take(&mut self.deferred).into_iter().rev() {
            self.tasks[t.index()].rechecking = true;
            self.ready.push_front(t);
        }
    }

    /// A deferred task's `agent_wait` ran out: a failed attempt, as for a task that found no
    /// instance.
    pub(super) fn deferred_too_long(&mut self, t: TaskId, token: u64) {
        if self.tasks[t.index()].deferred_token != Some(token) {
            return;
        }
        self.deferred.retain(|d| *d != t);
        self.undefer(t);
        let (rule, reason) = self.state.tasks[t.index()]
            .deferred
            .as_ref()
            .map(|d| (d.rule.clone(), d.reason.clone()))
            .unwrap_or_default();
        let error = TaskError::retryable(
            ErrorCode::NoAvailableAgent,
            format!(
                "deferred by {rule} for longer than `agent_wait` ({}): {reason}",
                crate::text::duration(self.run.wf.settings.agent_wait)
            ),
        );
        self.gave_up(t, error);
    }
}
