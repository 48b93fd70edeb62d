//! What rules and templates see (DSL.md section 4), built from the run state in one place.

use serde_json::{json, Map, Value};

use std::sync::Arc;

use crate::model::{RunState, TaskResult};
use crate::policy::{RuleContext, RuleKind, SharedTasks};
use crate::template::{Context, Converted, Scope, TaskViews};

/// What templates and `when` rules see of a run, kept up to date as tasks finish: each
/// finished task converted once, so a context costs the same at any size of run.
pub(super) struct Views {
    /// By task: whether a template or rule reads it (only those get a view). Empty when
    /// nothing reads `tasks` per dispatch.
    read: Vec<bool>,
    /// Every task is seen, final or not.
    all: bool,
    scope: Scope,
    rules: SharedTasks,
}

impl Views {
    pub fn new(
        names: impl IntoIterator<Item = Arc<str>>,
        params: &Value,
        tasks_read: &crate::template::TasksRead,
    ) -> Views {
        let enabled = *tasks_read != crate::template::TasksRead::None;
        // Disabled, no view is ever set: no slot or name index for each task either.
        let names: Vec<Arc<str>> = names.into_iter().filter(|_| enabled).collect();
        let read = names.iter().map(|n| tasks_read.reads(n)).collect();
        Views {
            read,
            all: false,
            scope: Scope {
                params: Converted::new(params),
                tasks: Arc::new(TaskViews::new(names)),
                feedback: Converted::new(&Value::Null),
                loop_count: 0,
                run: Converted::new(&Value::Null),
            },
            rules: SharedTasks::default(),
        }
    }

    /// Brings task `i`'s view in line with the state: seen when final, unseen otherwise.
    /// A task nothing reads has no view.
    pub fn refresh(&mut self, state: &RunState, i: usize) {
        if !self.read.get(i).copied().unwrap_or(false) {
            return;
        }
        let Some(t) = state.tasks.get(i) else {
            return;
        };
        if t.instance.is_some() {
            return; // seen through its fan-out task's `outputs` and `results`
        }
        if t.status.is_final() || self.all {
            // Converted for templates or rules only when one reads it.
            let view = Arc::new(task_json(state, t));
            self.scope.tasks.set(i, view.clone());
            self.rules.set(&t.task, view);
        } else {
            self.scope.tasks.clear(i);
            self.rules.remove(&t.task);
        }
    }

    /// Templates see every task from now on, final or not (the `always` phases see how the
    /// run ended).
    pub(super) fn show_all(&mut self, state: &RunState) {
        self.all = true;
        self.refresh_all(state);
    }

    /// Every task, the feedback and the loop count, from the state (a resumed run).
    pub fn refresh_all(&mut self, state: &RunState) {
        for i in 0..state.tasks.len() {
            self.refresh(state, i);
        }
        self.feedback_changed(state);
    }

    /// What templates see of the run itself: `run.id`, `run.workspace`, and `run.status` and
    /// `run.error` (the status it ends with, in its `always` phases).
    pub(super) fn run_changed(&mut self, state: &RunState, workspace: Option<&std::path::Path>) {
        let (status, error) = match &state.ending {
            Some((status, error)) => (*status, error.clone()),
            None => (state.status(), state.error.clone()),
        };
        self.scope.run = Converted::new(&json!({
            "id": state.workflow_id.as_str(),
            "workspace": workspace.map(|w| w.display().to_string()),
            "status": status.as_str(),
            "error": error,
        }));
    }

    /// The feedback payload or the loop count changed.
    pub fn feedback_changed(&mut self, state: &RunState) {
        self.scope.feedback = Converted::new(&feedback_json(state));
        self.scope.loop_count = state.feedback_loop_count;
    }
}

/// `tasks` as rules and templates see it: name → `{ status, output, error, attempts,
/// duration_ms, agent }`, for the tasks `keep` selects.
pub(super) fn tasks_json(state: &RunState, keep: impl Fn(&TaskResult) -> bool) -> Value {
    let mut map = Map::with_capacity(state.tasks.len());
    for t in state
        .tasks
        .iter()
        .filter(|t| t.instance.is_none() && keep(t))
    {
        map.insert(t.task.to_string(), task_json(state, t));
    }
    Value::Object(map)
}

fn task_json(state: &RunState, t: &TaskResult) -> Value {
    if !t.instances.is_empty() {
        return fan_out_json(state, t);
    }
    json!({
        "status": t.status.as_str(),
        "output": t.output,
        "error": t.error.as_ref().map(|e| json!({ "code": e.code.as_str(), "message": e.message })),
        "attempts": t.attempts,
        "duration_ms": t.duration_ms,
        "agent": t.agent.as_deref(),
        // The end of what the last attempt printed.
        "stdout": t.tail().stdout,
        "stderr": t.tail().stderr,
    })
}

