//! Phases and their tasks: gates, `after`, task settings and what tasks inherit from their
//! agent, and the warnings for unused agents and empty phases.

use std::collections::HashSet;
use std::time::Duration;

use super::ir::*;
use super::{values, AgentDefaults, Checker, SeenSettings};
use crate::diag::{Annotate, Diagnostic};
use crate::policy::RuleKind;
use crate::source::Span;
use crate::syntax::ast;

const PHASE_SETTINGS: &[&str] = &["min_success_rate", "always", "budget", "on_budget"];
const TASK_SETTINGS: &[&str] = &[
    "prompt",
    "input",
    "retry",
    "retry_on_exit",
    "backoff",
    "timeout",
    "cache",
    "effect",
    "matrix",
    "exclude",
    "include",
    "for_each",
    "key",
    "max_items",
    "max_parallel",
    "fail_fast",
    "succeed_when",
    "budget",
    "on_budget",
];

/// How long an approval task waits for a person unless its `timeout` says otherwise.
pub(crate) const APPROVAL_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The settings a task inherits from its agent when it does not set them itself: what the
/// task's own body sets.
#[derive(Default)]
struct Inheritable {
    retry: Option<u32>,
    retry_on_exit: Option<Vec<i32>>,
    backoff: Option<Backoff>,
    timeout: Option<Duration>,
}

impl Inheritable {
    /// The task's own setting wins, then its agent's, then the built-in default in `task`.
    fn apply(self, task: &mut Task, agent: Option<&AgentDefaults>) {
        let (retry, backoff, timeout) =
            agent.map_or((None, None, None), |d| (d.retry, d.backoff, d.timeout));
        task.retry = self.retry.or(retry).unwrap_or(task.retry);
        let agent_codes = agent.and_then(|d| d.retry_on_exit.clone());
        task.retry_on_exit = self.retry_on_exit.or(agent_codes).unwrap_or_default();
        task.backoff = self.backoff.or(backoff).unwrap_or(task.backoff);
        // A person answers an approval: a day, not the five minutes a program gets.
        let default_timeout = match agent.map(|d| d.kind) {
            Some("approval") => APPROVAL_TIMEOUT,
            _ => task.timeout,
        };
        task.timeout = self.timeout.or(timeout).unwrap_or(default_timeout);
    }
}

