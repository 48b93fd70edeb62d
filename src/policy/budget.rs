//! Wall-clock budgets. The operation limit bounds how many steps a rule or script takes, not
//! how long: a step can clone a large map or search a long string, so a loop well under the
//! limit can run for minutes, blocking the scheduler (rules run on it) or a thread the run
//! waits for (scripts). The engine's progress callback checks, every few operations, the
//! budget the current thread set for its evaluation: a deadline, and for scripts a flag the
//! attempt raises when it is stopped (its timeout, a cancel). Crossing either ends the
//! evaluation with [`rhai::EvalAltResult::ErrorTerminated`].

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rhai::Dynamic;

/// Operations between two looks at the clock: a look costs about as much as a cheap operation.
const CHECK_EVERY: u64 = 16;

/// Why an evaluation was stopped, as the token rhai hands back.
pub(super) const OUT_OF_TIME: &str = "out of time";
pub(super) const STOPPED: &str = "stopped";

struct Budget {
    deadline: Option<Instant>,
    stop: Option<Arc<AtomicBool>>,
}

thread_local! {
    static BUDGET: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

/// Runs `f` with a budget for every evaluation it makes on this thread.
pub(super) fn within<T>(
    deadline: Option<Instant>,
    stop: Option<Arc<AtomicBool>>,
    f: impl FnOnce() -> T,
) -> T {
    let previous = BUDGET.with(|b| b.replace(Some(Budget { deadline, stop })));
    let out = f();
    BUDGET.with(|b| *b.borrow_mut() = previous);
    out
}

/// The engine's progress callback: `Some(token)` stops the evaluation.
pub(super) fn progress(operations: u64) -> Option<Dynamic> {
    if operations % CHECK_EVERY != 0 {
        return None;
    }
    BUDGET.with(|b| {
        let b = b.borrow();
        let b = b.as_ref()?;
        if b.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Some(Dynamic::from(STOPPED));
        }
        b.deadline
            .is_some_and(|d| Instant::now() >= d)
            .then(|| Dynamic::from(OUT_OF_TIME))
    })
}
