//! Compiling rules and `use`d modules, and the static checks rhai itself does not make:
//! calls of functions nobody defines, and `tasks.x` / `params.x` naming nothing.
//!
//! Positions in [`Problem`]s are 1-based line and column inside the compiled text; the checker
//! maps them back into the `.cond` file.

use std::collections::BTreeSet;
use std::sync::Arc;

use rhai::{ASTNode, Dynamic, Expr, Position, Scope, AST};

use super::eval::NamedCall;
use super::{PolicyHost, RuleKind, SharedAst};
use crate::diag::suggest;

/// A problem found while compiling rhai code.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub message: String,
    /// 1-based line and column inside the compiled text; 0 when rhai gave no position.
    pub line: usize,
    pub col: usize,
    /// Length in characters to underline (at least 1).
    pub len: usize,
    pub help: Option<String>,
}

impl Problem {
    fn at(pos: Position, len: usize, message: String) -> Problem {
        Problem {
            message,
            line: pos.line().unwrap_or(0),
            col: pos.position().unwrap_or(0),
            len: len.max(1),
            help: None,
        }
    }

    fn with_help(mut self, help: impl Into<String>) -> Problem {
        self.help = Some(help.into());
        self
    }
}

/// A function a module defines.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleFn {
    pub name: String,
    pub params: Vec<String>,
    pub doc: String,
}

/// One compiled `use`d module.
#[derive(Clone, Debug)]
pub struct CompiledModule {
    pub ast: SharedAst,
    pub functions: Vec<ModuleFn>,
}

/// Every module a workflow `use`s, merged: what named rules and inline rules can call.
#[derive(Clone, Debug, Default)]
pub struct ModuleSet {
    pub ast: SharedAst,
    pub functions: Vec<ModuleFn>,
    /// Each module's own AST (positions are per module), for reading one function's body.
    parts: Vec<SharedAst>,
}

impl ModuleSet {
    pub fn new(modules: &[CompiledModule]) -> ModuleSet {
        let mut ast = AST::empty();
        let mut functions = Vec::new();
        for m in modules {
            ast = ast.merge(&m.ast);
            functions.extend(m.functions.iter().cloned());
        }
        ModuleSet {
            ast: Arc::new(ast),
            functions,
            parts: modules.iter().map(|m| m.ast.clone()).collect(),
        }
    }

    /// The arities (without `ctx`) a named rule `name` can be called with.
    pub fn rule_arities(&self, name: &str) -> Vec<usize> {
        let mut arities: Vec<usize> = self
            .functions
            .iter()
            .filter(|f| f.name == name && !f.params.is_empty())
            .map(|f| f.params.len() - 1)
            .collect();
        arities.sort_unstable();
        arities.dedup();
        arities
    }

    pub fn defines(&self, name: &str) -> bool {
        self.functions.iter().any(|f| f.name == name)
    }

    /// The fields of its context (`ctx.FIELD`, the first parameter) that the named rule `name`
    /// called with `args` arguments reads, following calls that pass the context on to other
    /// module functions. Sorted, without repeats.
    pub fn context_reads(&self, name: &str, args: usize) -> Vec<String> {
        let mut reads = BTreeSet::new();
        let mut seen = BTreeSet::new();
        self.collect_reads(name, args + 1, &mut reads, &mut seen);
        reads.into_iter().collect()
    }

    fn collect_reads(
        &self,
        name: &str,
        arity: usize,
        reads: &mut BTreeSet<String>,
        seen: &mut BTreeSet<(String, usize)>,
    ) {
        if !seen.insert((name.to_string(), arity)) {
            return;
        }
        let mut calls: Vec<(String, usize)> = Vec::new();
        // The module defining it, the name of its context parameter, and where its body is:
        // a walk of that module's AST, kept to the body's lines, sees just this function.
        let found = self.parts.iter().find_map(|ast| {
            ast.iter_fn_def()
                .find(|f| f.name == name && f.params.len() == arity)
                .map(|f| {
                    (
                        ast,
                        f.params[0].to_string(),
                        f.body.start_position(),
                        f.body.end_position(),
                    )
                })
        });
        let Some((only, ctx, start, end)) = found else {
            return;
        };
        let inside = |p: Position| {
            let at = (p.line().unwrap_or(0), p.position().unwrap_or(0));
            let from = (start.line().unwrap_or(0), start.position().unwrap_or(0));
            let to = (
                end.line().unwrap_or(usize::MAX),
                end.position().unwrap_or(usize::MAX),
            );
            from <= at && at <= to
        };
        only.walk(&mut |path: &[ASTNode]| {
            if !path.last().is_some_and(|n| inside(n.position())) {
                return true;
            }
            // `ctx.x ?? default` reads a field that may be missing on purpose.
            if path
                .iter()
                .any(|n| matches!(n, ASTNode::Expr(Expr::Coalesce(..))))
            {
                return true;
            }
            match path.last() {
                Some(ASTNode::Expr(Expr::Dot(bin, _, _))) => {
                    if let Expr::Variable(var, _, _) = &bin.lhs {
                        if var.1.as_str() == ctx {
                            let prop = match &bin.rhs {
                                Expr::Property(p, _) => Some(p.2.to_string()),
                                Expr::Dot(inner, _, _) | Expr::Index(inner, _, _) => {
                                    match &inner.lhs {
                                        Expr::Property(p, _) => Some(p.2.to_string()),
                                        _ => None,
                                    }
                                }
                                _ => None,
                            };
                            reads.extend(prop);
                        }
                    }
                }
                Some(ASTNode::Expr(Expr::FnCall(call, _)))
                | Some(ASTNode::Stmt(rhai::Stmt::FnCall(call, _))) => {
                    let passes_ctx = matches!(
                        call.args.first(),
                        Some(Expr::Variable(var, _, _)) if var.1.as_str() == ctx
                    );
                    if passes_ctx && self.defines(&call.name) {
                        calls.push((call.name.to_string(), call.args.len()));
                    }
                }
                _ => {}
            }
            true
        });
        for (callee, arity) in calls {
            self.collect_reads(&callee, arity, reads, seen);
        }
    }
}

