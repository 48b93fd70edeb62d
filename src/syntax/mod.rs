//! The pest parser for `.cond` files and the builder of the owned, spanned AST.
//!
//! This is the only module that sees pest. It returns an [`ast::File`] or the syntax error in
//! words ("expected `after` or `{`"), never a pest type.

pub mod ast;
mod build;
mod comments;
mod fmt;
mod stream;
mod strings;

use pest::Parser as _;

pub use fmt::{format_source, WIDTH};
pub use strings::dedent as dedent_raw;

use crate::diag::Diagnostic;
use crate::source::{FileId, Span};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/cond.pest"]
struct CondParser;

/// Brackets nested deeper than this are refused before parsing, so hostile input cannot
/// exhaust the parser's stack.
pub const MAX_NESTING: usize = 128;

/// Parses one `.cond` file. On success the AST may still come with diagnostics for problems
/// found while building it (a bad escape, a bad number); on a syntax error only the error.
pub fn parse(file: FileId, text: &str) -> Result<(ast::File, Vec<Diagnostic>), Vec<Diagnostic>> {
    if let Some(diag) = check_nesting(file, text) {
        return Err(vec![diag]);
    }
    if let Some(parsed) = stream::parse(file, text) {
        return Ok(parsed);
    }
    parse_whole(file, text)
}

/// Parses the file as one (the exact syntax error, or a file the item-by-item walk declined).
fn parse_whole(file: FileId, text: &str) -> Result<(ast::File, Vec<Diagnostic>), Vec<Diagnostic>> {
    let pairs = match CondParser::parse(Rule::file, text) {
        Ok(pairs) => pairs,
        Err(_) => return Err(vec![syntax_error(file, text)]),
    };
    let mut builder = build::Builder::new(file);
    let workflow = builder.file(pairs);
    let comments = comments::scan(file, text, &builder.rhai_ranges);
    Ok((ast::File { workflow, comments }, builder.diags))
}

/// Re-parses a file known to be invalid with pest's detailed tracking, and says in words what
/// was expected where.
fn syntax_error(file: FileId, text: &str) -> Diagnostic {
    // Detail tracking costs time, so it is only turned on once a file has failed; it stays on
    // afterwards so concurrent parses of invalid files all get the same, detailed message.
    pest::set_error_detail(true);
    let err = match CondParser::parse(Rule::file, text) {
        Ok(_) => return Diagnostic::general("internal error: the parser disagreed with itself"),
        Err(err) => err,
    };
    let pos = match err.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    if let pest::error::ErrorVariant::CustomError { message } = &err.variant {
        // pest stopped at its stack (or call) limit instead of overflowing: nesting that the
        // bracket count before parsing does not see, inside a rule's code (braces after a
        // quote character, comments inside comments).
        let pos = pos.min(text.len());
        let len = text[pos..].chars().next().map_or(0, char::len_utf8);
        return Diagnostic::error(
            Span::new(file, pos, pos + len),
            format!("the file is nested too deeply to parse here ({message})"),
        )
        .with_label("too deep from here on")
        .with_help(
            "braces or `/*` comments are nested thousands of levels deep; a workflow never \
             needs this much nesting: is the file generated wrongly?",
        );
    }
    let mut expected: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !expected.contains(&s) {
            expected.push(s);
        }
    };
    if let pest::error::ErrorVariant::ParsingError { positives, .. } = &err.variant {
        for rule in positives {
            if let Some(word) = describe_rule(*rule) {
                push(word.to_string());
            }
        }
    }
    if let Some(attempts) = err.parse_attempts() {
        for token in attempts.expected_tokens() {
            // Literal tokens print as themselves; character ranges and built-ins are covered
            // by the rule that wanted them.
            let token = token.to_string();
            if !token.contains("..") && !NOISE.contains(&token.as_str()) {
                push(describe_token(&token));
            }
        }
    }
    collapse_values(&mut expected);
    expected.sort_by_key(|s| (!s.starts_with('`'), s.clone()));
    let pos = pos.min(text.len());
    let rest = &text[pos..];
    if let Some(diag) = unclosed(file, text, pos) {
        return diag;
    }
    let (found, len) = describe_found(rest);
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    // `export` followed by something that cannot be exported.
    let before = text[..pos].trim_end();
    let previous = before
        .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap_or("");
    if previous == "export" && !word.is_empty() {
        return Diagnostic::error(
            Span::new(file, pos, pos + word.len()),
            format!("`{word}` cannot be exported"),
        )
        .with_label("not `agent`, `phase` or `rule`")
        .with_help("a file exports its agents, phases and rules: `export agent NAME { … }`");
    }
    // `name value` where `name = value` was meant.
    let keyword = matches!(
        word.as_str(),
        "gate" | "task" | "when" | "after" | "on" | "to"
    );
    if !word.is_empty() && !keyword && expected.iter().any(|e| e == "`=`") {
        let after = &rest[word.len()..];
        let next = after.trim_start_matches([' ', '\t']);
        let keyword_typo = keyword_near(&word, &expected).is_some();
        if !keyword_typo && !next.starts_with('=') && !next.starts_with('\n') && !next.is_empty() {
            let at = pos + word.len() + (after.len() - next.len());
            return Diagnostic::error(
                Span::new(file, at, at + next.chars().next().map_or(0, char::len_utf8)),
                format!("expected `=` after `{word}`"),
            )
            .with_label("expected `=` here")
            .with_help(format!("a setting is written `{word} = value`"));
        }
    }
    let message = match expected.len() {
        0 => format!("unexpected {found}"),
        _ => format!("expected {}, found {found}", join_or(&expected)),
    };
    let mut diag =
        Diagnostic::error(Span::new(file, pos, pos + len), message).with_label("unexpected here");
    if let Some(near) = keyword_near(&word, &expected) {
        diag = diag.with_help(format!("did you mean `{near}`?"));
    } else if matches!(word.as_str(), "gate" | "task") {
        diag = diag.with_help(format!("`{word}` belongs inside a `phase {{ … }}`"));
    } else if word == "when" {
        diag = diag.with_help("`when` belongs inside a task's `{ … }`");
    } else if pos >= text.len() {
        diag = diag.with_help("a `{`, `[` or `(` opened earlier is not closed");
    }
    diag
}

