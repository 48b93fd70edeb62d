//! `conductor fmt`: the canonical layout of a `.cond` file, printed from the AST.
//!
//! Four-space indentation, one item per line, a blank line kept where the author left one
//! (several collapse into one). A block of settings (`agent`, a task body, a map) stays on one
//! line when it fits in [`WIDTH`] columns and holds no comment; otherwise one entry per line.
//! Comments are kept: each is printed before the item that follows it, or after the item on
//! whose line it ends. Strings, numbers and durations are printed as written; rhai code keeps its
//! own layout, re-indented as a block. Formatting never changes meaning: the checked model of a
//! file and of its formatted text are equal (tested on every example and fixture).

use crate::diag::Diagnostic;
use crate::source::SourceMap;
use crate::syntax;
use crate::syntax::ast::*;

/// The line width blocks are joined within.
pub const WIDTH: usize = 100;
const INDENT: &str = "    ";

/// Formats `.cond` text, or returns its syntax errors.
pub fn format_source(name: &str, text: &str) -> Result<String, (SourceMap, Vec<Diagnostic>)> {
    let mut map = SourceMap::new();
    let file = map.add(name, name, text);
    match syntax::parse(file, text) {
        Ok((ast, _)) => Ok(format(&ast, text)),
        Err(diags) => Err((map, diags)),
    }
}

/// Prints a parsed file in the canonical layout.
pub(super) fn format(file: &File, text: &str) -> String {
    let mut p = Printer {
        text,
        comments: &file.comments,
        next: 0,
        out: String::with_capacity(text.len()),
        last_end: 0,
    };
    p.workflow(&file.workflow);
    p.flush_comments(usize::MAX, 0, false);
    while p.out.ends_with("\n\n") {
        p.out.pop();
    }
    if !p.out.ends_with('\n') {
        p.out.push('\n');
    }
    p.out
}

struct Printer<'a> {
    text: &'a str,
    comments: &'a [Comment],
    /// The first comment not printed yet.
    next: usize,
    out: String,
    /// End of the last item or comment printed, for blank-line detection.
    last_end: usize,
}

