//! [`RunState::apply`]: how each event changes the state, and the record of what changed.

use std::sync::Arc;

use super::changes::{AttemptRow, DecisionRow};
use super::{AgentState, Changes, GateRecord, RetryDue, RunArtifact, RunState, TaskResult};
use crate::model::{
    AgentStatus, ArtifactRef, AttemptRecord, Decision, Event, EventKind, FeedbackPayload, LlmCall,
    OutputTail, RunStatus, TaskError, TaskInfo, TaskStatus, Timestamp, Usage,
};

/// Who decided a retry that gives a dead-lettered task a fresh history (`conductor dlq retry`).
pub(crate) const DLQ_RETRY_BY: &str = "conductor dlq retry";

/// Where `apply` notes what it changed; a no-op when nobody asked.
struct Note<'a>(Option<&'a mut Changes>);

impl Note<'_> {
    fn run(&mut self) {
        if let Some(c) = self.0.as_deref_mut() {
            c.run = true;
        }
    }
    fn task(&mut self, i: usize) {
        if let Some(c) = self.0.as_deref_mut() {
            c.tasks.push(i);
        }
    }
    fn agent(&mut self, name: &Arc<str>) {
        if let Some(c) = self.0.as_deref_mut().filter(|c| c.rows) {
            c.agents.push(name.clone());
        }
    }
    fn with(&mut self, f: impl FnOnce(&mut Changes)) {
        if let Some(c) = self.0.as_deref_mut().filter(|c| c.rows) {
            f(c);
        }
    }
}

impl RunState {
    /// Folds one event into the state.
    pub fn apply(&mut self, event: &Event) {
        self.apply_noting(event, Note(None));
    }

    /// Folds one event into the state and adds what it changed to `changes`.
    pub fn apply_tracked(&mut self, event: &Event, changes: &mut Changes) {
        self.apply_noting(event, Note(Some(changes)));
    }

