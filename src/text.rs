//! Small text helpers shared by every layer: durations in the language's notation, counts with
//! their plural, inline code with its indentation normalised, and values made safe to print on
//! a terminal.

use std::time::Duration;

/// A duration in the language's own notation, in the largest exact unit (`90s`, `2m`, `250ms`).
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_string()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1_000 == 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// Milliseconds for people: `850ms`, `1.2s`.
pub(crate) fn millis(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// `` `a`, `b`, `c` ``: names listed in a message.
pub(crate) fn backticked(names: &[impl AsRef<str>]) -> String {
    names
        .iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `s` when `n` is not one.
pub(crate) fn plural(n: impl Into<u64>) -> &'static str {
    if n.into() == 1 {
        ""
    } else {
        "s"
    }
}

/// `3 errors`, `1 warning`.
pub(crate) fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", plural(n as u64))
}

/// Inline code as written between braces, its common indentation removed and blank lines at
/// either end dropped; the first line (after the brace) is trimmed on its own.
pub(crate) fn normalize_code(raw: &str) -> String {
    let mut lines = raw.lines();
    let first = lines.next().unwrap_or("").trim().to_string();
    let rest: Vec<&str> = lines.collect();
    let indent_of = |l: &str| l.len() - l.trim_start_matches([' ', '\t']).len();
    let indent = rest
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent_of(l))
        .min()
        .unwrap_or(0);
    let mut out: Vec<String> = Vec::with_capacity(rest.len() + 1);
    out.push(first);
    for l in rest {
        if l.trim().is_empty() {
            out.push(String::new());
        } else {
            out.push(l[indent.min(indent_of(l))..].trim_end().to_string());
        }
    }
    let start = out.iter().position(|l| !l.is_empty()).unwrap_or(out.len());
    let end = out
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(start, |i| i + 1);
    out[start..end].join("\n")
}

/// The first 12 characters of a hash (all of a shorter one).
pub(crate) fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// `text` cut to at most `max` characters, with an ellipsis where it was cut.
pub(crate) fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]).into(),
        None => text.into(),
    }
}

/// `text` as one shell word: unchanged when it is plain, else in single quotes.
pub(crate) fn shell_quote(text: &str) -> std::borrow::Cow<'_, str> {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        text.into()
    } else {
        format!("'{}'", text.replace('\'', r"'\''")).into()
    }
}

/// Characters that change how a terminal shows what follows rather than showing themselves:
/// C0 and C1 controls (ESC starts ANSI sequences that move the cursor or clear the screen),
/// DEL, and the bidirectional overrides and isolates that make text read in another order
/// than it is stored.
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` safe to print on one line of a terminal: every control, newline included, and every
/// bidirectional control is shown as an escape (`\n`, `\u{1b}`), so a value from outside (a
/// path an agent chose, a model's message) cannot fake rows, move the cursor or clear the
/// screen.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    escape_where(text, unprintable)
}

/// `text` safe to print on a terminal as lines: like [`printable`], but newlines are kept
/// (the run view's own layout uses them). Escape sequences (clearing the screen, moving the
/// cursor), carriage returns and bidirectional controls from values are shown escaped.
pub(crate) fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    escape_where(text, |c| c != '\n' && unprintable(c))
}

fn escape_where(text: &str, bad: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(&bad) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' if bad(c) => out.push_str("\\n"),
            '\r' if bad(c) => out.push_str("\\r"),
            '\t' if bad(c) => out.push_str("\\t"),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_shown_not_obeyed() {
        assert_eq!(printable("plain/path.rs"), "plain/path.rs");
        assert_eq!(printable("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(printable("\u{1b}[2Jx"), "\\u{1b}[2Jx");
        assert_eq!(printable("abc\u{202e}txt.exe"), "abc\\u{202e}txt.exe");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
    }

    #[test]
    fn durations_use_the_largest_exact_unit() {
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
        assert_eq!(duration(Duration::from_secs(7200)), "2h");
        assert_eq!(millis(850), "850ms");
        assert_eq!(millis(1250), "1.2s");
    }

    #[test]
    fn code_loses_its_common_indentation_and_blank_ends() {
        let raw = "  \n        if x {\n            y\n        }\n    ";
        assert_eq!(normalize_code(raw), "if x {\n    y\n}");
        assert_eq!(normalize_code(" a "), "a");
        assert_eq!(normalize_code(""), "");
    }

    #[test]
    fn counts_say_their_plural() {
        assert_eq!(count(1, "error"), "1 error");
        assert_eq!(count(2, "error"), "2 errors");
    }
}
