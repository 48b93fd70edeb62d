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
    pub pending_tasks: Vec<Arc<str>>,
    pub completed_tasks: Vec<Arc<str>>,
    pub failed_tasks: Vec<Arc<str>>,
    pub skipped_tasks: Vec<Arc<str>>,
    pub task_results: indexmap::IndexMap<&'a str, &'a TaskResult>,
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
            pending_tasks: self
                .tasks
                .iter()
                .filter(|t| !t.status.is_final())
                .map(|t| t.task.clone())
                .collect(),
            completed_tasks: self.names_with(TaskStatus::Completed),
            failed_tasks: self.names_with(TaskStatus::Failed),
            skipped_tasks: self.names_with(TaskStatus::Skipped),
            task_results: self.tasks.iter().map(|t| (&*t.task, t)).collect(),
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
