//! The run state in the predecessor's shape: the last line of `--json`, `show --json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::{AgentState, GateRecord, RunState, TaskResult};
use crate::model::{BreakerState, FeedbackPayload, RunId, RunStatus, TaskStatus, Timestamp, Usage};

/// The serialised run state, with the seed's field names.
#[derive(Debug, Serialize)]
pub struct RunStateView<'a> {
    pub workflow_id: &'a RunId,
    pub workflow: &'a str,
    pub status: RunStatus,
    pub current_phase: Option<&'a str>,
    pub pending_tasks: Names<'a>,
    pub completed_tasks: Names<'a>,
    pub failed_tasks: Names<'a>,
    pub skipped_tasks: Names<'a>,
    pub task_results: Results<'a>,
    pub agent_states: &'a BTreeMap<String, AgentState>,
    pub feedback_loop_count: u32,
    pub feedback: Option<&'a FeedbackPayload>,
    pub gates: &'a [GateRecord],
    pub breakers: &'a BTreeMap<String, BreakerState>,
    pub dead_letters: &'a [String],
    pub awaiting_decision: &'a [Arc<str>],
    pub params: &'a BTreeMap<String, serde_json::Value>,
    pub warnings: &'a [String],
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub error: Option<&'a str>,
    pub usage: Usage,
    /// Usage and cost by phase, and by feedback pass.
    pub phase_usage: &'a BTreeMap<String, Usage>,
    pub pass_usage: &'a [Usage],
    /// A child run: the run and task that started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<&'a crate::model::ParentRun>,
    /// The workflow's declared `outputs`, once rendered at its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<&'a BTreeMap<String, serde_json::Value>>,
}

impl RunState {
    /// The state in the predecessor's shape.
    pub fn view(&self) -> RunStateView<'_> {
        RunStateView {
            workflow_id: &self.workflow_id,
            workflow: &self.workflow,
            status: self.status(),
            current_phase: self.current_phase.as_deref(),
            pending_tasks: Names(&self.tasks, None),
            completed_tasks: Names(&self.tasks, Some(TaskStatus::Completed)),
            failed_tasks: Names(&self.tasks, Some(TaskStatus::Failed)),
            skipped_tasks: Names(&self.tasks, Some(TaskStatus::Skipped)),
            task_results: Results(&self.tasks),
            agent_states: &self.agent_states,
            feedback_loop_count: self.feedback_loop_count,
            feedback: self.feedback.as_ref(),
            gates: &self.gates,
            breakers: &self.breakers,
            dead_letters: &self.dead_letters,
            awaiting_decision: &self.awaiting_decision,
            params: &self.params,
            warnings: &self.warnings,
            started_at: self.started_at,
            completed_at: self.completed_at,
            error: self.error.as_deref(),
            usage: self.usage,
            phase_usage: &self.phase_usage,
            pass_usage: &self.pass_usage,
            parent: self.parent.as_ref(),
            outputs: self.outputs.as_ref(),
        }
    }
}

/// The names of the tasks with a status (`None`: not final yet), serialised as a list straight
/// from the state: a 100k-task run's view builds no lists of its own.
#[derive(Debug)]
pub struct Names<'a>(&'a [TaskResult], Option<TaskStatus>);

impl Serialize for Names<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wanted = |t: &&TaskResult| match self.1 {
            Some(status) => t.status == status,
            None => !t.status.is_final(),
        };
        s.collect_seq(self.0.iter().filter(wanted).map(|t| &*t.task))
    }
}

/// Every task's result by name, in the state's order, serialised as a map straight from it.
#[derive(Debug)]
pub struct Results<'a>(&'a [TaskResult]);

impl Serialize for Results<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|t| (&*t.task, t)))
    }
}