impl Checker<'_> {
    /// Every phase of the workflow, and every task of those phases.
    /// `items`: each phase's items, in order, taken out of `wf`.
    pub(super) fn phases(
        &mut self,
        wf: &ast::Workflow,
        items: Vec<Vec<ast::PhaseItem>>,
    ) -> (Vec<Phase>, Vec<Task>) {
        // Sized once: a task is a few hundred bytes and a doubling vector's spare half (and,
        // while it grows, its old copy) would be most of a large file's peak.
        let mut tasks = Vec::with_capacity(self.names.tasks.len());
        let mut phases = Vec::new();
        let phases_written = wf.items.iter().filter_map(|item| match item {
            ast::Item::Phase(p) => Some(p),
            _ => None,
        });
        for (p, items) in phases_written.zip(items) {
            if let Some(phase) = self.phase(p, items, &mut tasks) {
                phases.push(phase);
            }
        }
        (phases, tasks)
    }

    fn phase(
        &mut self,
        p: &ast::Phase,
        items: Vec<ast::PhaseItem>,
        tasks: &mut Vec<Task>,
    ) -> Option<Phase> {
        let &(id, span) = self.names.phases.get(&p.name.name)?;
        if span != p.name.span {
            return None; // a duplicate, already reported
        }
        let mut phase = Phase {
            id,
            name: p.name.name.clone(),
            min_success_rate: None,
            always: false,
            tasks: Vec::new(),
            gate: None,
            enforce: Vec::new(),
            span: p.span,
        };
        let mut seen = SeenSettings::default();
        let mut gate_span: Option<Span> = None;
        for item in items {
            match item {
                ast::PhaseItem::Setting(s) => {
                    if !self.first_setting(&mut seen, &s) {
                        continue;
                    }
                    if s.name.name == "min_success_rate" {
                        phase.min_success_rate =
                            self.reader().float("min_success_rate", &s.value, 0.0, 1.0);
                    } else if s.name.name == "always" {
                        phase.always = self.reader().boolean("always", &s.value).unwrap_or(false);
                    } else if !self.budget_setting(Owner::Phase(id), &s) {
                        self.unknown_setting(&s, "a phase", PHASE_SETTINGS);
                    }
                }
                ast::PhaseItem::Gate(g) => {
                    let kw = g.span.sub(0, "gate".len());
                    if let Some(first) = gate_span {
                        self.second_gate(p, kw, first);
                        continue;
                    }
                    gate_span = Some(kw);
                    phase.gate = self.rule(RuleKind::Gate, &g.rule);
                }
                ast::PhaseItem::Enforce(r) => {
                    phase.enforce.extend(self.rule(RuleKind::Enforce, &r.rule));
                }
                ast::PhaseItem::Task(t) => {
                    if let Some(task) = self.task(&t, id) {
                        phase.tasks.push(task.id);
                        tasks.push(task);
                    }
                }
            }
        }
        Some(phase)
    }

    fn second_gate(&mut self, p: &ast::Phase, kw: Span, first: Span) {
        self.error(
            kw,
            format!("phase `{}` has more than one `gate`", p.name.name),
        )
        .with_label("second gate")
        .related
        .push((first, "first gate here".into()));
        self.diags.last_mut().expect("just pushed").help =
            Some("combine the conditions into one rule with `&&`".into());
    }

    fn task(&mut self, t: &ast::Task, phase: PhaseId) -> Option<Task> {
        // `declare` numbered the tasks in this order: the entry at that number is this task's
        // (read by position, not looked up by name). Otherwise the name says: a duplicate (its
        // first task's span there, and already reported) or not declared.
        let declared = self.names.declared.get(self.names.declared_read).copied();
        self.names.declared_read += 1;
        let at = |id: TaskId| self.names.tasks.get_index(id.index()).map(|(_, e)| e.2);
        let id = match declared {
            Some(Some(id)) if at(id) == Some(t.name.span) => id,
            _ => match self.names.tasks.get(&t.name.name) {
                Some(&(id, _, span)) if span == t.name.span => id,
                _ => return None,
            },
        };
        let agent = match &t.child {
            Some(_) => self.child_agent(t),
            None => self.task_agent(&t.agent),
        };
        let after = self.after(t, id, phase);
        let agent = agent?;
        let agent_defaults = self.agent_defaults.get(agent.index()).cloned().flatten();
        let mut task = Task {
            id,
            name: t.name.name.clone(),
            phase,
            agent,
            after,
            prompt: None,
            input: None,
            retry: 3,
            retry_on_exit: Vec::new(),
            backoff: Backoff::default(),
            timeout: Duration::from_secs(300),
            cache: false,
            effect: Effect::Pure,
            when: None,
            fan_out: None,
            span: t.span,
        };
        task.fan_out = self.fan_out(t).map(Box::new);
        if t.child.is_some() {
            self.child_task_params(t, agent);
        }
        let own = self.task_body(t, &mut task);
        self.item = super::fanout::ItemShape::Absent;
        own.apply(&mut task, agent_defaults.as_ref());
        if let Some(defaults) = &agent_defaults {
            if task.prompt.is_some() && !matches!(defaults.kind, "llm" | "approval") {
                self.warn_ignored_prompt(t, defaults.kind);
            }
        }
        Some(task)
    }

    /// The agent a task runs on, or an error naming the agents there are.
    fn task_agent(&mut self, name: &ast::Ident) -> Option<AgentId> {
        if let Some(&(agent, _)) = self.names.agents.get(&name.name) {
            return Some(agent);
        }
        let agents: Vec<String> = self.names.agents.keys().cloned().collect();
        let d = Diagnostic::error(name.span, format!("unknown agent `{}`", name.name))
            .with_label("no agent of this name")
            .with_suggestion(&name.name, agents.iter().map(String::as_str));
        let d = if d.help.is_none() && !agents.is_empty() {
            d.with_help(format!(
                "the agents are {}",
                crate::text::backticked(&agents)
            ))
        } else {
            d
        };
        self.diags.push(d);
        None
    }

    /// The tasks a task runs after; records where each is written, for cycle errors.
    fn after(&mut self, t: &ast::Task, id: TaskId, phase: PhaseId) -> Vec<TaskId> {
        let mut after = Vec::with_capacity(t.after.len());
        self.after_spans.begin(id);
        // A short list is searched; a set only pays for itself on a long one.
        let mut seen_deps = (t.after.len() > 16).then(|| HashSet::with_capacity(t.after.len()));
        for dep in &t.after {
            match self.names.tasks.get(&dep.name) {
                Some(&(dep_id, dep_phase, _)) if dep_phase == phase => {
                    let repeated = match &mut seen_deps {
                        Some(seen) => !seen.insert(dep_id),
                        None => after.contains(&dep_id),
                    };
                    if repeated {
                        self.error(
                            dep.span,
                            format!("`{}` is named twice in `after`", dep.name),
                        )
                        .with_label("repeated");
                    } else {
                        after.push(dep_id);
                        self.after_spans.push(dep.span);
                    }
                }
                Some(&(_, dep_phase, _)) => self.after_other_phase(dep, dep_phase),
                None => self.unknown_after(dep, phase),
            }
        }
        after
    }

    fn after_other_phase(&mut self, dep: &ast::Ident, dep_phase: PhaseId) {
        let other = self
            .names
            .phases
            .get_index(dep_phase.index())
            .map_or(String::new(), |(n, _)| n.clone());
        self.error(
            dep.span,
            format!("`after` names `{}`, a task of phase `{other}`", dep.name),
        )
        .with_label("in another phase")
        .help = Some(
            "`after` names tasks of the same phase; every task already waits for \
             the previous phase's gate"
                .into(),
        );
    }

    fn unknown_after(&mut self, dep: &ast::Ident, phase: PhaseId) {
        let same_phase: Vec<String> = self
            .names
            .tasks
            .iter()
            .filter(|(_, (_, p, _))| *p == phase)
            .map(|(n, _)| n.clone())
            .collect();
        let d = Diagnostic::error(dep.span, format!("unknown task `{}`", dep.name))
            .with_label("no task of this name")
            .with_suggestion(&dep.name, same_phase.iter().map(String::as_str));
        self.diags.push(d);
    }

    /// Reads a task's body into `task`; returns what it sets of what agents also set.
    fn task_body(&mut self, t: &ast::Task, task: &mut Task) -> Inheritable {
        let mut own = Inheritable::default();
        let mut seen = SeenSettings::default();
        let mut when_span: Option<Span> = None;
        for item in t.body.iter().flatten() {
            match item {
                ast::TaskItem::When(w) => {
                    let kw = w.span.sub(0, "when".len());
                    if let Some(first) = when_span {
                        self.error(
                            kw,
                            format!("task `{}` has more than one `when`", t.name.name),
                        )
                        .with_label("second `when`")
                        .related
                        .push((first, "first `when` here".into()));
                        continue;
                    }
                    when_span = Some(kw);
                    task.when = self.rule(RuleKind::When, &w.rule).map(Box::new);
                }
                ast::TaskItem::Setting(s) => {
                    if self.first_setting(&mut seen, s) {
                        self.task_setting(s, task, &mut own);
                    }
                }
            }
        }
        own
    }

    fn task_setting(&mut self, s: &ast::Setting, task: &mut Task, own: &mut Inheritable) {
        let name = s.name.name.as_str();
        let v = &s.value;
        match name {
            "prompt" => {
                if let Some(lit) = self.reader().string(name, v) {
                    task.prompt = self.template(lit, "prompt").map(Box::new);
                }
            }
            "input" => self.task_input(v, task),
            "retry" => own.retry = self.reader().int(name, v, 0, 100).map(|n| n as u32),
            "retry_on_exit" => own.retry_on_exit = Some(self.exit_codes(v)),
            "backoff" => own.backoff = self.reader().backoff(v),
            "timeout" => own.timeout = self.reader().duration(name, v, true),
            "cache" => task.cache = self.reader().boolean(name, v).unwrap_or(false),
            "effect" => {
                task.effect = self
                    .reader()
                    .choice(
                        name,
                        v,
                        &[
                            ("pure", Effect::Pure),
                            ("idempotent", Effect::Idempotent),
                            ("external", Effect::External),
                        ],
                    )
                    .unwrap_or(Effect::Pure)
            }
            _ if super::fanout::SETTINGS.contains(&name) => {} // read first, by `fan_out`
            // Read with the task's pool (`check/child.rs`).
            "params" if matches!(self.agent_defaults.get(task.agent.index()), Some(Some(d)) if d.kind == "workflow") =>
                {}
            _ => {
                if !self.budget_setting(Owner::Task(task.id), s) {
                    self.unknown_setting(s, "a task", TASK_SETTINGS)
                }
            }
        }
    }

    fn task_input(&mut self, v: &ast::Value, task: &mut Task) {
        match &v.kind {
            ast::ValueKind::Map(entries) => {
                let values = self.reader().template_map(entries).unwrap_or_default();
                let tree = self.tree(v, "input");
                task.input = Some(Box::new(Input { values, tree }));
            }
            _ => {
                let found = values::describe(v);
                self.error(v.span, format!("`input` expects a map, found {found}"))
                    .with_label("expected a map")
                    .help = Some("write `input = { key = value }`".into());
            }
        }
    }

    fn warn_ignored_prompt(&mut self, t: &ast::Task, kind: &str) {
        let span = t
            .body
            .iter()
            .flatten()
            .find_map(|i| match i {
                ast::TaskItem::Setting(s) if s.name.name == "prompt" => Some(s.name.span),
                _ => None,
            })
            .unwrap_or(t.name.span);
        self.diags.push(
            Diagnostic::warning(
                span,
                format!(
                    "`prompt` is ignored: task `{}` runs on `{}`, a {kind} agent",
                    t.name.name, t.agent.name
                ),
            )
            .with_label("unused")
            .with_help("only llm agents read a prompt; pass data to other agents with `input`"),
        );
    }
    pub(super) fn warn_unused(&mut self, agents: &[Agent], tasks: &[Task], phases: &[Phase]) {
        let used: HashSet<AgentId> = tasks.iter().map(|t| t.agent).collect();
        for agent in agents {
            // An exported agent is offered to importers: a library need not use it.
            if !used.contains(&agent.id) && !self.exported_agents.contains(&agent.name) {
                let span = self
                    .names
                    .agents
                    .get(&agent.name)
                    .map_or(agent.span, |(_, s)| *s);
                self.diags.push(
                    Diagnostic::warning(
                        span,
                        format!("agent `{}` is not used by any task", agent.name),
                    )
                    .with_label("unused agent")
                    .with_help("remove it, or give a task to it with `task NAME on AGENT`"),
                );
            }
        }
        for phase in phases {
            if !self.names.phases_with_tasks.contains(&phase.id) {
                let span = self
                    .names
                    .phases
                    .get(&phase.name)
                    .map_or(phase.span, |(_, s)| *s);
                self.diags.push(
                    Diagnostic::warning(span, format!("phase `{}` has no tasks", phase.name))
                        .with_label("empty phase")
                        .with_help("its gate passes at once; add tasks or remove the phase"),
                );
            }
        }
    }
}
