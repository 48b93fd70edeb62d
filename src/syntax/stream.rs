//! Parsing a well-formed file item by item. pest keeps a queue of every token of what it
//! parses; for a whole file of a hundred thousand tasks that queue dominates the memory and
//! time of checking. Here the file is walked by the grammar's own structure — the workflow's
//! opening, each item, each phase's opening and items — and pest parses one item at a time,
//! so its queue holds one item. Any surprise (a syntax error, text this walk does not
//! expect) gives up, and the caller parses the whole file as one, which reports the error
//! exactly as before. A large phase's items are parsed on the machine's cores at once
//! ([`phase_items`]); the AST is the same, piece for piece.

use pest::Parser as _;

use super::ast::{self, Item, Phase, PhaseItem, Workflow};
use super::build::{significant, Builder};
use super::{CondParser, Rule};
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};

/// The AST of a well-formed file, or `None` to parse it whole.
pub(super) fn parse(file: FileId, text: &str) -> Option<(ast::File, Vec<Diagnostic>)> {
    parse_split(file, text, Split::for_machine())
}

/// [`parse`], with large phases cut as `split` says.
pub(super) fn parse_split(
    file: FileId,
    text: &str,
    split: Split,
) -> Option<(ast::File, Vec<Diagnostic>)> {
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
            phase(&mut b, text, pos, split)?
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

/// A phase: its opening, then its items, then `}`.
fn phase(b: &mut Builder, text: &str, start: usize, split: Split) -> Option<(Item, usize)> {
    let (name, pos) = head(b, Rule::phase_head, text, start)?;
    let (items, pos) = phase_items(b, text, pos, split)?;
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

/// When a phase's items are parsed on several threads.
#[derive(Clone, Copy, Debug)]
pub(super) struct Split {
    /// A phase shorter than this is parsed on one thread (a thread costs tens of µs; a task
    /// line about three).
    pub min_bytes: usize,
    /// A phase with fewer bracketed bodies (`task … { … }`) than this is parsed on one thread
    /// too: a body goes through pest (about 6 µs), a line without one through the byte scan
    /// (`simple_task`, a fraction of a µs), and a thread with its own fresh memory costs more
    /// than it saves on lines. `conductor check` of a 20k fan-out of simple lines took 16.6 →
    /// 14.6 ms on one thread (minima of 21, alternated; medians 22.3 → 17.1); of 20k templated
    /// tasks, 86 ms on two threads against 129 on one.
    pub min_bodies: usize,
    /// Pieces (threads) at most; 0: as many as the machine has cores, up to four.
    pub parts: usize,
}

impl Split {
    /// A phase of ≥ 128 KiB (some 3,000 tasks) on up to four of the machine's cores.
    fn for_machine() -> Split {
        Split {
            min_bytes: 128 * 1024,
            min_bodies: 1_000,
            parts: 0,
        }
    }
}

/// A phase's items from `pos` (after its `{`) through its `}`, and the position after it.
///
/// A large phase is parsed on several threads, speculatively: the text is cut at lines that
/// look like the start of a task, each piece is parsed on a thread of its own from its cut to
/// the next, and a piece is kept only when the piece before it stopped exactly at its cut, as
/// a walk on one thread would have. A cut inside a string or a comment, or past the phase's
/// end, is never reached exactly; the walk then goes on from where it is, on one thread.
fn phase_items(
    b: &mut Builder,
    text: &str,
    pos: usize,
    split: Split,
) -> Option<(Vec<PhaseItem>, usize)> {
    let cuts = cuts(text, pos, split);
    if cuts.is_empty() {
        let run = items(b, text, pos, usize::MAX)?;
        return Some((run.items, run.end));
    }
    let file = b.file_id();
    let (first, rest) = std::thread::scope(|s| {
        let threads: Vec<_> = cuts
            .iter()
            .enumerate()
            .map(|(i, &from)| {
                let to = cuts.get(i + 1).copied().unwrap_or(usize::MAX);
                s.spawn(move || {
                    let mut b = Builder::new(file);
                    items(&mut b, text, from, to).map(|run| (run, b))
                })
            })
            .collect();
        let first = items(b, text, pos, cuts[0]);
        let rest: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().ok().flatten())
            .collect();
        (first, rest)
    });
    let mut run = first?;
    let mut all = std::mem::take(&mut run.items);
    for (piece, &cut) in rest.into_iter().zip(&cuts) {
        if run.closed {
            return Some((all, run.end));
        }
        match piece {
            Some((next, built)) if run.end == cut => {
                b.diags.extend(built.diags);
                b.rhai_ranges.extend(built.rhai_ranges);
                run = next;
                all.append(&mut run.items);
            }
            // The cut was not where an item starts: on from here, on this thread.
            _ => break,
        }
    }
    if !run.closed {
        run = items(b, text, run.end, usize::MAX)?;
        all.append(&mut run.items);
    }
    Some((all, run.end))
}

/// Items parsed from one position.
struct Run {
    items: Vec<PhaseItem>,
    /// After the phase's `}` when `closed`, else where the next item starts.
    end: usize,
    closed: bool,
}

/// A phase's items from `pos`, until its `}` or the first item that starts at or after `stop`.
fn items(b: &mut Builder, text: &str, mut pos: usize, stop: usize) -> Option<Run> {
    let mut items = Vec::new();
    loop {
        pos = skip(text, pos);
        if pos >= stop {
            return Some(Run {
                items,
                end: pos,
                closed: false,
            });
        }
        if text[pos..].starts_with('}') {
            return Some(Run {
                items,
                end: pos + 1,
                closed: true,
            });
        }
        let rule = match word(text, pos) {
            "task" => {
                if let Some((task, end)) = simple_task(b.file_id(), text, pos) {
                    items.push(PhaseItem::Task(Box::new(task)));
                    pos = comma(text, end);
                    continue;
                }
                Rule::task
            }
            "gate" => Rule::gate,
            "enforce" => Rule::enforce,
            _ => Rule::setting,
        };
        let (pair, end) = one(rule, text, pos)?;
        b.offset = pos;
        items.push(b.phase_item(pair));
        pos = comma(text, end);
    }
}

/// A task at `pos` of the form most tasks of a large file have — `task NAME on AGENT`, then
/// optionally `after A, B, …`, with ASCII names, blanks between the words, no comment, no
/// `{ … }` body — read without pest; `None` for anything else, which the caller parses with the
/// grammar's `task` rule. The grammar defines the language: this builds the same `Task` that
/// rule and `Builder::task` build, spans included, and ends where that rule ends — after the
/// blanks that follow it, pest's implicit whitespace before an optional part that is absent
/// (checked against pest in `syntax::tests`). pest pays a stack probe on each of the ~150
/// rule, sequence and repetition calls of such a line; a 20k-task file spent a fifth of its
/// parse there.
pub(super) fn simple_task(file: FileId, text: &str, pos: usize) -> Option<(ast::Task, usize)> {
    let bytes = text.as_bytes();
    let ident = |at: usize| -> Option<ast::Ident> {
        let name = word(text, at);
        if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return None;
        }
        Some(ast::Ident {
            name: name.to_string(),
            span: Span::new(file, at, at + name.len()),
        })
    };
    if !keyword(text, pos, "task") {
        return None;
    }
    let mut at = blanks(bytes, pos + 4)?;
    let name = ident(at)?;
    at = blanks(bytes, name.span.end as usize)?;
    if !keyword(text, at, "on") {
        return None;
    }
    at = blanks(bytes, at + 2)?;
    let agent = ident(at)?;
    // `on workflow "f.cond"` (a child run) and `on pool.agent` go through the grammar.
    if agent.name == "workflow" || bytes.get(agent.span.end as usize) == Some(&b'.') {
        return None;
    }
    at = blanks(bytes, agent.span.end as usize)?;
    let mut after = Vec::new();
    if keyword(text, at, "after") {
        at = blanks(bytes, at + 5)?;
        let first = ident(at)?;
        at = blanks(bytes, first.span.end as usize)?;
        // Sized exactly, as the builder sizes it: a vector grown by `push` holds four names
        // (120 spare bytes a task; 12 MB of a 100k-task file's peak).
        after = vec![first];
        while bytes.get(at) == Some(&b',') {
            let next = ident(blanks(bytes, at + 1)?)?;
            at = blanks(bytes, next.span.end as usize)?;
            after.push(next);
        }
        after.shrink_to_fit();
    }
    // A body, or a name that runs on into letters pest does not take.
    if matches!(bytes.get(at), Some(b'{') | Some(0x80..)) {
        return None;
    }
    let task = ast::Task {
        name,
        agent,
        child: None,
        after,
        body: None,
        span: Span::new(file, pos, at),
    };
    Some((task, at))
}

