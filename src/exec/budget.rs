//! The run's budgets: what each has spent (rebuilt from the log on resume) and reserved. Every
//! model call of an attempt reserves its worst case against each budget that contains it —
//! the workflow's, its phase's, its agent's, its task's — under one lock, so parallel
//! attempts cannot overspend; it is settled with the real usage when the call ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::agents::{CallAsk, CallGate, CallOutcome, Reservation, Reserving};
use crate::check::ir::{Owner, Task, Workflow};
use crate::config::Config;
use crate::model::{
    BudgetScope, ErrorCode, Limits, Rates, RunState, Spend, TaskError, Timestamp, Usd,
};

/// One budget: its limits, what was spent and what running calls hold.
#[derive(Clone, Debug)]
struct Account {
    scope: BudgetScope,
    limits: Limits,
    spent: Spend,
    reserved: Spend,
    /// When its `wall` started counting: the run's start for the workflow, else its first
    /// model call in this process.
    since_ms: Option<u64>,
}

/// Every budget of a run.
pub(super) struct Ledger {
    accounts: Mutex<HashMap<Owner, Account>>,
    config: Arc<Config>,
    /// Where granted reservations go to be recorded (`call_reserved`) before their call.
    record: mpsc::UnboundedSender<ToRecord>,
}

/// A granted reservation for the dispatcher to record; `recorded` answers once it is
/// committed to the store.
pub(super) struct ToRecord {
    pub task: Arc<str>,
    pub attempt: u32,
    pub worst: Spend,
    pub recorded: oneshot::Sender<()>,
}

impl Ledger {
    /// The run's budgets, with what `state` says they have spent: `None` without budgets.
    /// Calls in flight when the log ends (reserved, never settled) count at their worst case.
    pub(super) fn new(
        wf: &Workflow,
        config: Arc<Config>,
        state: &RunState,
        record: mpsc::UnboundedSender<ToRecord>,
    ) -> Option<Ledger> {
        if !wf.budgets.any() {
            return None;
        }
        let mut accounts = HashMap::new();
        let mut open = |owner: Owner, scope: BudgetScope, b: &crate::check::ir::Budget| {
            accounts.insert(
                owner,
                Account {
                    scope,
                    limits: Limits::from_budget(b),
                    spent: Spend::default(),
                    reserved: Spend::default(),
                    since_ms: None,
                },
            );
        };
        if let Some(b) = &wf.budgets.workflow.budget {
            open(Owner::Workflow, BudgetScope::Workflow, b);
        }
        for (id, s) in &wf.budgets.phases {
            if let Some(b) = &s.budget {
                open(
                    Owner::Phase(*id),
                    BudgetScope::Phase(wf.phase(*id).name.clone()),
                    b,
                );
            }
        }
        for (id, s) in &wf.budgets.agents {
            if let Some(b) = &s.budget {
                open(
                    Owner::Agent(*id),
                    BudgetScope::Agent(wf.agent(*id).name.clone()),
                    b,
                );
            }
        }
        for (id, s) in &wf.budgets.tasks {
            if let Some(b) = &s.budget {
                open(
                    Owner::Task(*id),
                    BudgetScope::Task(wf.task(*id).name.clone()),
                    b,
                );
            }
        }
        for a in accounts.values_mut() {
            if let Some(raised) = state.budget_raises.get(&a.scope) {
                a.limits = a.limits.with(*raised);
            }
        }
        if let Some(a) = accounts.get_mut(&Owner::Workflow) {
            a.since_ms = state.started_at.map(|t| t.0);
        }
        for r in &state.tasks {
            let name = r.instance.as_ref().map_or(&r.task, |i| &i.of);
            let Some(task) = wf.task_by_name(name) else {
                continue;
            };
            let spend = r.usage().spend().plus(r.reserved);
            if spend.is_zero() {
                continue;
            }
            for (owner, _) in wf.budgets.containing(task) {
                if let Some(a) = accounts.get_mut(&owner) {
                    a.spent = a.spent.plus(spend);
                    // A `wall` below the workflow counts from its first call: at the latest
                    // when the first task that made one started (a resume keeps the clock).
                    if owner != Owner::Workflow {
                        if let Some(at) = r.started_at {
                            a.since_ms = Some(a.since_ms.map_or(at.0, |s| s.min(at.0)));
                        }
                    }
                }
            }
        }
        Some(Ledger {
            accounts: Mutex::new(accounts),
            config,
            record,
        })
    }

