//! Turns pest pairs into the owned AST. The grammar guarantees the shape of each pair, so the
//! builder only decodes literals; problems it finds there (bad escapes) become diagnostics.

use pest::iterators::{Pair, Pairs};

use super::ast::*;
use super::strings;
use super::Rule as R;
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};

pub(super) struct Builder {
    file: FileId,
    /// Where the text pest saw starts in the file (a file is parsed item by item).
    pub offset: usize,
    pub diags: Vec<Diagnostic>,
    /// Byte ranges of rhai code, where `//` and `/*` belong to rhai, not to `fmt`'s comments.
    pub rhai_ranges: Vec<(usize, usize)>,
}

impl Builder {
    pub(super) fn new(file: FileId) -> Builder {
        Builder {
            file,
            offset: 0,
            diags: Vec::new(),
            rhai_ranges: Vec::new(),
        }
    }

    pub(super) fn file_id(&self) -> FileId {
        self.file
    }

    fn span(&self, pair: &Pair<'_, R>) -> Span {
        let s = pair.as_span();
        Span::new(self.file, self.offset + s.start(), self.offset + s.end())
    }

    pub(super) fn file(&mut self, mut pairs: Pairs<'_, R>) -> Workflow {
        // INVARIANT: the grammar's `file` rule is `SOI ~ workflow ~ EOI`.
        let file = pairs.next().expect("file rule");
        let workflow = file
            .into_inner()
            .find(|p| p.as_rule() == R::workflow)
            .expect("workflow rule");
        self.workflow(workflow)
    }

    fn workflow(&mut self, pair: Pair<'_, R>) -> Workflow {
        let span = self.span(&pair);
        let mut inner = significant(pair);
        let name = self.ident(inner.next().expect("workflow name"));
        let items = inner.map(|p| self.item(p)).collect();
        Workflow { name, items, span }
    }

    pub(super) fn item(&mut self, pair: Pair<'_, R>) -> Item {
        let span = self.span(&pair);
        match pair.as_rule() {
            R::setting => Item::Setting(self.setting(pair)),
            R::use_item => {
                let path = self.string(significant(pair).next().expect("use path"));
                Item::Use(Use { path, span })
            }
            R::param => {
                let mut inner = significant(pair);
                let name = self.ident(inner.next().expect("param name"));
                let (mut default, mut settings) = (None, None);
                if let Some(p) = inner.next() {
                    if p.as_rule() == R::param_body {
                        settings = Some(significant(p).map(|s| self.setting(s)).collect());
                    } else {
                        default = Some(self.value(p));
                    }
                }
                Item::Param(Param {
                    name,
                    default,
                    settings,
                    span,
                })
            }
            R::agent => {
                let mut inner = significant(pair);
                let name = self.ident(inner.next().expect("agent name"));
                let settings = inner.map(|p| self.setting(p)).collect();
                Item::Agent(Agent {
                    name,
                    settings,
                    span,
                })
            }
            R::enforce => Item::Enforce(self.rule_item(pair)),
            R::feedback => {
                let mut target = None;
                let mut rule = None;
                for p in significant(pair) {
                    match p.as_rule() {
                        R::ident => target = Some(self.ident(p)),
                        _ => rule = Some(self.rule(p)),
                    }
                }
                Item::Feedback(Feedback {
                    target,
                    rule: rule.expect("feedback rule"),
                    span,
                })
            }
            R::phase => Item::Phase(self.phase(pair)),
            R::import_item => {
                let mut inner = significant(pair);
                let path = self.string(inner.next().expect("import path"));
                let alias = self.ident(inner.next().expect("import alias"));
                Item::Import(Import { path, alias, span })
            }
            R::export_item => {
                let inner = significant(pair).next().expect("exported item");
                Item::Export(Box::new(self.item(inner)), span)
            }
            R::rule_def => {
                let mut params = Vec::new();
                let mut name = None;
                let mut body = None;
                for p in significant(pair) {
                    match p.as_rule() {
                        R::ident if name.is_none() => name = Some(self.ident(p)),
                        R::ident => params.push(self.ident(p)),
                        _ => body = self.rule(p).into_block(),
                    }
                }
                Item::RuleDef(RuleDef {
                    name: name.expect("rule name"),
                    params,
                    body: body.expect("rule body"),
                    span,
                })
            }
            R::phase_instance => {
                let mut inner = significant(pair);
                let name = self.ident(inner.next().expect("instance name"));
                let template = self.ident(inner.next().expect("instance template"));
                let args = inner.map(|p| self.named_arg(p)).collect();
                Item::PhaseInstance(PhaseInstance {
                    name,
                    template,
                    args,
                    span,
                })
            }
            other => unreachable!("grammar produced {other:?} as a workflow item"),
        }
    }

