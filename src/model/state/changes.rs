//! What a batch of events changed, as rows for the stores' projections.

use std::sync::Arc;

use super::RunState;
use crate::model::{AgentStatus, DeadLetter, Decision, Event, TaskStatus, Timestamp};

/// What a batch of events changed, for the stores' projections: the rows to write, each
/// built from the state after the batch.
#[derive(Debug, Default)]
pub struct Changes {
    /// Whether rows are wanted (a store keeps projections); without, only `run` and `tasks`
    /// are noted.
    pub rows: bool,
    /// The run's status changed.
    pub run: bool,
    /// Indexes of touched tasks (may repeat; see [`Changes::task_rows`]).
    pub tasks: Vec<usize>,
    /// Names of touched agent instances (may repeat).
    pub agents: Vec<Arc<str>>,
    pub attempts: Vec<AttemptRow>,
    pub decisions: Vec<DecisionRow>,
    pub dead_letters: Vec<DeadLetter>,
    /// Content hashes of the files written.
    pub artifacts: Vec<String>,
}

/// A task's row in a projection.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRow {
    pub task: Arc<str>,
    pub status: TaskStatus,
    pub attempts: u32,
    pub error: Option<String>,
}

/// An agent instance's row in a projection.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentRow {
    pub agent: Arc<str>,
    pub status: AgentStatus,
    pub current_task: Option<Arc<str>>,
}

/// One finished attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRow {
    pub seq: u64,
    pub task: Arc<str>,
    pub attempt: u32,
    pub agent: Arc<str>,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// One decision on an escalated or dead-lettered task.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionRow {
    pub seq: u64,
    pub task: Arc<str>,
    pub decision: Decision,
    pub by: String,
    pub at: Timestamp,
}

impl Changes {
    /// The latest row of every touched task, once each, in task order.
    pub fn task_rows(&self, state: &RunState) -> Vec<TaskRow> {
        self.indexed_task_rows(state).map(|(_, row)| row).collect()
    }

    /// [`Changes::task_rows`], each with the task's index in the run.
    pub fn indexed_task_rows<'a>(
        &self,
        state: &'a RunState,
    ) -> impl Iterator<Item = (usize, TaskRow)> + 'a {
        let mut idx = self.tasks.clone();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().filter_map(|i| {
            state.tasks.get(i).map(|t| {
                let row = TaskRow {
                    task: t.task.clone(),
                    status: t.status,
                    attempts: t.attempts,
                    error: t.error.as_ref().map(ToString::to_string),
                };
                (i, row)
            })
        })
    }

    /// The latest row of every touched agent instance, once each.
    pub fn agent_rows(&self, state: &RunState) -> Vec<AgentRow> {
        // A batch touches each instance many times, by the same `Arc`: the touches are sorted
        // as addresses, and only the few names left as strings.
        let mut names = self.agents.clone();
        names.sort_unstable_by_key(|n| Arc::as_ptr(n).cast::<u8>() as usize);
        names.dedup_by(|a, b| Arc::ptr_eq(a, b));
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .filter_map(|n| {
                state.agent_states.get(&*n).map(|a| AgentRow {
                    agent: n.clone(),
                    status: a.status,
                    current_task: a.current_task.clone(),
                })
            })
            .collect()
    }

    /// What a store whose projections were written up to event `seq` lacks: the latest row of
    /// every task and agent, and the attempts and decisions after `seq`.
    pub fn after(events: &[Event], seq: u64) -> Changes {
        let mut scratch = RunState::default();
        let mut changes = Changes {
            rows: true,
            ..Changes::default()
        };
        for e in events {
            if e.seq > seq {
                scratch.apply_tracked(e, &mut changes);
            } else {
                scratch.apply(e);
            }
        }
        changes.run = true;
        changes.tasks = (0..scratch.tasks.len()).collect();
        changes.agents = scratch
            .agent_states
            .keys()
            .map(|k| Arc::from(k.as_str()))
            .collect();
        changes
    }

    /// Adds another set of changes to these.
    pub fn merge(&mut self, other: Changes) {
        self.run |= other.run;
        self.tasks.extend(other.tasks);
        self.agents.extend(other.agents);
        self.attempts.extend(other.attempts);
        self.decisions.extend(other.decisions);
        self.dead_letters.extend(other.dead_letters);
        self.artifacts.extend(other.artifacts);
    }

    pub fn is_empty(&self) -> bool {
        !self.run
            && self.tasks.is_empty()
            && self.agents.is_empty()
            && self.attempts.is_empty()
            && self.decisions.is_empty()
            && self.dead_letters.is_empty()
            && self.artifacts.is_empty()
    }

    pub fn clear(&mut self) {
        self.run = false;
        self.tasks.clear();
        self.agents.clear();
        self.attempts.clear();
        self.decisions.clear();
        self.dead_letters.clear();
        self.artifacts.clear();
    }
}
