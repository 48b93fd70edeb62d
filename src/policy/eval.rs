//! Evaluating compiled rules against a context, failing closed.
//!
//! A rule that throws, exceeds a limit or returns a value of the wrong type does not crash
//! anything: its verdict is the safe one (a gate fails, a dispatch is denied, feedback is
//! `critical`, a `when` does not run the task) and the error says why.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use rhai::{CallFnOptions, Dynamic, EvalAltResult, Map, Scope};

use super::helpers::{Ruling, Severity};
use super::{CompiledRule, PolicyHost, RuleKind};

/// A rule's context: the fields of DSL.md section 4 for its kind, built once from JSON and
/// shared read-only with every evaluation.
#[derive(Clone, Debug)]
pub struct RuleContext {
    kind: RuleKind,
    /// Each field as a shared value, so evaluations clone a pointer, not the data.
    fields: Vec<(&'static str, Dynamic)>,
    /// The same fields as one map, for named rules (`fn name(ctx, …)`).
    map: Dynamic,
    /// Hash of the JSON the context was built from, for the result cache.
    hash: u64,
}

/// What a rule decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Gate {
        pass: bool,
        reason: Option<String>,
    },
    Enforce {
        allow: bool,
        /// Not allowed now, not denied: the task waits and the rule is asked again.
        defer: bool,
        reason: Option<String>,
    },
    /// Whether the task runs.
    When(bool),
    Feedback {
        severity: Severity,
        summary: String,
    },
}

/// A rule's verdict and, when it failed closed, why.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub verdict: Verdict,
    pub error: Option<RuleError>,
}

/// Why a rule could not decide: the cause in words.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{cause}")]
pub struct RuleError {
    pub cause: String,
    /// The rule ran into one of the engine's limits (operations, depth, sizes).
    pub limit: bool,
}

impl RuleContext {
    /// Builds a context for a rule of `kind` from a JSON object of its fields. Fields the kind
    /// does not define are ignored; missing ones are `()`.
    pub fn from_json(kind: RuleKind, json: &serde_json::Value) -> RuleContext {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        kind.hash(&mut hasher);
        hash_json(json, &mut hasher);
        let mut fields = Vec::with_capacity(kind.context_fields().len());
        let mut map = Map::new();
        for &name in kind.context_fields() {
            let value = json.get(name).map(json_to_dynamic).unwrap_or(Dynamic::UNIT);
            map.insert(name.into(), value.clone());
            // Read-only all the way down, then shared: rules cannot change what they read, and
            // evaluations clone a pointer rather than the data.
            fields.push((name, value.into_read_only().into_shared()));
        }
        RuleContext {
            kind,
            fields,
            map: Dynamic::from_map(map).into_read_only().into_shared(),
            hash: hasher.finish(),
        }
    }

    pub fn kind(&self) -> RuleKind {
        self.kind
    }

    /// A context whose `tasks` is a run's shared map and whose other fields come from `rest`:
    /// building it costs the other fields, not the size of the run.
    pub fn with_tasks(
        kind: RuleKind,
        tasks: &SharedTasks,
        rest: &serde_json::Value,
    ) -> RuleContext {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        kind.hash(&mut hasher);
        hash_json(rest, &mut hasher);
        tasks.version.hash(&mut hasher);
        let mut fields = Vec::with_capacity(kind.context_fields().len());
        let mut map = Map::new();
        for &name in kind.context_fields() {
            let value = if name == "tasks" {
                tasks.map()
            } else {
                let v = rest.get(name).map(json_to_dynamic).unwrap_or(Dynamic::UNIT);
                v.into_read_only().into_shared()
            };
            map.insert(name.into(), value.clone());
            fields.push((name, value));
        }
        RuleContext {
            kind,
            fields,
            map: Dynamic::from_map(map).into_read_only().into_shared(),
            hash: hasher.finish(),
        }
    }
}

/// The `tasks` of a run's rule contexts: one shared, read-only map that the run changes in
/// place as tasks finish or start a new pass, each task converted once — and only when a rule
/// is about to read the map (a run without rules never converts a task).
#[derive(Clone, Debug)]
pub struct SharedTasks {
    map: Dynamic,
    /// Changes not converted yet, by task: its view, or `None` when rules no longer see it.
    pending: Arc<Mutex<HashMap<String, Option<Arc<serde_json::Value>>>>>,
    /// Changes with every change of the map, for the result cache.
    version: u64,
}

impl Default for SharedTasks {
    fn default() -> SharedTasks {
        SharedTasks {
            map: Dynamic::from_map(Map::new()).into_read_only().into_shared(),
            pending: Arc::default(),
            version: 0,
        }
    }
}