/// A compiled rule: inline code merged with the workflow's modules, or a call of a module
/// function.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub kind: RuleKind,
    pub ast: SharedAst,
    /// `Some` for a named rule: the module function to call and its arguments.
    pub call: Option<Arc<NamedCall>>,
    /// Unique per compiled rule in this process: the result cache's key.
    pub id: u64,
}

fn next_rule_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Names the checker knows, for `tasks.x` and `params.x` checks inside inline rules.
pub struct KnownNames<'a> {
    pub tasks: &'a dyn NameSet,
    pub params: &'a dyn NameSet,
}

/// A set of declared names: constant-time lookup, iteration only for suggestions.
pub trait NameSet {
    fn has(&self, name: &str) -> bool;
    fn names(&self) -> Box<dyn Iterator<Item = &str> + '_>;
}

impl<V, S: std::hash::BuildHasher> NameSet for indexmap::IndexMap<String, V, S> {
    fn has(&self, name: &str) -> bool {
        self.contains_key(name)
    }

    fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        Box::new(self.keys().map(String::as_str))
    }
}

impl PolicyHost {
    /// Compiles a `use`d module. Calls inside it are checked by [`PolicyHost::check_calls`]
    /// once every module is known.
    pub fn compile_module(&self, text: &str) -> Result<CompiledModule, Problem> {
        let ast = self
            .engine()
            .compile(text)
            .map_err(|e| parse_problem(&e, text, &[]))?;
        // Sorted: rhai keeps functions in a hash table, and their order reaches messages.
        let mut functions: Vec<ModuleFn> = ast
            .iter_functions()
            .map(|f| ModuleFn {
                name: f.name.to_string(),
                params: f.params.iter().map(|p| p.to_string()).collect(),
                doc: f
                    .comments
                    .iter()
                    .map(|c| c.trim_start_matches('/').trim())
                    .collect::<Vec<_>>()
                    .join("\n"),
            })
            .collect();
        functions.sort_by(|a, b| (&a.name, a.params.len()).cmp(&(&b.name, b.params.len())));
        Ok(CompiledModule {
            ast: Arc::new(ast),
            functions,
        })
    }