    fn phase(&mut self, pair: Pair<'_, R>) -> Phase {
        let span = self.span(&pair);
        let mut inner = significant(pair);
        let name = self.ident(inner.next().expect("phase name"));
        let mut params = None;
        let mut items = Vec::new();
        for p in inner {
            if p.as_rule() == R::phase_params {
                params = Some(p.into_inner().map(|a| self.named_arg(a)).collect());
            } else {
                items.push(self.phase_item(p));
            }
        }
        Phase {
            name,
            params,
            items,
            span,
        }
    }

    /// `name = value` (an instance's argument) or `name` (a template parameter without default).
    fn named_arg(&mut self, pair: Pair<'_, R>) -> NamedArg {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let name = self.ident(inner.next().expect("argument name"));
        let value = inner.next().map(|v| self.value(v));
        NamedArg { name, value, span }
    }

    pub(super) fn phase_item(&mut self, p: Pair<'_, R>) -> PhaseItem {
        match p.as_rule() {
            R::setting => PhaseItem::Setting(Box::new(self.setting(p))),
            R::task => PhaseItem::Task(Box::new(self.task(p))),
            R::gate => PhaseItem::Gate(Box::new(self.rule_item(p))),
            R::enforce => PhaseItem::Enforce(Box::new(self.rule_item(p))),
            other => unreachable!("grammar produced {other:?} in a phase"),
        }
    }

    fn task(&mut self, pair: Pair<'_, R>) -> Task {
        let span = self.span(&pair);
        let mut inner = significant(pair);
        let name = self.ident(inner.next().expect("task name"));
        let on = inner.next().expect("task agent");
        let (agent, child) = if on.as_rule() == R::child_workflow {
            let span = self.span(&on);
            let kw = Ident {
                name: "workflow".into(),
                span: span.sub(0, "workflow".len()),
            };
            let file = significant(on).next().expect("child workflow file");
            (kw, Some(self.string(file)))
        } else {
            (self.ident(on), None)
        };
        let mut after = Vec::new();
        let mut body = None;
        for p in inner {
            match p.as_rule() {
                R::after => after = significant_exact(p, |i| self.ident(i)),
                R::task_body => {
                    body = Some(significant_exact(p, |i| match i.as_rule() {
                        R::when => TaskItem::When(self.rule_item(i)),
                        _ => TaskItem::Setting(self.setting(i)),
                    }))
                }
                other => unreachable!("grammar produced {other:?} in a task"),
            }
        }
        Task {
            name,
            agent,
            child: child.map(Box::new),
            after,
            body,
            span,
        }
    }

    /// `enforce`, `gate` or `when` and its rule.
    fn rule_item(&mut self, pair: Pair<'_, R>) -> RuleItem {
        let span = self.span(&pair);
        let rule = self.rule(significant(pair).next().expect("rule"));
        RuleItem { rule, span }
    }

    fn rule(&mut self, pair: Pair<'_, R>) -> Rule {
        match pair.as_rule() {
            R::rhai_block => {
                let span = self.span(&pair);
                let code = pair.into_inner().next().expect("rhai code");
                let code_span = self.span(&code);
                self.rhai_ranges
                    .push((code_span.start as usize, code_span.end as usize));
                Rule::Block(RhaiBlock {
                    raw: code.as_str().to_string(),
                    prelude: String::new(),
                    code_span,
                    span,
                })
            }
            R::rule_call => Rule::Call(self.call(pair)),
            other => unreachable!("grammar produced {other:?} as a rule"),
        }
    }

