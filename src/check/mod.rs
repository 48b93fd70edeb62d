//! AST → IR: names, settings, types, ranges, rule compilation, templates, warnings.
//!
//! The checker reports every problem it finds in a file (it keeps going after an error, and
//! leaves out of the IR what it could not understand) and builds the IR only when there were
//! no errors.

mod agents;
mod cycles;
pub mod ir;
pub mod render;
mod rules;
mod templates;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;

use self::ir::*;
use self::values::Reader;
use crate::diag::{self, Annotate, Diagnostic};
use crate::policy::{ModuleSet, RuleKind};
use crate::source::{FileId, SourceMap, Span};
use crate::syntax::{self, ast};

/// Files larger than this are refused before parsing.
pub const MAX_FILE_SIZE: usize = 64 * 1024 * 1024;

/// The result of checking one file: the IR when there was no error, and every diagnostic.
#[derive(Debug)]
pub struct Checked {
    pub workflow: Option<Workflow>,
    pub diags: Vec<Diagnostic>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }
}

/// Reads, parses and checks a workflow file.
pub fn check_file(map: &mut SourceMap, path: &Path) -> Checked {
    let text = match read_text(path) {
        Ok(text) => text,
        Err(diag) => {
            return Checked {
                workflow: None,
                diags: vec![diag],
            }
        }
    };
    check_source(map, &path.display().to_string(), path, &text)
}

/// Parses and checks workflow text; `path` is where `use` paths resolve from.
pub fn check_source(map: &mut SourceMap, name: &str, path: &Path, text: &str) -> Checked {
    let file = map.add(name, path, text);
    let (ast, mut diags) = match syntax::parse(file, text) {
        Ok(parsed) => parsed,
        Err(diags) => {
            return Checked {
                workflow: None,
                diags,
            }
        }
    };
    let mut checker = Checker::new(map, file, path);
    let workflow = checker.workflow(&ast.workflow);
    diags.append(&mut checker.diags);
    diag::sort(&mut diags);
    let ok = !diags.iter().any(Diagnostic::is_error);
    Checked {
        workflow: if ok { workflow } else { None },
        diags,
    }
}

/// Reads a file as UTF-8 text, with a diagnostic naming the cause when it cannot.
pub fn read_text(path: &Path) -> Result<String, Diagnostic> {
    let bytes = std::fs::read(path).map_err(|e| {
        let cause = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ if path.is_dir() => "it is a directory".to_string(),
            _ => e.to_string(),
        };
        Diagnostic::general(format!("cannot read `{}`: {cause}", path.display()))
    })?;
    if bytes.len() > MAX_FILE_SIZE {
        return Err(Diagnostic::general(format!(
            "`{}` is {} MiB; workflow files are limited to {} MiB",
            path.display(),
            bytes.len() / (1024 * 1024),
            MAX_FILE_SIZE / (1024 * 1024)
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let valid = &e.as_bytes()[..at];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let col = valid.len() - valid.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1) + 1;
        Diagnostic::general(format!(
            "`{}` is not UTF-8 text: invalid byte at line {line}, column {col} (byte offset {at})",
            path.display()
        ))
    })
}

/// Ids assigned in a first pass, so `after` and `on` can name items declared later.
#[derive(Default)]
struct Names {
    tasks: IndexMap<String, (TaskId, PhaseId, Span)>,
    agents: IndexMap<String, (AgentId, Span)>,
    phases: IndexMap<String, (PhaseId, Span)>,
    params: IndexMap<String, Span>,
    /// Phases with at least one `task` written in them (duplicates included).
    phases_with_tasks: std::collections::HashSet<PhaseId>,
}

struct Checker<'m> {
    map: &'m mut SourceMap,
    file: FileId,
    dir: PathBuf,
    path: PathBuf,
    diags: Vec<Diagnostic>,
    names: Names,
    modules: ModuleSet,
    templates: crate::template::TemplatesBuilder,
    /// What tasks inherit from each agent, by `AgentId`.
    agent_defaults: Vec<Option<AgentDefaults>>,
    /// Where each resolved `after` entry is written, aligned with `Task::after`.
    after_spans: Vec<Vec<Span>>,
}