    /// Compiles inline rule code for a rule of `kind`, with the context fields as the only
    /// variables, and checks its calls and `tasks.x`/`params.x` names.
    pub fn compile_inline(
        &self,
        kind: RuleKind,
        code: &str,
        modules: &ModuleSet,
        names: &KnownNames<'_>,
    ) -> Result<CompiledRule, Vec<Problem>> {
        // Declared as variables, not constants: the optimizer would otherwise fold the
        // placeholder values into the code. Evaluation pushes them as constants.
        let mut scope = Scope::new();
        for field in kind.context_fields() {
            scope.push(*field, Dynamic::UNIT);
        }
        let ast = self
            .engine()
            .compile_with_scope(&scope, code)
            .map_err(|e| vec![parse_problem(&e, code, kind.context_fields())])?;
        let mut problems = self.check_calls(&ast, modules);
        problems.extend(check_names(&ast, names));
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CompiledRule {
            kind,
            ast: Arc::new(modules.ast.merge(&ast)),
            call: None,
            id: next_rule_id(),
        })
    }

    /// A named rule: a call of `fn name(ctx, args…)` of the modules. The caller has checked
    /// that a function of that name and arity exists.
    pub fn named_rule(
        &self,
        kind: RuleKind,
        modules: &ModuleSet,
        name: &str,
        args: &[serde_json::Value],
    ) -> CompiledRule {
        CompiledRule {
            kind,
            ast: modules.ast.clone(),
            call: Some(NamedCall::new(name, args)),
            id: next_rule_id(),
        }
    }

    /// Every call in `ast` of a function that neither the engine, the modules nor `ast` itself
    /// defines.
    pub fn check_calls(&self, ast: &AST, modules: &ModuleSet) -> Vec<Problem> {
        let own: BTreeSet<String> = ast.iter_functions().map(|f| f.name.to_string()).collect();
        let known = |name: &str| self.provides(name) || own.contains(name) || modules.defines(name);
        let mut problems = Vec::new();
        ast.walk(&mut |path: &[ASTNode]| {
            let (call, pos, method) = match path.last() {
                Some(ASTNode::Expr(Expr::FnCall(call, pos))) => (call, *pos, false),
                // A call that is a whole statement is a statement node, not an expression.
                Some(ASTNode::Stmt(rhai::Stmt::FnCall(call, pos))) => (call, *pos, false),
                Some(ASTNode::Expr(Expr::MethodCall(call, pos))) => (call, *pos, true),
                _ => return true,
            };
            if call.is_operator_call() || !call.namespace.is_empty() || known(&call.name) {
                return true;
            }
            let candidates = self
                .function_names()
                .chain(own.iter().map(String::as_str))
                .chain(modules.functions.iter().map(|f| f.name.as_str()))
                .filter(|n| n.chars().all(|c| c.is_alphanumeric() || c == '_'));
            let what = if method { "method" } else { "function" };
            let mut problem = Problem::at(
                pos,
                call.name.chars().count(),
                format!("unknown {what} `{}`", call.name),
            );
            problem = match suggest(&call.name, candidates) {
                Some(near) => problem.with_help(format!("did you mean `{near}`?")),
                None => problem.with_help(
                    "rules can call the engine's helpers and functions of `use`d modules; \
                     they have no file, network or process access",
                ),
            };
            problems.push(problem);
            true
        });
        problems
    }
}

/// `tasks.x` and `params.x` where `x` is not a task or param of the workflow.
fn check_names(ast: &AST, names: &KnownNames<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        let Some(ASTNode::Expr(Expr::Dot(bin, _, _))) = path.last() else {
            return true;
        };
        let Expr::Variable(var, _, _) = &bin.lhs else {
            return true;
        };
        let (list, what) = match var.1.as_str() {
            "tasks" => (names.tasks, "task"),
            "params" => (names.params, "param"),
            _ => return true,
        };
        let prop = match &bin.rhs {
            Expr::Property(p, pos) => Some((p.2.clone(), *pos)),
            Expr::Dot(inner, _, _) | Expr::Index(inner, _, _) => match &inner.lhs {
                Expr::Property(p, pos) => Some((p.2.clone(), *pos)),
                _ => None,
            },
            _ => None,
        };
        if let Some((name, pos)) = prop {
            if !list.has(&name) {
                let mut p = Problem::at(
                    pos,
                    name.chars().count(),
                    format!("unknown {what} `{name}`"),
                );
                if let Some(near) = suggest(&name, list.names()) {
                    p = p.with_help(format!("did you mean `{near}`?"));
                }
                problems.push(p);
            }
        }
        true
    });
    problems
}

fn parse_problem(err: &rhai::ParseError, code: &str, fields: &[&str]) -> Problem {
    let pos = err.position();
    match err.err_type() {
        rhai::ParseErrorType::VariableUndefined(name) => {
            let mut p = Problem::at(
                pos,
                name.chars().count(),
                format!("unknown variable `{name}`"),
            );
            p = match suggest(name, fields.iter().copied()) {
                Some(near) => p.with_help(format!("did you mean `{near}`?")),
                None if fields.is_empty() => p,
                // `item` exists only in a task that fans out; offering it elsewhere misleads.
                None => {
                    let shown: Vec<&str> =
                        fields.iter().copied().filter(|f| *f != "item").collect();
                    p.with_help(format!(
                        "this rule can read {}",
                        crate::text::backticked(&shown)
                    ))
                }
            };
            p
        }
        other => {
            let mut p = Problem::at(pos, 1, format!("syntax error: {}", rhai_message(other)));
            if pos.is_none() || pos.line().is_some_and(|l| l > code.lines().count().max(1)) {
                // Rhai reports the end of the text for an unfinished rule.
                let lines = code.lines().count().max(1);
                p.line = lines;
                p.col = code.lines().last().map_or(1, |l| l.chars().count() + 1);
            }
            p
        }
    }
}

/// Rhai's message in the house style: lowercase first word, no final period.
fn rhai_message(err: &rhai::ParseErrorType) -> String {
    let text = err.to_string().replace(
        "Script is incomplete",
        "the rule ends before it is complete",
    );
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "syntax error in rule".to_string(),
    }
}