impl SharedTasks {
    /// Task `name` is final, and rules see it as `view`.
    pub fn set(&mut self, name: &str, view: Arc<serde_json::Value>) {
        self.pending().insert(name.to_string(), Some(view));
        self.version += 1;
    }

    /// Task `name` is not final (again): rules do not see it.
    pub fn remove(&mut self, name: &str) {
        self.pending().insert(name.to_string(), None);
        self.version += 1;
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Option<Arc<serde_json::Value>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The map, with the changes so far converted into it.
    fn map(&self) -> Dynamic {
        let mut pending = self.pending();
        let mut shared = self.map.clone();
        if !pending.is_empty() {
            // A clone of a shared value writes through to it.
            if let Some(mut m) = shared.write_lock::<Map>() {
                for (name, view) in pending.drain() {
                    match view {
                        Some(v) => {
                            m.insert(name.into(), json_to_dynamic(&v).into_read_only());
                        }
                        None => {
                            m.remove(name.as_str());
                        }
                    }
                }
            }
        }
        shared
    }
}

/// Converts JSON to a rhai value: objects become maps, arrays arrays, numbers integers when
/// they are whole.
pub(super) fn json_to_dynamic(v: &serde_json::Value) -> Dynamic {
    match v {
        serde_json::Value::Null => Dynamic::UNIT,
        serde_json::Value::Bool(b) => Dynamic::from_bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Dynamic::from(s.clone()),
        serde_json::Value::Array(items) => {
            Dynamic::from_array(items.iter().map(json_to_dynamic).collect())
        }
        serde_json::Value::Object(obj) => Dynamic::from_map(
            obj.iter()
                .map(|(k, v)| (k.as_str().into(), json_to_dynamic(v)))
                .collect(),
        ),
    }
}

fn hash_json(v: &serde_json::Value, h: &mut impl Hasher) {
    match v {
        serde_json::Value::Null => 0u8.hash(h),
        serde_json::Value::Bool(b) => (1u8, b).hash(h),
        serde_json::Value::Number(n) => (2u8, n.to_string()).hash(h),
        serde_json::Value::String(s) => (3u8, s).hash(h),
        serde_json::Value::Array(items) => {
            (4u8, items.len()).hash(h);
            items.iter().for_each(|i| hash_json(i, h));
        }
        serde_json::Value::Object(obj) => {
            // serde_json's map is ordered by key, so equal objects hash equally.
            (5u8, obj.len()).hash(h);
            for (k, v) in obj {
                k.hash(h);
                hash_json(v, h);
            }
        }
    }
}

impl PolicyHost {
    /// Evaluates a rule against a context of its kind.
    pub fn evaluate(&self, rule: &CompiledRule, ctx: &RuleContext) -> Evaluation {
        let deadline = std::time::Instant::now() + crate::limits::RULE_TIME;
        let result = super::budget::within(Some(deadline), None, || self.run_rule(rule, ctx));
        match result {
            Ok(value) => interpret(rule.kind, value),
            Err(err) => fail_closed(rule.kind, runtime_error(&err)),
        }
    }

    fn run_rule(
        &self,
        rule: &CompiledRule,
        ctx: &RuleContext,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        match &rule.call {
            None => {
                let mut scope = Scope::with_capacity(ctx.fields.len());
                for (name, value) in &ctx.fields {
                    scope.push_constant_dynamic(*name, value.clone());
                }
                self.engine()
                    .eval_ast_with_scope::<Dynamic>(&mut scope, &rule.ast)
            }
            Some(call) => {
                let mut args = Vec::with_capacity(call.args.len() + 1);
                args.push(ctx.map.clone());
                args.extend(call.args.iter().cloned());
                let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
                self.engine().call_fn_with_options::<Dynamic>(
                    options,
                    &mut Scope::new(),
                    &rule.ast,
                    &call.name,
                    args,
                )
            }
        }
    }

    /// [`PolicyHost::evaluate`] through a result cache: rules are pure (no I/O, no clock, no
    /// randomness), so the same rule on the same context always decides the same.
    pub fn evaluate_cached(
        &self,
        cache: &mut RuleCache,
        rule: &CompiledRule,
        ctx: &RuleContext,
    ) -> Evaluation {
        let key = (rule.id, ctx.hash);
        if let Some(hit) = cache.entries.get(&key) {
            cache.hits += 1;
            return hit.clone();
        }
        cache.misses += 1;
        let evaluation = self.evaluate(rule, ctx);
        if cache.entries.len() >= cache.capacity {
            // Simple and bounded: a full cache starts over rather than tracking recency.
            cache.entries.clear();
        }
        cache.entries.insert(key, evaluation.clone());
        evaluation
    }
}

/// Results of rule evaluations keyed by (rule, context hash).
#[derive(Debug)]
pub struct RuleCache {
    entries: HashMap<(u64, u64), Evaluation>,
    capacity: usize,
    pub hits: u64,
    pub misses: u64,
}

impl RuleCache {
    pub fn new(capacity: usize) -> RuleCache {
        RuleCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            hits: 0,
            misses: 0,
        }
    }
}

