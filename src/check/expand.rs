//! Expansion: a workflow with imports, `rule` definitions and phase templates becomes an
//! ordinary workflow before it is checked. Imported agents join it as `q.name` (one pool per
//! agent however many paths import its file), phase instances become phases, calls of `.cond`
//! rules become inline rules whose arguments are bound in a prelude. Every copied item keeps
//! its span, so the checker's diagnostics point into the file the item was written in.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;

use super::imports::{annotate, ImportTexts, ImportedFile, Loader, Scope};
use crate::diag::Diagnostic;
use crate::source::{FileId, SourceMap};
use crate::syntax::ast::{self, Item, PhaseItem, TaskItem, ValueKind};

/// An expanded workflow, the files it imports, and what went wrong.
pub(super) struct Expanded {
    pub workflow: ast::Workflow,
    pub files: Vec<ImportedFile>,
    pub diags: Vec<Diagnostic>,
    pub notes: HashMap<FileId, String>,
    /// The workflow's own agents marked `export`.
    pub exported_agents: HashSet<String>,
}

impl Expanded {
    /// Adds "imported from …" to diagnostics that point into imported files.
    pub(super) fn annotate(&self, diags: &mut [Diagnostic]) {
        annotate(diags, &self.notes);
    }
}

/// Expands `wf` (the workflow of `file`, read from `path`, shown as `name`).
pub(super) fn expand(
    map: &mut SourceMap,
    file: FileId,
    path: &std::path::Path,
    name: &str,
    wf: ast::Workflow,
    texts: Option<&ImportTexts>,
) -> Expanded {
    if !wf.items.iter().any(needs_expansion) {
        // Nothing to expand: the file is checked as written, without a copy of its tree.
        return Expanded {
            workflow: wf,
            files: Vec::new(),
            diags: Vec::new(),
            notes: HashMap::new(),
            exported_agents: HashSet::new(),
        };
    }
    let mut loader = Loader::new(map, texts, path, name);
    let root = loader.scope(file, String::new(), String::new(), &wf);
    let mut ex = Expander {
        diags: std::mem::take(&mut loader.diags),
        agents: Vec::new(),
        agent_names: HashMap::new(),
        uses: Vec::new(),
        used: root.uses.iter().map(|u| use_key(&u.path.value)).collect(),
    };
    let items = ex.root_items(&root, &wf);
    // Imported files' modules first, so the workflow's own `use`s read as written after them.
    let mut all: Vec<Item> = ex.uses.drain(..).map(Item::Use).collect();
    all.extend(items);
    all.extend(ex.agents.drain(..).map(Item::Agent));
    let exported_agents = root
        .agents
        .iter()
        .filter(|(_, (_, exported))| *exported)
        .map(|(name, _)| name.clone())
        .collect();
    Expanded {
        workflow: ast::Workflow {
            name: wf.name,
            items: all,
            span: wf.span,
        },
        files: std::mem::take(&mut loader.files),
        diags: ex.diags,
        notes: std::mem::take(&mut loader.notes),
        exported_agents,
    }
}

/// Whether an item is one that expansion replaces.
fn needs_expansion(item: &Item) -> bool {
    match item {
        Item::Import(_) | Item::Export(..) | Item::RuleDef(_) | Item::PhaseInstance(_) => true,
        Item::Phase(p) => p.params.is_some(),
        _ => false,
    }
}

/// A `use` path as compared for duplicates.
fn use_key(path: &str) -> String {
    if path.starts_with("std:") {
        path.to_string()
    } else {
        super::imports::normalize(std::path::Path::new(path))
    }
}

/// Values bound to a phase template's parameters, by name.
type Bindings = IndexMap<String, ast::Value>;

struct Expander {
    diags: Vec<Diagnostic>,
    /// Imported agents, renamed, in the order first used.
    agents: Vec<ast::Agent>,
    /// (file, agent) → its name in the expanded workflow.
    agent_names: HashMap<(String, String), String>,
    uses: Vec<ast::Use>,
    used: HashSet<String>,
}

/// What a name refers to: an item of `scope` itself, or an exported one of an import.
enum Lookup<'s, T> {
    Found(&'s Scope, T),
    /// Reported (or the import it goes through failed).
    Missing,
}