    fn call(&mut self, pair: Pair<'_, R>) -> Call {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let name = self.ident(inner.next().expect("call name"));
        let args = exact(inner.map(|p| self.value(p)));
        Call { name, args, span }
    }

    fn setting(&mut self, pair: Pair<'_, R>) -> Setting {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let name = self.ident(inner.next().expect("setting name"));
        let value = self.value(inner.next().expect("setting value"));
        Setting { name, value, span }
    }

    fn value(&mut self, pair: Pair<'_, R>) -> Value {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            R::string_lit | R::triple_string => ValueKind::Str(self.string(pair)),
            R::number => ValueKind::Number(pair.as_str().to_string()),
            R::boolean => ValueKind::Bool(pair.as_str() == "true"),
            R::list => ValueKind::List(exact(pair.into_inner().map(|p| self.value(p)))),
            R::map => ValueKind::Map(exact(pair.into_inner().map(|entry| {
                let span = self.span(&entry);
                let mut inner = entry.into_inner();
                let key = inner.next().expect("map key");
                let key = match key.as_rule() {
                    R::ident => MapKey::Ident(self.ident(key)),
                    _ => MapKey::Str(self.string(key)),
                };
                let value = self.value(inner.next().expect("map value"));
                MapEntry { key, value, span }
            }))),
            R::call => ValueKind::Call(self.call(pair)),
            R::bare => ValueKind::Bare(pair.as_str().to_string()),
            other => unreachable!("grammar produced {other:?} as a value"),
        };
        Value { kind, span }
    }

    fn string(&mut self, pair: Pair<'_, R>) -> StrLit {
        let span = self.span(&pair);
        let triple = pair.as_rule() == R::triple_string;
        let inner = pair.into_inner().next().expect("string body");
        let body_start = self.offset + inner.as_span().start();
        let decoded = strings::decode(inner.as_str(), triple);
        for (offset, len, message) in decoded.errors {
            let at = Span::new(self.file, body_start + offset, body_start + offset + len);
            self.diags.push(
                Diagnostic::error(at, message)
                    .with_label("here")
                    .with_help("the escapes are `\\n`, `\\t`, `\\\\`, `\\\"` and `\\{`"),
            );
        }
        StrLit {
            value: decoded.value,
            template: decoded.template,
            triple,
            span,
        }
    }

    pub(super) fn ident(&self, pair: Pair<'_, R>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }
}

/// The children of a pair without keyword tokens, which carry no information once parsed.
/// `items` in a vector of their exact number. `collect` reserves at least four (and one more
/// than the iterator's lower bound): for a file of 100,000 tasks with one setting each, 450
/// spare bytes a task.
fn exact<T>(items: impl ExactSizeIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    out.extend(items);
    out
}

/// The significant children of `pair`, mapped by `f`, in a vector sized once: collecting
/// a filtered iterator grows by doubling, and a 100,000-name `after` list would leave its
/// old copies (and a shrunk copy) behind in compiling's peak.
fn significant_exact<'i, T>(pair: Pair<'i, R>, f: impl FnMut(Pair<'i, R>) -> T) -> Vec<T> {
    let mut items = Vec::with_capacity(significant(pair.clone()).count());
    items.extend(significant(pair).map(f));
    items
}

pub(super) fn significant(pair: Pair<'_, R>) -> impl Iterator<Item = Pair<'_, R>> {
    pair.into_inner().filter(|p| {
        !matches!(
            p.as_rule(),
            R::kw_workflow
                | R::kw_use
                | R::kw_param
                | R::kw_agent
                | R::kw_enforce
                | R::kw_feedback
                | R::kw_to
                | R::kw_phase
                | R::kw_gate
                | R::kw_task
                | R::kw_on
                | R::kw_after
                | R::kw_when
                | R::kw_import
                | R::kw_as
                | R::kw_export
                | R::kw_rule
                | R::EOI
        )
    })
}
