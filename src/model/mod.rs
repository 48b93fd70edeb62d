//! Run data: ids, statuses, errors, events, usage, and the run state that is the one reader of
//! the event log.

mod cost;
mod error;
mod event;
mod ids;
mod state;
mod status;
mod time;
mod usage;

pub use cost::{BudgetScope, Limits, Rates, Spend, Usd};
pub use error::{ErrorCode, TaskError};
pub use event::{
    AttemptRecord, DeadLetter, Event, EventKind, FeedbackPayload, InstanceInfo, ParentRun, TaskInfo,
};
pub use ids::RunId;
pub(crate) use state::DLQ_RETRY_BY;
pub use state::{
    AgentRow, AgentState, ApprovalWait, AttemptRow, Changes, ChildRun, DecisionRow, Deferral,
    GateRecord, Instance, RetryDue, RunArtifact, RunState, RunStateView, RunSummary, TaskResult,
    TaskRow,
};
pub use status::{
    AgentStatus, BreakerState, Decision, NotADecision, RunStatus, SkipReason, TaskStatus,
};
pub use time::{now, Timestamp};
pub use usage::{ArtifactRef, LlmCall, LogChunk, LogStream, OutputTail, Usage};
