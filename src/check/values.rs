//! Typed reading of setting values: each reader returns the value or pushes a diagnostic that
//! says what was expected and what was found, at the value's span.

use std::time::Duration;

use indexmap::IndexMap;

use super::ir::{Backoff, Breaker, Value};
use crate::diag::Diagnostic;
use crate::limits::MAX_VALUE_DEPTH;
use crate::syntax::ast::{self, ValueKind};

/// A number token read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Number {
    Int(i64),
    Float(f64),
    Duration(Duration),
}

const DURATION_HELP: &str =
    "a duration is a whole number followed by `ms`, `s`, `m` or `h`, e.g. `250ms` or `30s`";

/// Reads an integer, float or duration token.
pub(super) fn number(token: &str) -> Result<Number, (String, Option<&'static str>)> {
    let split = token
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(token.len());
    let (digits, unit) = token.split_at(split);
    if unit.is_empty() {
        if digits.contains('.') {
            return digits
                .parse::<f64>()
                .map(Number::Float)
                .map_err(|_| (format!("`{token}` is not a number"), None));
        }
        return digits
            .parse::<i64>()
            .map(Number::Int)
            .map_err(|_| (format!("`{token}` is too large for an integer"), None));
    }
    let factor: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err((
                format!("unknown duration unit `{unit}` in `{token}`"),
                Some(DURATION_HELP),
            ))
        }
    };
    if digits.contains('.') || digits.starts_with('-') {
        return Err((
            format!("`{token}` is not a duration: durations are whole, non-negative numbers"),
            Some(DURATION_HELP),
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .map(|ms| Number::Duration(Duration::from_millis(ms)))
        .ok_or_else(|| (format!("`{token}` is too long a duration"), None))
}

/// What a value is, in words, for "expected X, found Y".
pub(super) fn describe(value: &ast::Value) -> String {
    match &value.kind {
        ValueKind::Str(_) => "a string".into(),
        ValueKind::Number(t) => match number(t) {
            Ok(Number::Int(_)) => "an integer".into(),
            Ok(Number::Float(_)) => "a float".into(),
            Ok(Number::Duration(_)) => "a duration".into(),
            Err(_) => format!("`{t}`"),
        },
        ValueKind::Bool(_) => "a boolean".into(),
        ValueKind::List(_) => "a list".into(),
        ValueKind::Map(_) => "a map".into(),
        ValueKind::Call(c) => format!("a call of `{}`", c.name.name),
        ValueKind::Bare(name) => format!("the bare name `{name}`"),
    }
}

/// Collects diagnostics while reading values.
pub(super) struct Reader<'d> {
    pub diags: &'d mut Vec<Diagnostic>,
}

impl Reader<'_> {
    fn mismatch(&mut self, what: &str, value: &ast::Value, expected: &str) {
        let mut diag = Diagnostic::error(
            value.span,
            format!("`{what}` expects {expected}, found {}", describe(value)),
        )
        .with_label(format!("expected {expected}"));
        match &value.kind {
            ValueKind::Bare(name) => diag = diag.with_help(format!("write `\"{name}\"`")),
            ValueKind::Number(t) => {
                if let Err((msg, help)) = number(t) {
                    diag = Diagnostic::error(value.span, msg).with_label("here");
                    if let Some(h) = help {
                        diag = diag.with_help(h);
                    }
                }
            }
            _ => {}
        }
        self.diags.push(diag);
    }

    fn out_of_range(&mut self, what: &str, value: &ast::Value, range: &str) {
        self.diags.push(
            Diagnostic::error(
                value.span,
                format!("`{what}` must be {range}, found `{}`", token_text(value)),
            )
            .with_label("out of range"),
        );
    }

    pub(super) fn string<'v>(
        &mut self,
        what: &str,
        value: &'v ast::Value,
    ) -> Option<&'v ast::StrLit> {
        match &value.kind {
            ValueKind::Str(s) => Some(s),
            _ => {
                self.mismatch(what, value, "a string");
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, what: &str, value: &ast::Value) -> Option<bool> {
        match &value.kind {
            ValueKind::Bool(b) => Some(*b),
            _ => {
                self.mismatch(what, value, "`true` or `false`");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub(super) fn int(
        &mut self,
        what: &str,
        value: &ast::Value,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let n = match &value.kind {
            ValueKind::Number(t) => match number(t) {
                Ok(Number::Int(n)) => Some(n),
                _ => None,
            },
            _ => None,
        };
        let Some(n) = n else {
            self.mismatch(what, value, "an integer");
            return None;
        };
        if n < min || n > max {
            let range = if max == i64::MAX {
                format!("at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            self.out_of_range(what, value, &range);
            return None;
        }
        Some(n)
    }

    /// A list of integers, each in `min..=max` (a single integer reads as a list of one).
    pub(super) fn ints(
        &mut self,
        what: &str,
        value: &ast::Value,
        min: i64,
        max: i64,
    ) -> Option<Vec<i64>> {
        match &value.kind {
            ValueKind::List(items) => {
                let read: Vec<Option<i64>> =
                    items.iter().map(|v| self.int(what, v, min, max)).collect();
                read.into_iter().collect()
            }
            ValueKind::Number(_) => self.int(what, value, min, max).map(|n| vec![n]),
            _ => {
                self.mismatch(what, value, "a list of integers");
                None
            }
        }
    }

    /// A number (integer or float) in `min..=max`.
    pub(super) fn float(
        &mut self,
        what: &str,
        value: &ast::Value,
        min: f64,
        max: f64,
    ) -> Option<f64> {
        let n = match &value.kind {
            ValueKind::Number(t) => match number(t) {
                Ok(Number::Int(n)) => Some(n as f64),
                Ok(Number::Float(f)) => Some(f),
                _ => None,
            },
            _ => None,
        };
        let Some(n) = n else {
            self.mismatch(what, value, "a number");
            return None;
        };
        if !(min..=max).contains(&n) {
            let range = if max == f64::MAX {
                format!("at least {min:?}")
            } else {
                format!("between {min:?} and {max:?}")
            };
            self.out_of_range(what, value, &range);
            return None;
        }
        Some(n)
    }

    /// A duration; `positive` refuses zero.
    pub(super) fn duration(
        &mut self,
        what: &str,
        value: &ast::Value,
        positive: bool,
    ) -> Option<Duration> {
        let d = match &value.kind {
            ValueKind::Number(t) => match number(t) {
                Ok(Number::Duration(d)) => Some(d),
                Ok(Number::Int(_) | Number::Float(_)) => {
                    self.diags.push(
                        Diagnostic::error(
                            value.span,
                            format!("`{what}` expects a duration, found a number without a unit"),
                        )
                        .with_label("no unit")
                        .with_help(format!(
                            "write `{t}s` for seconds or `{t}ms` for milliseconds"
                        )),
                    );
                    return None;
                }
                Err(_) => None,
            },
            _ => None,
        };
        let Some(d) = d else {
            self.mismatch(what, value, "a duration");
            return None;
        };
        if positive && d.is_zero() {
            self.out_of_range(what, value, "longer than zero");
            return None;
        }
        Some(d)
    }

    /// A string that must be one of `choices`.
    pub(super) fn choice<T: Copy>(
        &mut self,
        what: &str,
        value: &ast::Value,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("`\"{n}\"`")).collect();
        let s = match &value.kind {
            ValueKind::Str(s) => &s.value,
            ValueKind::Bare(name) => {
                if let Some((_, t)) = choices.iter().find(|(n, _)| n == name) {
                    self.diags.push(
                        Diagnostic::error(
                            value.span,
                            format!("`{what}` expects a string, found the bare name `{name}`"),
                        )
                        .with_label("expected a string")
                        .with_help(format!("write `\"{name}\"`")),
                    );
                    return Some(*t);
                }
                self.mismatch(what, value, &format!("one of {}", names.join(", ")));
                return None;
            }
            _ => {
                self.mismatch(what, value, &format!("one of {}", names.join(", ")));
                return None;
            }
        };
        if let Some((_, t)) = choices.iter().find(|(n, _)| n == s) {
            return Some(*t);
        }
        let diag = Diagnostic::error(value.span, format!("`{s}` is not a valid `{what}`"))
            .with_label(format!("expected one of {}", names.join(", ")));
        let diag = diag.with_suggestion(s, choices.iter().map(|(n, _)| *n));
        self.diags.push(diag);
        None
    }

    /// `fixed(d)` or `exponential(initial, max)`.
    pub(super) fn backoff(&mut self, value: &ast::Value) -> Option<Backoff> {
        let ValueKind::Call(call) = &value.kind else {
            self.mismatch(
                "backoff",
                value,
                "`fixed(d)` or `exponential(initial, max)`",
            );
            return None;
        };
        match (call.name.name.as_str(), call.args.as_slice()) {
            ("fixed", [d]) => Some(Backoff::Fixed(self.duration("fixed", d, false)?)),
            ("exponential", [a, b]) => {
                let initial = self.duration("exponential", a, false);
                let max = self.duration("exponential", b, false);
                let (initial, max) = (initial?, max?);
                if max < initial {
                    self.diags.push(
                        Diagnostic::error(
                            b.span,
                            "the maximum delay of `exponential` is shorter than its initial delay",
                        )
                        .with_label("shorter than the initial delay"),
                    );
                    return None;
                }
                Some(Backoff::Exponential { initial, max })
            }
            ("fixed", args) => self.arity(call, 1, args.len(), "fixed(d)"),
            ("exponential", args) => self.arity(call, 2, args.len(), "exponential(initial, max)"),
            (name, _) => {
                let diag = Diagnostic::error(call.name.span, format!("unknown backoff `{name}`"))
                    .with_label("not a backoff")
                    .with_help("use `fixed(d)` or `exponential(initial, max)`");
                let diag = match crate::diag::suggest(name, ["fixed", "exponential"]) {
                    Some(near) => diag.with_help(format!(
                        "did you mean `{near}`? the backoffs are `fixed(d)` and `exponential(initial, max)`"
                    )),
                    None => diag,
                };
                self.diags.push(diag);
                None
            }
        }
    }

    /// `breaker(failures, cooldown)`.
    pub(super) fn breaker(&mut self, value: &ast::Value) -> Option<Breaker> {
        let ValueKind::Call(call) = &value.kind else {
            self.mismatch("circuit_breaker", value, "`breaker(failures, cooldown)`");
            return None;
        };
        if call.name.name != "breaker" {
            self.diags.push(
                Diagnostic::error(
                    call.name.span,
                    format!("unknown circuit breaker `{}`", call.name.name),
                )
                .with_label("expected `breaker`")
                .with_help("write `breaker(failures, cooldown)`, e.g. `breaker(5, 30s)`"),
            );
            return None;
        }
        let [failures, cooldown] = call.args.as_slice() else {
            return self.arity(call, 2, call.args.len(), "breaker(failures, cooldown)");
        };
        let failures = self.int("breaker", failures, 1, u32::MAX as i64);
        let cooldown = self.duration("breaker", cooldown, false);
        Some(Breaker {
            failures: failures? as u32,
            cooldown: cooldown?,
        })
    }

    fn arity<T>(&mut self, call: &ast::Call, want: usize, got: usize, usage: &str) -> Option<T> {
        self.diags.push(
            Diagnostic::error(
                call.span,
                format!(
                    "`{}` takes {want} argument{}, found {got}",
                    call.name.name,
                    if want == 1 { "" } else { "s" }
                ),
            )
            .with_label(format!("{got} argument{}", if got == 1 { "" } else { "s" }))
            .with_help(format!("write `{usage}`")),
        );
        None
    }

    /// Any literal value (params, rule arguments).
    pub(super) fn literal(&mut self, value: &ast::Value) -> Option<Value> {
        if !self.shallow(value) {
            return None;
        }
        self.literal_as(value, false)
    }

    /// Whether a value nests at most [`MAX_VALUE_DEPTH`] levels (else an error at its deepest
    /// list or map): deeper values could not be stored in a run's log and read back.
    pub(super) fn shallow(&mut self, value: &ast::Value) -> bool {
        let mut stack = vec![(value, 0usize)];
        while let Some((v, depth)) = stack.pop() {
            let children: Vec<&ast::Value> = match &v.kind {
                ValueKind::List(items) => items.iter().collect(),
                ValueKind::Map(entries) => entries.iter().map(|e| &e.value).collect(),
                _ => continue,
            };
            if depth + 1 > MAX_VALUE_DEPTH {
                self.diags.push(
                    Diagnostic::error(
                        v.span,
                        format!("this value nests more than {MAX_VALUE_DEPTH} levels deep"),
                    )
                    .with_label("too deep")
                    .with_help(format!(
                        "lists and maps may nest {MAX_VALUE_DEPTH} levels; a run could not \
                         store a deeper value"
                    )),
                );
                return false;
            }
            stack.extend(children.into_iter().map(|c| (c, depth + 1)));
        }
        true
    }

    fn literal_as(&mut self, value: &ast::Value, templates: bool) -> Option<Value> {
        Some(match &value.kind {
            ValueKind::Str(s) if templates => Value::Str(s.template.clone()),
            ValueKind::Str(s) => Value::Str(s.value.clone()),
            ValueKind::Number(t) => match number(t) {
                Ok(Number::Int(n)) => Value::Int(n),
                Ok(Number::Float(f)) => Value::Float(f),
                Ok(Number::Duration(d)) => Value::Duration(d),
                Err((msg, help)) => {
                    let mut diag = Diagnostic::error(value.span, msg).with_label("here");
                    if let Some(h) = help {
                        diag = diag.with_help(h);
                    }
                    self.diags.push(diag);
                    return None;
                }
            },
            ValueKind::Bool(b) => Value::Bool(*b),
            ValueKind::List(items) => {
                let items: Vec<Option<Value>> = items
                    .iter()
                    .map(|v| self.literal_as(v, templates))
                    .collect();
                Value::List(items.into_iter().collect::<Option<_>>()?)
            }
            ValueKind::Map(entries) => Value::Map(self.map_as(entries, templates)?),
            ValueKind::Call(call) => {
                self.diags.push(
                    Diagnostic::error(
                        value.span,
                        format!("`{}(…)` is not a value here", call.name.name),
                    )
                    .with_label("a call")
                    .with_help("calls are only allowed in `backoff`, `circuit_breaker` and rules"),
                );
                return None;
            }
            ValueKind::Bare(name) => {
                self.diags.push(
                    Diagnostic::error(
                        value.span,
                        format!("expected a value, found the bare name `{name}`"),
                    )
                    .with_label("not a value")
                    .with_help(format!("write `\"{name}\"` for a string")),
                );
                return None;
            }
        })
    }

    /// A map literal whose strings are templates (`input`, mock `output`): strings keep their
    /// template source, so a `\{` stays a literal brace when rendered.
    pub(super) fn template_map(
        &mut self,
        entries: &[ast::MapEntry],
    ) -> Option<IndexMap<String, Value>> {
        self.map_as(entries, true)
    }

    fn map_as(
        &mut self,
        entries: &[ast::MapEntry],
        templates: bool,
    ) -> Option<IndexMap<String, Value>> {
        // Sized once: a map grown from empty reserves three entries (192 bytes) for one.
        let mut out = IndexMap::with_capacity(entries.len());
        let mut ok = true;
        for entry in entries {
            let key = entry.key.name().to_string();
            if out.contains_key(&key) {
                self.diags.push(
                    Diagnostic::error(entry.key.span(), format!("duplicate key `{key}`"))
                        .with_label("repeated here"),
                );
                ok = false;
                continue;
            }
            match self.literal_as(&entry.value, templates) {
                Some(v) => {
                    out.insert(key, v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// The literal text of a simple value, for range messages.
fn token_text(value: &ast::Value) -> String {
    match &value.kind {
        ValueKind::Number(t) => t.clone(),
        ValueKind::Str(s) => format!("\"{}\"", s.value),
        ValueKind::Bool(b) => b.to_string(),
        _ => describe(value),
    }
}