impl Expander {
    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Resolves `name` or `alias.name` in `scope`'s items of one kind.
    fn lookup<'s, T: Clone + 's>(
        &mut self,
        scope: &'s Scope,
        name: &ast::Ident,
        what: &str,
        items: impl Fn(&'s Scope) -> &'s IndexMap<String, (T, bool)>,
    ) -> Lookup<'s, Option<T>> {
        let Some((alias, rest)) = name.name.split_once('.') else {
            return match items(scope).get(&name.name) {
                Some((item, _)) => Lookup::Found(scope, Some(item.clone())),
                None => Lookup::Found(scope, None),
            };
        };
        let lib = match scope.imports.get(alias) {
            Some(Some(lib)) => lib,
            Some(None) => return Lookup::Missing,
            None => {
                let mut d = Diagnostic::error(
                    name.span.sub(0, alias.len()),
                    format!("unknown import `{alias}`"),
                )
                .with_label("no `import … as` gives this name");
                d = match crate::diag::suggest(alias, scope.imports.keys().map(String::as_str)) {
                    Some(near) => d.with_help(format!("did you mean `{near}`?")),
                    None => d.with_help(format!(
                        "import the file that defines `{rest}` first: `import \"lib/file.cond\" as {alias}`"
                    )),
                };
                self.error(d);
                return Lookup::Missing;
            }
        };
        match items(lib).get(rest) {
            Some((item, true)) => Lookup::Found(lib, Some(item.clone())),
            Some((_, false)) => {
                self.error(
                    Diagnostic::error(
                        name.span,
                        format!("{what} `{rest}` of `{}` is not exported", lib.display),
                    )
                    .with_label("not exported")
                    .with_help(format!(
                        "write `export {what} {rest}` in `{}` to offer it to importers",
                        lib.display
                    )),
                );
                Lookup::Missing
            }
            None => {
                let exported = items(lib)
                    .iter()
                    .filter(|(_, (_, e))| *e)
                    .map(|(n, _)| n.as_str());
                let mut d = Diagnostic::error(
                    name.span,
                    format!("`{}` exports no {what} `{rest}`", lib.display),
                )
                .with_label(format!("unknown {what}"));
                if let Some(near) = crate::diag::suggest(rest, exported) {
                    d = d.with_help(format!("did you mean `{alias}.{near}`?"));
                }
                self.error(d);
                Lookup::Missing
            }
        }
    }

    /// The name a task's `on` has in the expanded workflow.
    fn agent(&mut self, scope: &Scope, name: &ast::Ident) -> ast::Ident {
        let (home, agent) = match self.lookup(scope, name, "agent", |s| &s.agents) {
            Lookup::Found(home, Some(agent)) => (home, agent),
            // The workflow's own names are the checker's to resolve (with its suggestions).
            Lookup::Found(home, None) if home.record.is_empty() => return name.clone(),
            Lookup::Found(home, None) => {
                let mut d = Diagnostic::error(
                    name.span,
                    format!("unknown agent `{}` in `{}`", name.name, home.display),
                )
                .with_label("no agent of this file has this name");
                if let Some(near) =
                    crate::diag::suggest(&name.name, home.agents.keys().map(String::as_str))
                {
                    d = d.with_help(format!("did you mean `{near}`?"));
                }
                self.error(d);
                return name.clone();
            }
            Lookup::Missing => return name.clone(),
        };
        if home.record.is_empty() {
            return name.clone();
        }
        let key = (home.record.clone(), agent.name.name.clone());
        let global = match self.agent_names.get(&key) {
            Some(g) => g.clone(),
            None => {
                let global = format!("{}{}", home.prefix, agent.name.name);
                let mut copy = agent.clone();
                copy.name.name = global.clone();
                self.agents.push(copy);
                self.agent_names.insert(key, global.clone());
                self.add_uses(home);
                global
            }
        };
        ast::Ident {
            name: global,
            span: name.span,
        }
    }

    /// An imported file's modules join the workflow's (once each).
    fn add_uses(&mut self, home: &Scope) {
        for u in &home.uses {
            if self.used.insert(use_key(&u.path.value)) {
                self.uses.push(u.clone());
            }
        }
    }

