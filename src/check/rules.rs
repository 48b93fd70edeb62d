//! Rules (inline rhai and named calls): compiled at check time, with their errors mapped back
//! to the `.cond` file.

use super::ir::{Rule, RuleSource};
use super::Checker;
use crate::diag::{self, Annotate, Diagnostic};
use crate::policy::{KnownNames, PolicyHost, Problem, RuleKind};
use crate::source::{FileId, Span};
use crate::syntax::ast;

impl Checker<'_> {
    pub(super) fn rule(&mut self, kind: RuleKind, rule: &ast::Rule) -> Option<Rule> {
        // A rule copied from an imported file is located in that file.
        let file = self.map.get(rule.span().file);
        let (line, col) = file.line_col(rule.span().start as usize);
        let location = format!("{}:{line}:{col}", file.name);
        match rule {
            ast::Rule::Block(block) => self.inline_rule(kind, block, location),
            ast::Rule::Call(call) => self.named_rule(kind, call, location),
        }
    }

    fn inline_rule(
        &mut self,
        kind: RuleKind,
        block: &ast::RhaiBlock,
        location: String,
    ) -> Option<Rule> {
        let names = KnownNames {
            tasks: &self.names.tasks,
            params: &self.names.params,
        };
        let code = format!("{}{}", block.prelude, block.raw);
        let compiled = PolicyHost::get().compile_inline(kind, &code, &self.modules, &names);
        match compiled {
            Ok(compiled) => Some(Rule {
                kind,
                source: RuleSource::Inline(crate::text::normalize_code(&code)),
                compiled,
                location,
                span: block.span,
            }),
            Err(problems) => {
                let prelude = block.prelude.chars().count();
                for mut p in problems {
                    // The prelude shares the first line with the code as written.
                    if p.line == 1 {
                        p.col = p.col.saturating_sub(prelude).max(1);
                    }
                    let base = block.code_span.start as usize;
                    let d = problem_diag(block.code_span.file, base, &block.raw, &p);
                    let d = if d.message.starts_with("unknown variable") {
                        let mut d = d;
                        let article = if kind == RuleKind::Enforce { "an" } else { "a" };
                        d.message = format!("{} in {article} `{}` rule", d.message, kind.keyword());
                        d
                    } else {
                        d
                    };
                    self.diags.push(d);
                }
                None
            }
        }
    }

    fn named_rule(&mut self, kind: RuleKind, call: &ast::Call, location: String) -> Option<Rule> {
        let name = &call.name.name;
        let arities = self.modules.rule_arities(name);
        if arities.is_empty() {
            self.unknown_rule(call);
            return None;
        }
        if !arities.contains(&call.args.len()) {
            self.wrong_arity(call, &arities);
            return None;
        }
        self.warn_context_reads(kind, call);
        let mut args = Vec::new();
        for a in &call.args {
            args.push(self.reader().literal(a)?);
        }
        let json: Vec<serde_json::Value> = args.iter().map(|a| a.to_json()).collect();
        Some(Rule {
            kind,
            source: RuleSource::Named {
                name: name.clone(),
                args,
            },
            compiled: PolicyHost::get().named_rule(kind, &self.modules, name, &json),
            location,
            span: call.span,
        })
    }

    fn unknown_rule(&mut self, call: &ast::Call) {
        let name = &call.name.name;
        let candidates: Vec<String> = self
            .modules
            .functions
            .iter()
            .filter(|f| !f.params.is_empty())
            .map(|f| f.name.clone())
            .collect();
        let mut d = Diagnostic::error(call.name.span, format!("unknown rule `{name}`"))
            .with_label(format!("no `use`d module defines `fn {name}(ctx, …)`"));
        d = match diag::suggest(name, candidates.iter().map(String::as_str)) {
            Some(near) => d.with_help(format!("did you mean `{near}`?")),
            None if self.modules.functions.is_empty() => d.with_help(
                "named rules call functions of `use`d modules, and this workflow \
                 `use`s none; e.g. `use \"policies/standard.rhai\"`",
            ),
            None => d.with_help(format!(
                "define `fn {name}(ctx, …)` in a `use`d module, or write the rule inline as `{{ … }}`"
            )),
        };
        self.diags.push(d);
    }

    fn wrong_arity(&mut self, call: &ast::Call, arities: &[usize]) {
        let name = &call.name.name;
        let takes = arities
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        let plural = if arities == [1] { "" } else { "s" };
        self.error(
            call.span,
            format!(
                "rule `{name}` takes {takes} argument{plural}, found {}",
                call.args.len()
            ),
        )
        .with_label("wrong number of arguments")
        .help = Some(format!(
            "the module defines {} (the first parameter is the context, passed by the engine)",
            self.modules
                .functions
                .iter()
                .filter(|f| &f.name == name)
                .map(|f| format!("`fn {name}({})`", f.params.join(", ")))
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    }

    /// A rule written for another kind reads fields this kind's context lacks
    /// (`enforce phase_gate(0.8)` reads `ctx.success_rate`): at run time they are `()`, and
    /// such a rule usually fails closed. A warning, not an error: a helper shared between
    /// kinds may guard its reads (`ctx.x ?? 0`, `"x" in ctx`).
    fn warn_context_reads(&mut self, kind: RuleKind, call: &ast::Call) {
        let name = &call.name.name;
        let fields = kind.context_fields();
        let reads = self.modules.context_reads(name, call.args.len());
        let Some(missing) = reads.iter().find(|r| !fields.contains(&r.as_str())) else {
            return;
        };
        let fits: Vec<&str> = [
            RuleKind::Gate,
            RuleKind::Enforce,
            RuleKind::When,
            RuleKind::Feedback,
        ]
        .into_iter()
        .filter(|k| {
            reads
                .iter()
                .all(|r| k.context_fields().contains(&r.as_str()))
        })
        .map(RuleKind::keyword)
        .collect();
        let article = a_or_an(kind.keyword());
        let mut help = format!(
            "{article} `{}` rule's context has {}",
            kind.keyword(),
            fields
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !fits.is_empty() {
            help.push_str(&format!(
                "; `{name}` reads like {} rule",
                fits.iter()
                    .map(|k| format!("{} `{k}`", a_or_an(k)))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
        self.diags.push(
            Diagnostic::warning(
                call.name.span,
                format!(
                    "rule `{name}` reads `ctx.{missing}`, which {article} `{}` rule's \
                     context does not have",
                    kind.keyword()
                ),
            )
            .with_label(format!("not {article} `{}` rule?", kind.keyword()))
            .with_help(format!("{help}; at run time `ctx.{missing}` is `()`")),
        );
    }
}

/// The article before a rule keyword: "an `enforce` rule", "a `gate` rule".
fn a_or_an(keyword: &str) -> &'static str {
    if keyword == "enforce" {
        "an"
    } else {
        "a"
    }
}

/// A diagnostic for a rhai problem at (line, col) of `code`, which starts at byte `base` of
/// `file`.
pub(super) fn problem_diag(file: FileId, base: usize, code: &str, p: &Problem) -> Diagnostic {
    let span = if p.line == 0 {
        Span::new(file, base, base + code.len())
    } else {
        let start = offset_in(code, p.line, p.col);
        let len: usize = code[start..].chars().take(p.len).map(char::len_utf8).sum();
        Span::new(file, base + start, base + start + len.max(1))
    };
    let mut d = Diagnostic::error(span, p.message.clone()).with_label("here");
    if let Some(h) = &p.help {
        d = d.with_help(h.clone());
    }
    d
}

/// Byte offset of a 1-based line and character column inside `code`, clamped.
fn offset_in(code: &str, line: usize, col: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match code[start..].find('\n') {
            Some(n) => start += n + 1,
            None => return code.len(),
        }
    }
    let line_text = code[start..].split('\n').next().unwrap_or("");
    start
        + line_text
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(line_text.len(), |(i, _)| i)
}
