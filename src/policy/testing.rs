//! `conductor policy test`: runs every `fn test_*()` of `*_test.rhai` files, like `opa test`.
//!
//! A test file `X_test.rhai` is compiled together with its sibling `X.rhai` (when there is one),
//! so its tests call the module's functions directly. Tests build contexts with `gate_ctx`,
//! `enforce_ctx`, `when_ctx` and `feedback_ctx` (each fills in every field not given) and check
//! results with `assert`, `assert_eq`, `assert_ne`, `assert_pass`, `assert_fail`,
//! `assert_allow`, `assert_deny` and `assert_severity`. Each test runs under the same limits as
//! rules, so a test that loops forever fails instead of hanging.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, ImmutableString, Map, Position, Scope};

use super::helpers::{Ruling, Severity};
use super::PolicyHost;

/// The outcome of one test function.
#[derive(Clone, Debug, PartialEq)]
pub struct TestResult {
    pub file: PathBuf,
    pub name: String,
    /// `None` when the test passed; else why it failed.
    pub failure: Option<String>,
}

/// A test file that could not be run at all (unreadable, or a syntax error).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FileError {
    pub file: String,
    pub message: String,
}

fn host() -> &'static PolicyHost {
    static HOST: OnceLock<PolicyHost> = OnceLock::new();
    HOST.get_or_init(|| PolicyHost::with(register))
}

/// Finds `*_test.rhai` files under each path (files are taken as given), sorted.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FileError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_file() {
            out.push(path.clone());
        } else if path.is_dir() {
            walk(path, &mut out);
        } else {
            return Err(FileError {
                file: path.display().to_string(),
                message: "no such file or directory".into(),
            });
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        // A link to a folder is not followed: links back up the tree (`a -> ..`) would make
        // the walk endless, or exponential with two of them.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if !name.starts_with('.') && name != "target" {
                walk(&path, out);
            }
        } else if name.ends_with("_test.rhai") {
            out.push(path);
        }
    }
}

/// Runs every `fn test_*()` of one test file, in the order they are written.
pub fn run_file(path: &Path) -> Result<Vec<TestResult>, FileError> {
    let file_error = |message: String| FileError {
        file: path.display().to_string(),
        message,
    };
    let text = crate::files::read_limited(path, crate::check::MAX_FILE_SIZE as u64)
        .and_then(|b| {
            String::from_utf8(b).map_err(|_| std::io::Error::other("it is not UTF-8 text"))
        })
        .map_err(|e| file_error(format!("cannot read: {e}")))?;
    let engine = host().engine();
    let mut ast = engine
        .compile(&text)
        .map_err(|e| file_error(format!("syntax error: {e}")))?;
    if let Some(module) = sibling_module(path) {
        let module_text = std::fs::read_to_string(&module)
            .map_err(|e| file_error(format!("cannot read `{}`: {e}", module.display())))?;
        let module_ast = engine
            .compile(&module_text)
            .map_err(|e| file_error(format!("syntax error in `{}`: {e}", module.display())))?;
        ast = module_ast.merge(&ast);
    }
    let mut names: Vec<(usize, String)> = ast
        .iter_functions()
        .filter(|f| f.name.starts_with("test_") && f.params.is_empty())
        .map(|f| {
            let at = text.find(&format!("fn {}(", f.name)).unwrap_or(usize::MAX);
            (at, f.name.to_string())
        })
        .collect();
    names.sort();
    let mut results = Vec::with_capacity(names.len());
    for (_, name) in names {
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        let outcome =
            engine.call_fn_with_options::<Dynamic>(options, &mut Scope::new(), &ast, &name, ());
        results.push(TestResult {
            file: path.to_path_buf(),
            failure: outcome.err().map(|e| describe_failure(&e)),
            name,
        });
    }
    Ok(results)
}

/// `X_test.rhai` → `X.rhai` beside it, when it exists.
fn sibling_module(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix("_test.rhai")?;
    let module = path.with_file_name(format!("{stem}.rhai"));
    module.is_file().then_some(module)
}

fn describe_failure(err: &EvalAltResult) -> String {
    let (message, pos) = innermost(err);
    match (pos.line(), pos.position()) {
        (Some(line), Some(col)) => format!("{message} (line {line}, column {col})"),
        _ => message,
    }
}

