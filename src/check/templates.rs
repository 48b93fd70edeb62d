//! Templates: compiled at check time into the workflow's template set, the names they read
//! checked, their errors mapped back to the `.cond` file.

use super::ir::Template;
use super::values::Reader;
use super::Checker;
use crate::diag::{self, Annotate, Diagnostic};
use crate::policy::NameSet;
use crate::source::Span;
use crate::syntax::ast::{self, ValueKind};
use crate::template::{self, SyntaxError, Tree, BUILTINS, CONTEXT_FIELDS};

impl Checker<'_> {
    /// Compiles a string as a template and checks the names it reads.
    pub(super) fn template(&mut self, lit: &ast::StrLit, what: &str) -> Option<Template> {
        let dynamic = template::has_tags(&lit.template);
        let mut id = None;
        if dynamic {
            match self.templates.add(&lit.template) {
                Ok((compiled, vars)) => {
                    let mut bad = false;
                    for var in vars {
                        if let Some(d) = self.template_var(lit, &var, what) {
                            self.diags.push(d);
                            bad = true;
                        }
                    }
                    if bad {
                        return None;
                    }
                    id = Some(compiled);
                }
                Err(e) => {
                    let span = template_error_span(lit, &e);
                    self.error(span, format!("template error in `{what}`: {}", e.detail))
                        .with_label("here")
                        .help = Some(
                        "templates use Jinja syntax: `{{ params.name }}`, `{% if feedback %}…{% endif %}`; \
                         write `\\{` for a literal brace"
                            .into(),
                    );
                    return None;
                }
            }
        }
        Some(Template {
            source: lit.template.clone(),
            text: lit.value.clone(),
            dynamic,
            id,
            expands: false,
            span: lit.span,
        })
    }

    /// A value whose strings may be templates (`input`, a mock's `output`), compiled. Errors
    /// in its literals are the caller's to report; this reports template errors.
    pub(super) fn tree(&mut self, v: &ast::Value, what: &str) -> Tree {
        if !self.reader().shallow(v) {
            return Tree::Plain(serde_json::Value::Null);
        }
        self.tree_at(v, what)
    }

    fn tree_at(&mut self, v: &ast::Value, what: &str) -> Tree {
        match &v.kind {
            ValueKind::Str(lit) if template::has_tags(&lit.template) => {
                match self.template(lit, what).and_then(|t| t.id) {
                    Some(id) => Tree::Template(id),
                    None => Tree::Plain(serde_json::Value::Null),
                }
            }
            ValueKind::List(items) => {
                let items: Vec<Tree> = items.iter().map(|i| self.tree_at(i, what)).collect();
                if items.iter().all(Tree::is_plain) {
                    Tree::Plain(serde_json::Value::Array(
                        items.into_iter().map(plain).collect(),
                    ))
                } else {
                    Tree::List(items)
                }
            }
            ValueKind::Map(entries) => {
                let entries: Vec<(String, Tree)> = entries
                    .iter()
                    .map(|e| (e.key.name().to_string(), self.tree_at(&e.value, what)))
                    .collect();
                if entries.iter().all(|(_, t)| t.is_plain()) {
                    Tree::Plain(serde_json::Value::Object(
                        entries.into_iter().map(|(k, t)| (k, plain(t))).collect(),
                    ))
                } else {
                    Tree::Map(entries)
                }
            }
            _ => {
                // Problems in the literal were reported by whoever read it.
                let mut quiet = Vec::new();
                let value = Reader { diags: &mut quiet }.literal(v);
                Tree::Plain(value.map_or(serde_json::Value::Null, |v| v.to_json()))
            }
        }
    }

    /// Checks one variable path a template reads (`params.spec`, `tasks.build.output`).
    fn template_var(&self, lit: &ast::StrLit, var: &str, what: &str) -> Option<Diagnostic> {
        let mut parts = var.split('.');
        let top = parts.next().unwrap_or("");
        if BUILTINS.contains(&top) || top == "self" {
            return None;
        }
        let span = find_in_string(lit, var);
        if !CONTEXT_FIELDS.contains(&top) {
            let d = Diagnostic::error(
                span,
                format!("unknown template variable `{top}` in `{what}`"),
            )
            .with_label("not in the template context");
            return Some(match diag::suggest(top, CONTEXT_FIELDS.iter().copied()) {
                Some(near) => d.with_help(format!("did you mean `{near}`?")),
                None => d.with_help(format!(
                    "templates can read {}",
                    CONTEXT_FIELDS
                        .iter()
                        .map(|v| format!("`{v}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            });
        }
        if top == "item" {
            return self.item_var(span, parts.next(), what);
        }
        let second = parts.next()?;
        if top == "tasks" && self.names.fan_out.contains(second) && parts.next() == Some("output") {
            return Some(
                Diagnostic::error(
                    span,
                    format!("task `{second}` fans out: it has `outputs`, not `output`"),
                )
                .with_label("one output per instance")
                .with_help(format!(
                    "read `tasks.{second}.outputs` (a list in index order), `tasks.{second}.results` or `tasks.{second}.items`"
                )),
            );
        }
        if top == "tasks" && parts.next() == Some("output") {
            if let Some(d) = self.child_output_var(span, second, parts.next()) {
                return Some(d);
            }
        }
        let (list, kind): (&dyn NameSet, &str) = match top {
            "params" => (&self.names.params, "param"),
            "tasks" => (&self.names.tasks, "task"),
            _ => return None,
        };
        if list.has(second) {
            return None;
        }
        let d = Diagnostic::error(span, format!("unknown {kind} `{second}` in `{what}`"))
            .with_label(format!("no {kind} of this name"));
        Some(d.with_suggestion(second, list.names()))
    }
}

impl Checker<'_> {
    /// `item` and `item.x`: defined in fan-out tasks; for a matrix, `x` is one of its keys.
    fn item_var(&self, span: Span, field: Option<&str>, what: &str) -> Option<Diagnostic> {
        match (&self.item, field) {
            (super::fanout::ItemShape::Absent, _) => Some(
                Diagnostic::error(
                    span,
                    format!("`item` in `{what}` of a task that does not fan out"),
                )
                .with_label("no item here")
                .with_help("`item` is defined in a task with `matrix` or `for_each`"),
            ),
            (super::fanout::ItemShape::Keys(keys), Some(f)) if !keys.iter().any(|k| k == f) => {
                let d =
                    Diagnostic::error(span, format!("the matrix has no key `{f}` (in `{what}`)"))
                        .with_label("not a key of the matrix");
                Some(match diag::suggest(f, keys.iter().map(String::as_str)) {
                    Some(near) => d.with_help(format!("did you mean `{near}`?")),
                    None => {
                        let list: Vec<String> =
                            keys.iter().map(|k| format!("`item.{k}`")).collect();
                        d.with_help(format!("an item of this matrix has {}", list.join(", ")))
                    }
                })
            }
            _ => None,
        }
    }
}

fn plain(t: Tree) -> serde_json::Value {
    match t {
        Tree::Plain(v) => v,
        _ => serde_json::Value::Null,
    }
}

/// Where in a string literal `needle` is written, or the whole literal.
fn find_in_string(lit: &ast::StrLit, needle: &str) -> Span {
    // Offsets inside the value match the file only for one-line strings without escapes.
    if !lit.triple && lit.value.len() + 2 == lit.span.len() {
        if let Some(at) = lit.value.find(needle) {
            return lit.span.sub(1 + at, needle.len());
        }
    }
    lit.span
}

fn template_error_span(lit: &ast::StrLit, err: &SyntaxError) -> Span {
    if !lit.triple && lit.template.len() + 2 == lit.span.len() {
        if let Some(range) = &err.range {
            let start = range.start.min(lit.template.len());
            let end = range.end.clamp(start, lit.template.len());
            return lit.span.sub(1 + start, (end - start).max(1));
        }
    }
    lit.span
}
