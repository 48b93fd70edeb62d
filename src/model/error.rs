//! What went wrong in an attempt, typed for the error handler.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Timeout,
    RateLimited,
    Transient,
    NoAvailableAgent,
    InvalidInput,
    InvalidOutput,
    Template,
    AgentCrashed,
    /// A worker stopped heartbeating (crashed, cut off) and its lease on the attempt ran out.
    AgentLost,
    ExitCode,
    Http,
    Rule,
    PolicyViolation,
    CircuitOpen,
    Cancelled,
    /// The `replay` provider has no recorded reply for a request.
    ReplayMiss,
    /// A person (or the approval's timeout) rejected an approval task.
    Rejected,
    /// A model call did not fit in a budget: it was not made.
    BudgetExceeded,
    Fatal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Transient => "TRANSIENT",
            ErrorCode::NoAvailableAgent => "NO_AVAILABLE_AGENT",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::InvalidOutput => "INVALID_OUTPUT",
            ErrorCode::Template => "TEMPLATE",
            ErrorCode::AgentCrashed => "AGENT_CRASHED",
            ErrorCode::AgentLost => "AGENT_LOST",
            ErrorCode::ExitCode => "EXIT_CODE",
            ErrorCode::Http => "HTTP",
            ErrorCode::Rule => "RULE",
            ErrorCode::PolicyViolation => "POLICY_VIOLATION",
            ErrorCode::CircuitOpen => "CIRCUIT_OPEN",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::ReplayMiss => "REPLAY_MISS",
            ErrorCode::Rejected => "REJECTED",
            ErrorCode::BudgetExceeded => "BUDGET_EXCEEDED",
            ErrorCode::Fatal => "FATAL",
        }
    }
}

/// A task attempt's failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    pub code: ErrorCode,
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// A provider's hint for how long to wait before retrying, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The task ran and reported failure (a non-zero exit, a status the author declared a
    /// verdict): a *failure*, not an error. It fails the task at once — no retry unless its exit
    /// code is listed in `retry_on_exit`, no circuit breaker, no dead letter, no escalation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failure: bool,
    /// The program's exit code, for a failure of a shell task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The agent was never reached: the program could not start for want of a resource the
    /// whole machine shares (file descriptors, processes, memory). Back-pressure, retried, and
    /// not counted by the circuit breaker: the agent did nothing wrong.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_started: bool,
}

impl TaskError {
    pub fn retryable(code: ErrorCode, message: impl Into<String>) -> TaskError {
        TaskError {
            code,
            message: message.into(),
            retryable: true,
            retry_after_ms: None,
            failure: false,
            exit_code: None,
            not_started: false,
        }
    }

    pub fn fatal(code: ErrorCode, message: impl Into<String>) -> TaskError {
        TaskError {
            retryable: false,
            ..TaskError::retryable(code, message)
        }
    }

    /// The task ran and reported failure.
    pub fn failure(code: ErrorCode, message: impl Into<String>) -> TaskError {
        TaskError {
            failure: true,
            ..TaskError::fatal(code, message)
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}
