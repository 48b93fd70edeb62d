//! The metrics of a run's events: an [`Observer`], so the executor needs nothing of its
//! own for them. Events up to `history` (a resumed run's past, shown to observers again)
//! teach it the run's pools and what is ready but are not counted twice.

use std::collections::HashMap;
use std::sync::Arc;

use super::Metrics;
use crate::check::ir::Workflow;
use crate::exec::Observer;
use crate::model::{BreakerState, Decision, Event, EventKind, RunState};
use crate::serve::layout::group_of;

/// Every metric, with its help text.
pub(crate) const HELP: &[(&str, &str)] = &[
    ("conductor_runs_total", "Runs that stopped, by workflow and status (waiting counts each time a run waits for a decision)."),
    ("conductor_runs", "Runs in the store by status, when scraped."),
    ("conductor_tasks_total", "Tasks that reached a final status, by pool and status."),
    ("conductor_attempts_total", "Attempts that finished, by pool and outcome (ok, error, cached)."),
    ("conductor_attempt_duration_seconds", "How long attempts took, by pool."),
    ("conductor_queue_wait_seconds", "From a task being ready (dependencies final, or its backoff over) to its dispatch on an instance, by pool."),
    ("conductor_retries_total", "Retries scheduled, by pool."),
    ("conductor_dead_letters_total", "Tasks put in the dead-letter queue, by pool."),
    ("conductor_dead_letters_pending", "Dead letters not yet retried or dropped, when scraped."),
    ("conductor_escalations_total", "Failures escalated to a person, by pool."),
    ("conductor_escalations_pending", "Tasks waiting for a person's decision, when scraped."),
    ("conductor_decisions_total", "Decisions on escalated or dead-lettered tasks, by decision."),
    ("conductor_breaker_state", "Each pool's circuit breaker: 0 closed, 1 half-open, 2 open."),
    ("conductor_gate_decisions_total", "Gate decisions, by workflow, phase and result."),
    ("conductor_feedback_loops_total", "Feedback passes started, by workflow."),
    ("conductor_llm_calls_total", "LLM provider calls, by provider and model."),
    ("conductor_llm_tokens_total", "LLM tokens, by provider, model and type (input, output)."),
    ("conductor_llm_call_duration_seconds", "How long LLM provider calls took, by provider and model."),
    ("conductor_store_append_seconds", "How long appending a batch of events to the store took."),
];

/// The `after` dependencies of each task, from the workflow: what makes a task ready.
#[derive(Default)]
pub(crate) struct Deps {
    /// Task → the tasks that wait for it.
    dependents: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// Task → how many tasks it waits for.
    count: HashMap<Arc<str>, usize>,
}

impl Deps {
    pub(crate) fn of(wf: &Workflow) -> Deps {
        let mut d = Deps::default();
        for t in &wf.tasks {
            let name: Arc<str> = Arc::from(t.name.as_str());
            d.count.insert(name.clone(), t.after.len());
            for dep in &t.after {
                d.dependents
                    .entry(Arc::from(wf.task(*dep).name.as_str()))
                    .or_default()
                    .push(name.clone());
            }
        }
        d
    }
}

pub(crate) struct MetricsObserver {
    metrics: Metrics,
    /// Events up to this one are history: learnt from, not counted.
    history: u64,
    workflow: String,
    /// Task → pool, from `run_started`.
    pools: HashMap<Arc<str>, Arc<str>>,
    /// Task → phase.
    phases: HashMap<Arc<str>, Arc<str>>,
    deps: Option<Deps>,
    /// Task → its dependencies not yet final in this pass.
    waiting_for: HashMap<Arc<str>, usize>,
    /// Task → when it became ready (ms).
    ready_at: HashMap<Arc<str>, u64>,
}

impl MetricsObserver {
    pub(crate) fn new(metrics: Metrics, history: u64, deps: Option<Deps>) -> MetricsObserver {
        MetricsObserver {
            metrics,
            history,
            workflow: String::new(),
            pools: HashMap::new(),
            phases: HashMap::new(),
            deps,
            waiting_for: HashMap::new(),
            ready_at: HashMap::new(),
        }
    }