/// A keyword among the expected tokens that `word` is probably a typo of.
fn keyword_near<'a>(word: &str, expected: &'a [String]) -> Option<&'a str> {
    if word.is_empty() {
        return None;
    }
    let keywords = expected
        .iter()
        .filter_map(|e| e.strip_prefix('`').and_then(|e| e.strip_suffix('`')))
        .filter(|k| k.chars().all(|c| c.is_ascii_alphabetic()));
    crate::diag::suggest(word, keywords)
}

/// A comment, string, `"""` string or rule block opened at `pos` and never closed.
fn unclosed(file: FileId, text: &str, pos: usize) -> Option<Diagnostic> {
    // An unclosed `"""` parses as the empty string `""` followed by a stray `"`.
    let pos = if text[..pos].ends_with("\"\"") && text[pos..].starts_with('"') {
        pos - 2
    } else {
        pos
    };
    let rest = &text[pos..];
    if rest.starts_with("/*") && !rest[2..].contains("*/") {
        return Some(
            Diagnostic::error(Span::new(file, pos, pos + 2), "unclosed comment")
                .with_label("this `/*` is never closed")
                .with_help("end the comment with `*/`, or write `//` for one line"),
        );
    }
    if rest.starts_with("\"\"\"") && !rest[3..].contains("\"\"\"") {
        return Some(
            Diagnostic::error(Span::new(file, pos, pos + 3), "unclosed `\"\"\"` string")
                .with_label("this string is never closed")
                .with_help("end it with `\"\"\"`"),
        );
    }
    if rest.starts_with('"') && !rest.starts_with("\"\"\"") {
        let line = rest[1..].split('\n').next().unwrap_or("");
        let mut escaped = false;
        let closed = line.chars().any(|c| {
            let close = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            close
        });
        if !closed {
            return Some(
                Diagnostic::error(Span::new(file, pos, pos + 1), "unclosed string")
                    .with_label("this string is not closed on its line")
                    .with_help(
                        "strings end on the line they start; use `\"\"\"` for several lines",
                    ),
            );
        }
    }
    if rest.starts_with('{') && !balanced(rest) {
        return Some(
            Diagnostic::error(Span::new(file, pos, pos + 1), "unclosed `{`")
                .with_label("this `{` has no matching `}`")
                .with_help(
                    "add the missing `}`; braces inside rule strings and comments do not count",
                ),
        );
    }
    None
}