/// The error inside nested function calls, where the assertion actually failed.
fn innermost(err: &EvalAltResult) -> (String, Position) {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => innermost(inner),
        EvalAltResult::ErrorRuntime(value, pos) => (value.to_string(), *pos),
        EvalAltResult::ErrorTooManyOperations(pos) => (
            format!(
                "the test ran more than {} operations (an endless loop?)",
                super::MAX_OPERATIONS
            ),
            *pos,
        ),
        other => (other.to_string(), other.position()),
    }
}

type Outcome = Result<(), Box<EvalAltResult>>;

fn fail(message: String) -> Outcome {
    Err(Box::new(EvalAltResult::ErrorRuntime(
        message.into(),
        Position::NONE,
    )))
}

/// The test helpers: context builders and assertions.
fn register(engine: &mut Engine) {
    engine
        .register_fn("gate_ctx", |m: Map| with_defaults(gate_defaults(&m), m))
        .register_fn("enforce_ctx", |m: Map| with_defaults(enforce_defaults(), m))
        .register_fn("when_ctx", |m: Map| with_defaults(common_defaults(), m))
        .register_fn("feedback_ctx", |m: Map| {
            let mut d = common_defaults();
            d.insert("max_loops".into(), Dynamic::from_int(3));
            with_defaults(d, m)
        })
        .register_fn("assert", |ok: bool| -> Outcome {
            if ok {
                Ok(())
            } else {
                fail("assertion failed".into())
            }
        })
        .register_fn("assert", |ok: bool, msg: ImmutableString| -> Outcome {
            if ok {
                Ok(())
            } else {
                fail(format!("assertion failed: {msg}"))
            }
        })
        .register_fn("assert_eq", |a: Dynamic, b: Dynamic| -> Outcome {
            if same(&a, &b) {
                Ok(())
            } else {
                fail(format!(
                    "assert_eq: left is {}, right is {}",
                    show(&a),
                    show(&b)
                ))
            }
        })
        .register_fn("assert_ne", |a: Dynamic, b: Dynamic| -> Outcome {
            if same(&a, &b) {
                fail(format!("assert_ne: both are {}", show(&a)))
            } else {
                Ok(())
            }
        })
        .register_fn("assert_pass", |d: Dynamic| {
            expect(&d, "pass", |d| matches!(d, Ruling::Pass), true)
        })
        .register_fn("assert_fail", |d: Dynamic| {
            expect(&d, "fail", |d| matches!(d, Ruling::Fail(_)), false)
        })
        .register_fn("assert_allow", |d: Dynamic| {
            expect(&d, "allow", |d| matches!(d, Ruling::Allow), true)
        })
        .register_fn("assert_defer", |d: Dynamic| {
            expect(&d, "defer", |d| matches!(d, Ruling::Defer(_)), false)
        })
        .register_fn("assert_deny", |d: Dynamic| {
            expect(&d, "deny", |d| matches!(d, Ruling::Deny(_)), false)
        })
        .register_fn(
            "assert_severity",
            |d: Dynamic, want: ImmutableString| -> Outcome {
                let Some(want_sev) = Severity::parse(&want) else {
                    return fail(format!("assert_severity: `{want}` is not a severity"));
                };
                match d.clone().try_cast::<Ruling>() {
                    Some(Ruling::Feedback(sev, _)) if sev == want_sev => Ok(()),
                    _ => fail(format!(
                        "assert_severity: expected {want_sev}, got {}",
                        show(&d)
                    )),
                }
            },
        );
}

/// Checks a rule result: a decision matching `ok`, or the bool `as_bool` stands for.
fn expect(value: &Dynamic, what: &str, ok: fn(&Ruling) -> bool, as_bool: bool) -> Outcome {
    if let Some(d) = value.clone().try_cast::<Ruling>() {
        if ok(&d) {
            return Ok(());
        }
    } else if value.as_bool() == Ok(as_bool) {
        return Ok(());
    }
    fail(format!(
        "assert_{what}: expected {what}, got {}",
        show(value)
    ))
}