    fn apply_noting(&mut self, event: &Event, mut note: Note<'_>) {
        self.last_seq = event.seq;
        let at = event.at;
        match &event.kind {
            EventKind::RunStarted {
                run_id,
                workflow,
                file,
                params,
                tasks,
                agents,
                dry_run,
                source,
                parent,
                imports,
            } => {
                self.parent = parent.clone();
                self.source = source.clone();
                if let Some(hash) = source {
                    note.with(|c| c.artifacts.push(hash.clone()));
                }
                self.imports = imports.clone();
                for hash in imports.values() {
                    note.with(|c| c.artifacts.push(hash.clone()));
                }
                self.workflow_id = run_id.clone();
                self.workflow = workflow.clone();
                self.file = file.clone();
                self.params = params.clone();
                self.dry_run = *dry_run;
                self.started_at = Some(at);
                self.start(tasks, agents, &mut note);
            }
            EventKind::PhaseEntered { phase, .. } => self.enter_phase(phase, &mut note),
            EventKind::ChildRunStarted {
                task,
                run,
                file,
                attempt,
            } => {
                if let Some((i, t)) = self.task_mut(task) {
                    t.child_runs.retain(|c| c.run != *run);
                    t.child_runs.push(super::ChildRun {
                        run: run.clone(),
                        file: file.clone(),
                        attempt: *attempt,
                        open: true,
                    });
                    note.task(i);
                }
            }
            EventKind::RunOutputs { outputs } => self.outputs = Some(outputs.clone()),
            EventKind::FanOutExpanded { task, instances } => {
                self.expanded(task, instances, at, &mut note)
            }
            EventKind::RunReopened { phase, reset } => {
                self.ending = None;
                self.always_failure = None;
                self.current_phase = Some(phase.clone());
                for name in reset {
                    if let Some((i, t)) = self.task_mut(name) {
                        t.status = TaskStatus::Pending;
                        t.skip_reason = None;
                        note.task(i);
                    }
                }
                note.run();
            }
            EventKind::WorkflowAmended { to, imports, .. } => {
                self.source = Some(to.clone());
                self.amendments += 1;
                note.with(|c| c.artifacts.push(to.clone()));
                self.imports = imports.clone();
                for hash in imports.values() {
                    note.with(|c| c.artifacts.push(hash.clone()));
                }
                note.run();
            }
            EventKind::TaskSkipped { task, reason, .. } => {
                if let Some((i, t)) = self.task_mut(task) {
                    t.status = TaskStatus::Skipped;
                    t.deferred = None;
                    t.skip_reason = Some(*reason);
                    t.finished_at = Some(at);
                    note.task(i);
                }
            }
            EventKind::TaskDispatched {
                task,
                agent,
                attempt,
            } => self.dispatched(task, agent, *attempt, at, &mut note),
            EventKind::CallReserved { task, worst, .. } => {
                if let Some((i, t)) = self.task_mut(task) {
                    t.reserved = t.reserved.plus(*worst);
                    note.task(i);
                }
            }
            EventKind::AttemptFinished {
                task,
                agent,
                attempt,
                duration_ms,
                output,
                error,
                calls,
                cut_off,
                cached,
                artifacts,
                tail,
            } => {
                self.add_artifacts(task, *attempt, artifacts);
                if let Some((_, t)) = self.task_mut(task) {
                    t.child_runs.iter_mut().for_each(|c| c.open = false);
                }
                note.with(|c| {
                    c.artifacts
                        .extend(artifacts.iter().map(|a| a.sha256.to_string()))
                });
                let finished = Finished {
                    seq: event.seq,
                    task,
                    agent,
                    attempt: *attempt,
                    duration_ms: *duration_ms,
                    output: output.as_ref(),
                    error: error.as_ref(),
                    calls,
                    cut_off: *cut_off,
                    cached: *cached,
                    tail,
                };
                self.attempt_finished(finished, &mut note);
            }
            EventKind::RetryScheduled { task, delay_ms, .. } => {
                self.retry_scheduled(task, *delay_ms, at, &mut note)
            }
            EventKind::TaskFinished {
                task,
                status,
                error,
            } => self.task_finished(task, *status, error.as_ref(), at, &mut note),
            EventKind::Escalated { task, error } => self.escalated(task, error, &mut note),
            EventKind::Decided {
                task, decision, by, ..
            } => self.decided(event.seq, at, task, *decision, by, &mut note),
            EventKind::ApprovalRequested {
                task,
                message,
                timeout_ms,
            } => {
                if let Some((i, t)) = self.task_mut(task) {
                    // Not running: it waits for a person.
                    t.status = TaskStatus::Pending;
                    t.deferred = None;
                    t.approval = Some(Box::new(super::ApprovalWait {
                        message: message.clone(),
                        requested_at: at,
                        timeout_ms: *timeout_ms,
                    }));
                    note.task(i);
                }
                if !self.awaiting_decision.contains(task) {
                    self.awaiting_decision.push(task.clone());
                }
            }
            EventKind::TaskDeferred { task, rule, reason } => {
                if let Some((i, t)) = self.task_mut(task) {
                    t.deferred = Some(Box::new(super::Deferral {
                        rule: rule.clone(),
                        reason: reason.clone(),
                    }));
                    note.task(i);
                }
            }
            EventKind::RunResumed { rerun } => self.resumed(rerun, &mut note),
            EventKind::RunEnding { status, error } => {
                self.ending = Some((*status, error.clone()));
            }
            EventKind::RunWaiting { tasks } => self.waiting(tasks, &mut note),
            EventKind::RunFinished { status, error } => {
                self.run_finished(*status, error.as_ref(), at, &mut note)
            }
            // Listed, not a wildcard: a new event kind must be decided on here.
            k @ (EventKind::PolicyViolation { .. }
            | EventKind::GateDecided { .. }
            | EventKind::FeedbackDecided { .. }
            | EventKind::LoopStarted { .. }
            | EventKind::Warning { .. }
            | EventKind::BudgetRaised { .. }
            | EventKind::BreakerChanged { .. }
            | EventKind::DeadLettered { .. }) => self.decision_event(k, &mut note),
        }
    }

