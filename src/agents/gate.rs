//! The budgets' say on model calls. Before each call an llm agent asks for the call's worst
//! case to be reserved ([`CallGate::reserve`]) and makes the call only when it is granted;
//! after it, it settles the [`Reservation`] with how the call ended. The run's dispatcher owns
//! the budgets; an agent knows only this trait, reached through its attempt's
//! [`super::Trace`].

use std::future::Future;
use std::pin::Pin;

use crate::model::{LlmCall, Spend, TaskError};

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

/// A granted reservation of `worst`. Dropped without [`Reservation::settle`] — the attempt was
/// stopped during the call — it counts at its worst case.
pub struct Reservation {
    worst: Spend,
    settle: Option<Settle>,
}

impl Reservation {
    pub fn new(worst: Spend, settle: impl FnOnce(CallOutcome) + Send + 'static) -> Reservation {
        Reservation {
            worst,
            settle: Some(Box::new(settle)),
        }
    }

    /// What the call may spend at most.
    pub fn worst(&self) -> Spend {
        self.worst
    }

    /// The same reservation, with `also` told how it ended after its own settling.
    pub fn also(mut self, also: impl FnOnce(&CallOutcome) + Send + 'static) -> Reservation {
        let first = self.settle.take();
        Reservation::new(self.worst, move |outcome| {
            also(&outcome);
            if let Some(f) = first {
                f(outcome);
            }
        })
    }

    pub fn settle(mut self, outcome: CallOutcome) {
        if let Some(f) = self.settle.take() {
            f(outcome);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(f) = self.settle.take() {
            f(CallOutcome::CutOff);
        }
    }
}

/// A reservation being made: granted once it is on record.
pub type Reserving<'a> = Pin<Box<dyn Future<Output = Result<Reservation, TaskError>> + Send + 'a>>;

/// Reserves model calls against the budgets that contain them. A refused reservation (a
/// `BUDGET_EXCEEDED` error) means the call must not be made. A granted one is in the run's
/// log before the future completes, so a process killed during the call leaves it counted.
pub trait CallGate: Send + Sync {
    fn reserve<'a>(&'a self, ask: &'a CallAsk) -> Reserving<'a>;

    /// Whether a refusal means only that this attempt's allowance is used up (an attempt on a
    /// worker, which reserved its allowance when it was dispatched), not that a budget is.
    fn allowance(&self) -> bool {
        false
    }
}
