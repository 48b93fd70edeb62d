//! The statuses of runs, tasks, agent instances and circuit breakers, and why a task was
//! skipped.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    InProgress,
    /// An escalation awaits an operator's answer.
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Pending,
        RunStatus::InProgress,
        RunStatus::Waiting,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::InProgress => "in_progress",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Reads a status name as `as_str` writes it (any case).
    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

impl TaskStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Pending | TaskStatus::InProgress)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::InProgress => "in_progress",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// Why a task ended SKIPPED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its `when` rule was false.
    WhenFalse,
    /// A task in its `after` list failed (or was skipped for that reason).
    UpstreamFailed,
    /// An operator (or `on_escalation = "skip"`) decided to skip it.
    Decision,
    /// A fan-out over an empty list: nothing to do.
    EmptyFanOut,
    /// A fan-out instance that had not started when a sibling failed under `fail_fast`.
    SiblingFailed,
}

impl SkipReason {
    /// A skip by choice (not because something failed): it does not count against a gate.
    pub fn by_choice(self) -> bool {
        !matches!(self, SkipReason::UpstreamFailed | SkipReason::SiblingFailed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::WhenFalse => "when_false",
            SkipReason::UpstreamFailed => "upstream_failed",
            SkipReason::Decision => "decision",
            SkipReason::EmptyFanOut => "empty_fan_out",
            SkipReason::SiblingFailed => "sibling_failed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentStatus {
    Idle,
    Running,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Idle => "IDLE",
            AgentStatus::Running => "RUNNING",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// An operator's (or `on_escalation`'s) answer to an escalation — retry, skip or abort — or a
/// person's to an approval task: approve or reject (skip and abort apply there too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Retry,
    Skip,
    Abort,
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Retry => "retry",
            Decision::Skip => "skip",
            Decision::Abort => "abort",
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }

    /// Whether it answers an approval rather than an escalation.
    pub fn is_approval(self) -> bool {
        matches!(self, Decision::Approve | Decision::Reject)
    }
}

/// A word that is not a decision.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a decision: use retry, skip or abort (approve or reject for an approval)")]
pub struct NotADecision(pub String);

impl std::str::FromStr for Decision {
    type Err = NotADecision;
    fn from_str(s: &str) -> Result<Decision, NotADecision> {
        match s.trim().to_ascii_lowercase().as_str() {
            "retry" | "r" => Ok(Decision::Retry),
            "skip" | "s" => Ok(Decision::Skip),
            "abort" | "a" => Ok(Decision::Abort),
            "approve" | "approved" | "yes" | "y" => Ok(Decision::Approve),
            "reject" | "rejected" | "no" | "n" => Ok(Decision::Reject),
            other => Err(NotADecision(other.to_string())),
        }
    }
}
