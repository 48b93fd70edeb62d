//! Functions the engine registers for every rule: the result constructors of DSL.md section 4
//! (`pass fail allow deny ok info warning error critical`) and small helpers authors need.

use std::fmt;

use rhai::{Engine, ImmutableString, Map};
use serde::{Deserialize, Serialize};

/// How bad a feedback payload is. Ordered: ok < info < warning < error < critical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    /// Reads a severity name; agents' none/low/medium/high read as ok/info/warning/error.
    pub fn parse(word: &str) -> Option<Severity> {
        Some(match word.trim().to_ascii_lowercase().as_str() {
            "ok" | "none" => Severity::Ok,
            "info" | "low" => Severity::Info,
            "warning" | "medium" => Severity::Warning,
            "error" | "high" => Severity::Error,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule decided, as built by the result constructors.
#[derive(Clone, Debug, PartialEq)]
pub enum Ruling {
    Pass,
    Fail(String),
    Allow,
    Deny(String),
    /// Not now: the task waits and the rule is asked again when what it sees changes.
    Defer(String),
    Feedback(Severity, String),
}

impl fmt::Display for Ruling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ruling::Pass => f.write_str("pass()"),
            Ruling::Fail(r) => write!(f, "fail({r:?})"),
            Ruling::Allow => f.write_str("allow()"),
            Ruling::Deny(r) => write!(f, "deny({r:?})"),
            Ruling::Defer(r) => write!(f, "defer({r:?})"),
            Ruling::Feedback(Severity::Ok, m) if m.is_empty() => f.write_str("ok()"),
            Ruling::Feedback(s, m) => write!(f, "{s}({m:?})"),
        }
    }
}

pub(super) fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<Ruling>("Decision")
        .register_fn("to_string", |d: &mut Ruling| d.to_string())
        .register_fn("to_debug", |d: &mut Ruling| d.to_string())
        .register_fn("==", |a: Ruling, b: Ruling| a == b)
        .register_fn("!=", |a: Ruling, b: Ruling| a != b)
        .register_get("reason", |d: &mut Ruling| match d {
            Ruling::Fail(r) | Ruling::Deny(r) | Ruling::Defer(r) | Ruling::Feedback(_, r) => {
                r.clone()
            }
            _ => String::new(),
        })
        .register_get("severity", |d: &mut Ruling| match d {
            Ruling::Feedback(s, _) => s.as_str().to_string(),
            _ => String::new(),
        })
        .register_fn("pass", || Ruling::Pass)
        .register_fn("fail", |r: ImmutableString| Ruling::Fail(r.to_string()))
        .register_fn("allow", || Ruling::Allow)
        .register_fn("deny", |r: ImmutableString| Ruling::Deny(r.to_string()))
        .register_fn("defer", |r: ImmutableString| Ruling::Defer(r.to_string()))
        .register_fn("ok", || Ruling::Feedback(Severity::Ok, String::new()))
        .register_fn("ok", |m: ImmutableString| {
            Ruling::Feedback(Severity::Ok, m.to_string())
        })
        .register_fn("info", |m: ImmutableString| {
            Ruling::Feedback(Severity::Info, m.to_string())
        })
        .register_fn("warning", |m: ImmutableString| {
            Ruling::Feedback(Severity::Warning, m.to_string())
        })
        .register_fn("error", |m: ImmutableString| {
            Ruling::Feedback(Severity::Error, m.to_string())
        })
        .register_fn("critical", |m: ImmutableString| {
            Ruling::Feedback(Severity::Critical, m.to_string())
        })
        .register_fn("count_status", count_status)
        .register_fn("severity_max", severity_max)
        .register_fn("severity_rank", |s: ImmutableString| {
            Severity::parse(&s).map_or(-1, |s| s as i64)
        });
}

/// How many entries of a `tasks` map have the given status (case-insensitive).
fn count_status(tasks: Map, status: ImmutableString) -> i64 {
    tasks
        .values()
        .filter(|t| {
            t.read_lock::<Map>()
                .and_then(|m| m.get("status").map(|s| s.to_string()))
                .is_some_and(|s| s.eq_ignore_ascii_case(&status))
        })
        .count() as i64
}

/// The more severe of two severity names (unknown names count as below `ok`).
fn severity_max(a: ImmutableString, b: ImmutableString) -> ImmutableString {
    let rank = |s: &str| Severity::parse(s).map_or(-1, |s| s as i64);
    if rank(&b) > rank(&a) {
        b
    } else {
        a
    }
}