    /// The workflow's own items, expanded: templates and rule definitions leave, instances
    /// become phases, names through imports are resolved.
    fn root_items(&mut self, root: &Scope, wf: &ast::Workflow) -> Vec<Item> {
        let none = Bindings::new();
        let mut items = Vec::new();
        let mut instance_tasks = HashMap::new();
        for item in &wf.items {
            let item = match item {
                Item::Export(inner, _) => &**inner,
                other => other,
            };
            match item {
                Item::Import(_) | Item::RuleDef(_) => {}
                Item::Phase(p) if p.params.is_some() => {}
                Item::Phase(p) => items.push(Item::Phase(ast::Phase {
                    name: p.name.clone(),
                    params: None,
                    items: self.phase_items(root, &p.items, &none),
                    span: p.span,
                })),
                Item::PhaseInstance(i) => {
                    if let Some(p) = self.instance(root, i) {
                        if self.distinct_tasks(&p, &mut instance_tasks) {
                            items.push(Item::Phase(p));
                        }
                    }
                }
                Item::Enforce(r) => items.push(Item::Enforce(ast::RuleItem {
                    rule: self.rule(root, &r.rule, &none),
                    span: r.span,
                })),
                Item::Feedback(f) => items.push(Item::Feedback(ast::Feedback {
                    target: f.target.clone(),
                    rule: self.rule(root, &f.rule, &none),
                    span: f.span,
                })),
                other => items.push(other.clone()),
            }
        }
        items
    }

    /// Whether an instance's tasks are named apart from earlier instances' (two copies of one
    /// template would otherwise fail as duplicates pointing twice at the same line).
    fn distinct_tasks(
        &mut self,
        phase: &ast::Phase,
        seen: &mut HashMap<String, ast::Ident>,
    ) -> bool {
        for item in &phase.items {
            let PhaseItem::Task(t) = item else { continue };
            if let Some(first) = seen.get(&t.name.name) {
                let d = Diagnostic::error(
                    phase.name.span,
                    format!(
                        "phase `{}` repeats task `{}` of phase `{}`",
                        phase.name.name, t.name.name, first.name
                    ),
                )
                .with_label("a second copy of the same tasks")
                .with_related(first.span, format!("`{}` is instantiated here", first.name))
                .with_help(
                    "a phase template's tasks keep their names, and task names are unique \
                     within a workflow: instantiate a template once per workflow",
                );
                self.error(d);
                return false;
            }
        }
        for item in &phase.items {
            if let PhaseItem::Task(t) = item {
                seen.insert(t.name.name.clone(), phase.name.clone());
            }
        }
        true
    }

    /// A `phase NAME = template(args)`: the template's items with its parameters bound.
    fn instance(&mut self, scope: &Scope, inst: &ast::PhaseInstance) -> Option<ast::Phase> {
        let (home, template) = match self.lookup(scope, &inst.template, "phase", |s| &s.phases) {
            Lookup::Found(home, Some(t)) => (home, t),
            Lookup::Found(home, None) => {
                let mut d = Diagnostic::error(
                    inst.template.span,
                    format!("unknown phase template `{}`", inst.template.name),
                )
                .with_label("no phase has this name");
                let names = home
                    .phases
                    .iter()
                    .filter(|(_, (p, _))| p.params.is_some())
                    .map(|(n, _)| n.as_str());
                if let Some(near) = crate::diag::suggest(&inst.template.name, names) {
                    d = d.with_help(format!("did you mean `{near}`?"));
                }
                self.error(d);
                return None;
            }
            Lookup::Missing => return None,
        };
        let bindings = self.bind(&inst.template.name, &template, inst)?;
        self.add_uses(home);
        let items = self.phase_items(home, &template.items, &bindings);
        Some(ast::Phase {
            name: inst.name.clone(),
            params: None,
            items,
            span: inst.span,
        })
    }

