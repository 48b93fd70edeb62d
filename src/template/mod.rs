//! Templates (Jinja syntax, through minijinja): the only module that sees minijinja.
//!
//! A workflow's templates are compiled once, at check time, into one [`Templates`] set that
//! the IR carries; a dispatch renders a template by its [`TemplateId`] against the attempt's
//! context. Rendering is strict (an undefined value fails the task, naming it) except in dry
//! runs, whose mocks lack the fields real agents would produce.
//!
//! Rendering is bounded ([`crate::limits`]): instructions (fuel), macro nesting, output bytes,
//! and expression depth at compile time (`scan`). Templates that compute render in a child
//! process under memory and time limits (`sandbox`); plain ones render here.

mod context;
mod sandbox;
mod scan;

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::limits::{
    MAX_TEMPLATE_DEPTH, TEMPLATE_FUEL, TEMPLATE_OUTPUT, TEMPLATE_RECURSION, TEMPLATE_TIME,
};

pub(crate) use context::{Context, Converted, Scope, TaskViews};
pub(crate) use sandbox::{
    enable as enable_sandbox, interrupt as interrupt_renders, serve as serve_sandbox,
    SUBCOMMAND as SANDBOX_SUBCOMMAND,
};

/// Which finished tasks a workflow's templates and `when` rules read, from the variables they
/// name: a run keeps a view of those only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TasksRead {
    /// None: `tasks` is not read.
    #[default]
    None,
    /// Only these tasks, each read by name (`tasks.build.output`).
    Named(std::collections::BTreeSet<String>),
    /// `tasks` as a whole (`tasks | items`, `tasks[name]`, a rule).
    All,
}

impl TasksRead {
    /// A variable a template reads (a dotted path such as `tasks.build.output`).
    fn add(&mut self, path: &str) {
        if path == "tasks" {
            *self = TasksRead::All;
        } else if let Some(rest) = path.strip_prefix("tasks.") {
            let name = rest.split('.').next().unwrap_or(rest);
            match self {
                TasksRead::All => {}
                TasksRead::Named(names) => {
                    names.insert(name.to_string());
                }
                TasksRead::None => *self = TasksRead::Named([name.to_string()].into()),
            }
        }
    }

    /// Whether task `name` is read.
    pub fn reads(&self, name: &str) -> bool {
        match self {
            TasksRead::None => false,
            TasksRead::Named(names) => names.contains(name),
            TasksRead::All => true,
        }
    }
}

/// The variables every template can read (DSL.md section 4).
pub(crate) const CONTEXT_FIELDS: [&str; 8] = [
    "params",
    "tasks",
    "input",
    "feedback",
    "loop_count",
    "attempt",
    "run",
    "item",
];

/// Names Jinja itself provides inside templates (`loop` of a for loop, `range`, …).
pub(crate) const BUILTINS: [&str; 8] = [
    "loop",
    "range",
    "dict",
    "namespace",
    "debug",
    "true",
    "false",
    "none",
];

/// A compiled template of a [`Templates`] set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TemplateId(pub u32);

/// Whether a string holds any template tag; a plain string renders as itself.
pub(crate) fn has_tags(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// A syntax error in a template: its byte range in the source, when known, and the detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub range: Option<std::ops::Range<usize>>,
    pub detail: String,
}

/// Why a template could not be rendered, in the author's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RenderError(pub String);

/// A workflow's compiled templates.
#[derive(Clone)]
pub(crate) struct Templates {
    inner: Arc<Inner>,
}

struct Inner {
    strict: minijinja::Environment<'static>,
    lenient: OnceLock<minijinja::Environment<'static>>,
    sources: Vec<Arc<str>>,
    /// Per template: whether it is plain (renders here) and the variables it reads.
    shapes: Vec<Shape>,
}

#[derive(Clone, Debug, Default)]
struct Shape {
    plain: bool,
    reads: Vec<String>,
    /// The template is one variable and nothing else (`{{ params.branch }}`): its attribute
    /// path, looked up without the engine when it names a string.
    lookup: Option<Box<[Box<str>]>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Templates({})", self.inner.sources.len())
    }
}

impl Default for Templates {
    fn default() -> Templates {
        TemplatesBuilder::default().finish()
    }
}

