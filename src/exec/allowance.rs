//! Budgets for attempts on `conductor worker` processes, which cannot ask the scheduler during
//! the attempt: the scheduler holds an *allowance* — the worst case of the attempt's first
//! call — against every budget containing it when it queues the attempt (recorded as
//! `call_reserved` in the same commit), and the worker's gate grants calls only within it.

use std::sync::{Arc, Mutex};

use super::budget::{worst_case, Ledger};
use crate::agents::{CallAsk, CallGate, CallOutcome, Reservation, Reserving};
use crate::check::ir::{Owner, Task, Workflow};
use crate::model::{ErrorCode, Rates, Spend, TaskError};

impl Ledger {
    /// The allowance of an attempt of `task` that runs on a worker: the worst case of its
    /// first call (`ask`), held now — the scheduler cannot be asked during the attempt.
    pub(super) fn allowance(
        self: &Arc<Self>,
        wf: &Workflow,
        task: &Task,
        ask: &CallAsk,
    ) -> Result<Allowance, TaskError> {
        let owners: Vec<Owner> = wf.budgets.containing(task).map(|(o, _)| o).collect();
        let (worst, rates) = self.hold(&owners, ask)?;
        Ok(Allowance {
            ledger: self.clone(),
            owners,
            grant: Grant { worst, rates },
            open: true,
        })
    }
}

/// What an attempt on a worker may spend, held by the scheduler. Settled with what the
/// worker reports; dropped unsettled (the attempt was stopped, its worker lost), it counts
/// in full.
pub(super) struct Allowance {
    ledger: Arc<Ledger>,
    owners: Vec<Owner>,
    grant: Grant,
    open: bool,
}

impl Allowance {
    pub(super) fn grant(&self) -> Grant {
        self.grant
    }

    /// The attempt spent `spent` (at most the allowance: a worker never goes past it).
    pub(super) fn settle(mut self, spent: Spend) {
        self.open = false;
        self.ledger.charge(&self.owners, self.grant.worst, spent);
    }
}

impl Drop for Allowance {
    fn drop(&mut self) {
        if self.open {
            self.open = false;
            self.ledger
                .charge(&self.owners, self.grant.worst, self.grant.worst);
        }
    }
}

/// What a worker is told it may spend on an attempt's calls, and their prices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Grant {
    pub worst: Spend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<Rates>,
}

/// The gate of an attempt on a worker: its calls fit in the allowance the scheduler held, or
/// are not made. What a call did not use goes back to the allowance.
pub(crate) struct AllowanceGate {
    left: Arc<Mutex<Spend>>,
    rates: Option<Rates>,
}

impl AllowanceGate {
    pub(crate) fn new(grant: Grant) -> AllowanceGate {
        AllowanceGate {
            left: Arc::new(Mutex::new(grant.worst)),
            rates: grant.rates,
        }
    }
}

impl CallGate for AllowanceGate {
    fn reserve<'a>(&'a self, ask: &'a CallAsk) -> Reserving<'a> {
        Box::pin(async move {
            let worst = worst_case(ask, self.rates);
            {
                let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
                let fits = worst.llm_calls <= left.llm_calls
                    && worst.tokens <= left.tokens
                    && worst.usd <= left.usd;
                if !fits {
                    return Err(TaskError::fatal(
                        ErrorCode::BudgetExceeded,
                        format!(
                            "the attempt's budget allowance on its worker has no room for a \
                             call to `{}` of provider `{}`: the call was not made",
                            ask.model, ask.provider
                        ),
                    ));
                }
                *left = left.minus(worst);
            }
            let left = self.left.clone();
            Ok(Reservation::new(worst, move |outcome| {
                let back = match outcome {
                    CallOutcome::Reply(call) => worst.minus(call.spend()),
                    CallOutcome::Failed => worst,
                    CallOutcome::CutOff => Spend::default(),
                };
                let mut left = left.lock().unwrap_or_else(|e| e.into_inner());
                *left = left.plus(back);
            }))
        })
    }

    fn allowance(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask() -> CallAsk {
        CallAsk {
            provider: "p".into(),
            model: "m".into(),
            prompt_tokens: 60,
            max_tokens: 40,
        }
    }

    #[tokio::test]
    async fn a_workers_allowance_grants_what_it_holds_and_takes_back_what_a_call_did_not_use() {
        let grant = Grant {
            worst: worst_case(&ask(), None),
            rates: None,
        };
        let gate = AllowanceGate::new(grant);
        assert!(gate.allowance());
        let first = gate.reserve(&ask()).await.unwrap();
        let e = gate.reserve(&ask()).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::BudgetExceeded);
        assert!(e.message.contains("allowance"), "{}", e.message);
        // The call used 30 of its 100 tokens: a second call still has no `llm_calls` left.
        first.settle(CallOutcome::Reply(crate::model::LlmCall {
            provider: "p".into(),
            model: "m".into(),
            input_tokens: 20,
            output_tokens: 10,
            cached_input_tokens: 0,
            duration_ms: 1,
            replayed: false,
            usd: None,
        }));
        assert!(gate.reserve(&ask()).await.is_err());
        // A call that failed gives its whole worst case back.
        let gate = AllowanceGate::new(grant);
        gate.reserve(&ask())
            .await
            .unwrap()
            .settle(CallOutcome::Failed);
        assert!(gate.reserve(&ask()).await.is_ok());
    }
}