/// Whether the `{` that starts `text` is closed, skipping strings and comments.
fn balanced(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'`' => {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return true;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// Tokens of whitespace, comments and rhai internals: possible almost anywhere, never news.
const NOISE: &[&str] = &[
    "BUILTIN_RULE",
    "/*",
    "//",
    "\u{FEFF}",
    " ",
    "\t",
    "\r",
    "\n",
    "'",
    "`",
    "_",
    "*/",
];

/// What may start a value: said once as "a value" when any value would do.
const VALUE_STARTS: &[&str] = &[
    "`\"\"\"`",
    "`\"`",
    "`-`",
    "`[`",
    "`{`",
    "`true`",
    "`false`",
    "`true` or `false`",
    "a name",
    "a number",
    "a string",
];

/// Folds the ways to start a value into "a value" when one is expected ("expected `\"\"\"`,
/// `\"`, `-`, `[`, `false`, `true`, `true` or `false`, `{`, a name, a number, a string or a
/// value" said one thing eleven times), and `true` and `false` into the rule that names both.
fn collapse_values(expected: &mut Vec<String>) {
    if expected.iter().any(|e| e == "a value") {
        expected.retain(|e| !VALUE_STARTS.contains(&e.as_str()));
    } else if expected.iter().any(|e| e == "`true` or `false`") {
        expected.retain(|e| e != "`true`" && e != "`false`");
    }
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Names what stands at the error position, and how many bytes to underline.
fn describe_found(rest: &str) -> (String, usize) {
    let Some(c) = rest.chars().next() else {
        return ("end of file".to_string(), 0);
    };
    if c.is_ascii_alphabetic() || c == '_' {
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(40)
            .collect();
        let len = word.len();
        return (format!("`{word}`"), len);
    }
    if c == '\n' || c == '\r' {
        return ("end of line".to_string(), 1);
    }
    if c.is_control() {
        return (
            format!("control character U+{:04X}", c as u32),
            c.len_utf8(),
        );
    }
    (format!("`{c}`"), c.len_utf8())
}

fn describe_token(token: &str) -> String {
    match token {
        "\"" => "`\"`".to_string(),
        "\"\"\"" => "`\"\"\"`".to_string(),
        other => format!("`{other}`"),
    }
}

/// The words for a rule that was expected, or `None` for rules too small to mention (their
/// literals are reported as tokens instead).
fn describe_rule(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::ident | Rule::bare | Rule::qname => "a name",
        Rule::string_lit | Rule::string_inner => "a string",
        Rule::triple_string | Rule::triple_inner => "a string",
        Rule::number => "a number",
        Rule::boolean => "`true` or `false`",
        Rule::rhai_block | Rule::rule_call => "a rule (`{ … }` or `name(…)`)",
        Rule::list | Rule::map | Rule::call => "a value",
        Rule::setting => "a setting",
        Rule::task => "`task`",
        Rule::child_workflow => "`workflow \"file.cond\"`",
        Rule::gate => "`gate`",
        Rule::when => "`when`",
        Rule::enforce => "`enforce`",
        Rule::after => "`after`",
        Rule::task_body | Rule::param_body => "`{`",
        Rule::EOI => "end of file",
        Rule::kw_workflow => "`workflow`",
        Rule::kw_use => "`use`",
        Rule::kw_param => "`param`",
        Rule::kw_agent => "`agent`",
        Rule::kw_enforce => "`enforce`",
        Rule::kw_feedback => "`feedback`",
        Rule::kw_to => "`to`",
        Rule::kw_phase => "`phase`",
        Rule::kw_gate => "`gate`",
        Rule::kw_task => "`task`",
        Rule::kw_on => "`on`",
        Rule::kw_after => "`after`",
        Rule::kw_when => "`when`",
        Rule::kw_import => "`import`",
        Rule::kw_as => "`as`",
        Rule::kw_export => "`export`",
        Rule::kw_rule => "`rule`",
        _ => return None,
    })
}

/// Refuses input nested deeper than [`MAX_NESTING`] brackets (outside strings and comments).
fn check_nesting(file: FileId, text: &str) -> Option<Diagnostic> {
    let mut depth = 0usize;
    for (i, bracket) in brackets(text, 0) {
        if !matches!(bracket, b'{' | b'[' | b'(') {
            depth = depth.saturating_sub(1);
            continue;
        }
        depth += 1;
        if depth > MAX_NESTING {
            return Some(
                Diagnostic::error(
                    Span::new(file, i, i + 1),
                    format!("brackets are nested more than {MAX_NESTING} levels deep"),
                )
                .with_label("too deep")
                .with_help(
                    "a workflow never needs this much nesting; is the file generated wrongly?",
                ),
            );
        }
    }
    None
}

/// The brackets of `text` from `from` on that stand outside strings and comments, with their
/// byte offsets: a lexical scan, not a parse (an unclosed string ends at its line, an unclosed
/// comment at the end of the text; the parser reports those).
pub(super) fn brackets(text: &str, from: usize) -> impl Iterator<Item = (usize, u8)> + '_ {
    let bytes = text.as_bytes();
    // The position after the first `end` at or after `from`, or the end of the text.
    let skip_to = move |from: usize, end: &[u8]| -> usize {
        bytes[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(bytes.len(), |p| from + p + end.len())
    };
    let mut i = from;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let at = i;
            i += 1;
            match bytes[at] {
                b'"' if bytes[at..].starts_with(b"\"\"\"") => i = skip_to(at + 3, b"\"\"\""),
                b'"' => {
                    // A one-line string, through its closing quote.
                    while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'/' if bytes.get(at + 1) == Some(&b'/') => i = skip_to(at, b"\n"),
                b'/' if bytes.get(at + 1) == Some(&b'*') => i = skip_to(at + 2, b"*/"),
                c @ (b'{' | b'[' | b'(' | b'}' | b']' | b')') => return Some((at, c)),
                _ => {}
            }
        }
        None
    })
}

#[cfg(test)]
mod tests;