/// Collects a workflow's templates while it is checked.
pub(crate) struct TemplatesBuilder {
    env: minijinja::Environment<'static>,
    sources: Vec<Arc<str>>,
    shapes: Vec<Shape>,
    tasks_read: TasksRead,
    /// Each source compiled once: 10,000 tasks with the same template share one.
    seen: std::collections::HashMap<Arc<str>, TemplateId>,
}

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(TEMPLATE_RECURSION);
    env.set_formatter(|out, state, value| {
        // Everything a render emits passes here, `{% set %}` blocks and macro bodies too.
        let len = match value.as_str() {
            Some(s) => s.len(),
            None => value.to_string().len(),
        };
        if !spend(len) {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                OUTPUT_TOO_LARGE,
            ));
        }
        minijinja::escape_formatter(out, state, value)
    });
    env.add_filter("tojson", strict_tojson);
    env.add_filter("argv_items", argv_items);
    // The author's word that a `command` argument may be an option (`agents::shell`).
    env.add_filter("option", |v: minijinja::Value| v);
    env
}

const OUTPUT_TOO_LARGE: &str = "output too large";

thread_local! {
    /// Bytes the render on this thread may still emit.
    static BUDGET: Cell<usize> = const { Cell::new(usize::MAX) };
    /// How long a render on this thread may take (the task's timeout, when shorter).
    static TIME: Cell<Duration> = const { Cell::new(TEMPLATE_TIME) };
}

fn spend(n: usize) -> bool {
    BUDGET.with(|b| match b.get().checked_sub(n) {
        Some(left) => {
            b.set(left);
            true
        }
        None => {
            b.set(0);
            false
        }
    })
}

/// Renders on this thread take at most `timeout` (and never more than
/// [`TEMPLATE_TIME`]) until the guard is dropped.
pub(crate) fn time_limit(timeout: Duration) -> TimeLimit {
    let before = TIME.with(|t| t.replace(timeout.min(TEMPLATE_TIME)));
    TimeLimit { before }
}

pub(crate) struct TimeLimit {
    before: Duration,
}

impl Drop for TimeLimit {
    fn drop(&mut self) {
        TIME.with(|t| t.set(self.before));
    }
}

