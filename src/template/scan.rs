//! A lexical pass over a template before the template engine parses it. It answers two
//! questions:
//!
//! - **How deeply do its expressions nest?** The engine's parser, code generator and syntax
//!   tree recurse once per level, so `- - - … 1`, `x|f|f|…`, `a.b.c…` or `1+1+…` a few thousand
//!   long would overflow the stack. Expressions deeper than [`MAX_TEMPLATE_DEPTH`] are refused
//!   here, with the place, before any recursion.
//! - **Is it plain?** Text, `{{ … }}` and `{% if %}` — no loop, assignment, macro, repetition
//!   (`*`), function or method call, and only filters that cannot multiply their input — renders
//!   in time and memory proportional to its size and the values it reads, so it is rendered in
//!   this process. Any other template is a small program and renders in a separate process
//!   under operating-system limits (see `sandbox`).

use std::ops::Range;

use crate::limits::MAX_TEMPLATE_DEPTH;

/// What the scan found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    pub plain: bool,
}

/// An expression nested deeper than [`MAX_TEMPLATE_DEPTH`]: where it crossed the limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TooDeep {
    pub range: Range<usize>,
}

/// Statements of a plain template: choices, nothing that binds, repeats or defines.
const PLAIN_STATEMENTS: [&str; 4] = ["if", "elif", "else", "endif"];

/// Filters whose output is at most proportional to their input.
const PLAIN_FILTERS: [&str; 33] = [
    "abs",
    "argv_items",
    "attr",
    "bool",
    "capitalize",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "int",
    "items",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "max",
    "min",
    "option",
    "reverse",
    "round",
    "safe",
    "sort",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
];

/// Plain filters that may take arguments; the others' arguments (`tojson(indent=…)`) can
/// multiply their output.
const PLAIN_FILTER_ARGS: [&str; 7] = ["attr", "d", "default", "round", "sort", "dictsort", "trim"];

/// Scans a template's source.
pub(crate) fn scan(source: &str) -> Result<Scan, TooDeep> {
    let mut lexer = Lexer {
        b: source.as_bytes(),
        i: 0,
        plain: true,
    };
    while let Some(open) = lexer.next_tag() {
        match open {
            Tag::Comment => lexer.skip_past(b"#}"),
            Tag::Var => lexer.expression(Close::Var)?,
            Tag::Block => {
                let word = lexer.statement_word();
                if word == "raw" {
                    lexer.skip_raw();
                    continue;
                }
                if !PLAIN_STATEMENTS.contains(&word.as_str()) {
                    lexer.plain = false;
                }
                lexer.expression(Close::Block)?;
            }
        }
    }
    Ok(Scan { plain: lexer.plain })
}

enum Tag {
    Var,
    Block,
    Comment,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Close {
    Var,
    Block,
}

/// What the last name was, to tell a filter or test from a call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Name {
    None,
    Filter(bool),
    Test,
    Other,
}

/// One bracket level of an expression: the depth where it starts and the operators in a row
/// since its last `,` or `:`.
struct Frame {
    base: usize,
    ops: usize,
}

struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    plain: bool,
}