    /// Policy, gate, feedback, loop, warning, breaker and dead-letter events.
    fn decision_event(&mut self, kind: &EventKind, note: &mut Note<'_>) {
        match kind {
            EventKind::PolicyViolation { task, rule, reason } => {
                self.error = Some(format!(
                    "policy violation: {rule} denied task `{task}`: {reason}"
                ));
            }
            EventKind::GateDecided {
                phase,
                pass,
                reason,
                rule,
            } => {
                // After `run_ending`, gates are those of `always` phases: the first that fails
                // says why a COMPLETED run ends FAILED.
                if self.ending.is_some() && !*pass && self.always_failure.is_none() {
                    self.always_failure =
                        Some(format!("the `always` phase `{phase}` failed: {reason}"));
                }
                self.gates.push(GateRecord {
                    phase: phase.clone(),
                    loop_count: self.feedback_loop_count,
                    pass: *pass,
                    reason: reason.clone(),
                    rule: rule.clone(),
                })
            }
            EventKind::FeedbackDecided {
                severity,
                summary,
                details,
                ..
            } => {
                self.feedback = Some(FeedbackPayload {
                    severity: *severity,
                    summary: summary.clone(),
                    details: details.clone(),
                });
            }
            EventKind::LoopStarted { loop_count, .. } => self.feedback_loop_count = *loop_count,
            EventKind::Warning { message } => self.warnings.push(message.clone()),
            EventKind::BudgetRaised { scope, limits } => {
                let l = self.budget_raises.entry(scope.clone()).or_default();
                *l = l.with(*limits);
            }
            EventKind::BreakerChanged { agent, state, .. } => {
                self.breakers.insert(agent.to_string(), *state);
            }
            EventKind::DeadLettered { entry } => {
                self.dead_letters.push(entry.id.clone());
                self.dead_letter_entries.push(entry.clone());
                note.with(|c| c.dead_letters.push(entry.clone()));
            }
            _ => {}
        }
    }

    fn start(&mut self, tasks: &[TaskInfo], agents: &[String], note: &mut Note<'_>) {
        self.status = Some(RunStatus::InProgress);
        self.tasks = tasks
            .iter()
            .map(|t| TaskResult::new(t.name.clone(), t.phase.clone()))
            .collect();
        self.pools = tasks.iter().map(|t| t.agent.clone()).collect();
        self.index = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        self.agent_states = agents
            .iter()
            .map(|a| {
                let state = AgentState {
                    status: AgentStatus::Idle,
                    current_task: None,
                    completed_tasks: Vec::new(),
                };
                (a.clone(), state)
            })
            .collect();
        note.run();
        for i in 0..self.tasks.len() {
            note.task(i);
        }
        for a in agents {
            note.agent(&Arc::from(a.as_str()));
        }
    }

    /// Entering a phase (again, in a later pass) starts its tasks afresh (an instance stays
    /// an instance: the next expansion may use it again).
    fn enter_phase(&mut self, phase: &str, note: &mut Note<'_>) {
        self.current_phase = Some(phase.to_string());
        for (i, t) in self.tasks.iter_mut().enumerate() {
            if *t.phase != *phase {
                continue;
            }
            let name = t.task.clone();
            let instance = t.instance.take();
            // What it spent counts over every pass, as its budget does.
            let usage = t.usage.take();
            *t = TaskResult::new(name, t.phase.clone());
            t.instance = instance;
            t.usage = usage;
            note.task(i);
        }
    }

    /// A fan-out's instances: added after the declared tasks (or, in a later pass, the same
    /// names taken up again), each PENDING; the fan-out task itself is running.
    fn expanded(
        &mut self,
        task: &Arc<str>,
        instances: &[crate::model::InstanceInfo],
        at: Timestamp,
        note: &mut Note<'_>,
    ) {
        let Some(g) = self.task_index(task) else {
            return;
        };
        let (phase, pool) = (self.tasks[g].phase.clone(), self.pools.get(g).cloned());
        let mut ids = Vec::with_capacity(instances.len());
        for inst in instances {
            let name: Arc<str> = Arc::from(crate::check::fanout::instance_name(task, &inst.key));
            let i = match self.index.get(&name) {
                Some(&i) => {
                    // What it spent in earlier passes still counts against its budgets.
                    let usage = self.tasks[i].usage.take();
                    self.tasks[i] = TaskResult::new(name, phase.clone());
                    self.tasks[i].usage = usage;
                    i
                }
                None => {
                    let i = self.tasks.len();
                    self.tasks
                        .push(TaskResult::new(name.clone(), phase.clone()));
                    if let Some(p) = &pool {
                        self.pools.push(p.clone());
                    }
                    self.index.insert(name, i);
                    i
                }
            };
            self.tasks[i].instance = Some(Box::new(super::Instance {
                of: task.clone(),
                index: inst.index,
                key: inst.key.clone(),
                item: inst.item.clone(),
            }));
            note.task(i);
            ids.push(i as u32);
        }
        let group = &mut self.tasks[g];
        group.instances = ids;
        group.status = TaskStatus::InProgress;
        group.started_at.get_or_insert(at);
        note.task(g);
    }

