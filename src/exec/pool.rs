//! An agent pool: `count` instances handed out lowest-numbered first, a FIFO of tasks waiting
//! for one, and the pool's circuit breaker.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::breaker::Breaker;
use crate::check::ir::{self, TaskId};

pub(super) struct Pool {
    pub count: u32,
    idle: BTreeSet<u32>,
    waiting: VecDeque<TaskId>,
    pub running: u32,
    /// Instances whose last attempt that reached the agent failed (`pool.failed` in rules).
    instance_failed: Vec<bool>,
    pub failed: u32,
    pub instances: Vec<Arc<str>>,
    pub breaker: Breaker,
}

impl Pool {
    pub(super) fn new(agent: &ir::Agent) -> Pool {
        Pool {
            count: agent.count,
            idle: (0..agent.count).collect(),
            waiting: VecDeque::new(),
            running: 0,
            instance_failed: vec![false; agent.count as usize],
            failed: 0,
            instances: (0..agent.count)
                .map(|i| Arc::from(agent.instance_name(i)))
                .collect(),
            breaker: Breaker::new(agent.breaker.failures, agent.breaker.cooldown),
        }
    }

    pub(super) fn idle(&self) -> usize {
        self.idle.len()
    }

    /// The tasks waiting, first come first.
    pub(super) fn waiters(&self) -> Vec<TaskId> {
        self.waiting.iter().copied().collect()
    }

    /// Takes the lowest-numbered idle instance, unless tasks that came earlier are waiting
    /// (`jump_queue`: the half-open breaker's trial goes ahead of them).
    pub(super) fn acquire(&mut self, jump_queue: bool) -> Option<u32> {
        if !self.waiting.is_empty() && !jump_queue {
            return None;
        }
        let i = self.idle.pop_first()?;
        self.running += 1;
        Some(i)
    }

    /// Takes a given idle instance (an attempt adopted on resume); false if it is not idle.
    pub(super) fn take(&mut self, instance: u32) -> bool {
        let taken = self.idle.remove(&instance);
        if taken {
            self.running += 1;
        }
        taken
    }

    /// Joins the queue of tasks waiting for an instance.
    pub(super) fn wait(&mut self, t: TaskId) {
        self.waiting.push_back(t);
    }

    /// Leaves the queue (gave up, or was served out of order).
    pub(super) fn leave(&mut self, t: TaskId) {
        self.waiting.retain(|w| *w != t);
    }

    /// The first waiter gets an idle instance, if there is one.
    pub(super) fn serve_next(&mut self) -> Option<(TaskId, u32)> {
        if self.idle.is_empty() {
            return None;
        }
        let t = self.waiting.pop_front()?;
        let i = self.idle.pop_first().expect("checked non-empty");
        self.running += 1;
        Some((t, i))
    }

    /// A specific waiter takes an idle instance (a half-open breaker's trial).
    pub(super) fn serve(&mut self, t: TaskId) -> Option<u32> {
        let i = self.idle.pop_first()?;
        self.waiting.retain(|w| *w != t);
        self.running += 1;
        Some(i)
    }

    /// Every instance idle, nobody waiting (the attempts were abandoned).
    pub(super) fn reset(&mut self) {
        self.idle = (0..self.count).collect();
        self.waiting.clear();
        self.running = 0;
    }

    /// An attempt on `instance` ended; `failed` when it reached the agent, whether it failed.
    pub(super) fn release(&mut self, instance: u32, failed: Option<bool>) {
        self.idle.insert(instance);
        self.running = self.running.saturating_sub(1);
        if let Some(f) = failed {
            if let Some(slot) = self.instance_failed.get_mut(instance as usize) {
                *slot = f;
            }
            self.failed = self.instance_failed.iter().filter(|f| **f).count() as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::ir::{AgentId, AgentKind, Breaker as BreakerSetting, ScriptAgent};

    fn pool(count: u32) -> Pool {
        Pool::new(&ir::Agent {
            placement: ir::Placement::Local,
            id: AgentId(0),
            name: "a".into(),
            kind: AgentKind::Script(ScriptAgent {
                function: "f".into(),
            }),
            count,
            retry: None,
            backoff: None,
            timeout: None,
            breaker: BreakerSetting::default(),
            span: crate::source::Span::new(crate::source::FileId(0), 0, 0),
        })
    }

    #[test]
    fn instances_go_lowest_first_and_waiters_first_come_first_served() {
        let mut p = pool(2);
        assert_eq!(&*p.instances[1], "a-02");
        assert_eq!(p.acquire(false), Some(0));
        assert_eq!(p.acquire(false), Some(1));
        assert_eq!(p.acquire(false), None);
        p.wait(TaskId(5));
        p.wait(TaskId(6));
        // Nobody jumps the queue when an instance frees.
        p.release(1, Some(false));
        assert_eq!(p.acquire(false), None);
        assert_eq!(p.serve_next(), Some((TaskId(5), 1)));
        assert_eq!(p.serve_next(), None);
        p.release(0, Some(true));
        assert_eq!(p.failed, 1);
        assert_eq!(p.serve_next(), Some((TaskId(6), 0)));
        assert!(p.waiters().is_empty());
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_queue() {
        let mut p = pool(1);
        p.acquire(false);
        p.wait(TaskId(1));
        p.wait(TaskId(2));
        p.leave(TaskId(1));
        assert_eq!(p.waiters(), [TaskId(2)]);
        p.release(0, None);
        assert_eq!(p.serve(TaskId(2)), Some(0));
        assert_eq!(p.running, 1);
        assert_eq!(
            p.failed, 0,
            "an attempt that never reached the agent does not count"
        );
    }
}