impl Lexer<'_> {
    fn peek(&self, at: usize) -> u8 {
        self.b.get(self.i + at).copied().unwrap_or(0)
    }

    /// Moves past the next `{{`, `{%` or `{#` and says which it was.
    fn next_tag(&mut self) -> Option<Tag> {
        while self.i + 1 < self.b.len() {
            if self.b[self.i] == b'{' {
                let tag = match self.b[self.i + 1] {
                    b'{' => Some(Tag::Var),
                    b'%' => Some(Tag::Block),
                    b'#' => Some(Tag::Comment),
                    _ => None,
                };
                if let Some(tag) = tag {
                    self.i += 2;
                    return Some(tag);
                }
            }
            self.i += 1;
        }
        self.i = self.b.len();
        None
    }

    fn skip_past(&mut self, end: &[u8]) {
        self.i = find(self.b, self.i, end).map_or(self.b.len(), |p| p + end.len());
    }

    fn skip_space(&mut self) {
        while self.peek(0).is_ascii_whitespace() {
            self.i += 1;
        }
    }

    /// The statement's keyword (`if`, `for`…), without consuming it.
    fn statement_word(&mut self) -> String {
        if matches!(self.peek(0), b'-' | b'+') {
            self.i += 1;
        }
        self.skip_space();
        let start = self.i;
        let end = start
            + self.b[start..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
        String::from_utf8_lossy(&self.b[start..end]).into_owned()
    }

    /// Skips a `{% raw %}` block: its content is text, not template.
    fn skip_raw(&mut self) {
        self.skip_past(b"%}");
        while let Some(at) = find(self.b, self.i, b"endraw") {
            let before = self.b[..at]
                .iter()
                .rev()
                .find(|c| !c.is_ascii_whitespace() && **c != b'-' && **c != b'+');
            self.i = at + b"endraw".len();
            if before == Some(&b'%') {
                self.skip_past(b"%}");
                return;
            }
        }
        self.i = self.b.len();
    }

    /// Lexes one tag's expression up to its closing `}}` or `%}`, measuring its depth.
    fn expression(&mut self, close: Close) -> Result<(), TooDeep> {
        let start = self.i.saturating_sub(2);
        let mut frames = vec![Frame { base: 0, ops: 0 }];
        let mut last = Name::None;
        let mut filter_next = false;
        let mut test_next = false;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            let depth_before = {
                let f = frames.last().map_or((0, 0), |f| (f.base, f.ops));
                f.0 + f.1
            };
            let mut op = false;
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => {
                    self.i += 1;
                    continue;
                }
                b'\'' | b'"' => {
                    self.string(c);
                    last = Name::None;
                    continue;
                }
                b'0'..=b'9' => {
                    while self.peek(0).is_ascii_alphanumeric()
                        || matches!(self.peek(0), b'_' | b'.')
                    {
                        self.i += 1;
                    }
                    last = Name::None;
                    continue;
                }
                b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                    let word_start = self.i;
                    while self.peek(0).is_ascii_alphanumeric() || self.peek(0) == b'_' {
                        self.i += 1;
                    }
                    let word = &self.b[word_start..self.i];
                    match word {
                        b"and" | b"or" | b"not" | b"in" | b"if" | b"else" => op = true,
                        b"is" => {
                            op = true;
                            test_next = true;
                        }
                        _ => {
                            last = if filter_next {
                                let name = std::str::from_utf8(word).unwrap_or("");
                                if !PLAIN_FILTERS.contains(&name) {
                                    self.plain = false;
                                }
                                Name::Filter(PLAIN_FILTER_ARGS.contains(&name))
                            } else if test_next {
                                Name::Test
                            } else {
                                Name::Other
                            };
                            filter_next = false;
                            test_next = false;
                        }
                    }
                    if op {
                        last = Name::None;
                        self.push_op(&mut frames, start)?;
                    }
                    continue;
                }
                b'}' if frames.len() == 1 && close == Close::Var && self.peek(1) == b'}' => {
                    self.i += 2;
                    return Ok(());
                }
                b'%' if frames.len() == 1 && close == Close::Block && self.peek(1) == b'}' => {
                    self.i += 2;
                    return Ok(());
                }
                b'(' | b'[' | b'{' => {
                    if c == b'(' {
                        match last {
                            Name::Other => self.plain = false,
                            Name::Filter(args_ok) if !args_ok => self.plain = false,
                            _ => {}
                        }
                    }
                    frames.push(Frame {
                        base: depth_before + 1,
                        ops: 0,
                    });
                    self.i += 1;
                    self.check(&frames, start)?;
                    last = Name::None;
                    continue;
                }
                b')' | b']' | b'}' => {
                    if frames.len() > 1 {
                        frames.pop();
                    }
                    self.i += 1;
                    // The group, call or index just closed is one more level for what follows.
                    self.push_op(&mut frames, start)?;
                    last = Name::None;
                    continue;
                }
                b',' | b':' => {
                    if let Some(f) = frames.last_mut() {
                        f.ops = 0;
                    }
                }
                b'|' => {
                    op = true;
                    filter_next = true;
                }
                b'*' => {
                    self.plain = false;
                    op = true;
                    if self.peek(1) == b'*' {
                        self.i += 1;
                    }
                }
                _ => op = true,
            }
            self.i += 1;
            if op {
                last = Name::None;
                self.push_op(&mut frames, start)?;
            }
        }
        Ok(())
    }

    fn string(&mut self, quote: u8) {
        self.i += 1;
        while self.i < self.b.len() && self.b[self.i] != quote {
            self.i += if self.b[self.i] == b'\\' { 2 } else { 1 };
        }
        self.i = (self.i + 1).min(self.b.len());
    }

    fn push_op(&self, frames: &mut [Frame], start: usize) -> Result<(), TooDeep> {
        if let Some(f) = frames.last_mut() {
            f.ops += 1;
        }
        self.check(frames, start)
    }

    fn check(&self, frames: &[Frame], start: usize) -> Result<(), TooDeep> {
        let depth = frames.last().map_or(0, |f| f.base + f.ops);
        if depth > MAX_TEMPLATE_DEPTH {
            return Err(TooDeep {
                range: start..self.i.min(self.b.len()),
            });
        }
        Ok(())
    }
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: &str) -> bool {
        scan(s).expect("not too deep").plain
    }

    #[test]
    fn substitutions_choices_and_linear_filters_are_plain() {
        assert!(plain("hello {{ params.who }}"));
        assert!(plain(
            "{{ tasks.a.output.files[0].path | trim | default('x') }}"
        ));
        assert!(plain(
            "{% if loop_count == 0 %}critical{% else %}ok{% endif %}"
        ));
        assert!(plain("{{ a ~ '-' ~ b }} {{ loop_count + 1 }}"));
        assert!(plain(
            "{# {% for %} #}{% raw %}{% for x in y %}{% endraw %}"
        ));
        assert!(plain("{{ {'a': [1, 2]} | tojson }}"));
    }

    #[test]
    fn loops_assignments_repetition_and_calls_are_programs() {
        for program in [
            "{% for i in range(3) %}x{% endfor %}",
            "{% set x = 1 %}",
            "{% macro m() %}{% endmacro %}",
            "{{ 'x' * 3 }}",
            "{{ range(3) }}",
            "{{ x.items() }}",
            "{{ x | replace('a', 'b') }}",
            "{{ x | tojson(indent=2) }}",
            "{{ namespace() }}",
        ] {
            assert!(!plain(program), "{program} was plain");
        }
    }

    #[test]
    fn long_chains_are_refused_before_parsing() {
        for chain in [
            format!("{{{{ {}1 }}}}", "-".repeat(5000)),
            format!("{{{{ {}1 }}}}", "not ".repeat(5000)),
            format!("{{{{ x{} }}}}", ".a".repeat(5000)),
            format!("{{{{ x{} }}}}", "|lower".repeat(5000)),
            format!("{{{{ 1{} }}}}", "+1".repeat(5000)),
            format!("{{{{ 1{} }}}}", " if 1 else 1".repeat(5000)),
            format!("{{{{ x{} }}}}", "(1)".repeat(5000)),
            format!("{{{{ {}1{} }}}}", "[".repeat(100), "]".repeat(100)),
        ] {
            let err = scan(&chain).expect_err("accepted");
            assert_eq!(err.range.start, 0);
        }
        // Siblings are not nesting.
        let wide = format!("{{{{ [{}] }}}}", vec!["a + b"; 5000].join(", "));
        assert!(scan(&wide).is_ok());
        assert!(scan(&format!("{{{{ {}1 }}}}", "-".repeat(MAX_TEMPLATE_DEPTH))).is_ok());
    }
}