    fn pool(&self, task: &str) -> &str {
        self.pools.get(group_of(task)).map_or("unknown", |p| &**p)
    }

    fn ready(&mut self, task: &Arc<str>, at: u64) {
        self.ready_at.insert(task.clone(), at);
    }

    /// Readiness: what a phase's entry and a task's end make ready.
    fn learn(&mut self, e: &Event) {
        let at = e.at.0;
        match &e.kind {
            EventKind::RunStarted {
                workflow, tasks, ..
            } => {
                self.workflow = workflow.clone();
                for t in tasks {
                    self.pools.insert(t.name.clone(), t.agent.clone());
                    self.phases.insert(t.name.clone(), t.phase.clone());
                }
            }
            EventKind::PhaseEntered { phase, .. } => {
                let Some(deps) = &self.deps else { return };
                let tasks: Vec<Arc<str>> = self
                    .phases
                    .iter()
                    .filter(|(_, p)| ***p == **phase)
                    .map(|(t, _)| t.clone())
                    .collect();
                let counts: Vec<usize> = tasks
                    .iter()
                    .map(|t| deps.count.get(t).copied().unwrap_or(0))
                    .collect();
                for (t, n) in tasks.into_iter().zip(counts) {
                    self.waiting_for.insert(t.clone(), n);
                    if n == 0 {
                        self.ready(&t, at);
                    } else {
                        self.ready_at.remove(&t);
                    }
                }
            }
            EventKind::TaskFinished { task, .. } | EventKind::TaskSkipped { task, .. } => {
                self.ready_at.remove(task);
                let Some(deps) = &self.deps else { return };
                let next = deps.dependents.get(task).cloned().unwrap_or_default();
                for d in next {
                    let left = self.waiting_for.entry(d.clone()).or_insert(1);
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        self.ready(&d, at);
                    }
                }
            }
            EventKind::RetryScheduled { task, delay_ms, .. } => self.ready(task, at + delay_ms),
            EventKind::Decided {
                task,
                decision: Decision::Retry,
                ..
            } => self.ready(task, at),
            _ => {}
        }
    }

    fn count(&mut self, e: &Event) {
        let m = self.metrics.clone();
        match &e.kind {
            EventKind::TaskDispatched { task, .. } => {
                if let Some(ready) = self.ready_at.remove(task) {
                    let wait = e.at.0.saturating_sub(ready) as f64 / 1000.0;
                    m.histogram("conductor_queue_wait_seconds", &[("pool", self.pool(task))])
                        .record(wait);
                }
            }
            EventKind::AttemptFinished {
                task,
                duration_ms,
                error,
                calls,
                cached,
                ..
            } => {
                let pool = self.pool(task);
                let outcome = match (error, cached) {
                    (Some(_), _) => "error",
                    (None, true) => "cached",
                    (None, false) => "ok",
                };
                m.counter(
                    "conductor_attempts_total",
                    &[("pool", pool), ("outcome", outcome)],
                )
                .increment(1);
                m.histogram("conductor_attempt_duration_seconds", &[("pool", pool)])
                    .record(*duration_ms as f64 / 1000.0);
                for c in calls {
                    let labels = [
                        ("provider", c.provider.as_str()),
                        ("model", c.model.as_str()),
                    ];
                    m.counter("conductor_llm_calls_total", &labels).increment(1);
                    m.histogram("conductor_llm_call_duration_seconds", &labels)
                        .record(c.duration_ms as f64 / 1000.0);
                    for (kind, n) in [("input", c.input_tokens), ("output", c.output_tokens)] {
                        let l = [labels[0], labels[1], ("type", kind)];
                        m.counter("conductor_llm_tokens_total", &l).increment(n);
                    }
                }
            }
            EventKind::TaskFinished { task, status, .. } => {
                m.counter(
                    "conductor_tasks_total",
                    &[("pool", self.pool(task)), ("status", status.as_str())],
                )
                .increment(1);
            }
            EventKind::TaskSkipped { task, .. } => {
                m.counter(
                    "conductor_tasks_total",
                    &[("pool", self.pool(task)), ("status", "skipped")],
                )
                .increment(1);
            }
            EventKind::RetryScheduled { task, .. } => {
                m.counter("conductor_retries_total", &[("pool", self.pool(task))])
                    .increment(1);
            }
            EventKind::DeadLettered { entry } => {
                m.counter("conductor_dead_letters_total", &[("pool", &entry.pool)])
                    .increment(1);
            }
            EventKind::Escalated { task, .. } => {
                m.counter("conductor_escalations_total", &[("pool", self.pool(task))])
                    .increment(1);
            }
            EventKind::Decided { decision, .. } => {
                m.counter(
                    "conductor_decisions_total",
                    &[("decision", decision.as_str())],
                )
                .increment(1);
            }
            EventKind::BreakerChanged { agent, state, .. } => {
                let value = match state {
                    BreakerState::Closed => 0.0,
                    BreakerState::HalfOpen => 1.0,
                    BreakerState::Open => 2.0,
                };
                m.gauge("conductor_breaker_state", &[("pool", agent)])
                    .set(value);
            }
            EventKind::GateDecided { phase, pass, .. } => {
                let result = if *pass { "passed" } else { "failed" };
                m.counter(
                    "conductor_gate_decisions_total",
                    &[
                        ("workflow", &self.workflow),
                        ("phase", phase),
                        ("result", result),
                    ],
                )
                .increment(1);
            }
            EventKind::LoopStarted { .. } => {
                m.counter(
                    "conductor_feedback_loops_total",
                    &[("workflow", &self.workflow)],
                )
                .increment(1);
            }
            EventKind::RunWaiting { .. } => self.run_stopped("waiting"),
            EventKind::RunFinished { status, .. } => self.run_stopped(status.as_str()),
            _ => {}
        }
    }

    fn run_stopped(&self, status: &str) {
        self.metrics
            .counter(
                "conductor_runs_total",
                &[("workflow", &self.workflow), ("status", status)],
            )
            .increment(1);
    }
}

