//! A pool's circuit breaker: closed → open after `threshold` consecutive failures → half-open
//! after `cooldown` (one trial dispatch) → closed on the trial's success, open again on its
//! failure. Pure: the caller passes the time and records the transitions it returns.

use std::time::Duration;

use tokio::time::Instant;

use crate::check::ir::TaskId;
use crate::model::BreakerState;

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// The cooldown is over; `trial` is the one task allowed through, once chosen.
    HalfOpen {
        trial: Option<TaskId>,
    },
}

/// What the breaker says about a dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admit {
    Go,
    /// Open: the agent is not called, the task goes to the dead-letter queue.
    Reject,
    /// Half-open with its trial in flight: wait for the trial's outcome.
    Wait,
}

/// A change of state to record, with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Transition {
    pub state: BreakerState,
    pub reason: String,
}

#[derive(Clone, Debug)]
pub(super) struct Breaker {
    state: State,
    consecutive_failures: u32,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    pub(super) fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            state: State::Closed,
            consecutive_failures: 0,
            threshold,
            cooldown,
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub(super) fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Whether `t` is the half-open breaker's trial.
    pub(super) fn is_trial(&self, t: TaskId) -> bool {
        self.state == (State::HalfOpen { trial: Some(t) })
    }

    /// Decides a dispatch of `t` at `now`; an open breaker whose cooldown is over lets it
    /// through as its trial.
    pub(super) fn admit(&mut self, t: TaskId, now: Instant) -> (Admit, Option<Transition>) {
        match self.state {
            State::Closed => (Admit::Go, None),
            State::Open { until } if now < until => (Admit::Reject, None),
            State::HalfOpen { trial: Some(trial) } if trial == t => (Admit::Go, None),
            State::HalfOpen { trial: Some(_) } => (Admit::Wait, None),
            State::Open { .. } => {
                self.state = State::HalfOpen { trial: Some(t) };
                let transition = Transition {
                    state: BreakerState::HalfOpen,
                    reason: "the cooldown is over: one trial dispatch".into(),
                };
                (Admit::Go, Some(transition))
            }
            State::HalfOpen { trial: None } => {
                self.state = State::HalfOpen { trial: Some(t) };
                (Admit::Go, None)
            }
        }
    }

    /// An attempt of `t` that reached the agent succeeded.
    pub(super) fn success(&mut self, t: TaskId) -> Option<Transition> {
        self.consecutive_failures = 0;
        // Only the trial's outcome decides a half-open breaker.
        if self.is_trial(t) {
            self.state = State::Closed;
            return Some(Transition {
                state: BreakerState::Closed,
                reason: "the trial dispatch succeeded".into(),
            });
        }
        None
    }

    /// An attempt of `t` that reached the agent failed.
    pub(super) fn failure(&mut self, t: TaskId, now: Instant) -> Option<Transition> {
        self.consecutive_failures += 1;
        let n = self.consecutive_failures;
        let reason = match self.state {
            State::HalfOpen { trial: Some(trial) } if trial == t => {
                "the trial dispatch failed".to_string()
            }
            State::Closed if n >= self.threshold => {
                format!("{n} consecutive failure{}", crate::text::plural(n))
            }
            _ => return None,
        };
        self.state = State::Open {
            until: now + self.cooldown,
        };
        Some(Transition {
            state: BreakerState::Open,
            reason,
        })
    }

    /// The trial `t` never reached the agent (or gave up waiting): the next dispatch becomes
    /// the trial.
    pub(super) fn abandon_trial(&mut self, t: TaskId) {
        if self.is_trial(t) {
            self.state = State::HalfOpen { trial: None };
        }
    }

    /// The breaker as a rule sees it: an open breaker whose cooldown is over lets the next
    /// dispatch through as its trial, so it reads as half-open.
    pub(super) fn observed(&self, now: Instant) -> &'static str {
        match self.state {
            State::Closed => "closed",
            State::Open { until } if now < until => "open",
            State::Open { .. } | State::HalfOpen { .. } => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TaskId = TaskId(0);
    const B: TaskId = TaskId(1);

    #[test]
    fn opens_after_the_threshold_and_rejects_until_the_cooldown() {
        let now = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(30));
        assert_eq!(b.failure(A, now), None);
        let open = b.failure(A, now).unwrap();
        assert_eq!(open.state, BreakerState::Open);
        assert_eq!(open.reason, "2 consecutive failures");
        assert_eq!(b.admit(B, now + Duration::from_secs(1)).0, Admit::Reject);
        assert_eq!(b.observed(now), "open");
        assert_eq!(b.observed(now + Duration::from_secs(31)), "half_open");
    }

    #[test]
    fn half_open_lets_one_trial_through_and_its_outcome_decides() {
        let now = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(5));
        b.failure(A, now);
        let later = now + Duration::from_secs(6);
        let (admit, t) = b.admit(A, later);
        assert_eq!(admit, Admit::Go);
        assert_eq!(t.unwrap().state, BreakerState::HalfOpen);
        assert_eq!(b.admit(B, later).0, Admit::Wait);
        assert_eq!(b.admit(A, later).0, Admit::Go, "the trial itself goes");
        // Another task's success does not close it.
        assert_eq!(b.success(B), None);
        assert_eq!(b.success(A).unwrap().state, BreakerState::Closed);
        assert!(b.is_closed());
    }

    #[test]
    fn a_failed_trial_opens_it_again_and_an_abandoned_one_frees_the_slot() {
        let now = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(5));
        b.failure(A, now);
        let later = now + Duration::from_secs(6);
        b.admit(A, later);
        let again = b.failure(A, later).unwrap();
        assert_eq!(again.reason, "the trial dispatch failed");
        assert!(b.is_open());
        let later = later + Duration::from_secs(6);
        b.admit(A, later);
        b.abandon_trial(A);
        assert_eq!(b.admit(B, later).0, Admit::Go, "B becomes the trial");
        assert!(b.is_trial(B));
    }

    #[test]
    fn a_success_resets_the_count() {
        let now = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(5));
        b.failure(A, now);
        b.success(A);
        assert_eq!(b.failure(A, now), None);
        assert!(b.is_closed());
    }
}
