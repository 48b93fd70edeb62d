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
