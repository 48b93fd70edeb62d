//! What rules and templates see: the contexts of DSL.md section 4, built from the run state,
//! and template rendering (strict: an undefined variable fails the task, naming it).

use serde_json::{json, Map, Value};

use crate::check::ir::{Task, Template, Workflow};
use crate::model::{ErrorCode, RunState, TaskError, TaskResult};

/// `tasks` as rules and templates see it: name → `{ status, output, error, attempts,
/// duration_ms, agent }`, for the tasks `keep` selects.
pub(super) fn tasks_json(state: &RunState, keep: impl Fn(&TaskResult) -> bool) -> Value {
    let mut map = Map::with_capacity(state.tasks.len());
    for t in state.tasks.iter().filter(|t| keep(t)) {
        map.insert(t.task.to_string(), task_json(t));
    }
    Value::Object(map)
}

pub(super) fn task_json(t: &TaskResult) -> Value {
    json!({
        "status": t.status.as_str(),
        "output": t.output,
        "error": t.error.as_ref().map(|e| json!({ "code": e.code.as_str(), "message": e.message })),
        "attempts": t.attempts,
        "duration_ms": t.duration_ms,
        "agent": t.agent.as_deref(),
    })
}

pub(super) fn feedback_json(state: &RunState) -> Value {
    match &state.feedback {
        Some(f) => {
            json!({ "severity": f.severity.as_str(), "summary": f.summary, "details": f.details })
        }
        None => Value::Null,
    }
}

/// Renders templates with the engine's Jinja environment.
pub(super) struct Templates {
    env: minijinja::Environment<'static>,
}

impl Templates {
    /// Strict: an undefined value fails the task, naming it. A dry run is lenient instead
    /// (undefined values render empty): its mocks' outputs lack the fields real agents would
    /// produce, such as the `url` a deploy script prints.
    pub fn new(strict: bool) -> Templates {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(if strict {
            minijinja::UndefinedBehavior::Strict
        } else {
            minijinja::UndefinedBehavior::Chainable
        });
        Templates { env }
    }

    /// Renders one template; `what` names it in errors (`prompt of task `x``).
    pub fn render(
        &self,
        template: &Template,
        what: &str,
        ctx: &Value,
    ) -> Result<String, TaskError> {
        if !template.dynamic {
            return Ok(template.text.clone());
        }
        self.render_source(&template.source, what, ctx)
    }

    fn render_source(&self, source: &str, what: &str, ctx: &Value) -> Result<String, TaskError> {
        self.env.render_str(source, ctx).map_err(|e| {
            let detail = match e.kind() {
                minijinja::ErrorKind::UndefinedError => {
                    // Minijinja points at the failing attribute; widen to the whole dotted path.
                    let at = e
                        .range()
                        .and_then(|r| {
                            let start = source[..r.start]
                                .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                                .map_or(0, |i| i + 1);
                            source.get(start..r.end)
                        })
                        .map(|s| format!(": `{}` is not defined", s.trim()))
                        .unwrap_or_else(|| ": a variable is not defined".to_string());
                    format!("undefined value{at}")
                }
                _ => e.detail().unwrap_or("cannot render").to_string(),
            };
            TaskError::fatal(ErrorCode::Template, format!("template {what}: {detail}"))
        })
    }

    /// Renders every string of a JSON value that holds a template tag.
    pub fn render_value(&self, value: &Value, what: &str, ctx: &Value) -> Result<Value, TaskError> {
        Ok(match value {
            Value::String(s) if ["{{", "{%", "{#"].iter().any(|t| s.contains(t)) => {
                Value::String(self.render_source(s, what, ctx)?)
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.render_value(i, what, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_value(v, what, ctx)?)))
                    .collect::<Result<_, TaskError>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// Whether dispatching `task` needs the (costly) template context.
pub(super) fn needs_template_context(wf: &Workflow, task: &Task) -> bool {
    let dynamic_input = task.input.values().any(|v| {
        let text = v.to_json().to_string();
        text.contains("{{") || text.contains("{%") || text.contains("{#")
    });
    task.prompt.as_ref().is_some_and(|p| p.dynamic)
        || dynamic_input
        || match &wf.agent(task.agent).kind {
            crate::check::ir::AgentKind::Llm(l) => l.system.as_ref().is_some_and(|s| s.dynamic),
            crate::check::ir::AgentKind::Http(h) => {
                h.url.dynamic
                    || h.headers.values().any(|v| v.dynamic)
                    || h.body.as_ref().is_some_and(|b| b.dynamic)
            }
            crate::check::ir::AgentKind::Shell(s) => {
                s.command.iter().any(|t| t.dynamic)
                    || s.workdir.as_ref().is_some_and(|w| w.dynamic)
                    || s.env.values().any(|v| v.dynamic)
            }
            _ => false,
        }
}