    /// The gate for the calls of attempt `attempt` of `task`, recorded under `name` (the
    /// instance's name for a fan-out).
    pub(super) fn gate(
        self: &Arc<Self>,
        wf: &Workflow,
        task: &Task,
        name: Arc<str>,
        attempt: u32,
    ) -> Arc<dyn CallGate> {
        Arc::new(AttemptGate {
            ledger: self.clone(),
            owners: wf.budgets.containing(task).map(|(o, _)| o).collect(),
            name,
            attempt,
        })
    }

    /// What rules see as `budget`: the least left of each quantity over every budget
    /// (`usd_left`, `tokens_left`, `llm_calls_left`, `wall_left_ms`; absent when no budget
    /// limits it), and each budget's own under `by` (`workflow`, `phase.NAME`, ...).
    pub(super) fn left_json(&self) -> serde_json::Value {
        let now = Timestamp::now().0;
        let accounts = self.lock();
        let mut least = Limits::default();
        let mut by = serde_json::Map::new();
        for a in accounts.values() {
            let used = a.spent.plus(a.reserved);
            let l = &a.limits;
            let left = Limits {
                tokens: l.tokens.map(|m| m.saturating_sub(used.tokens)),
                usd: l.usd.map(|m| m.minus(used.usd)),
                llm_calls: l.llm_calls.map(|m| m.saturating_sub(used.llm_calls)),
                wall_ms: l
                    .wall_ms
                    .map(|m| m.saturating_sub(now.saturating_sub(a.since_ms.unwrap_or(now)))),
            };
            let min = |x: Option<u64>, y: Option<u64>| match (x, y) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
            least = Limits {
                tokens: min(least.tokens, left.tokens),
                usd: min(least.usd.map(|u| u.0), left.usd.map(|u| u.0)).map(Usd),
                llm_calls: min(least.llm_calls, left.llm_calls),
                wall_ms: min(least.wall_ms, left.wall_ms),
            };
            by.insert(a.scope.key(), left_fields(&left));
        }
        let mut out = left_fields(&least);
        out["by"] = serde_json::Value::Object(by);
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Owner, Account>> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What was held as `worst` for `owners` is released, and `spent` charged instead.
    pub(super) fn charge(&self, owners: &[Owner], worst: Spend, spent: Spend) {
        let mut accounts = self.lock();
        for o in owners {
            if let Some(a) = accounts.get_mut(o) {
                a.reserved = a.reserved.minus(worst);
                a.spent = a.spent.plus(spent);
            }
        }
    }

    fn settle(&self, owners: &[Owner], worst: Spend, outcome: CallOutcome) {
        let charged = match outcome {
            CallOutcome::Reply(call) => call.spend(),
            CallOutcome::Failed => Spend::default(),
            CallOutcome::CutOff => worst,
        };
        self.charge(owners, worst, charged);
    }
}

/// Every budget the workflow sets, by scope.
fn scopes(wf: &Workflow) -> Vec<BudgetScope> {
    let b = &wf.budgets;
    let mut out = Vec::new();
    if b.workflow.budget.is_some() {
        out.push(BudgetScope::Workflow);
    }
    let set = |s: &crate::check::ir::Scoped| s.budget.is_some();
    out.extend(
        b.phases
            .iter()
            .filter(|(_, s)| set(s))
            .map(|(id, _)| BudgetScope::Phase(wf.phase(*id).name.clone())),
    );
    out.extend(
        b.agents
            .iter()
            .filter(|(_, s)| set(s))
            .map(|(id, _)| BudgetScope::Agent(wf.agent(*id).name.clone())),
    );
    out.extend(
        b.tasks
            .iter()
            .filter(|(_, s)| set(s))
            .map(|(id, _)| BudgetScope::Task(wf.task(*id).name.clone())),
    );
    out
}

/// `resume --budget` may only change a budget the workflow sets.
pub(super) fn check_scope(wf: &Workflow, scope: &BudgetScope) -> Result<(), super::ExecError> {
    let all = scopes(wf);
    if all.contains(scope) {
        return Ok(());
    }
    let names: Vec<String> = all.iter().map(BudgetScope::key).collect();
    let names = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    Err(super::ExecError::UnknownBudget(scope.key(), names))
}

fn left_fields(l: &Limits) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    if let Some(u) = l.usd {
        m.insert("usd_left".into(), serde_json::json!(u.dollars()));
    }
    if let Some(t) = l.tokens {
        m.insert("tokens_left".into(), serde_json::json!(t));
    }
    if let Some(c) = l.llm_calls {
        m.insert("llm_calls_left".into(), serde_json::json!(c));
    }
    if let Some(w) = l.wall_ms {
        m.insert("wall_left_ms".into(), serde_json::json!(w));
    }
    serde_json::Value::Object(m)
}

