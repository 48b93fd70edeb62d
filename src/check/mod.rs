//! AST → IR: names, settings, types, ranges, rule compilation, templates, warnings.
//!
//! The checker reports every problem it finds in a file (it keeps going after an error, and
//! leaves out of the IR what it could not understand) and builds the IR only when there were
//! no errors.

mod agents;
mod budget;
mod child;
mod command;
pub(crate) mod compare;
mod cycles;
mod expand;
pub(crate) mod fanout;
mod imports;
pub mod ir;
mod modules;
mod placement;
mod rules;
mod settings;
mod tasks;
mod templates;
pub mod text;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;

use self::ir::*;
use self::values::Reader;
use crate::diag::{self, Annotate, Diagnostic};
use crate::hashing::{FastIndexMap, FastSet};
use crate::policy::{ModuleSet, RuleKind};
use crate::source::{SourceMap, Span};
use crate::syntax::{self, ast};

pub use imports::{ImportTexts, ImportedFile};

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

/// Parses and checks workflow text; `path` is where `use` and `import` paths resolve from.
pub fn check_source(map: &mut SourceMap, name: &str, path: &Path, text: &str) -> Checked {
    check_source_with(map, name, path, text, None)
}

/// [`check_source`], with imported files' texts taken from `imports` where it has them (a
/// resume re-checks a run's workflow with the imports it started with).
pub fn check_source_with(
    map: &mut SourceMap,
    name: &str,
    path: &Path,
    text: &str,
    imports: Option<&ImportTexts>,
) -> Checked {
    crate::compiling(text.len());
    check_nested(map, name, path, text, imports, Vec::new())
}

/// [`check_source_with`] for a file reached through child runs: `stack` holds the files above
/// it (canonical paths), for cycle errors.
fn check_nested(
    map: &mut SourceMap,
    name: &str,
    path: &Path,
    text: &str,
    imports: Option<&ImportTexts>,
    mut stack: Vec<PathBuf>,
) -> Checked {
    if stack.is_empty() {
        stack.push(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
    }
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
    let mut expanded = expand::expand(map, file, path, name, ast.workflow, imports);
    diags.extend(expanded.diags.iter().cloned());
    if diags.iter().any(Diagnostic::is_error) {
        // Names through a failed import would only cascade: stop between the stages.
        expanded.annotate(&mut diags);
        diag::sort(&mut diags);
        return Checked {
            workflow: None,
            diags,
        };
    }
    let mut checker = Checker::new(map, path);
    checker.stack = stack;
    checker.exported_agents = expanded.exported_agents.clone();
    let workflow = checker.workflow(&mut expanded.workflow).map(|mut wf| {
        wf.imports = expanded.files.clone();
        wf
    });
    diags.append(&mut checker.diags);
    expanded.annotate(&mut diags);
    diag::sort(&mut diags);
    // A rule or template used twice is checked twice; its problems are reported once.
    diags.dedup_by(|a, b| a.span == b.span && a.message == b.message);
    let ok = !diags.iter().any(Diagnostic::is_error);
    Checked {
        workflow: if ok { workflow } else { None },
        diags,
    }
}

/// Reads a file as UTF-8 text, with a diagnostic naming the cause when it cannot.
pub fn read_text(path: &Path) -> Result<String, Diagnostic> {
    let bytes = crate::files::read_limited(path, MAX_FILE_SIZE as u64).map_err(|e| {
        let cause = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            std::io::ErrorKind::FileTooLarge => {
                format!(
                    "{e}; workflow files are limited to {} MiB",
                    MAX_FILE_SIZE >> 20
                )
            }
            _ => e.to_string(),
        };
        Diagnostic::general(format!("cannot read `{}`: {cause}", path.display()))
    })?;
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
    tasks: FastIndexMap<String, (TaskId, PhaseId, Span)>,
    agents: FastIndexMap<String, (AgentId, Span)>,
    phases: FastIndexMap<String, (PhaseId, Span)>,
    params: FastIndexMap<String, Span>,
    /// Each `task` of the phases `declare` accepted, in the order written: its id, or `None`
    /// for a second task of a name. `phases` walks the same tasks in the same order.
    declared: Vec<Option<TaskId>>,
    /// How many of `declared` `phases` has read.
    declared_read: usize,
    /// Phases with at least one `task` written in them (duplicates included).
    phases_with_tasks: FastSet<PhaseId>,
    /// Tasks that fan out (`matrix` or `for_each`): templates read `outputs`, not `output`.
    fan_out: FastSet<String>,
    /// Child-run tasks whose child workflow checked, by task name.
    children: IndexMap<String, child::ChildInfo>,
}

struct Checker<'m> {
    map: &'m mut SourceMap,
    dir: PathBuf,
    path: PathBuf,
    diags: Vec<Diagnostic>,
    names: Names,
    modules: ModuleSet,
    templates: crate::template::TemplatesBuilder,
    /// What tasks inherit from each agent, by `AgentId`.
    agent_defaults: Vec<Option<AgentDefaults>>,
    /// Where each resolved `after` entry is written, aligned with `Task::after`.
    after_spans: cycles::AfterSpans,
    /// What `item` is in the templates being checked.
    item: fanout::ItemShape,
    /// Every `budget` and `on_budget` setting read so far.
    budgets: Budgets,
    /// This file and the files whose child runs reach it (canonical paths).
    stack: Vec<PathBuf>,
    /// The pools of child-run tasks, numbered after the declared agents.
    child_agents: Vec<Agent>,
    /// Agents the file marks `export`.
    exported_agents: std::collections::HashSet<String>,
}

