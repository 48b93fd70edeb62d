//! The scheduler's timers: retries whose backoff ends, tasks whose `agent_wait` runs out.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tokio::time::Instant;

use crate::check::ir::TaskId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    /// A retry's backoff is over.
    Retry(TaskId),
    /// A task waiting for an instance gives up (the token tells stale timers apart).
    AgentWait(TaskId, u64),
    /// A deferred task's `agent_wait` runs out.
    Deferred(TaskId, u64),
    /// An approval task's `timeout`: rejected unless decided.
    ApprovalDue(TaskId),
}

/// Timers in order of when they fire; equal times fire in the order they were set.
#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    seq: u64,
}

impl Timers {
    pub(super) fn add(&mut self, at: Instant, timer: Timer) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, timer)));
    }

    /// When the next timer fires.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes the timers due at `now`, in order.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Timer> {
        let mut out = Vec::new();
        while let Some(Reverse((at, _, timer))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            out.push(timer);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timers_fire_in_time_order_then_in_order_set() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.add(t0 + Duration::from_millis(20), Timer::Retry(TaskId(1)));
        t.add(
            t0 + Duration::from_millis(10),
            Timer::AgentWait(TaskId(2), 1),
        );
        t.add(t0 + Duration::from_millis(10), Timer::Retry(TaskId(3)));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(10)));
        assert!(t.due(t0).is_empty());
        assert_eq!(
            t.due(t0 + Duration::from_millis(15)),
            [Timer::AgentWait(TaskId(2), 1), Timer::Retry(TaskId(3))]
        );
        assert_eq!(
            t.due(t0 + Duration::from_secs(1)),
            [Timer::Retry(TaskId(1))]
        );
        assert_eq!(t.next(), None);
    }
}