impl Observer for MetricsObserver {
    fn event(&mut self, event: &Event, _state: &RunState) {
        // Dispatch first: it reads the readiness the earlier events recorded.
        if event.seq > self.history {
            self.count(event);
        } else if let EventKind::TaskDispatched { task, .. } = &event.kind {
            self.ready_at.remove(task);
        }
        self.learn(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RunId, TaskInfo, TaskStatus, Timestamp};

    fn ev(seq: u64, at: u64, kind: EventKind) -> Event {
        Event {
            seq,
            at: Timestamp(at),
            kind,
        }
    }

    fn started() -> EventKind {
        EventKind::RunStarted {
            run_id: RunId::new(),
            workflow: "wf".into(),
            file: "wf.cond".into(),
            params: Default::default(),
            tasks: vec![TaskInfo {
                name: "a".into(),
                phase: "p".into(),
                agent: "coder".into(),
            }],
            agents: vec!["coder-01".into()],
            dry_run: false,
            source: None,
            parent: None,
        }
    }

    #[test]
    fn history_teaches_pools_but_is_not_counted() {
        let m = Metrics::new();
        let mut o = MetricsObserver::new(m.clone(), 2, None);
        let state = RunState::default();
        let finished = |seq| {
            ev(
                seq,
                1000,
                EventKind::TaskFinished {
                    task: "a".into(),
                    status: TaskStatus::Completed,
                    error: None,
                },
            )
        };
        o.event(&ev(1, 0, started()), &state);
        o.event(&finished(2), &state);
        o.event(&finished(3), &state);
        let text = m.render();
        assert!(
            text.contains(r#"conductor_tasks_total{pool="coder",status="completed"} 1"#),
            "{text}"
        );
    }
}