impl<'m> Checker<'m> {
    fn new(map: &'m mut SourceMap, path: &Path) -> Checker<'m> {
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Checker {
            map,
            dir,
            path: path.to_path_buf(),
            diags: Vec::new(),
            names: Names::default(),
            modules: ModuleSet::default(),
            templates: crate::template::TemplatesBuilder::default(),
            agent_defaults: Vec::new(),
            item: fanout::ItemShape::Absent,
            after_spans: cycles::AfterSpans::default(),
            budgets: Budgets::default(),
            stack: Vec::new(),
            child_agents: Vec::new(),
            exported_agents: Default::default(),
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

    /// Checks `wf`, taking its phases' items: each task's syntax is dropped once its checked
    /// form exists, so a large file never holds both whole.
    fn workflow(&mut self, wf: &mut ast::Workflow) -> Option<Workflow> {
        self.declare(wf);
        let phase_items: Vec<Vec<ast::PhaseItem>> = wf
            .items
            .iter_mut()
            .filter_map(|item| match item {
                ast::Item::Phase(p) => Some(std::mem::take(&mut p.items)),
                _ => None,
            })
            .collect();
        let wf = &*wf;
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
                // Gone after expansion (`expand`), or read elsewhere.
                ast::Item::Use(_)
                | ast::Item::Phase(_)
                | ast::Item::Import(_)
                | ast::Item::Export(..)
                | ast::Item::RuleDef(_)
                | ast::Item::PhaseInstance(_) => {}
                ast::Item::Param(p) => params.extend(self.param(p)),
                ast::Item::Agent(a) => agents.extend(self.agent(a)),
                ast::Item::Enforce(r) => enforce.extend(self.rule(RuleKind::Enforce, &r.rule)),
                ast::Item::Feedback(f) => {
                    if let Some((first, _)) = feedback {
                        self.second_feedback(first, f);
                        continue;
                    }
                    let checked = self.feedback(f);
                    feedback = Some((f, checked));
                }
            }
        }
        let (phases, tasks) = self.phases(wf, phase_items);
        agents.append(&mut self.child_agents);
        self.check_cycles(&tasks);
        self.warn_unused(&agents, &tasks, &phases);
        self.warn_idle_budgets(&agents, &tasks);
        if let Some((ast_feedback, Some(f))) = &mut feedback {
            self.feedback_target(ast_feedback, f, &phases);
        }
        if self.diags.iter().any(Diagnostic::is_error) {
            return None;
        }
        let feedback = match feedback {
            Some((_, Some(f))) => Some(f),
            Some((_, None)) => return None,
            None => None,
        };
        // Whether anything reads `tasks` per dispatch: then the run keeps a view of each
        // finished task for templates and `when` rules (named rules may read it too).
        // A `when` rule that may read `tasks` may read any of them.
        let when_reads_tasks =
            tasks
                .iter()
                .filter_map(|t| t.when.as_ref())
                .any(|r| match &r.source {
                    RuleSource::Inline(code) => code.contains("tasks"),
                    RuleSource::Named { .. } => true,
                });
        let tasks_read = if when_reads_tasks {
            crate::template::TasksRead::All
        } else {
            self.templates.tasks_read().clone()
        };
        Some(Workflow {
            tasks_read,
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
            budgets: std::mem::take(&mut self.budgets),
            imports: Vec::new(),
            span: wf.span,
        })
    }

    /// First pass: ids for every task, agent, phase and param, and duplicate-name errors.
    fn declare(&mut self, wf: &ast::Workflow) {
        // Sized once: at a hundred thousand tasks the index's growth (each step copies every
        // name) would be a fifth of compiling's peak.
        let (mut declared, mut edges) = (0, 0);
        for item in &wf.items {
            if let ast::Item::Phase(p) = item {
                for pi in &p.items {
                    if let ast::PhaseItem::Task(t) = pi {
                        declared += 1;
                        edges += t.after.len();
                    }
                }
            }
        }
        self.names.tasks.reserve(declared);
        self.names.declared.reserve_exact(declared);
        self.after_spans.reserve(declared, edges);
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
                        let fans_out = t.body.iter().flatten().any(|i| {
                            matches!(i, ast::TaskItem::Setting(s)
                                if matches!(s.name.name.as_str(), "matrix" | "for_each"))
                        });
                        if fans_out {
                            self.names.fan_out.insert(t.name.name.clone());
                        }
                        if let Some(file) = &t.child {
                            if !self.names.tasks.contains_key(&t.name.name) {
                                self.load_child(t, file);
                            }
                        }
                        // One probe of the index a task (`entry`), and the id remembered in
                        // order for `phases`: at 100k tasks each probe of this index is a few
                        // cache misses, a sixth of compiling when every pass looked names up.
                        match self.names.tasks.entry(t.name.name.clone()) {
                            indexmap::map::Entry::Occupied(e) => {
                                let first = e.get().2;
                                self.names.declared.push(None);
                                self.duplicate("task", &t.name, first);
                            }
                            indexmap::map::Entry::Vacant(e) => {
                                let id = TaskId(next_task);
                                next_task += 1;
                                e.insert((id, phase_id, t.name.span));
                                self.names.declared.push(Some(id));
                            }
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
}

/// Settings already seen in one block, for duplicate errors.
#[derive(Default)]
struct SeenSettings(BTreeMap<String, Span>);

/// What a task inherits from its agent.
#[derive(Clone)]
struct AgentDefaults {
    kind: &'static str,
    retry: Option<u32>,
    retry_on_exit: Option<Vec<i32>>,
    backoff: Option<Backoff>,
    timeout: Option<Duration>,
}
