//! What the run, its passes, phases and tasks spent, as events settle model calls.

use super::RunState;
use crate::model::Usage;

impl RunState {
    /// A new attempt of task `i` whose last one never finished (the process died during its
    /// model calls): those calls count at their worst case.
    pub(super) fn unsettled(&mut self, i: usize) {
        let t = &mut self.tasks[i];
        if t.reserved.is_zero() {
            return;
        }
        let lost = Usage {
            cut_off: std::mem::take(&mut t.reserved),
            ..Usage::default()
        };
        self.add_usage(i, &lost);
    }

    /// What task `i` spent, added to it, its phase, this pass and the run.
    pub(super) fn add_usage(&mut self, i: usize, spent: &Usage) {
        self.add_run_usage(spent);
        let t = &mut self.tasks[i];
        // Most attempts spend nothing: no usage of their own for their tasks.
        if *spent != Usage::ZERO {
            t.usage = Some(Box::new(t.usage().plus(spent)));
        }
        match self.phase_usage.get_mut(&*t.phase) {
            Some(u) => *u = u.plus(spent),
            None => {
                self.phase_usage.insert(t.phase.to_string(), *spent);
            }
        }
    }

    /// What an attempt spent, added to this pass and the run.
    pub(super) fn add_run_usage(&mut self, spent: &Usage) {
        self.usage = self.usage.plus(spent);
        let pass = self.feedback_loop_count as usize;
        if self.pass_usage.len() <= pass {
            self.pass_usage.resize(pass + 1, Usage::default());
        }
        self.pass_usage[pass] = self.pass_usage[pass].plus(spent);
    }
}