/// The budgets containing one attempt's calls.
struct AttemptGate {
    ledger: Arc<Ledger>,
    owners: Vec<Owner>,
    name: Arc<str>,
    attempt: u32,
}

/// A reservation held but not yet on record: dropped (the attempt was stopped meanwhile), no
/// call was made.
struct Unrecorded(Option<Reservation>);

impl Drop for Unrecorded {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.settle(CallOutcome::Failed);
        }
    }
}

impl CallGate for AttemptGate {
    fn reserve<'a>(&'a self, ask: &'a CallAsk) -> Reserving<'a> {
        Box::pin(async move {
            let held = Unrecorded(Some(self.hold(ask)?));
            let worst = held.0.as_ref().map(Reservation::worst).unwrap_or_default();
            let (recorded, on_record) = oneshot::channel();
            let sent = self.ledger.record.send(ToRecord {
                task: self.name.clone(),
                attempt: self.attempt,
                worst,
                recorded,
            });
            if sent.is_err() || on_record.await.is_err() {
                return Err(TaskError::retryable(
                    ErrorCode::Transient,
                    "the call's reservation could not be recorded (the run is stopping or its \
                     store failed): the call was not made",
                ));
            }
            let mut held = held;
            held.0.take().ok_or_else(|| {
                TaskError::retryable(ErrorCode::Transient, "the call's reservation was lost")
            })
        })
    }
}

impl AttemptGate {
    /// Holds the call's worst case against every budget containing it, or refuses it.
    fn hold(&self, ask: &CallAsk) -> Result<Reservation, TaskError> {
        let (worst, _) = self.ledger.hold(&self.owners, ask)?;
        let (ledger, owners) = (self.ledger.clone(), self.owners.clone());
        Ok(Reservation::new(worst, move |outcome| {
            ledger.settle(&owners, worst, outcome)
        }))
    }
}

impl Ledger {
    /// Holds a call's worst case against every budget of `owners`, or refuses it: the worst
    /// case held, and the call's prices.
    pub(super) fn hold(
        &self,
        owners: &[Owner],
        ask: &CallAsk,
    ) -> Result<(Spend, Option<Rates>), TaskError> {
        let rates = self
            .config
            .price(&ask.provider, &ask.model)
            .map(Rates::from);
        let worst = worst_case(ask, rates);
        let now = Timestamp::now().0;
        let mut accounts = self.lock();
        for o in owners {
            if let Some(a) = accounts.get_mut(o) {
                refuse(a, ask, rates.is_some(), worst, now)?;
            }
        }
        for o in owners {
            if let Some(a) = accounts.get_mut(o) {
                a.reserved = a.reserved.plus(worst);
                a.since_ms.get_or_insert(now);
            }
        }
        Ok((worst, rates))
    }
}

/// A call's worst case: its prompt bound and `max_tokens`, priced.
pub(super) fn worst_case(ask: &CallAsk, rates: Option<Rates>) -> Spend {
    Spend {
        llm_calls: 1,
        tokens: ask.prompt_tokens.saturating_add(ask.max_tokens),
        usd: rates.map_or(Usd::ZERO, |r| r.cost(ask.prompt_tokens, 0, ask.max_tokens)),
    }
}

