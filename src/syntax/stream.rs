//! Parsing a well-formed file item by item. pest keeps a queue of every token of what it
//! parses; for a whole file of a hundred thousand tasks that queue dominates the memory and
//! time of checking. Here the file is walked by the grammar's own structure — the workflow's
//! opening, each item, each phase's opening and items — and pest parses one item at a time,
//! so its queue holds one item. Any surprise (a syntax error, text this walk does not
//! expect) gives up, and the caller parses the whole file as one, which reports the error
//! exactly as before.

use pest::Parser as _;

use super::ast::{self, Item, Phase, Workflow};
use super::build::{significant, Builder};
use super::{CondParser, Rule};
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};

/// The AST of a well-formed file, or `None` to parse it whole.
pub(super) fn parse(file: FileId, text: &str) -> Option<(ast::File, Vec<Diagnostic>)> {
    let mut b = Builder::new(file);
    let mut pos = skip(text, 0);
    let start = pos;
    let (name, end) = head(&mut b, Rule::workflow_head, text, pos)?;
    pos = end;
    let mut items = Vec::new();
    loop {
        pos = skip(text, pos);
        if text[pos..].starts_with('}') {
            pos += 1;
            break;
        }
        let simple_phase =
            keyword(text, pos, "phase") && one(Rule::phase_head, text, pos).is_some();
        let (item, end) = if simple_phase {
            phase(&mut b, text, pos)?
        } else {
            let rule = match word(text, pos) {
                "phase" if one(Rule::phase_instance, text, pos).is_some() => Rule::phase_instance,
                "phase" => Rule::phase,
                "use" => Rule::use_item,
                "import" => Rule::import_item,
                "export" => Rule::export_item,
                "rule" => Rule::rule_def,
                "param" => Rule::param,
                "agent" => Rule::agent,
                "enforce" => Rule::enforce,
                "feedback" => Rule::feedback,
                _ => Rule::setting,
            };
            let (pair, end) = one(rule, text, pos)?;
            b.offset = pos;
            (b.item(pair), end)
        };
        items.push(item);
        pos = comma(text, end);
    }
    let span = Span::new(file, start, pos);
    if skip(text, pos) != text.len() {
        return None;
    }
    let workflow = Workflow { name, items, span };
    let comments = super::comments::scan(file, text, &b.rhai_ranges);
    Some((ast::File { workflow, comments }, b.diags))
}

/// A phase: its opening, then its items one by one, then `}`.
fn phase(b: &mut Builder, text: &str, start: usize) -> Option<(Item, usize)> {
    let (name, mut pos) = head(b, Rule::phase_head, text, start)?;
    let mut items = Vec::new();
    loop {
        pos = skip(text, pos);
        if text[pos..].starts_with('}') {
            pos += 1;
            break;
        }
        let rule = match word(text, pos) {
            "task" => Rule::task,
            "gate" => Rule::gate,
            "enforce" => Rule::enforce,
            _ => Rule::setting,
        };
        let (pair, end) = one(rule, text, pos)?;
        b.offset = pos;
        items.push(b.phase_item(pair));
        pos = comma(text, end);
    }
    let span = Span::new(b.file_id(), start, pos);
    Some((
        Item::Phase(Phase {
            name,
            params: None,
            items,
            span,
        }),
        pos,
    ))
}

/// An opening (`workflow NAME {`, `phase NAME {`): its name and where it ends.
fn head(b: &mut Builder, rule: Rule, text: &str, pos: usize) -> Option<(ast::Ident, usize)> {
    let (pair, end) = one(rule, text, pos)?;
    b.offset = pos;
    let name = significant(pair).next()?;
    Some((b.ident(name), end))
}

/// Parses one `rule` at `pos`; its pair and the position after it.
fn one(rule: Rule, text: &str, pos: usize) -> Option<(pest::iterators::Pair<'_, Rule>, usize)> {
    let pair = CondParser::parse(rule, &text[pos..]).ok()?.next()?;
    let end = pos + pair.as_span().end();
    Some((pair, end))
}

/// Skips whitespace and comments, as the grammar's `WHITESPACE` and `COMMENT` do.
fn skip(text: &str, mut pos: usize) -> usize {
    let bytes = text.as_bytes();
    loop {
        let rest = &text[pos..];
        if let Some(c) = rest
            .chars()
            .next()
            .filter(|c| matches!(c, ' ' | '\t' | '\r' | '\n' | '\u{FEFF}'))
        {
            pos += c.len_utf8();
        } else if rest.starts_with("//") {
            pos += rest.find('\n').unwrap_or(rest.len());
        } else if let Some(body) = rest.strip_prefix("/*") {
            match body.find("*/") {
                Some(i) => pos += 2 + i + 2,
                None => return pos,
            }
        } else {
            return pos.min(bytes.len());
        }
    }
}

/// Skips the optional comma after an item, and what surrounds it.
fn comma(text: &str, pos: usize) -> usize {
    let after = skip(text, pos);
    if text[after..].starts_with(',') {
        after + 1
    } else {
        pos
    }
}

/// The identifier at `pos`, or "".
fn word(text: &str, pos: usize) -> &str {
    let rest = &text[pos..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Whether the keyword `kw` stands at `pos`.
fn keyword(text: &str, pos: usize, kw: &str) -> bool {
    word(text, pos) == kw
}