    fn dispatched(
        &mut self,
        task: &str,
        agent: &Arc<str>,
        attempt: u32,
        at: Timestamp,
        note: &mut Note<'_>,
    ) {
        let Some(i) = self.task_index(task) else {
            return self.agent_running(agent, Arc::from(task), note);
        };
        self.unsettled(i);
        let t = &mut self.tasks[i];
        t.status = TaskStatus::InProgress;
        t.deferred = None;
        t.agent = Some(agent.clone());
        t.attempts = attempt;
        t.retry_due = None;
        if t.started_at.is_none() {
            t.started_at = Some(at);
        }
        note.task(i);
        let name = t.task.clone();
        self.agent_running(agent, name, note);
    }

    fn agent_running(&mut self, agent: &Arc<str>, task: Arc<str>, note: &mut Note<'_>) {
        if let Some(a) = self.agent_states.get_mut(&**agent) {
            a.status = AgentStatus::Running;
            a.current_task = Some(task);
            note.agent(agent);
        }
    }

    fn attempt_finished(&mut self, f: Finished<'_>, note: &mut Note<'_>) {
        let mut spent = Usage::default();
        for call in f.calls {
            spent.add(call);
        }
        spent.cached = u64::from(f.cached);
        spent.cut_off = f.cut_off;
        if let Some(i) = self.task_index(f.task) {
            // Its calls are settled: what they spent is in `spent`.
            self.tasks[i].reserved = crate::model::Spend::default();
            self.add_usage(i, &spent);
            let t = &mut self.tasks[i];
            t.attempts = t.attempts.max(f.attempt);
            t.duration_ms += f.duration_ms;
            if let Some(o) = f.output {
                t.output = o.clone();
            }
            t.tail = (!f.tail.is_empty()).then(|| Box::new(f.tail.clone()));
            t.error = f.error.cloned().map(Box::new);
            note.task(i);
            if let Some(error) = f.error {
                // An attempt logged under the pool's name never found an instance.
                let pool = self.pools.get(i);
                let agent = (pool.map(|p| &**p) != Some(&**f.agent)).then(|| f.agent.clone());
                self.tasks[i].history.push(AttemptRecord {
                    attempt: f.attempt,
                    agent,
                    error: Some(error.clone()),
                    retry_delay_ms: None,
                    duration_ms: f.duration_ms,
                    tail: f.tail.clone(),
                });
            }
        } else {
            // An attempt of a task the log does not know: it still counts for the run.
            self.add_run_usage(&spent);
        }
        if let Some(a) = self.agent_states.get_mut(&**f.agent) {
            a.status = AgentStatus::Idle;
            a.current_task = None;
            if f.error.is_none() {
                a.completed_tasks.push(f.task.clone());
            }
            note.agent(f.agent);
        }
        note.with(|c| {
            c.attempts.push(AttemptRow {
                seq: f.seq,
                task: f.task.clone(),
                attempt: f.attempt,
                agent: f.agent.clone(),
                duration_ms: f.duration_ms,
                error: f.error.map(ToString::to_string),
            })
        });
    }

    fn retry_scheduled(&mut self, task: &str, delay_ms: u64, at: Timestamp, note: &mut Note<'_>) {
        if let Some((i, t)) = self.task_mut(task) {
            t.status = TaskStatus::Pending;
            if let Some(last) = t.history.last_mut() {
                last.retry_delay_ms = Some(delay_ms);
            }
            t.retry_due = Some(RetryDue {
                at_ms: at.0 + delay_ms,
                delay_ms,
            });
            note.task(i);
        }
    }

    fn task_finished(
        &mut self,
        task: &str,
        status: TaskStatus,
        error: Option<&TaskError>,
        at: Timestamp,
        note: &mut Note<'_>,
    ) {
        if let Some((i, t)) = self.task_mut(task) {
            t.status = status;
            t.deferred = None;
            if error.is_some() {
                t.error = error.cloned().map(Box::new);
            }
            t.finished_at = Some(at);
            note.task(i);
        }
    }