impl<'m> Checker<'m> {
    fn new(map: &'m mut SourceMap, file: FileId, path: &Path) -> Checker<'m> {
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Checker {
            map,
            file,
            dir,
            path: path.to_path_buf(),
            diags: Vec::new(),
            names: Names::default(),
            modules: ModuleSet::default(),
            templates: crate::template::TemplatesBuilder::default(),
            agent_defaults: Vec::new(),
            after_spans: Vec::new(),
        }
    }

    fn reader(&mut self) -> Reader<'_> {
        Reader {
            diags: &mut self.diags,
        }
    }

    fn error(&mut self, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(span, message));
        self.diags.last_mut().expect("just pushed")
    }

    fn workflow(&mut self, wf: &ast::Workflow) -> Option<Workflow> {
        self.declare(wf);
        let modules = self.modules(wf);
        let mut settings = WorkflowSettings::default();
        let mut description = None;
        let mut params = Vec::new();
        let mut agents = Vec::new();
        let mut enforce = Vec::new();
        let mut feedback: Option<(&ast::Feedback, Option<Feedback>)> = None;
        let mut seen = SeenSettings::default();
        for item in &wf.items {
            match item {
                ast::Item::Setting(s) => {
                    if self.first_setting(&mut seen, s) {
                        self.workflow_setting(s, &mut settings, &mut description);
                    }
                }
                ast::Item::Use(_) | ast::Item::Phase(_) => {}
                ast::Item::Param(p) => params.extend(self.param(p)),
                ast::Item::Agent(a) => agents.extend(self.agent(a)),
                ast::Item::Enforce(r) => enforce.extend(self.rule(RuleKind::Enforce, &r.rule)),
                ast::Item::Feedback(f) => {
                    if let Some((first, _)) = feedback {
                        self.error(
                            f.span.sub(0, "feedback".len()),
                            "a workflow has at most one `feedback`",
                        )
                        .with_label("second `feedback`")
                        .related
                        .push((
                            first.span.sub(0, "feedback".len()),
                            "first `feedback` here".into(),
                        ));
                        continue;
                    }
                    let checked = self.feedback(f);
                    feedback = Some((f, checked));
                }
            }
        }
        let mut tasks = Vec::new();
        let mut phases = Vec::new();
        for item in &wf.items {
            if let ast::Item::Phase(p) = item {
                if let Some(phase) = self.phase(p, &mut tasks) {
                    phases.push(phase);
                }
            }
        }
        self.check_cycles(&tasks);
        self.warn_unused(&agents, &tasks, &phases);
        if self.diags.iter().any(Diagnostic::is_error) {
            return None;
        }
        let feedback = match feedback {
            Some((_, Some(f))) => Some(f),
            Some((_, None)) => return None,
            None => None,
        };
        Some(Workflow {
            name: wf.name.name.clone(),
            description,
            path: self.path.clone(),
            settings,
            params,
            agents,
            phases,
            tasks,
            enforce,
            feedback,
            modules,
            module_set: self.modules.clone(),
            templates: std::mem::take(&mut self.templates).finish(),
            span: wf.span,
        })
    }

    /// First pass: ids for every task, agent, phase and param, and duplicate-name errors.
    fn declare(&mut self, wf: &ast::Workflow) {
        let mut next_task = 0;
        for item in &wf.items {
            match item {
                ast::Item::Param(p) => {
                    if let Some(first) = self.names.params.get(&p.name.name).copied() {
                        self.duplicate("param", &p.name, first);
                    } else {
                        self.names.params.insert(p.name.name.clone(), p.name.span);
                    }
                }
                ast::Item::Agent(a) => {
                    if let Some(&(_, first)) = self.names.agents.get(&a.name.name) {
                        self.duplicate("agent", &a.name, first);
                    } else {
                        let id = AgentId(self.names.agents.len() as u32);
                        self.names
                            .agents
                            .insert(a.name.name.clone(), (id, a.name.span));
                    }
                }
                ast::Item::Phase(p) => {
                    let phase_id = match self.names.phases.get(&p.name.name) {
                        Some(&(_, first)) => {
                            self.duplicate("phase", &p.name, first);
                            continue;
                        }
                        None => {
                            let id = PhaseId(self.names.phases.len() as u32);
                            self.names
                                .phases
                                .insert(p.name.name.clone(), (id, p.name.span));
                            id
                        }
                    };
                    for pi in &p.items {
                        let ast::PhaseItem::Task(t) = pi else {
                            continue;
                        };
                        self.names.phases_with_tasks.insert(phase_id);
                        if let Some(&(_, _, first)) = self.names.tasks.get(&t.name.name) {
                            self.duplicate("task", &t.name, first);
                        } else {
                            let id = TaskId(next_task);
                            next_task += 1;
                            self.names
                                .tasks
                                .insert(t.name.name.clone(), (id, phase_id, t.name.span));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn duplicate(&mut self, what: &str, name: &ast::Ident, first: Span) {
        self.error(name.span, format!("duplicate {what} name `{}`", name.name))
            .with_label(format!("second {what} named `{}`", name.name))
            .related
            .push((first, format!("first {what} named `{}` here", name.name)));
        let last = self.diags.last_mut().expect("just pushed");
        last.help = Some(format!("{what} names must be unique within a workflow"));
    }

    /// Compiles every `use`d module into the checker's module set.
    fn modules(&mut self, wf: &ast::Workflow) -> Vec<Module> {
        let mut compiled = Vec::new();
        let mut out = Vec::new();
        let mut defined: HashMap<(String, usize), String> = HashMap::new();
        let mut used: HashMap<PathBuf, Span> = HashMap::new();
        for item in &wf.items {
            let ast::Item::Use(u) = item else { continue };
            let written = u.path.value.clone();
            let path = self.dir.join(&written);
            if let Some(first) = used.get(&path) {
                let first = *first;
                self.error(u.path.span, format!("module `{written}` is used twice"))
                    .with_label("used again here")
                    .related
                    .push((first, "first used here".into()));
                continue;
            }
            used.insert(path.clone(), u.path.span);
            let text = match std::fs::read(&path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(t) => t,
                    Err(_) => {
                        self.error(u.path.span, format!("module `{written}` is not UTF-8 text"))
                            .with_label("cannot read this module");
                        continue;
                    }
                },
                Err(e) => {
                    let cause = if e.kind() == std::io::ErrorKind::NotFound {
                        "no such file".to_string()
                    } else {
                        e.to_string()
                    };
                    self.error(
                        u.path.span,
                        format!("cannot read module `{written}`: {cause}"),
                    )
                    .with_label("not found")
                    .help = Some(format!(
                        "`use` paths are relative to the workflow file; this one resolves to `{}`",
                        path.display()
                    ));
                    continue;
                }
            };
            let module_file = self.map.add(written.clone(), &path, &text);
            match crate::policy::PolicyHost::get().compile_module(&text) {
                Ok(module) => {
                    for f in &module.functions {
                        let key = (f.name.clone(), f.params.len());
                        if let Some(other) = defined.get(&key) {
                            self.error(
                                u.path.span,
                                format!(
                                    "`fn {}` with {} parameters is defined in both `{other}` and `{written}`",
                                    f.name,
                                    f.params.len()
                                ),
                            )
                            .with_label("second definition comes from here");
                        } else {
                            defined.insert(key, written.clone());
                        }
                    }
                    out.push(Module {
                        written: written.clone(),
                        path: path.clone(),
                        source: std::sync::Arc::from(text.as_str()),
                        functions: {
                            let mut names: Vec<String> =
                                module.functions.iter().map(|f| f.name.clone()).collect();
                            names.dedup();
                            names
                        },
                    });
                    compiled.push((module_file, text, module));
                }
                Err(problem) => {
                    let d = rules::problem_diag(module_file, 0, &text, &problem);
                    self.diags.push(d);
                }
            }
        }
        let modules: Vec<_> = compiled.iter().map(|(_, _, m)| m.clone()).collect();
        self.modules = ModuleSet::new(&modules);
        // Calls inside modules are checked against every module, since rules see them all.
        for (file, text, module) in &compiled {
            for problem in crate::policy::PolicyHost::get().check_calls(&module.ast, &self.modules)
            {
                let d = rules::problem_diag(*file, 0, text, &problem);
                self.diags.push(d);
            }
        }
        out
    }

    /// Reports a setting named twice; returns whether this is its first occurrence.
    fn first_setting(&mut self, seen: &mut SeenSettings, s: &ast::Setting) -> bool {
        if let Some(first) = seen.0.get(&s.name.name) {
            let first = *first;
            self.error(s.name.span, format!("duplicate setting `{}`", s.name.name))
                .with_label("set again here")
                .related
                .push((first, "first set here".into()));
            return false;
        }
        seen.0.insert(s.name.name.clone(), s.name.span);
        true
    }

    fn unknown_setting(&mut self, s: &ast::Setting, owner: &str, valid: &[&str]) {
        let diag = Diagnostic::error(
            s.name.span,
            format!("unknown setting `{}` for {owner}", s.name.name),
        )
        .with_label("unknown setting");
        let diag = match diag::suggest(&s.name.name, valid.iter().copied()) {
            Some(near) => diag.with_help(format!("did you mean `{near}`?")),
            None => diag.with_help(format!("{owner} settings are {}", backticked(valid))),
        };
        self.diags.push(diag);
    }

    fn workflow_setting(
        &mut self,
        s: &ast::Setting,
        settings: &mut WorkflowSettings,
        description: &mut Option<String>,
    ) {
        let name = s.name.name.as_str();
        let v = &s.value;
        let mut r = self.reader();
        match name {
            "description" => *description = r.string(name, v).map(|s| s.value.clone()),
            "max_feedback_loops" => {
                if let Some(n) = r.int(name, v, 0, 1000) {
                    settings.max_feedback_loops = n as u32;
                }
            }
            "on_max_loops" => {
                if let Some(x) = r.choice(
                    name,
                    v,
                    &[
                        ("complete", OnMaxLoops::Complete),
                        ("fail", OnMaxLoops::Fail),
                    ],
                ) {
                    settings.on_max_loops = x;
                }
            }
            "min_success_rate" => {
                if let Some(x) = r.float(name, v, 0.0, 1.0) {
                    settings.min_success_rate = x;
                }
            }
            "agent_wait" => {
                if let Some(d) = r.duration(name, v, false) {
                    settings.agent_wait = d;
                }
            }
            "timeout" => {
                if let Some(d) = r.duration(name, v, true) {
                    settings.timeout = d;
                }
            }
            "max_parallel" => {
                if let Some(n) = r.int(name, v, 1, u32::MAX as i64) {
                    settings.max_parallel = Some(n as u32);
                }
            }
            "on_escalation" => {
                settings.on_escalation = r.choice(
                    name,
                    v,
                    &[
                        ("ask", OnEscalation::Ask),
                        ("abort", OnEscalation::Abort),
                        ("skip", OnEscalation::Skip),
                    ],
                );
            }
            _ => self.unknown_setting(s, "a workflow", WORKFLOW_SETTINGS),
        }
    }

    fn param(&mut self, p: &ast::Param) -> Option<Param> {
        let default = match &p.default {
            Some(v) => Some(self.reader().literal(v)?),
            None => None,
        };
        Some(Param {
            name: p.name.name.clone(),
            default,
            span: p.span,
        })
    }

    fn feedback(&mut self, f: &ast::Feedback) -> Option<Feedback> {
        let target = match &f.target {
            Some(t) => match self.names.phases.get(&t.name) {
                Some(&(id, _)) => Some(id),
                None => {
                    let phases: Vec<String> = self.names.phases.keys().cloned().collect();
                    let d = Diagnostic::error(t.span, format!("unknown phase `{}`", t.name))
                        .with_label("no phase of this name")
                        .with_suggestion(&t.name, phases.iter().map(String::as_str));
                    self.diags.push(d);
                    None
                }
            },
            None => {
                if self.names.phases.is_empty() {
                    self.error(
                        f.span.sub(0, "feedback".len()),
                        "`feedback` needs a phase to return to, and this workflow has none",
                    )
                    .with_label("no phase");
                    None
                } else {
                    Some(PhaseId(0))
                }
            }
        };
        let rule = self.rule(RuleKind::Feedback, &f.rule);
        Some(Feedback {
            target: target?,
            rule: rule?,
            span: f.span,
        })
    }

    fn phase(&mut self, p: &ast::Phase, tasks: &mut Vec<Task>) -> Option<Phase> {
        let &(id, span) = self.names.phases.get(&p.name.name)?;
        if span != p.name.span {
            return None; // a duplicate, already reported
        }
        let mut phase = Phase {
            id,
            name: p.name.name.clone(),
            min_success_rate: None,
            tasks: Vec::new(),
            gate: None,
            enforce: Vec::new(),
            span: p.span,
        };
        let mut seen = SeenSettings::default();
        let mut gate_span: Option<Span> = None;
        for item in &p.items {
            match item {
                ast::PhaseItem::Setting(s) => {
                    if !self.first_setting(&mut seen, s) {
                        continue;
                    }
                    if s.name.name == "min_success_rate" {
                        phase.min_success_rate =
                            self.reader().float("min_success_rate", &s.value, 0.0, 1.0);
                    } else {
                        self.unknown_setting(s, "a phase", PHASE_SETTINGS);
                    }
                }
                ast::PhaseItem::Gate(g) => {
                    let kw = g.span.sub(0, "gate".len());
                    if let Some(first) = gate_span {
                        self.error(
                            kw,
                            format!("phase `{}` has more than one `gate`", p.name.name),
                        )
                        .with_label("second gate")
                        .related
                        .push((first, "first gate here".into()));
                        self.diags.last_mut().expect("just pushed").help =
                            Some("combine the conditions into one rule with `&&`".into());
                        continue;
                    }
                    gate_span = Some(kw);
                    phase.gate = self.rule(RuleKind::Gate, &g.rule);
                }
                ast::PhaseItem::Enforce(r) => {
                    phase.enforce.extend(self.rule(RuleKind::Enforce, &r.rule));
                }
                ast::PhaseItem::Task(t) => {
                    if let Some(task) = self.task(t, id) {
                        phase.tasks.push(task.id);
                        tasks.push(task);
                    }
                }
            }
        }
        Some(phase)
    }

    fn task(&mut self, t: &ast::Task, phase: PhaseId) -> Option<Task> {
        let &(id, _, span) = self.names.tasks.get(&t.name.name)?;
        if span != t.name.span {
            return None; // a duplicate, already reported
        }
        let agent = match self.names.agents.get(&t.agent.name) {
            Some(&(agent, _)) => Some(agent),
            None => {
                let agents: Vec<String> = self.names.agents.keys().cloned().collect();
                let d =
                    Diagnostic::error(t.agent.span, format!("unknown agent `{}`", t.agent.name))
                        .with_label("no agent of this name")
                        .with_suggestion(&t.agent.name, agents.iter().map(String::as_str));
                let d = if d.help.is_none() && !agents.is_empty() {
                    d.with_help(format!("the agents are {}", backticked_owned(&agents)))
                } else {
                    d
                };
                self.diags.push(d);
                None
            }
        };
        let mut after = Vec::new();
        let mut after_spans = Vec::new();
        let mut seen_deps = std::collections::HashSet::with_capacity(t.after.len().min(64));
        for dep in &t.after {
            match self.names.tasks.get(&dep.name) {
                Some(&(dep_id, dep_phase, _)) if dep_phase == phase => {
                    if !seen_deps.insert(dep_id) {
                        self.error(
                            dep.span,
                            format!("`{}` is named twice in `after`", dep.name),
                        )
                        .with_label("repeated");
                    } else {
                        after.push(dep_id);
                        after_spans.push(dep.span);
                    }
                }
                Some(&(_, dep_phase, _)) => {
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
                None => {
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
            }
        }
        if self.after_spans.len() <= id.index() {
            self.after_spans.resize_with(id.index() + 1, Vec::new);
        }
        self.after_spans[id.index()] = after_spans;
        let agent = agent?;
        let agent_defaults = self.agent_defaults.get(agent.index()).cloned().flatten();
        let mut task = Task {
            id,
            name: t.name.name.clone(),
            phase,
            agent,
            after,
            prompt: None,
            input: IndexMap::new(),
            input_tree: crate::template::Tree::Plain(serde_json::json!({})),
            retry: 3,
            backoff: Backoff::default(),
            timeout: Duration::from_secs(300),
            cache: false,
            effect: Effect::Pure,
            when: None,
            span: t.span,
        };
        let mut retry = None;
        let mut backoff = None;
        let mut timeout = None;
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
                    task.when = self.rule(RuleKind::When, &w.rule);
                }
                ast::TaskItem::Setting(s) => {
                    if !self.first_setting(&mut seen, s) {
                        continue;
                    }
                    let name = s.name.name.as_str();
                    let v = &s.value;
                    match name {
                        "prompt" => {
                            if let Some(lit) = self.reader().string(name, v) {
                                task.prompt = self.template(lit, "prompt");
                            }
                        }
                        "input" => match &v.kind {
                            ast::ValueKind::Map(entries) => {
                                task.input =
                                    self.reader().template_map(entries).unwrap_or_default();
                                task.input_tree = self.tree(v, "input");
                            }
                            _ => {
                                let found = values::describe(v);
                                self.error(
                                    v.span,
                                    format!("`input` expects a map, found {found}"),
                                )
                                .with_label("expected a map")
                                .help = Some("write `input = { key = value }`".into());
                            }
                        },
                        "retry" => retry = self.reader().int(name, v, 0, 100).map(|n| n as u32),
                        "backoff" => backoff = self.reader().backoff(v),
                        "timeout" => timeout = self.reader().duration(name, v, true),
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
                        _ => self.unknown_setting(s, "a task", TASK_SETTINGS),
                    }
                }
            }
        }
        if let Some(defaults) = agent_defaults {
            task.retry = retry.or(defaults.retry).unwrap_or(task.retry);
            task.backoff = backoff.or(defaults.backoff).unwrap_or(task.backoff);
            task.timeout = timeout.or(defaults.timeout).unwrap_or(task.timeout);
            if task.prompt.is_some() && defaults.kind != "llm" {
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
                            "`prompt` is ignored: task `{}` runs on `{}`, a {} agent",
                            t.name.name, t.agent.name, defaults.kind
                        ),
                    )
                    .with_label("unused")
                    .with_help(
                        "only llm agents read a prompt; pass data to other agents with `input`",
                    ),
                );
            }
        } else {
            task.retry = retry.unwrap_or(task.retry);
            task.backoff = backoff.unwrap_or(task.backoff);
            task.timeout = timeout.unwrap_or(task.timeout);
        }
        Some(task)
    }

    fn warn_unused(&mut self, agents: &[Agent], tasks: &[Task], phases: &[Phase]) {
        let used: std::collections::HashSet<AgentId> = tasks.iter().map(|t| t.agent).collect();
        for agent in agents {
            if !used.contains(&agent.id) {
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

/// Settings already seen in one block, for duplicate errors.
#[derive(Default)]
struct SeenSettings(BTreeMap<String, Span>);

/// What a task inherits from its agent.
#[derive(Clone)]
struct AgentDefaults {
    kind: &'static str,
    retry: Option<u32>,
    backoff: Option<Backoff>,
    timeout: Option<Duration>,
}

const WORKFLOW_SETTINGS: &[&str] = &[
    "description",
    "max_feedback_loops",
    "on_max_loops",
    "min_success_rate",
    "agent_wait",
    "timeout",
    "max_parallel",
    "on_escalation",
];
const PHASE_SETTINGS: &[&str] = &["min_success_rate"];
const TASK_SETTINGS: &[&str] = &[
    "prompt", "input", "retry", "backoff", "timeout", "cache", "effect",
];

fn backticked(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn backticked_owned(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