/// Marks a list for [`split_argv`]: a NUL (which no argument can hold) before each item; any
/// other value prints as usual.
fn argv_items(
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<minijinja::Value, minijinja::Error> {
    if value.is_undefined() && state.undefined_behavior() == minijinja::UndefinedBehavior::Strict {
        return Err(minijinja::Error::from(minijinja::ErrorKind::UndefinedError));
    }
    if value.kind() != minijinja::value::ValueKind::Seq {
        return Ok(value.clone());
    }
    let mut out = String::new();
    for item in value.try_iter()? {
        out.push('\0');
        out.push_str(&item.to_string());
    }
    if out.is_empty() {
        out.push('\0'); // an empty list: no argument at all
    }
    Ok(minijinja::Value::from(out))
}

/// The arguments a rendered expanding `command` element stands for: each item of a list, or
/// the one value.
pub(crate) fn split_argv(rendered: String) -> Vec<String> {
    match rendered.strip_prefix('\0') {
        Some("") => Vec::new(),
        Some(items) => items.split('\0').map(str::to_string).collect(),
        None => vec![rendered],
    }
}

/// The expression of a template that is exactly one `{{ … }}` and nothing else.
pub(crate) fn whole_expression(source: &str) -> Option<&str> {
    let inner = source
        .trim()
        .strip_prefix("{{")?
        .strip_suffix("}}")?
        .trim_start_matches('-')
        .trim_end_matches('-')
        .trim();
    let single = !inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%");
    (single && !inner.is_empty()).then_some(inner)
}

/// `tojson`, except that in strict rendering an undefined value is an error, not `null`: a
/// typo in `{{ tasks.x.output.fiels | tojson }}` must not send `null` to a service.
fn strict_tojson(
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
    indent: Option<minijinja::Value>,
    args: minijinja::value::Kwargs,
) -> Result<minijinja::Value, minijinja::Error> {
    if value.is_undefined() && state.undefined_behavior() == minijinja::UndefinedBehavior::Strict {
        return Err(minijinja::Error::from(minijinja::ErrorKind::UndefinedError));
    }
    minijinja::filters::tojson(value, indent, args)
}

impl Default for TemplatesBuilder {
    fn default() -> TemplatesBuilder {
        TemplatesBuilder {
            env: environment(),
            sources: Vec::new(),
            shapes: Vec::new(),
            tasks_read: TasksRead::None,
            seen: Default::default(),
        }
    }
}

impl TemplatesBuilder {
    /// Compiles a template; on success returns its id and the variables it reads (dotted
    /// paths such as `tasks.build.output`, sorted).
    pub(crate) fn add(&mut self, source: &str) -> Result<(TemplateId, Vec<String>), SyntaxError> {
        if let Some(&id) = self.seen.get(source) {
            return Ok((id, self.shapes[id.0 as usize].reads.clone()));
        }
        let id = TemplateId(self.sources.len() as u32);
        let name = id.0.to_string();
        // Before the engine's recursive parser sees it.
        let shape = scan::scan(source).map_err(|deep| SyntaxError {
            range: Some(deep.range),
            detail: format!(
                "expression nested more than {MAX_TEMPLATE_DEPTH} levels deep (each operator, \
                 filter, attribute or index lookup and bracket in a row counts)"
            ),
        })?;
        self.env
            .add_template_owned(name.clone(), source.to_string())
            .map_err(|e| SyntaxError {
                range: e.range(),
                detail: e.detail().unwrap_or("syntax error").to_string(),
            })?;
        let lookup = lookup_path(source);
        let source: Arc<str> = Arc::from(source);
        self.sources.push(source.clone());
        self.seen.insert(source, id);
        let mut vars: Vec<String> = match self.env.get_template(&name) {
            Ok(t) => t.undeclared_variables(true).into_iter().collect(),
            Err(_) => Vec::new(),
        };
        vars.sort();
        for v in &vars {
            self.tasks_read.add(v);
        }
        self.shapes.push(Shape {
            plain: shape.plain,
            reads: vars.clone(),
            lookup,
        });
        Ok((id, vars))
    }

    /// Which finished tasks the templates read.
    pub(crate) fn tasks_read(&self) -> &TasksRead {
        &self.tasks_read
    }

    pub(crate) fn finish(self) -> Templates {
        Templates {
            inner: Arc::new(Inner {
                strict: self.env,
                lenient: OnceLock::new(),
                sources: self.sources,
                shapes: self.shapes,
            }),
        }
    }
}

impl Templates {
    /// The source of a template.
    pub(crate) fn source(&self, id: TemplateId) -> &str {
        self.inner.sources.get(id.0 as usize).map_or("", |s| &**s)
    }

    /// Renders a template against `ctx`; `what` names it in errors (``prompt` of task `x``).
    /// `strict = false` renders undefined values empty (dry runs).
    pub(crate) fn render(
        &self,
        id: TemplateId,
        ctx: &Context,
        what: &dyn std::fmt::Display,
        strict: bool,
    ) -> Result<String, RenderError> {
        let shape = self.inner.shapes.get(id.0 as usize);
        if let Some(text) = shape
            .and_then(|s| s.lookup.as_deref())
            .and_then(|path| lookup(&ctx.0, path))
        {
            return Ok(text);
        }
        if shape.is_some_and(|s| !s.plain) && sandbox::available() {
            let reads = shape.map_or(&[][..], |s| &s.reads[..]);
            let time = TIME.with(Cell::get);
            return sandbox::render(self.source(id), ctx.to_json(reads), what, strict, time);
        }
        let env = if strict {
            &self.inner.strict
        } else {
            self.inner
                .lenient
                .get_or_init(|| lenient(&self.inner.strict))
        };
        let template = env
            .get_template(&id.0.to_string())
            .map_err(|e| RenderError(format!("template {what}: {e}")))?;
        bounded(&template, &ctx.0, self.source(id), what)
    }
}

/// The attribute path of a template that is one variable and nothing else
/// (`{{ tasks.build.output.sha }}`): no filter, operator, index or whitespace control.
fn lookup_path(source: &str) -> Option<Box<[Box<str>]>> {
    let inner = source.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.starts_with(['-', '+']) || inner.ends_with(['-', '+']) {
        return None;
    }
    let ident = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let path: Box<[Box<str>]> = inner.trim().split('.').map(Box::from).collect();
    path.iter().all(|s| ident(s)).then_some(path)
}

/// A one-variable template's text, when the variable is a string: what the engine would
/// render, without building its state. Anything else (a number, a map, an undefined value, an
/// error to report) is left to the engine.
fn lookup(ctx: &minijinja::Value, path: &[Box<str>]) -> Option<String> {
    let mut value = ctx.get_attr(path.first()?).ok()?;
    for name in &path[1..] {
        value = value.get_attr(name).ok()?;
    }
    let text = value.as_str()?;
    (text.len() <= TEMPLATE_OUTPUT).then(|| text.to_string())
}

fn lenient(strict: &minijinja::Environment<'static>) -> minijinja::Environment<'static> {
    let mut env = strict.clone();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env
}

/// Renders one template source against a JSON context, here: what a render process does.
pub(crate) fn render_source(
    source: &str,
    context: &serde_json::Value,
    what: &str,
    strict: bool,
) -> Result<String, RenderError> {
    let mut builder = TemplatesBuilder::default();
    let (id, _) = builder
        .add(source)
        .map_err(|e| RenderError(format!("template {what}: {}", e.detail)))?;
    let env = if strict {
        builder.env
    } else {
        lenient(&builder.env)
    };
    let template = env
        .get_template(&id.0.to_string())
        .map_err(|e| RenderError(format!("template {what}: {e}")))?;
    bounded(
        &template,
        &minijinja::Value::from_serialize(context),
        source,
        &what,
    )
}

/// A render whose output may not pass [`TEMPLATE_OUTPUT`] bytes.
fn bounded(
    template: &minijinja::Template<'_, '_>,
    ctx: &minijinja::Value,
    source: &str,
    what: &dyn std::fmt::Display,
) -> Result<String, RenderError> {
    let before = BUDGET.with(|b| b.replace(TEMPLATE_OUTPUT));
    let mut out = Capped {
        buf: Vec::new(),
        over: false,
    };
    let result = template.render_captured_to(ctx, &mut out);
    let exhausted = BUDGET.with(|b| b.replace(before)) == 0;
    match result {
        Ok(_) => Ok(String::from_utf8_lossy(&out.buf).into_owned()),
        Err(_) if out.over || exhausted => Err(RenderError(format!(
            "template {what}: its output is larger than {} MiB",
            TEMPLATE_OUTPUT >> 20
        ))),
        Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(RenderError(format!(
            "template {what}: rendering ran more than {TEMPLATE_FUEL} instructions and was \
             stopped (a loop too long?)"
        ))),
        Err(e) => Err(render_error(source, what, &e)),
    }
}

/// A writer that refuses to grow past [`TEMPLATE_OUTPUT`].
struct Capped {
    buf: Vec<u8>,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > TEMPLATE_OUTPUT {
            self.over = true;
            return Err(std::io::Error::other(OUTPUT_TOO_LARGE));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn to_json(value: &minijinja::Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// The value an undefined error is about. Minijinja points at the failing attribute, or — for
/// an undefined value piped into a filter — at the filter: widen to the whole dotted path, and
/// step back over `| filter` to the value piped in.
fn undefined_path(source: &str, start: usize, end: usize) -> Option<&str> {
    let is_path = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    let path_start = |end: usize| -> Option<usize> {
        Some(
            source
                .get(..end)?
                .rfind(|c| !is_path(c))
                .map_or(0, |i| i + 1),
        )
    };
    let (mut start, mut end) = (path_start(start)?, end);
    let text = source.get(start..end)?;
    if let Some(cut) = text.find(|c: char| !is_path(c)) {
        end = start + cut; // the range ran past the name, into a filter's arguments
    }
    // `value | f1 | f2`: the filter is not what is undefined; the value before the pipes is.
    loop {
        let before = source.get(..start)?.trim_end();
        let Some(piped) = before.strip_suffix('|') else {
            break;
        };
        let value_end = piped.trim_end().len();
        // Skip a filter's argument list: `x | default(1) | upper`.
        let value_end = match piped.trim_end().strip_suffix(')') {
            Some(inner) => inner.rfind('(').unwrap_or(value_end),
            None => value_end,
        };
        let value_start = path_start(value_end)?;
        if value_start == value_end {
            break;
        }
        (start, end) = (value_start, value_end);
    }
    source
        .get(start..end)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn render_error(source: &str, what: &dyn std::fmt::Display, e: &minijinja::Error) -> RenderError {
    let detail = match e.kind() {
        minijinja::ErrorKind::UndefinedError => {
            let at = e
                .range()
                .and_then(|r| undefined_path(source, r.start, r.end))
                .map(|s| format!(": `{s}` is not defined"))
                .unwrap_or_else(|| ": a variable is not defined".to_string());
            format!("undefined value{at}")
        }
        _ => e.detail().unwrap_or("cannot render").to_string(),
    };
    RenderError(format!("template {what}: {detail}"))
}

/// A JSON-shaped value whose strings may be templates (a task's `input`, a mock's `output`),
/// compiled once.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tree {
    /// No template anywhere inside.
    Plain(serde_json::Value),
    Template(TemplateId),
    List(Vec<Tree>),
    Map(Vec<(String, Tree)>),
}

impl Tree {
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, Tree::Plain(_))
    }

    /// The value with its templates rendered.
    pub(crate) fn render(
        &self,
        templates: &Templates,
        ctx: &Context,
        what: &dyn std::fmt::Display,
        strict: bool,
    ) -> Result<serde_json::Value, RenderError> {
        Ok(match self {
            Tree::Plain(v) => v.clone(),
            Tree::Template(id) => {
                serde_json::Value::String(templates.render(*id, ctx, what, strict)?)
            }
            Tree::List(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|i| i.render(templates, ctx, what, strict))
                    .collect::<Result<_, _>>()?,
            ),
            Tree::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(templates, ctx, what, strict)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }
}

#[cfg(test)]
mod tests;