/// Past the blanks (space, tab, CR, LF) at `at`; `None` where a comment or a byte-order mark
/// starts, which the grammar also skips but [`simple_task`] leaves to it.
fn blanks(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        match bytes.get(at) {
            Some(b' ' | b'\t' | b'\r' | b'\n') => at += 1,
            Some(b'/') if matches!(bytes.get(at + 1), Some(b'/' | b'*')) => return None,
            Some(0xEF) => return None,
            _ => return Some(at),
        }
    }
}

/// Where to cut a phase whose items start at `pos`: the starts of `task` lines spread evenly
/// over the phase, or none for a small phase or a single core.
pub(super) fn cuts(text: &str, pos: usize, split: Split) -> Vec<usize> {
    let Some((end, bodies)) = phase_end(text, pos, split.min_bytes) else {
        return Vec::new();
    };
    if bodies < split.min_bodies {
        return Vec::new();
    }
    // Asked only for a large phase: it reads the process's CPU limits.
    let parts = match split.parts {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        n => n,
    };
    let mut cuts: Vec<usize> = Vec::new();
    for i in 1..parts {
        let from = pos + (end - pos) * i / parts;
        let from = cuts.last().map_or(from, |&c| from.max(c + 1));
        if let Some(cut) = task_line(text, from, end) {
            cuts.push(cut);
        }
    }
    cuts
}

/// Where the phase whose items start at `pos` likely ends (its `}`), when it is at least
/// `min_bytes` long, and how many of its items have a body in braces. An estimate (the
/// brackets `check_nesting` counts); only speed depends on it.
fn phase_end(text: &str, pos: usize, min_bytes: usize) -> Option<(usize, usize)> {
    if text.len() - pos < min_bytes {
        return None;
    }
    let mut depth = 0usize;
    let mut bodies = 0;
    for (i, bracket) in super::brackets(text, pos) {
        match bracket {
            b'}' if depth == 0 => return (i - pos >= min_bytes).then_some((i, bodies)),
            b'{' if depth == 0 => {
                bodies += 1;
                depth += 1;
            }
            b'{' | b'[' | b'(' => depth += 1,
            _ => depth = depth.saturating_sub(1),
        }
    }
    None
}

/// The start of the first line in `from..end` whose first word is `task` (`from` may fall
/// inside a character: only bytes are compared before a line's start).
fn task_line(text: &str, from: usize, end: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = from;
    while at < end {
        let line = at + bytes[at..end].iter().position(|&c| c == b'\n')? + 1;
        let blanks = bytes[line..end]
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        if keyword(text, line + blanks, "task") {
            return Some(line + blanks);
        }
        at = line;
    }
    None
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
