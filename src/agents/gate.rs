//! The budgets' say on model calls. Before each call an llm agent asks for the call's worst
//! case to be reserved ([`CallGate::reserve`]) and makes the call only when it is granted;
//! after it, it settles the [`Reservation`] with how the call ended. The run's dispatcher owns
//! the budgets; an agent knows only this trait, reached through its attempt's
//! [`super::Trace`].

use crate::model::{LlmCall, TaskError};

/// What a model call may spend at most, asked before it is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallAsk {
    /// The provider's name in `conductor.toml`, and the model asked for (what prices it).
    pub provider: String,
    pub model: String,
    /// An upper bound on the prompt's tokens (see [`super::llm::prompt_bound`]).
    pub prompt_tokens: u64,
    /// The reply's limit.
    pub max_tokens: u64,
}

/// How a reserved call ended.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutcome {
    /// The provider replied: this is what it reported.
    Reply(LlmCall),
    /// The provider answered with an error, or could not be reached: no model ran.
    Failed,
    /// No reply came although a model may have run (a timeout, a stopped attempt): the call
    /// counts at its worst case.
    CutOff,
}

type Settle = Box<dyn FnOnce(CallOutcome) + Send>;

/// A granted reservation. Dropped without [`Reservation::settle`] — the attempt was stopped
/// during the call — it counts at its worst case.
pub struct Reservation(Option<Settle>);

impl Reservation {
    pub fn new(settle: impl FnOnce(CallOutcome) + Send + 'static) -> Reservation {
        Reservation(Some(Box::new(settle)))
    }

    pub fn settle(mut self, outcome: CallOutcome) {
        if let Some(f) = self.0.take() {
            f(outcome);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(CallOutcome::CutOff);
        }
    }
}

/// Reserves model calls against the budgets that contain them. A refused reservation (a
/// `BUDGET_EXCEEDED` error) means the call must not be made.
pub trait CallGate: Send + Sync {
    fn reserve(&self, ask: &CallAsk) -> Result<Reservation, TaskError>;
}