impl Default for RuleCache {
    fn default() -> RuleCache {
        RuleCache::new(4096)
    }
}

/// The verdict a rule's value stands for, or fail closed when it stands for none.
fn interpret(kind: RuleKind, value: Dynamic) -> Evaluation {
    let verdict = match (kind, value.as_bool(), value.clone().try_cast::<Ruling>()) {
        (RuleKind::Gate, Ok(pass), _) => Some(Verdict::Gate {
            pass,
            reason: (!pass).then(|| "the gate rule returned false".to_string()),
        }),
        (RuleKind::Gate, _, Some(Ruling::Pass)) => Some(Verdict::Gate {
            pass: true,
            reason: None,
        }),
        (RuleKind::Gate, _, Some(Ruling::Fail(r))) => Some(Verdict::Gate {
            pass: false,
            reason: Some(r),
        }),
        (RuleKind::Enforce, Ok(allow), _) => Some(Verdict::Enforce {
            allow,
            defer: false,
            reason: (!allow).then(|| "the enforce rule returned false".to_string()),
        }),
        (RuleKind::Enforce, _, Some(Ruling::Allow)) => Some(Verdict::Enforce {
            allow: true,
            defer: false,
            reason: None,
        }),
        (RuleKind::Enforce, _, Some(Ruling::Deny(r))) => Some(Verdict::Enforce {
            allow: false,
            defer: false,
            reason: Some(r),
        }),
        (RuleKind::Enforce, _, Some(Ruling::Defer(r))) => Some(Verdict::Enforce {
            allow: false,
            defer: true,
            reason: Some(r),
        }),
        (RuleKind::When, Ok(run), _) => Some(Verdict::When(run)),
        (RuleKind::Feedback, _, Some(Ruling::Feedback(severity, summary))) => {
            Some(Verdict::Feedback { severity, summary })
        }
        _ => None,
    };
    match verdict {
        Some(verdict) => Evaluation {
            verdict,
            error: None,
        },
        None => fail_closed(
            kind,
            RuleError {
                cause: format!(
                    "the rule returned {}, but a `{}` rule must return {}",
                    describe_value(&value),
                    kind.keyword(),
                    kind.expected_result()
                ),
                limit: false,
            },
        ),
    }
}

fn describe_value(value: &Dynamic) -> String {
    if let Some(d) = value.clone().try_cast::<Ruling>() {
        return format!("`{d}`");
    }
    if value.is_unit() {
        return "nothing (`()`)".to_string();
    }
    let text = value.to_string();
    let text = if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    };
    format!("{} `{text}`", value.type_name())
}

/// The safe verdict of a rule that could not decide.
fn fail_closed(kind: RuleKind, error: RuleError) -> Evaluation {
    let verdict = match kind {
        RuleKind::Gate => Verdict::Gate {
            pass: false,
            reason: Some(error.cause.clone()),
        },
        RuleKind::Enforce => Verdict::Enforce {
            allow: false,
            defer: false,
            reason: Some(error.cause.clone()),
        },
        RuleKind::When => Verdict::When(false),
        RuleKind::Feedback => Verdict::Feedback {
            severity: Severity::Critical,
            summary: error.cause.clone(),
        },
    };
    Evaluation {
        verdict,
        error: Some(error),
    }
}

/// A rhai runtime error in the author's words.
fn runtime_error(err: &EvalAltResult) -> RuleError {
    use EvalAltResult as E;
    let (cause, limit) = match err {
        E::ErrorTooManyOperations(_) => (
            format!(
                "the rule ran more than {} operations and was stopped (an endless loop?)",
                super::MAX_OPERATIONS
            ),
            true,
        ),
        E::ErrorTerminated(token, _) if token.to_string() == super::budget::STOPPED => (
            "the script was stopped: its attempt ended (timeout or cancel)".to_string(),
            true,
        ),
        E::ErrorTerminated(..) => (
            format!(
                "the rule ran longer than {} and was stopped (a loop doing slow work?)",
                crate::text::duration(crate::limits::RULE_TIME)
            ),
            true,
        ),
        E::ErrorStackOverflow(_) => (
            format!(
                "the rule called functions more than {} levels deep and was stopped",
                super::MAX_CALL_LEVELS
            ),
            true,
        ),
        E::ErrorDataTooLarge(what, _) => (
            format!("the rule built a value larger than allowed ({what})"),
            true,
        ),
        E::ErrorTooManyVariables(_) => ("the rule defined too many variables".to_string(), true),
        E::ErrorRuntime(value, _) => (format!("the rule threw: {value}"), false),
        E::ErrorFunctionNotFound(sig, _) => (
            format!("no function matches the call `{sig}` (check the argument types)"),
            false,
        ),
        E::ErrorInFunctionCall(name, _, inner, _) => {
            let inner = runtime_error(inner);
            (format!("in `{name}`: {}", inner.cause), inner.limit)
        }
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            let text = match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => String::new(),
            };
            (text, false)
        }
    };
    let pos = err.position();
    let cause = match (pos.line(), pos.position()) {
        (Some(line), Some(col)) if !cause.contains("line ") => {
            format!("{cause} (rule line {line}, column {col})")
        }
        _ => cause,
    };
    RuleError { cause, limit }
}

