//! Child runs (`task t on workflow "deploy.cond" { params = { … } }`): the child file is read
//! and checked with the parent (its diagnostics point into it and name the task that uses it),
//! the task's `params` are checked against the child's `param`s, `tasks.t.output.NAME` against
//! the child's `outputs`, and a cycle of child workflows is an error. The task runs on a pool
//! of its own (`AgentKind::Child`), so the scheduler treats it like any other task.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ir::*;
use super::{AgentDefaults, Checker};
use crate::diag::{Annotate, Diagnostic};
use crate::source::Span;
use crate::syntax::ast;

/// How many of a child-run task's instances (a `for_each`) run at once unless `max_parallel`
/// says otherwise.
const CHILD_POOL: u32 = 16;

/// What the parent needs of a checked child workflow.
#[derive(Clone, Debug)]
pub(super) struct ChildInfo {
    pub written: String,
    pub path: PathBuf,
    pub params: Vec<Param>,
    pub outputs: Vec<String>,
    pub timeout: Duration,
}

impl Checker<'_> {
    /// Reads and checks the child file of a task `on workflow "…"` (first pass, so templates
    /// of every task can see its outputs).
    pub(super) fn load_child(&mut self, t: &ast::Task, file: &ast::StrLit) {
        let path = self.dir.join(&file.value);
        let used_here = format!(
            "in child workflow `{}` used by task `{}`",
            file.value, t.name.name
        );
        let canonical = match std::fs::canonicalize(&path) {
            Ok(c) => c,
            Err(e) => {
                let cause = match e.kind() {
                    std::io::ErrorKind::NotFound => "no such file".to_string(),
                    _ => e.to_string(),
                };
                self.error(
                    file.span,
                    format!("cannot read child workflow `{}`: {cause}", path.display()),
                )
                .with_label("child workflow file")
                .help = Some("the path is relative to this workflow file's folder".into());
                return;
            }
        };
        if let Some(at) = self.stack.iter().position(|p| *p == canonical) {
            let chain: Vec<String> = self.stack[at..]
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| short(p))
                .collect();
            self.error(
                file.span,
                format!("child workflows form a cycle: {}", chain.join(" → ")),
            )
            .with_label("leads back to a workflow above it")
            .help = Some("a workflow cannot be its own child, directly or through others".into());
            return;
        }
        let text = match super::read_text(&path) {
            Ok(text) => text,
            Err(d) => {
                self.error(file.span, d.message)
                    .with_label("child workflow file");
                return;
            }
        };
        let mut stack = self.stack.clone();
        stack.push(canonical);
        let name = path.display().to_string();
        let checked = super::check_nested(self.map, &name, &path, &text, None, stack);
        for mut d in checked.diags {
            match d.span {
                Some(_) => d.related.push((file.span, used_here.clone())),
                None => d.message = format!("{used_here}: {}", d.message),
            }
            self.diags.push(d);
        }
        let Some(wf) = checked.workflow else {
            return;
        };
        let info = ChildInfo {
            written: file.value.clone(),
            path,
            params: wf.params.clone(),
            outputs: wf.settings.outputs.iter().map(|(n, _)| n.clone()).collect(),
            timeout: wf.settings.timeout,
        };
        self.names.children.insert(t.name.name.clone(), info);
    }

    /// The pool a child-run task runs on, with its `params` checked against the child's.
    pub(super) fn child_agent(&mut self, t: &ast::Task) -> Option<AgentId> {
        let info = self.names.children.get(&t.name.name)?.clone();
        let id = AgentId((self.names.agents.len() + self.child_agents.len()) as u32);
        let count = t
            .body
            .iter()
            .flatten()
            .find_map(|i| match i {
                ast::TaskItem::Setting(s) if s.name.name == "max_parallel" => match &s.value.kind {
                    ast::ValueKind::Number(n) => n.parse::<u32>().ok(),
                    _ => None,
                },
                _ => None,
            })
            .unwrap_or(CHILD_POOL)
            .max(1);
        self.child_agents.push(Agent {
            id,
            // One pool per task: two tasks on the same file must not share instance names.
            name: format!("{}:{}", info.written, t.name.name),
            kind: AgentKind::Child(ChildAgent {
                written: info.written.clone(),
                path: info.path.clone(),
                params: crate::template::Tree::Plain(serde_json::json!({})),
                outputs: info.outputs.clone(),
            }),
            count,
            retry: None,
            backoff: None,
            timeout: None,
            breaker: Breaker::default(),
            placement: Placement::Local,
            span: t.span,
        });
        if self.agent_defaults.len() <= id.index() {
            self.agent_defaults.resize(id.index() + 1, None);
        }
        // A child run that failed would mostly fail again: not retried unless the task says
        // so; it may take as long as the child's own `timeout`.
        self.agent_defaults[id.index()] = Some(AgentDefaults {
            kind: "workflow",
            retry: Some(0),
            retry_on_exit: None,
            backoff: None,
            timeout: Some(info.timeout),
        });
        Some(id)
    }

    /// Reads `params` of a child-run task into its pool (after its fan-out is known, so
    /// `item` may be used).
    pub(super) fn child_task_params(&mut self, t: &ast::Task, agent: AgentId) {
        let Some(info) = self.names.children.get(&t.name.name).cloned() else {
            return;
        };
        let setting = t.body.iter().flatten().find_map(|i| match i {
            ast::TaskItem::Setting(s) if s.name.name == "params" => Some(s),
            _ => None,
        });
        let params = match setting {
            Some(s) => self.child_params(t, &info, s),
            None => {
                let at = t.child.as_ref().map_or(t.name.span, |f| f.span);
                self.missing_params(t, &info, &[], at);
                crate::template::Tree::Plain(serde_json::json!({}))
            }
        };
        let index = agent.index().saturating_sub(self.names.agents.len());
        if let Some(Agent {
            kind: AgentKind::Child(c),
            ..
        }) = self.child_agents.get_mut(index)
        {
            c.params = params;
        }
    }

    /// `params = { … }` of a child-run task: names, required ones and literal types.
    fn child_params(
        &mut self,
        t: &ast::Task,
        info: &ChildInfo,
        s: &ast::Setting,
    ) -> crate::template::Tree {
        let ast::ValueKind::Map(entries) = &s.value.kind else {
            let found = super::values::describe(&s.value);
            self.error(
                s.value.span,
                format!("`params` expects a map, found {found}"),
            )
            .with_label("expected a map")
            .help = Some("write `params = { name = value }`".into());
            return crate::template::Tree::Plain(serde_json::json!({}));
        };
        let mut given = Vec::new();
        for e in entries {
            let name = e.key.name();
            given.push(name.to_string());
            let Some(p) = info.params.iter().find(|p| p.name == name) else {
                let names: Vec<&str> = info.params.iter().map(|p| p.name.as_str()).collect();
                let d = Diagnostic::error(
                    e.key.span(),
                    format!("child workflow `{}` has no param `{name}`", info.written),
                )
                .with_label("unknown param")
                .with_suggestion(name, names.iter().copied());
                let d = if d.help.is_none() {
                    d.with_help(match names.is_empty() {
                        true => format!("`{}` declares no params", info.written),
                        false => format!("its params are {}", crate::text::backticked(&names)),
                    })
                } else {
                    d
                };
                self.diags.push(d);
                continue;
            };
            if let (Some(want), Some(found)) = (
                p.default.as_ref().map(ir_kind),
                literal_kind(&e.value).filter(|_| !is_template(&e.value)),
            ) {
                if want != found {
                    self.error(
                        e.value.span,
                        format!(
                            "param `{name}` of child workflow `{}` takes {want}, found {found}",
                            info.written
                        ),
                    )
                    .with_label(format!("expected {want}"))
                    .related
                    .push((p.span, format!("`{name}` declared here")));
                }
            }
        }
        self.missing_params(t, info, &given, s.name.span);
        self.tree(&s.value, "params")
    }

    fn missing_params(&mut self, t: &ast::Task, info: &ChildInfo, given: &[String], at: Span) {
        for p in &info.params {
            let required = p.default.is_none() && p.env.is_none();
            if required && !given.contains(&p.name) {
                let d = Diagnostic::error(
                    at,
                    format!(
                        "task `{}` does not give param `{}`, which child workflow `{}` requires",
                        t.name.name, p.name, info.written
                    ),
                )
                .with_label("missing param")
                .with_related(p.span, format!("`{}` declared here", p.name))
                .with_help(format!("add `{} = …` to the task's `params`", p.name));
                self.diags.push(d);
            }
        }
    }

    /// `tasks.t.output.NAME` of a child-run task: `NAME` must be one of the child's outputs.
    pub(super) fn child_output_var(
        &self,
        span: Span,
        task: &str,
        field: Option<&str>,
    ) -> Option<Diagnostic> {
        let info = self.names.children.get(task)?;
        let field = field?;
        if info.outputs.iter().any(|o| o == field) {
            return None;
        }
        let d = Diagnostic::error(
            span,
            format!(
                "child workflow `{}` (task `{task}`) declares no output `{field}`",
                info.written
            ),
        )
        .with_label("not one of its outputs");
        let names: Vec<&str> = info.outputs.iter().map(String::as_str).collect();
        let d = d.with_suggestion(field, names.iter().copied());
        Some(if d.help.is_some() {
            d
        } else if names.is_empty() {
            d.with_help(format!(
                "`{}` declares no `outputs`; add `outputs = {{ {field} = \"…\" }}` to it",
                info.written
            ))
        } else {
            d.with_help(format!(
                "its outputs are {}",
                crate::text::backticked(&names)
            ))
        })
    }
}

fn short(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}

fn is_template(v: &ast::Value) -> bool {
    matches!(&v.kind, ast::ValueKind::Str(s) if crate::template::has_tags(&s.template))
}

fn ir_kind(v: &Value) -> &'static str {
    match v {
        Value::Str(_) => "a string",
        Value::Int(_) | Value::Float(_) | Value::Duration(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
    }
}

fn literal_kind(v: &ast::Value) -> Option<&'static str> {
    Some(match &v.kind {
        ast::ValueKind::Str(_) => "a string",
        ast::ValueKind::Number(_) => "a number",
        ast::ValueKind::Bool(_) => "a boolean",
        ast::ValueKind::List(_) => "a list",
        ast::ValueKind::Map(_) => "a map",
        _ => return None,
    })
}
