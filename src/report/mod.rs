//! Presenting runs: the live view for people, `--json` lines, and the texts of `show`, `why`
//! and `runs`. Nothing here changes a run.

mod human;
mod json;
mod show;
mod story;

pub use human::HumanView;
pub use json::JsonLines;
pub use show::{duration_text, show_text, usage_line, RunRow};
pub use story::why_text;

use crate::model::OutputTail;

/// How many of the last lines of each stream a failure shows.
const TAIL_LINES: usize = 12;

/// The last lines a failed attempt printed, each prefixed with `indent` and a bar: stdout
/// then stderr, whichever is not empty.
pub fn tail_lines(tail: &OutputTail, indent: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (name, text) in [("stdout", &tail.stdout), ("stderr", &tail.stderr)] {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            continue;
        }
        let shown = &lines[lines.len().saturating_sub(TAIL_LINES)..];
        let more = if shown.len() < lines.len() {
            ", last lines"
        } else {
            ""
        };
        out.push(format!("{indent}│ {name}{more}:"));
        for l in shown {
            out.push(format!("{indent}│   {}", crate::text::truncate(l, 200)));
        }
    }
    out
}
