//! The sandboxed rhai host: the only module that touches rhai.
//!
//! One [`PolicyHost`] per process holds an engine built from `Engine::new_raw()` plus the
//! packages rules need (arithmetic, logic, strings, arrays, maps, math, iteration), every
//! resource limit set explicitly, no module resolver, no file, network, process or clock
//! access. Rules are compiled once (at check time) and evaluated many times.

mod budget;
mod compile;
mod eval;
mod helpers;
pub mod testing;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use rhai::packages::Package;
use rhai::Engine;

pub use compile::{
    CompiledModule, CompiledRule, KnownNames, ModuleFn, ModuleSet, NameSet, Problem,
};
pub use eval::{Evaluation, RuleCache, RuleContext, RuleError, SharedTasks, Verdict};
pub use helpers::{Ruling, Severity};

/// Bounds every rule runs under. An infinite loop stops at `MAX_OPERATIONS`; a slow one at
/// [`crate::limits::RULE_TIME`].
pub const MAX_OPERATIONS: u64 = 1_000_000;
pub const MAX_CALL_LEVELS: usize = 32;
pub const MAX_EXPR_DEPTH: usize = 64;
pub const MAX_FN_EXPR_DEPTH: usize = 32;
pub const MAX_STRING_SIZE: usize = 64 * 1024;
pub const MAX_ARRAY_SIZE: usize = 10_000;
pub const MAX_MAP_SIZE: usize = 10_000;

/// Which of the four places a rule sits in; each sees its own context (DSL.md section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleKind {
    Gate,
    Enforce,
    When,
    Feedback,
}

impl RuleKind {
    /// The context fields an inline rule of this kind sees as variables.
    pub fn context_fields(self) -> &'static [&'static str] {
        match self {
            RuleKind::Gate => &[
                "phase",
                "total",
                "completed",
                "failed",
                "skipped",
                "skipped_by",
                "success_rate",
                "tasks",
                "params",
                "loop_count",
                "budget",
            ],
            RuleKind::Enforce => &[
                "task",
                "pool",
                "running",
                "running_total",
                "params",
                "loop_count",
                "elapsed_ms",
                "budget",
            ],
            RuleKind::When => &["tasks", "params", "loop_count", "feedback", "item"],
            RuleKind::Feedback => &["tasks", "params", "loop_count", "max_loops", "budget"],
        }
    }

    pub fn keyword(self) -> &'static str {
        match self {
            RuleKind::Gate => "gate",
            RuleKind::Enforce => "enforce",
            RuleKind::When => "when",
            RuleKind::Feedback => "feedback",
        }
    }

    /// What a rule of this kind must return, in the author's words.
    pub fn expected_result(self) -> &'static str {
        match self {
            RuleKind::Gate => "a bool, `pass()` or `fail(reason)`",
            RuleKind::Enforce => "a bool, `allow()`, `deny(reason)` or `defer(reason)`",
            RuleKind::When => "a bool",
            RuleKind::Feedback => {
                "`ok()`, `info(msg)`, `warning(msg)`, `error(msg)` or `critical(msg)`"
            }
        }
    }
}

/// The process-wide rule engine.
pub struct PolicyHost {
    engine: Engine,
    /// Names of every function the engine itself provides, for unknown-call checks.
    functions: BTreeSet<String>,
}

impl PolicyHost {
    /// The shared host; building the engine and its function table happens once.
    pub fn get() -> &'static PolicyHost {
        static HOST: OnceLock<PolicyHost> = OnceLock::new();
        HOST.get_or_init(PolicyHost::new)
    }

    fn new() -> PolicyHost {
        PolicyHost::with(|_| {})
    }

    /// A host whose engine also has `extend`'s functions (the policy test helpers).
    pub(crate) fn with(extend: impl FnOnce(&mut Engine)) -> PolicyHost {
        let mut engine = Engine::new_raw();
        for module in [
            rhai::packages::LanguageCorePackage::new().as_shared_module(),
            rhai::packages::ArithmeticPackage::new().as_shared_module(),
            rhai::packages::LogicPackage::new().as_shared_module(),
            rhai::packages::BasicStringPackage::new().as_shared_module(),
            rhai::packages::MoreStringPackage::new().as_shared_module(),
            rhai::packages::BasicIteratorPackage::new().as_shared_module(),
            rhai::packages::BasicArrayPackage::new().as_shared_module(),
            rhai::packages::BasicMapPackage::new().as_shared_module(),
            rhai::packages::BasicMathPackage::new().as_shared_module(),
            rhai::packages::BasicFnPackage::new().as_shared_module(),
        ] {
            engine.register_global_module(module);
        }
        engine
            .set_max_operations(MAX_OPERATIONS)
            .set_max_call_levels(MAX_CALL_LEVELS)
            .set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FN_EXPR_DEPTH)
            .set_max_string_size(MAX_STRING_SIZE)
            .set_max_array_size(MAX_ARRAY_SIZE)
            .set_max_map_size(MAX_MAP_SIZE)
            .set_max_variables(256)
            .set_max_functions(256)
            .set_max_modules(0)
            .set_strict_variables(true)
            .set_fail_on_invalid_map_property(false);
        // Modules come only from `use`; `eval` would compile code the checker never saw.
        engine.disable_symbol("eval");
        engine.disable_symbol("import");
        engine.disable_symbol("export");
        engine.on_progress(budget::progress);
        engine.on_print(|s| tracing::info!(target: "conductor::policy", "{s}"));
        engine.on_debug(|s, src, pos| {
            tracing::debug!(target: "conductor::policy", source = src.unwrap_or(""), %pos, "{s}")
        });
        helpers::register(&mut engine);
        extend(&mut engine);

        let mut functions: BTreeSet<String> = engine
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|sig| sig.split('(').next())
            .map(|name| name.trim().trim_start_matches("get$").to_string())
            .collect();
        // Handled by the evaluator itself rather than registered.
        for intrinsic in [
            "type_of",
            "print",
            "debug",
            "Fn",
            "call",
            "curry",
            "is_shared",
            "is_def_fn",
            "is_def_var",
        ] {
            functions.insert(intrinsic.to_string());
        }
        PolicyHost { engine, functions }
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether the engine itself (not a module) provides a function of this name.
    pub fn provides(&self, name: &str) -> bool {
        self.functions.contains(name)
    }

    /// Names of the helper functions every rule can call, for "did you mean".
    pub fn function_names(&self) -> impl Iterator<Item = &str> {
        self.functions.iter().map(String::as_str)
    }
}

/// Compiled code shared between the IR and the evaluator.
pub type SharedAst = Arc<rhai::AST>;

#[cfg(test)]
mod tests;
