//! [`RunSummary`]: what `conductor runs` lists of a run, kept by durable stores beside the run
//! so that listing runs reads no log.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::RunState;
use crate::model::{RunId, RunStatus, TaskStatus, Timestamp, Usage};

/// What a listing shows of a run's state, as of one event. A store saves it with every batch
/// that changes the run's status or phase, or that is appended while the run is stopped, so a
/// stopped run's summary is as of its last event; a reader uses it only when `seq` is still the
/// run's last event, and folds the log otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The last event it counts.
    pub seq: u64,
    pub status: Option<RunStatus>,
    pub phase: Option<String>,
    pub feedback_loop_count: u32,
    /// Tasks and fan-out instances (not fan-out tasks themselves) by outcome, and in all.
    pub completed: usize,
    pub failed: usize,
    pub tasks: usize,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub usage: Usage,
    pub dry_run: bool,
    /// A child run: the run that started it.
    pub parent: Option<RunId>,
    /// Tasks waiting for an operator's decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<Arc<str>>,
}

impl RunState {
    /// The run as a listing shows it; one pass over its tasks.
    pub fn summary(&self) -> RunSummary {
        let (mut completed, mut failed, mut tasks) = (0, 0, 0);
        for t in self.tasks.iter().filter(|t| t.instances.is_empty()) {
            tasks += 1;
            match t.status {
                TaskStatus::Completed => completed += 1,
                TaskStatus::Failed => failed += 1,
                _ => {}
            }
        }
        RunSummary {
            seq: self.last_seq,
            status: self.status,
            phase: self.current_phase.clone(),
            feedback_loop_count: self.feedback_loop_count,
            completed,
            failed,
            tasks,
            started_at: self.started_at,
            completed_at: self.completed_at,
            usage: self.usage,
            dry_run: self.dry_run,
            parent: self.parent.as_ref().map(|p| p.run.clone()),
            waiting: self.awaiting_decision.clone(),
        }
    }

    /// Whether a store appending a batch that left the run in this state saves its
    /// [`RunSummary`]: the batch changed the run (`changed`: its status or phase), or the run is
    /// stopped — so the summary of a stopped run counts its last event.
    pub fn summary_due(&self, changed: bool) -> bool {
        changed || !matches!(self.status(), RunStatus::InProgress | RunStatus::Pending)
    }
}