/// BUDGET_EXCEEDED when a call with `worst` as its worst case does not fit in `a`.
fn refuse(
    a: &Account,
    ask: &CallAsk,
    priced: bool,
    worst: Spend,
    now: u64,
) -> Result<(), TaskError> {
    let used = a.spent.plus(a.reserved);
    let over = |what: String| {
        Err(TaskError::fatal(
            ErrorCode::BudgetExceeded,
            format!(
                "{} ({}) has no room for a call to `{}` of provider `{}`: {what}; the call was \
                 not made",
                a.scope,
                a.limits.describe(),
                ask.model,
                ask.provider
            ),
        ))
    };
    let l = &a.limits;
    if l.usd.is_some() && !priced {
        return over(format!(
            "conductor.toml gives no price for it, so its cost cannot be bounded (add \
             [providers.{}.prices])",
            ask.provider
        ));
    }
    if let Some(max) = l.llm_calls {
        if used.llm_calls + 1 > max {
            return over(format!(
                "{} of {max} llm_calls made or running",
                used.llm_calls
            ));
        }
    }
    if let Some(max) = l.tokens {
        if used.tokens.saturating_add(worst.tokens) > max {
            return over(format!(
                "{} tokens spent or reserved, and this call may take {} ({} prompt + {} \
                 max_tokens), over {max}",
                used.tokens, worst.tokens, ask.prompt_tokens, ask.max_tokens
            ));
        }
    }
    if let Some(max) = l.usd {
        if used.usd.plus(worst.usd) > max {
            return over(format!(
                "{} spent or reserved, and this call may cost {} ({} prompt + {} max_tokens), \
                 over {max}",
                used.usd, worst.usd, ask.prompt_tokens, ask.max_tokens
            ));
        }
    }
    if let (Some(max), Some(since)) = (l.wall_ms, a.since_ms) {
        let elapsed = now.saturating_sub(since);
        if elapsed >= max {
            return over(format!(
                "{} of wall time used",
                crate::text::duration(std::time::Duration::from_millis(elapsed))
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(limits: Limits, spent: Spend) -> Account {
        Account {
            scope: BudgetScope::Workflow,
            limits,
            spent,
            reserved: Spend::default(),
            since_ms: Some(1_000),
        }
    }

    fn ask() -> CallAsk {
        CallAsk {
            provider: "p".into(),
            model: "m".into(),
            prompt_tokens: 60,
            max_tokens: 40,
        }
    }

    fn worst(usd: u64) -> Spend {
        Spend {
            llm_calls: 1,
            tokens: 100,
            usd: Usd(usd),
        }
    }

    #[test]
    fn a_call_that_fits_exactly_is_made_and_one_more_token_or_pico_dollar_is_not() {
        let spent = Spend {
            llm_calls: 2,
            tokens: 900,
            usd: Usd(5_000),
        };
        let exact = Limits {
            tokens: Some(1_000),
            usd: Some(Usd(6_000)),
            llm_calls: Some(3),
            wall_ms: Some(10_000),
        };
        assert!(refuse(&account(exact, spent), &ask(), true, worst(1_000), 10_999).is_ok());
        let tight = |l: Limits| refuse(&account(l, spent), &ask(), true, worst(1_000), 10_999);
        let e = tight(exact.with(Limits {
            tokens: Some(999),
            ..Limits::default()
        }))
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BudgetExceeded);
        assert!(!e.retryable);
        assert!(
            e.message.contains("900 tokens spent or reserved"),
            "{}",
            e.message
        );
        assert!(tight(exact.with(Limits {
            usd: Some(Usd(5_999)),
            ..Limits::default()
        }))
        .is_err());
        assert!(tight(exact.with(Limits {
            llm_calls: Some(2),
            ..Limits::default()
        }))
        .is_err());
        // Wall time: 9 999 ms of 10 000 used leaves room; all of it leaves none.
        let e = refuse(&account(exact, spent), &ask(), true, worst(1_000), 11_000).unwrap_err();
        assert!(e.message.contains("of wall time used"), "{}", e.message);
    }

    #[test]
    fn a_usd_budget_refuses_a_call_without_a_price() {
        let l = Limits {
            usd: Some(Usd(1)),
            ..Limits::default()
        };
        let e = refuse(&account(l, Spend::default()), &ask(), false, worst(0), 0).unwrap_err();
        assert!(e.message.contains("no price"), "{}", e.message);
    }
}