    fn waiting(&mut self, tasks: &[Arc<str>], note: &mut Note<'_>) {
        self.status = Some(RunStatus::Waiting);
        note.run();
        for t in tasks {
            if !self.awaiting_decision.contains(t) {
                self.awaiting_decision.push(t.clone());
            }
        }
    }

    fn run_finished(
        &mut self,
        status: RunStatus,
        error: Option<&String>,
        at: Timestamp,
        note: &mut Note<'_>,
    ) {
        self.status = Some(status);
        self.completed_at = Some(at);
        if error.is_some() {
            self.error = error.cloned();
        }
        note.run();
        self.all_agents_idle(note);
    }

    fn add_artifacts(&mut self, task: &Arc<str>, attempt: u32, artifacts: &[ArtifactRef]) {
        for a in artifacts {
            let index = self.artifacts.len();
            // One lookup: a path written before keeps its key and points at the new write.
            let path = match self.latest_artifact.get_mut(&*a.path) {
                Some(latest) => {
                    let earlier = &mut self.artifacts[std::mem::replace(latest, index)];
                    earlier.superseded = true;
                    earlier.path.clone()
                }
                None => {
                    self.latest_artifact.insert(a.path.clone(), index);
                    a.path.clone()
                }
            };
            self.artifacts.push(RunArtifact {
                path,
                sha256: a.sha256.clone(),
                size: a.size,
                task: task.clone(),
                attempt,
                loop_count: self.feedback_loop_count,
                superseded: false,
            });
        }
    }

    fn escalated(&mut self, task: &Arc<str>, error: &TaskError, note: &mut Note<'_>) {
        if let Some((i, t)) = self.task_mut(task) {
            t.error = Some(Box::new(error.clone()));
            // Not running: it waits for a decision.
            t.status = TaskStatus::Pending;
            note.task(i);
        }
        // Until a `Decided` event: even if the process dies before the run is marked WAITING,
        // a resume knows this task needs a decision.
        if !self.awaiting_decision.contains(task) {
            self.awaiting_decision.push(task.clone());
        }
    }

    fn decided(
        &mut self,
        seq: u64,
        at: Timestamp,
        task: &Arc<str>,
        decision: Decision,
        by: &str,
        note: &mut Note<'_>,
    ) {
        self.awaiting_decision.retain(|t| t != task);
        if let Some((i, t)) = self.task_mut(task) {
            if t.approval.take().is_some() {
                note.task(i);
            }
        }
        if decision == Decision::Retry {
            if let Some((i, t)) = self.task_mut(task) {
                t.status = TaskStatus::Pending;
                t.attempt_base = t.attempts;
                t.skip_reason = None;
                if by.starts_with(DLQ_RETRY_BY) {
                    t.history.clear();
                }
                note.task(i);
            }
        }
        note.with(|c| {
            c.decisions.push(DecisionRow {
                seq,
                task: task.clone(),
                decision,
                by: by.to_string(),
                at,
            })
        });
    }

    fn resumed(&mut self, rerun: &[Arc<str>], note: &mut Note<'_>) {
        self.status = Some(RunStatus::InProgress);
        self.completed_at = None;
        self.error = None;
        note.run();
        for name in rerun {
            if let Some((i, t)) = self.task_mut(name) {
                t.status = TaskStatus::Pending;
                note.task(i);
            }
        }
        self.all_agents_idle(note);
    }

    /// Nothing runs after the end, or right after a resume.
    fn all_agents_idle(&mut self, note: &mut Note<'_>) {
        for (name, a) in self.agent_states.iter_mut() {
            a.status = AgentStatus::Idle;
            a.current_task = None;
            note.agent(&Arc::from(name.as_str()));
        }
    }
}

/// The fields of an `attempt_finished` event.
struct Finished<'a> {
    seq: u64,
    task: &'a Arc<str>,
    agent: &'a Arc<str>,
    attempt: u32,
    duration_ms: u64,
    output: Option<&'a serde_json::Value>,
    error: Option<&'a TaskError>,
    calls: &'a [LlmCall],
    cut_off: crate::model::Spend,
    cached: bool,
    tail: &'a OutputTail,
}