    /// The instance's arguments matched with the template's parameters.
    fn bind(
        &mut self,
        shown: &str,
        template: &ast::Phase,
        inst: &ast::PhaseInstance,
    ) -> Option<Bindings> {
        let params = template.params.as_deref().unwrap_or(&[]);
        let mut bindings = Bindings::new();
        let mut ok = true;
        for arg in &inst.args {
            if !params.iter().any(|p| p.name.name == arg.name.name) {
                let mut d = Diagnostic::error(
                    arg.name.span,
                    format!("phase `{shown}` has no parameter `{}`", arg.name.name),
                )
                .with_label("unknown parameter");
                let names = params.iter().map(|p| p.name.name.as_str());
                d = match crate::diag::suggest(&arg.name.name, names) {
                    Some(near) => d.with_help(format!("did you mean `{near}`?")),
                    None if params.is_empty() => d.with_help(format!(
                        "`{shown}` takes no parameters; instantiate it as `{shown}()`"
                    )),
                    None => d.with_help(format!(
                        "its parameters are {}",
                        params
                            .iter()
                            .map(|p| format!("`{}`", p.name.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                self.error(d);
                ok = false;
                continue;
            }
            if bindings.contains_key(&arg.name.name) {
                self.error(
                    Diagnostic::error(
                        arg.name.span,
                        format!("argument `{}` is given twice", arg.name.name),
                    )
                    .with_label("given again here"),
                );
                ok = false;
                continue;
            }
            if let Some(v) = &arg.value {
                bindings.insert(arg.name.name.clone(), v.clone());
            }
        }
        for p in params {
            if bindings.contains_key(&p.name.name) {
                continue;
            }
            match &p.value {
                Some(default) => {
                    bindings.insert(p.name.name.clone(), default.clone());
                }
                None => {
                    self.error(
                        Diagnostic::error(
                            inst.template.span,
                            format!("phase `{shown}` needs an argument `{}`", p.name.name),
                        )
                        .with_label("argument missing")
                        .with_help(format!(
                            "give it in the parentheses: `{shown}({} = …)`",
                            p.name.name
                        )),
                    );
                    ok = false;
                }
            }
        }
        // Parameters are ordered as declared, so the rules' preludes read in that order.
        let ordered = params
            .iter()
            .filter_map(|p| {
                bindings
                    .get(&p.name.name)
                    .map(|v| (p.name.name.clone(), v.clone()))
            })
            .collect();
        ok.then_some(ordered)
    }

    fn phase_items(
        &mut self,
        scope: &Scope,
        items: &[PhaseItem],
        bindings: &Bindings,
    ) -> Vec<PhaseItem> {
        items
            .iter()
            .map(|item| match item {
                PhaseItem::Setting(s) => PhaseItem::Setting(Box::new(setting(s, bindings))),
                PhaseItem::Gate(r) => PhaseItem::Gate(Box::new(ast::RuleItem {
                    rule: self.rule(scope, &r.rule, bindings),
                    span: r.span,
                })),
                PhaseItem::Enforce(r) => PhaseItem::Enforce(Box::new(ast::RuleItem {
                    rule: self.rule(scope, &r.rule, bindings),
                    span: r.span,
                })),
                PhaseItem::Task(t) => PhaseItem::Task(Box::new(self.task(scope, t, bindings))),
            })
            .collect()
    }

    fn task(&mut self, scope: &Scope, t: &ast::Task, bindings: &Bindings) -> ast::Task {
        let body = t.body.as_ref().map(|body| {
            body.iter()
                .map(|i| match i {
                    TaskItem::Setting(s) => TaskItem::Setting(setting(s, bindings)),
                    TaskItem::When(r) => TaskItem::When(ast::RuleItem {
                        rule: self.rule(scope, &r.rule, bindings),
                        span: r.span,
                    }),
                })
                .collect()
        });
        ast::Task {
            name: t.name.clone(),
            // A child run's `workflow` names no agent.
            agent: if t.child.is_some() {
                t.agent.clone()
            } else {
                self.agent(scope, &t.agent)
            },
            child: t.child.clone(),
            after: t.after.clone(),
            body,
            span: t.span,
        }
    }

    /// A rule with the template's parameters bound; a call of a `.cond` rule made inline.
    fn rule(&mut self, scope: &Scope, rule: &ast::Rule, bindings: &Bindings) -> ast::Rule {
        let call = match rule {
            ast::Rule::Block(b) => {
                // A template's parameters with no rhai form (a duration) are left out: a
                // rule that reads one is told the name is unknown.
                let mut b = b.clone();
                b.prelude = bindings
                    .iter()
                    .filter_map(|(n, v)| Some(format!("let {n} = {}; ", rhai_literal(v).ok()?)))
                    .collect();
                return ast::Rule::Block(b);
            }
            ast::Rule::Call(c) => ast::Call {
                name: c.name.clone(),
                args: c.args.iter().map(|a| subst(a, bindings)).collect(),
                span: c.span,
            },
        };
        let def = match self.lookup(scope, &call.name, "rule", |s| &s.rules) {
            Lookup::Found(home, Some(def)) => {
                // Its code may call functions of its file's modules.
                self.add_uses(home);
                def
            }
            // Not a `.cond` rule: a function of a `use`d module, for the checker to find.
            Lookup::Found(..) | Lookup::Missing => return ast::Rule::Call(call),
        };
        if def.params.len() != call.args.len() {
            let names: Vec<&str> = def.params.iter().map(|p| p.name.as_str()).collect();
            self.error(
                Diagnostic::error(
                    call.span,
                    format!(
                        "rule `{}` takes {} argument{}, found {}",
                        call.name.name,
                        def.params.len(),
                        if def.params.len() == 1 { "" } else { "s" },
                        call.args.len()
                    ),
                )
                .with_label("wrong number of arguments")
                .with_help(format!(
                    "it is `rule {}({})`",
                    def.name.name,
                    names.join(", ")
                )),
            );
            return ast::Rule::Call(call);
        }
        let mut body = def.body.clone();
        body.prelude = self.prelude(
            def.params
                .iter()
                .map(|p| p.name.as_str())
                .zip(call.args.iter()),
        );
        ast::Rule::Block(body)
    }

    /// `let a = 1; let b = "x"; ` for rhai, from a rule call's arguments.
    fn prelude<'v>(&mut self, pairs: impl Iterator<Item = (&'v str, &'v ast::Value)>) -> String {
        let mut out = String::new();
        for (name, value) in pairs {
            match rhai_literal(value) {
                Ok(lit) => out.push_str(&format!("let {name} = {lit}; ")),
                Err(span) => self.error(
                    Diagnostic::error(span, "this value cannot be passed to a rule")
                        .with_label("not a string, number, boolean, list or map")
                        .with_help("rules receive strings, numbers, booleans, lists and maps"),
                ),
            }
        }
        out
    }
}

fn setting(s: &ast::Setting, bindings: &Bindings) -> ast::Setting {
    ast::Setting {
        name: s.name.clone(),
        value: subst(&s.value, bindings),
        span: s.span,
    }
}

/// A value with each bare name that is a template parameter replaced by its argument.
fn subst(v: &ast::Value, bindings: &Bindings) -> ast::Value {
    if bindings.is_empty() {
        return v.clone();
    }
    let kind = match &v.kind {
        ValueKind::Bare(name) => match bindings.get(name) {
            Some(arg) => return arg.clone(),
            None => v.kind.clone(),
        },
        ValueKind::List(items) => {
            ValueKind::List(items.iter().map(|i| subst(i, bindings)).collect())
        }
        ValueKind::Map(entries) => ValueKind::Map(
            entries
                .iter()
                .map(|e| ast::MapEntry {
                    key: e.key.clone(),
                    value: subst(&e.value, bindings),
                    span: e.span,
                })
                .collect(),
        ),
        ValueKind::Call(c) => ValueKind::Call(ast::Call {
            name: c.name.clone(),
            args: c.args.iter().map(|a| subst(a, bindings)).collect(),
            span: c.span,
        }),
        other => other.clone(),
    };
    ast::Value { kind, span: v.span }
}

/// A `.cond` value as rhai source, or the span of the part that has no rhai form.
fn rhai_literal(v: &ast::Value) -> Result<String, crate::source::Span> {
    Ok(match &v.kind {
        ValueKind::Str(s) => serde_json::Value::String(s.value.clone()).to_string(),
        ValueKind::Number(n) if n.parse::<i64>().is_ok() || n.parse::<f64>().is_ok() => n.clone(),
        ValueKind::Bool(b) => b.to_string(),
        ValueKind::List(items) => {
            let items: Result<Vec<String>, _> = items.iter().map(rhai_literal).collect();
            format!("[{}]", items?.join(", "))
        }
        ValueKind::Map(entries) => {
            let mut parts = Vec::new();
            for e in entries {
                let key = serde_json::Value::String(e.key.name().to_string()).to_string();
                parts.push(format!("{key}: {}", rhai_literal(&e.value)?));
            }
            format!("#{{{}}}", parts.join(", "))
        }
        _ => return Err(v.span),
    })
}

#[cfg(test)]
mod tests {
    use super::rhai_literal;
    use crate::source::FileId;
    use crate::syntax::{ast, parse};

    /// The value of the workflow's first setting, as written.
    fn value(text: &str) -> ast::Value {
        let (file, _) = parse(FileId(0), &format!("workflow w {{ x = {text} }}")).unwrap();
        match &file.workflow.items[0] {
            ast::Item::Setting(s) => s.value.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arguments_become_rhai_literals() {
        let lit = |t: &str| rhai_literal(&value(t)).unwrap();
        assert_eq!(lit(r#""a \"b\"\n""#), r#""a \"b\"\n""#);
        assert_eq!(lit("0.5"), "0.5");
        assert_eq!(lit("-3"), "-3");
        assert_eq!(lit("[1, true]"), "[1, true]");
        assert_eq!(lit(r#"{ k = "v", "a b" = 2 }"#), r#"#{"k": "v", "a b": 2}"#);
        // A duration has no rhai form.
        assert!(rhai_literal(&value("30s")).is_err());
        assert!(rhai_literal(&value("[1, 30s]")).is_err());
    }
}