/// A named rule's call: the function and its literal arguments.
#[derive(Clone, Debug)]
pub struct NamedCall {
    pub name: String,
    pub args: Vec<Dynamic>,
}

impl NamedCall {
    pub fn new(name: &str, args: &[serde_json::Value]) -> Arc<NamedCall> {
        Arc::new(NamedCall {
            name: name.to_string(),
            args: args.iter().map(json_to_dynamic).collect(),
        })
    }
}

/// A rhai value as JSON: maps, arrays, strings, numbers, booleans; `()` is null; anything else
/// its text. A value nested deeper than [`crate::limits::MAX_VALUE_DEPTH`] is refused (its
/// path in the error) rather than converted: it could not be stored.
pub(super) fn dynamic_to_json(v: &Dynamic) -> Result<serde_json::Value, String> {
    to_json_at(v, 0)
}

fn to_json_at(v: &Dynamic, depth: usize) -> Result<serde_json::Value, String> {
    if v.is_unit() {
        return Ok(serde_json::Value::Null);
    }
    if let Ok(b) = v.as_bool() {
        return Ok(serde_json::Value::Bool(b));
    }
    if let Ok(i) = v.as_int() {
        return Ok(serde_json::Value::from(i));
    }
    if let Ok(f) = v.as_float() {
        return Ok(serde_json::Value::from(f));
    }
    if v.is_string() {
        return Ok(serde_json::Value::String(v.to_string()));
    }
    let nested = v.is_array() || v.is_map();
    if nested && depth >= crate::limits::MAX_VALUE_DEPTH {
        return Err(String::new());
    }
    if v.is_array() {
        let Some(items) = v.read_lock::<rhai::Array>() else {
            return Ok(serde_json::Value::Array(Vec::new()));
        };
        return items
            .iter()
            .enumerate()
            .map(|(i, item)| to_json_at(item, depth + 1).map_err(|at| format!("[{i}]{at}")))
            .collect::<Result<Vec<_>, _>>()
            .map(serde_json::Value::Array);
    }
    if v.is_map() {
        let Some(map) = v.read_lock::<Map>() else {
            return Ok(serde_json::Value::Object(Default::default()));
        };
        return map
            .iter()
            .map(|(k, item)| {
                to_json_at(item, depth + 1)
                    .map(|j| (k.to_string(), j))
                    .map_err(|at| format!(".{k}{at}"))
            })
            .collect::<Result<serde_json::Map<_, _>, _>>()
            .map(serde_json::Value::Object);
    }
    Ok(serde_json::Value::String(v.to_string()))
}

impl PolicyHost {
    /// Calls `fn name(ctx)` of the modules for a `script` agent: its map is the task's output,
    /// a thrown error or a limit is the task's failure. Raising `stop` ends the call within a
    /// few operations.
    pub fn call_script(
        &self,
        modules: &super::ModuleSet,
        name: &str,
        ctx: &serde_json::Value,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<serde_json::Value, RuleError> {
        let arg = json_to_dynamic(ctx).into_read_only();
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        // No deadline of its own: the attempt's timeout raises `stop`.
        let value = super::budget::within(None, Some(stop), || {
            self.engine().call_fn_with_options::<Dynamic>(
                options,
                &mut Scope::new(),
                &modules.ast,
                name,
                (arg,),
            )
        })
        .map_err(|e| runtime_error(&e))?;
        match dynamic_to_json(&value) {
            Ok(out @ serde_json::Value::Object(_)) => Ok(out),
            Ok(other) => Err(RuleError {
                cause: format!(
                    "script function `{name}` returned {}, not a map",
                    crate::text::truncate(&other.to_string(), 80)
                ),
                limit: false,
            }),
            Err(at) => Err(RuleError {
                cause: format!(
                    "script function `{name}` returned a value nested deeper than {} levels, \
                     at `{}`; values are limited to {} levels",
                    crate::limits::MAX_VALUE_DEPTH,
                    crate::limits::short_path(at.trim_start_matches('.')),
                    crate::limits::MAX_VALUE_DEPTH
                ),
                limit: true,
            }),
        }
    }
}
