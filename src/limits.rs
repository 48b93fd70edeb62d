//! Every bound on what a run consumes that is not a setting of the language, in one place.
//!
//! Each limit turns input that would otherwise exhaust memory, the stack or time into a clear
//! error naming the limit. `docs/operations.md` ("Limits") lists every one with its value:
//! change both together.

use std::time::Duration;

/// JSON values a run stores — task outputs (model replies, shell stdout, http bodies, script
/// results), `--param` values, literal values of the workflow — may nest at most this deep.
/// Deeper values are refused before they are stored: readers of the log (serde_json stops at
/// 128 levels, and the log wraps each value in a few levels of its own) must always be able to
/// read what was written.
pub const MAX_VALUE_DEPTH: usize = 64;

/// An expression in a template may nest at most this deep, counting each operator, filter,
/// test, attribute or index lookup and bracket in a row. The template engine recurses once per
/// level when it compiles, so a longer chain would overflow the stack.
pub const MAX_TEMPLATE_DEPTH: usize = 64;

/// Instructions one template render may execute (a loop's every turn counts).
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// Nested macro calls in one template render.
pub const TEMPLATE_RECURSION: usize = 32;

/// Bytes one template render may produce, its `{% set %}` blocks and macro calls included.
pub const TEMPLATE_OUTPUT: usize = 8 << 20;

/// Wall-clock time one template render may take, when the task's own `timeout` is not
/// shorter.
pub const TEMPLATE_TIME: Duration = Duration::from_secs(10);

/// Memory a template that computes (loops, assignments, macros, `*`) may use while it renders
/// in its own process.
pub const TEMPLATE_MEMORY: u64 = 512 << 20;