fn show(v: &Dynamic) -> String {
    if let Some(d) = v.clone().try_cast::<Ruling>() {
        return d.to_string();
    }
    if v.is_string() {
        return format!("{:?}", v.to_string());
    }
    if v.is_unit() {
        return "()".into();
    }
    v.to_string()
}

/// Equality across rhai's types: numbers compare by value (1 == 1.0), others by their text.
fn same(a: &Dynamic, b: &Dynamic) -> bool {
    let num = |d: &Dynamic| d.as_int().map(|i| i as f64).or_else(|_| d.as_float()).ok();
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (
        a.clone().try_cast::<Ruling>(),
        b.clone().try_cast::<Ruling>(),
    ) {
        return x == y;
    }
    a.type_name() == b.type_name() && a.to_string() == b.to_string()
}

fn with_defaults(mut defaults: Map, given: Map) -> Map {
    for (k, v) in given {
        match (defaults.get_mut(&k), v.clone().try_cast::<Map>()) {
            // Nested maps (`task`, `pool`) merge one level deep.
            (Some(existing), Some(inner)) if existing.is_map() => {
                if let Some(mut base) = existing.clone().try_cast::<Map>() {
                    for (ik, iv) in inner {
                        base.insert(ik, iv);
                    }
                    *existing = Dynamic::from_map(base);
                }
            }
            _ => {
                defaults.insert(k, v);
            }
        }
    }
    defaults
}

fn common_defaults() -> Map {
    let mut m = Map::new();
    m.insert("tasks".into(), Dynamic::from_map(Map::new()));
    m.insert("params".into(), Dynamic::from_map(Map::new()));
    m.insert("loop_count".into(), Dynamic::from_int(0));
    m.insert("feedback".into(), Dynamic::UNIT);
    m.insert("budget".into(), Dynamic::from_map(Map::new()));
    m
}

/// Gate defaults; `success_rate` follows `completed` / `total` when they are given.
fn gate_defaults(given: &Map) -> Map {
    let mut m = common_defaults();
    let int = |k: &str| given.get(k).and_then(|v| v.as_int().ok()).unwrap_or(0);
    let total = int("total");
    let completed = int("completed");
    m.insert("phase".into(), Dynamic::from("test"));
    m.insert("total".into(), Dynamic::from_int(total));
    m.insert("completed".into(), Dynamic::from_int(completed));
    m.insert(
        "failed".into(),
        Dynamic::from_int((total - completed).max(0)),
    );
    m.insert("skipped".into(), Dynamic::from_int(0));
    let mut by = Map::new();
    for reason in ["when_false", "decision", "empty_fan_out", "upstream_failed"] {
        by.insert(reason.into(), Dynamic::from_int(0));
    }
    m.insert("skipped_by".into(), Dynamic::from_map(by));
    let rate = if total == 0 {
        1.0
    } else {
        completed as f64 / total as f64
    };
    m.insert("success_rate".into(), Dynamic::from_float(rate));
    m
}

fn enforce_defaults() -> Map {
    let mut m = common_defaults();
    m.remove("feedback");
    m.remove("tasks");
    let mut task = Map::new();
    task.insert("name".into(), Dynamic::from("task"));
    task.insert("agent".into(), Dynamic::from("agent"));
    task.insert("phase".into(), Dynamic::from("test"));
    task.insert("attempt".into(), Dynamic::from_int(1));
    task.insert("timeout_ms".into(), Dynamic::from_int(300_000));
    let mut pool = Map::new();
    pool.insert("name".into(), Dynamic::from("agent"));
    pool.insert("count".into(), Dynamic::from_int(1));
    pool.insert("idle".into(), Dynamic::from_int(1));
    pool.insert("running".into(), Dynamic::from_int(0));
    pool.insert("failed".into(), Dynamic::from_int(0));
    pool.insert("breaker".into(), Dynamic::from("closed"));
    m.insert("task".into(), Dynamic::from_map(task));
    m.insert("pool".into(), Dynamic::from_map(pool));
    m.insert("running".into(), Dynamic::from_map(Map::new()));
    m.insert("running_total".into(), Dynamic::from_int(0));
    m.insert("elapsed_ms".into(), Dynamic::from_int(0));
    m
}