impl Printer<'_> {
    fn indent(&mut self, depth: usize) {
        for _ in 0..depth {
            self.out.push_str(INDENT);
        }
    }

    /// Whether the source has a blank line between the last thing printed and `pos`.
    fn blank_before(&self, pos: usize) -> bool {
        let from = self.last_end.min(pos);
        let between = self.text.get(from..pos).unwrap_or("");
        between.matches('\n').count() >= 2
    }

    /// Prints the comments that start before `pos`, each on its own line.
    fn flush_comments(&mut self, pos: usize, depth: usize, first_in_block: bool) {
        let mut first = first_in_block;
        while let Some(c) = self.comments.get(self.next) {
            if c.span.start as usize >= pos {
                break;
            }
            if !first && self.blank_before(c.span.start as usize) {
                self.out.push('\n');
            }
            self.indent(depth);
            // Continuation lines of a block comment are kept as written.
            self.out.push_str(&c.text);
            self.out.push('\n');
            self.last_end = c.span.end as usize;
            self.next += 1;
            first = false;
        }
    }

    /// Starts an item at `span`: its leading comments and a kept blank line.
    fn begin(&mut self, start: usize, depth: usize, first_in_block: bool) {
        let had_comments = self.next;
        self.flush_comments(start, depth, first_in_block);
        let first = first_in_block && self.next == had_comments;
        if !first && self.blank_before(start) {
            self.out.push('\n');
        }
        self.indent(depth);
    }

    /// Ends an item's line, with a comment that starts on the item's last line.
    fn end(&mut self, end: usize) {
        if let Some(c) = self.comments.get(self.next) {
            let start = c.span.start as usize;
            let between = self.text.get(end..start).unwrap_or("\n");
            if start >= end && !between.contains('\n') && !c.text.contains('\n') {
                self.out.push(' ');
                self.out.push_str(&c.text);
                self.next += 1;
                self.last_end = c.span.end as usize;
                self.out.push('\n');
                return;
            }
        }
        self.last_end = end;
        self.out.push('\n');
    }

    /// Whether any comment lies inside `span`.
    fn has_comment_in(&self, span: crate::source::Span) -> bool {
        self.comments[self.next..]
            .iter()
            .take_while(|c| c.span.start < span.end)
            .any(|c| c.span.start >= span.start)
    }

    fn close(&mut self, end: usize, depth: usize) {
        // Comments left before the closing brace stay inside the block.
        self.flush_comments(end, depth + 1, false);
        self.indent(depth);
        self.out.push('}');
    }

    fn workflow(&mut self, wf: &Workflow) {
        self.flush_comments(wf.span.start as usize, 0, true);
        self.out.push_str("workflow ");
        self.out.push_str(&wf.name.name);
        self.out.push_str(" {\n");
        self.last_end = wf.name.span.end as usize;
        for (i, item) in wf.items.iter().enumerate() {
            self.begin(item.span().start as usize, 1, i == 0);
            self.item(item, 1);
            self.end(item.span().end as usize);
        }
        self.close(wf.span.end as usize, 0);
        self.end(wf.span.end as usize);
    }

    fn item(&mut self, item: &Item, depth: usize) {
        match item {
            Item::Setting(s) => self.setting(s, depth),
            Item::Use(u) => {
                self.out.push_str("use ");
                let raw = self.raw(u.path.span);
                self.out.push_str(&raw);
            }
            Item::Param(p) => {
                self.out.push_str("param ");
                self.out.push_str(&p.name.name);
                if let Some(v) = &p.default {
                    self.out.push_str(" = ");
                    self.value(v, depth);
                }
                if let Some(settings) = &p.settings {
                    self.out.push(' ');
                    let prefix = INDENT.len() * depth + "param ".len() + p.name.name.len() + 1;
                    self.settings_block(settings, p.span, prefix, depth);
                }
            }
            Item::Agent(a) => {
                self.out.push_str("agent ");
                self.out.push_str(&a.name.name);
                self.out.push(' ');
                let prefix = INDENT.len() * depth + "agent ".len() + a.name.name.len() + 1;
                self.settings_block(&a.settings, a.span, prefix, depth);
            }
            Item::Enforce(r) => {
                self.out.push_str("enforce ");
                self.rule(&r.rule, depth);
            }
            Item::Phase(p) => self.phase(p, depth),
            Item::Feedback(f) => {
                self.out.push_str("feedback ");
                if let Some(t) = &f.target {
                    self.out.push_str("to ");
                    self.out.push_str(&t.name);
                    self.out.push(' ');
                }
                self.rule(&f.rule, depth);
            }
        }
    }

    fn phase(&mut self, p: &Phase, depth: usize) {
        self.out.push_str("phase ");
        self.out.push_str(&p.name.name);
        if p.items.is_empty() && !self.has_comment_in(p.span) {
            self.out.push_str(" {}");
            return;
        }
        self.out.push_str(" {\n");
        self.last_end = p.name.span.end as usize;
        for (i, item) in p.items.iter().enumerate() {
            self.begin(item.span().start as usize, depth + 1, i == 0);
            match item {
                PhaseItem::Setting(s) => self.setting(s, depth + 1),
                PhaseItem::Task(t) => self.task(t, depth + 1),
                PhaseItem::Gate(g) => {
                    self.out.push_str("gate ");
                    self.rule(&g.rule, depth + 1);
                }
                PhaseItem::Enforce(r) => {
                    self.out.push_str("enforce ");
                    self.rule(&r.rule, depth + 1);
                }
            }
            self.end(item.span().end as usize);
        }
        self.close(p.span.end as usize, depth);
    }

    fn task(&mut self, t: &Task, depth: usize) {
        let start = self.out.len();
        self.out.push_str("task ");
        self.out.push_str(&t.name.name);
        self.out.push_str(" on ");
        match &t.child {
            Some(file) => {
                self.out.push_str("workflow ");
                let raw = self.raw(file.span);
                self.out.push_str(&raw);
            }
            None => self.out.push_str(&t.agent.name),
        }
        if !t.after.is_empty() {
            self.out.push_str(" after ");
            let names: Vec<&str> = t.after.iter().map(|a| a.name.as_str()).collect();
            self.out.push_str(&names.join(", "));
        }
        let Some(body) = &t.body else { return };
        if body.is_empty() && !self.has_comment_in(t.span) {
            return;
        }
        self.out.push(' ');
        let prefix = INDENT.len() * depth + (self.out.len() - start);
        let items: Vec<BodyItem<'_>> = body
            .iter()
            .map(|i| match i {
                TaskItem::Setting(s) => BodyItem::Setting(s),
                TaskItem::When(w) => BodyItem::When(w),
            })
            .collect();
        self.block(&items, t.span, prefix, depth);
    }

    fn settings_block(
        &mut self,
        settings: &[Setting],
        span: crate::source::Span,
        prefix: usize,
        depth: usize,
    ) {
        let items: Vec<BodyItem<'_>> = settings.iter().map(BodyItem::Setting).collect();
        self.block(&items, span, prefix, depth);
    }

    /// `{ a = 1, b = 2 }` when it fits and holds no comment, else one entry per line.
    fn block(
        &mut self,
        items: &[BodyItem<'_>],
        span: crate::source::Span,
        prefix: usize,
        depth: usize,
    ) {
        if items.is_empty() && !self.has_comment_in(span) {
            self.out.push_str("{}");
            return;
        }
        if !self.has_comment_in(span) {
            let parts: Option<Vec<String>> =
                items.iter().map(|i| self.inline_body_item(i)).collect();
            if let Some(parts) = parts {
                let line = format!("{{ {} }}", parts.join(", "));
                if prefix + line.len() <= WIDTH {
                    self.out.push_str(&line);
                    return;
                }
            }
        }
        self.out.push_str("{\n");
        for (i, item) in items.iter().enumerate() {
            let item_span = item.span();
            self.begin(item_span.start as usize, depth + 1, i == 0);
            match item {
                BodyItem::Setting(s) => self.setting(s, depth + 1),
                BodyItem::When(w) => {
                    self.out.push_str("when ");
                    self.rule(&w.rule, depth + 1);
                }
            }
            self.end(item_span.end as usize);
        }
        self.close(span.end as usize, depth);
    }

    fn inline_body_item(&self, item: &BodyItem<'_>) -> Option<String> {
        match item {
            BodyItem::Setting(s) => Some(format!("{} = {}", s.name.name, self.inline(&s.value)?)),
            BodyItem::When(w) => Some(format!("when {}", self.inline_rule(&w.rule)?)),
        }
    }

    fn setting(&mut self, s: &Setting, depth: usize) {
        self.out.push_str(&s.name.name);
        self.out.push_str(" = ");
        self.value(&s.value, depth);
    }

    fn raw(&self, span: crate::source::Span) -> String {
        self.text.get(span.range()).unwrap_or("").to_string()
    }

    /// A value on one line, or `None` when it cannot or should not be.
    fn inline(&self, v: &Value) -> Option<String> {
        let s = match &v.kind {
            ValueKind::Str(lit) => {
                let raw = self.raw(lit.span);
                if raw.contains('\n') {
                    return None;
                }
                raw
            }
            ValueKind::Number(t) => t.clone(),
            ValueKind::Bool(b) => b.to_string(),
            ValueKind::Bare(b) => b.clone(),
            ValueKind::List(items) => {
                let parts: Option<Vec<String>> = items.iter().map(|i| self.inline(i)).collect();
                format!("[{}]", parts?.join(", "))
            }
            ValueKind::Map(entries) if entries.is_empty() => "{}".to_string(),
            ValueKind::Map(entries) => {
                let parts: Option<Vec<String>> = entries
                    .iter()
                    .map(|e| Some(format!("{} = {}", self.key(&e.key), self.inline(&e.value)?)))
                    .collect();
                format!("{{ {} }}", parts?.join(", "))
            }
            ValueKind::Call(c) => self.inline_call(c)?,
        };
        Some(s)
    }

    fn inline_call(&self, c: &Call) -> Option<String> {
        let args: Option<Vec<String>> = c.args.iter().map(|a| self.inline(a)).collect();
        Some(format!("{}({})", c.name.name, args?.join(", ")))
    }

    fn key(&self, key: &MapKey) -> String {
        match key {
            MapKey::Ident(i) => i.name.clone(),
            MapKey::Str(s) => self.raw(s.span),
        }
    }

    fn value(&mut self, v: &Value, depth: usize) {
        let line_start = self.out.rfind('\n').map_or(0, |i| i + 1);
        let used = self.out.len() - line_start;
        if let Some(s) = self.inline(v) {
            if used + s.len() <= WIDTH || !matches!(v.kind, ValueKind::List(_) | ValueKind::Map(_))
            {
                self.out.push_str(&s);
                return;
            }
        }
        match &v.kind {
            ValueKind::Str(lit) => self.triple(lit, depth),
            ValueKind::List(items) => {
                self.out.push_str("[\n");
                for item in items {
                    self.indent(depth + 1);
                    self.value(item, depth + 1);
                    self.out.push_str(",\n");
                }
                self.indent(depth);
                self.out.push(']');
            }
            ValueKind::Map(entries) => {
                self.out.push_str("{\n");
                for e in entries {
                    self.indent(depth + 1);
                    let key = self.key(&e.key);
                    self.out.push_str(&key);
                    self.out.push_str(" = ");
                    self.value(&e.value, depth + 1);
                    self.out.push('\n');
                }
                self.indent(depth);
                self.out.push('}');
            }
            ValueKind::Call(c) => {
                self.out.push_str(&c.name.name);
                self.out.push('(');
                for (i, a) in c.args.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.value(a, depth);
                }
                self.out.push(')');
            }
            // Scalars are always printed inline above.
            ValueKind::Number(_) | ValueKind::Bool(_) | ValueKind::Bare(_) => {}
        }
    }

    /// A multi-line `"""` string, its lines indented one level below the item.
    fn triple(&mut self, lit: &StrLit, depth: usize) {
        let raw = self.raw(lit.span);
        let body = raw
            .strip_prefix("\"\"\"")
            .and_then(|r| r.strip_suffix("\"\"\""))
            .unwrap_or(&raw);
        let dedented = crate::syntax::dedent_raw(body);
        // Lines are re-indented as a whole, so the common indentation the parser removes is
        // exactly the indentation printed here.
        self.out.push_str("\"\"\"\n");
        for line in dedented.split('\n') {
            if !line.is_empty() {
                self.indent(depth + 1);
                self.out.push_str(line);
            }
            self.out.push('\n');
        }
        self.indent(depth + 1);
        self.out.push_str("\"\"\"");
    }

    fn inline_rule(&self, r: &Rule) -> Option<String> {
        match r {
            Rule::Call(c) => self.inline_call(c),
            Rule::Block(b) => {
                let code = crate::text::normalize_code(&b.raw);
                if code.contains('\n') || code.contains("//") || code.contains("/*") {
                    return None;
                }
                Some(if code.is_empty() {
                    "{}".to_string()
                } else {
                    format!("{{ {code} }}")
                })
            }
        }
    }

    fn rule(&mut self, r: &Rule, depth: usize) {
        if let Some(s) = self.inline_rule(r) {
            self.out.push_str(&s);
            return;
        }
        match r {
            Rule::Call(c) => {
                let v = Value {
                    kind: ValueKind::Call(c.clone()),
                    span: c.span,
                };
                self.value(&v, depth);
            }
            Rule::Block(b) => {
                let code = crate::text::normalize_code(&b.raw);
                self.out.push_str("{\n");
                for line in code.split('\n') {
                    if !line.is_empty() {
                        self.indent(depth + 1);
                        self.out.push_str(line);
                    }
                    self.out.push('\n');
                }
                self.indent(depth);
                self.out.push('}');
            }
        }
    }
}

enum BodyItem<'a> {
    Setting(&'a Setting),
    When(&'a RuleItem),
}

impl BodyItem<'_> {
    fn span(&self) -> crate::source::Span {
        match self {
            BodyItem::Setting(s) => s.span,
            BodyItem::When(w) => w.span,
        }
    }
}
