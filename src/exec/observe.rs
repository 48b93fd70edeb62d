//! Who watches a run: observers see every event after it is committed, and the final state;
//! an operator answers escalations. Their implementations for people and programs are in
//! `report` and the command line.

use crate::model::{Decision, Event, RunId, RunState, TaskError};

/// Receives a run's events as they are committed, and its final state.
pub trait Observer: Send {
    fn event(&mut self, event: &Event, state: &RunState);
    /// Whether it wants each event as a JSON line too ([`Observer::json_line`]): events are
    /// serialised once, for the store and every observer.
    fn wants_json(&self) -> bool {
        false
    }
    /// An event as one line of JSON, right after [`Observer::event`].
    fn json_line(&mut self, _line: &str) {}
    /// A committed batch has been shown: the moment to flush buffered output.
    fn batch_end(&mut self) {}
    fn finished(&mut self, _state: &RunState) {}
}

/// A non-retryable failure put to an operator.
#[derive(Clone, Debug)]
pub struct Escalation {
    pub run_id: RunId,
    pub task: String,
    pub attempts: u32,
    pub error: TaskError,
}

/// A decision and who made it, or `None` when nobody can answer now.
pub type DecisionFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<(Decision, String)>> + Send + 'a>>;

/// An approval task put to a person.
#[derive(Clone, Debug)]
pub struct ApprovalQuestion {
    pub run_id: RunId,
    pub task: String,
    /// The task's rendered `prompt`.
    pub message: Option<String>,
}

/// A person's answer to an approval: approve or reject (skip and abort apply too), who, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub decision: Decision,
    pub by: String,
    pub reason: Option<String>,
}

/// An approval's answer, or `None` when nobody can answer now.
pub type ReplyFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Reply>> + Send + 'a>>;

/// Answers escalations and approvals: a person at a terminal, a test.
pub trait Operator: Send + Sync {
    fn decide<'a>(&'a self, question: &'a Escalation) -> DecisionFuture<'a>;
    /// By default nobody here approves: the run waits for `conductor resume --decide`.
    fn approve<'a>(&'a self, _question: &'a ApprovalQuestion) -> ReplyFuture<'a> {
        Box::pin(async { None })
    }
}