/// A fan-out task: `outputs` in index order (never completion order), `results` per instance
/// and `items` (counts by status) — computed once, when the task is final.
fn fan_out_json(state: &RunState, t: &TaskResult) -> Value {
    let mut outputs = Vec::with_capacity(t.instances.len());
    let mut results = Vec::with_capacity(t.instances.len());
    let mut counts: Map<String, Value> = Map::new();
    for s in ["completed", "failed", "skipped", "cancelled"] {
        counts.insert(s.into(), Value::from(0));
    }
    for &i in &t.instances {
        let r = &state.tasks[i as usize];
        outputs.push(r.output.clone());
        // Built field by field: `json!` would serialise each value into a new one.
        let inst = r.instance.as_ref();
        let mut result = Map::with_capacity(9);
        result.insert("key".into(), inst.map_or("", |i| i.key.as_str()).into());
        result.insert("index".into(), inst.map(|i| i.index).into());
        result.insert("item".into(), inst.map_or(Value::Null, |i| i.item.clone()));
        result.insert("status".into(), r.status.as_str().into());
        result.insert("output".into(), r.output.clone());
        result.insert("error".into(), error_json(r.error.as_deref()));
        result.insert("attempts".into(), r.attempts.into());
        result.insert("stdout".into(), r.tail().stdout.clone().into());
        result.insert("stderr".into(), r.tail().stderr.clone().into());
        results.push(Value::Object(result));
        let n = counts.entry(r.status.as_str()).or_insert(Value::from(0));
        *n = Value::from(n.as_u64().unwrap_or(0) + 1);
    }
    counts.insert("total".into(), Value::from(t.instances.len()));
    json!({
        "status": t.status.as_str(),
        "outputs": outputs,
        "results": results,
        "items": counts,
        "error": t.error.as_ref().map(|e| json!({ "code": e.code.as_str(), "message": e.message })),
        "attempts": t.attempts,
        "duration_ms": t.duration_ms,
    })
}

/// A task's error as templates and rules see it, or null.
fn error_json(e: Option<&crate::model::TaskError>) -> Value {
    e.map_or(
        Value::Null,
        |e| json!({ "code": e.code.as_str(), "message": e.message }),
    )
}

/// `feedback`: the last payload, or null on the first pass.
pub(super) fn feedback_json(state: &RunState) -> Value {
    match &state.feedback {
        Some(f) => {
            json!({ "severity": f.severity.as_str(), "summary": f.summary, "details": f.details })
        }
        None => Value::Null,
    }
}

/// The finished tasks, as `when`, gates, templates and scripts see them.
pub(super) fn finished_tasks(state: &RunState) -> Value {
    tasks_json(state, |r| r.status.is_final())
}

/// The context of a `when` rule.
pub(super) fn when(
    views: &Views,
    state: &RunState,
    params: &Value,
    item: Option<&Value>,
) -> RuleContext {
    RuleContext::with_tasks(
        RuleKind::When,
        &views.rules,
        &json!({
            "params": params,
            "loop_count": state.feedback_loop_count,
            "feedback": feedback_json(state),
            "item": item,
        }),
    )
}

/// What a phase's gate counts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Tally {
    pub total: usize,
    pub completed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Skips by reason: by choice (a false `when`, a decision, a fan-out over nothing) and
    /// because an upstream task failed.
    pub when_false: usize,
    pub decision: usize,
    pub empty_fan_out: usize,
    pub upstream_failed: usize,
}

impl Tally {
    /// Skips by choice: they are not counted for or against the phase.
    pub(super) fn skipped_by_choice(&self) -> usize {
        self.when_false + self.decision + self.empty_fan_out
    }

    /// What counts: every task but those skipped by choice.
    pub(super) fn counted(&self) -> usize {
        self.total.saturating_sub(self.skipped_by_choice())
    }

    /// completed / (total − skipped by choice); a phase with nothing to count passes.
    pub(super) fn success_rate(&self) -> f64 {
        match self.counted() {
            0 => 1.0,
            n => self.completed as f64 / n as f64,
        }
    }

    fn skipped_by(&self) -> Value {
        json!({
            "when_false": self.when_false,
            "decision": self.decision,
            "empty_fan_out": self.empty_fan_out,
            "upstream_failed": self.upstream_failed,
        })
    }
}

/// The context of a gate rule.
pub(super) fn gate(
    phase: &str,
    tally: Tally,
    state: &RunState,
    params: &Value,
    budget: Value,
) -> RuleContext {
    RuleContext::from_json(
        RuleKind::Gate,
        &json!({
            "phase": phase, "total": tally.total, "completed": tally.completed,
            "failed": tally.failed, "skipped": tally.skipped,
            "skipped_by": tally.skipped_by(),
            "success_rate": tally.success_rate(),
            "tasks": finished_tasks(state),
            "params": params, "loop_count": state.feedback_loop_count, "budget": budget,
        }),
    )
}

/// The context of the feedback rule: every task of the last pass.
pub(super) fn feedback(
    state: &RunState,
    params: &Value,
    max_loops: u32,
    budget: Value,
) -> RuleContext {
    RuleContext::from_json(
        RuleKind::Feedback,
        &json!({
            "tasks": tasks_json(state, |_| true),
            "params": params, "loop_count": state.feedback_loop_count, "max_loops": max_loops,
            "budget": budget,
        }),
    )
}

/// The context of an `enforce` rule, from the parts the dispatcher knows.
pub(super) fn enforce(fields: Value) -> RuleContext {
    RuleContext::from_json(RuleKind::Enforce, &fields)
}

/// What a task's templates see for one attempt.
pub(super) fn template(
    views: &Views,
    attempt: u32,
    input: Option<&Value>,
    item: Option<&Value>,
) -> Context {
    Context::for_attempt(&views.scope, attempt, input, item)
}
