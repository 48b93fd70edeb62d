//! Conductor runs multi-agent software-delivery workflows declared in `.cond` files.
//!
//! Modules in dependency order; each uses only those above it:
//!
//! | module     | owns |
//! |------------|------|
//! | `limits`   | every bound on what a run consumes that is not a language setting |
//! | `source`   | files, spans, line/column |
//! | `diag`     | diagnostics and their rendering (miette) |
//! | `text`     | durations, counts and code as people read them |
//! | `config`   | `conductor.toml`: LLM providers; secrets only from the environment |
//! | `files`    | the paths agents may write, and writing them without following links |
//! | `syntax`   | the pest grammar, the owned spanned AST, and `fmt`; the only place that sees pest |
//! | `template` | compiled templates (Jinja); the only place that sees minijinja |
//! | `policy`   | the sandboxed rhai host; the only place that sees rhai |
//! | `check`    | AST → IR: names, settings, types, rules, templates, warnings |
//! | `plan`     | IR → petgraph DAG of tasks and gates, its analysis and exports |
//! | `model`    | run data: ids, statuses, events, and the run state — the one reader of the log |
//! | `store`    | the `Store` trait and its backends (memory, SQLite, PostgreSQL) and the attempt queue; rusqlite and tokio-postgres stop here |
//! | `agents`   | the agent kinds: each prepares a serialisable `AgentCall` and executes it |
//! | `exec`     | the dispatcher and its concepts: dispatch, outcomes, escalation, phases, resume |
//! | `report`   | how runs are shown: the live view, `--json` lines, `show`, `why`, `runs` |
//! | `worker`   | `conductor worker`: claims, heartbeats and completes attempts placed on workers |
//! | `app`      | the application layer: stores, workspaces, loading, run, resume, gc, export |
//! | `serve`    | the web dashboard, its JSON API and event stream, `/metrics`; axum stops here |
//! | `cli`      | the `conductor` command line: parse, call `app`, render, exit code |

#![forbid(unsafe_code)]

pub mod agents;
mod app;
pub mod check;
mod cli;
pub mod config;
pub mod diag;
pub mod exec;
mod files;
mod hashing;
pub mod limits;
pub mod model;
pub mod plan;
pub mod policy;
pub mod report;
pub mod secrets;
mod serve;
pub mod source;
pub mod store;
pub mod syntax;
mod template;
mod text;
mod worker;
#[doc(hidden)]
pub mod workloads;

pub use check::ir::Workflow;
pub use check::{check_file, check_source, check_source_with, Checked, ImportTexts, ImportedFile};
/// The command line, as the `conductor` binary runs it.
pub use cli::main as run_cli;
pub use diag::{Diagnostic, Level};
pub use source::{SourceMap, Span};

/// What the binary wants done once a workflow is compiled and about to run (it switches its
/// allocator from keeping a compile's peak low to running fast: `src/allocator.rs`).
static ON_COMPILED: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// What the binary wants done before a workflow's text is compiled, given the text's length in
/// bytes (its allocator keeps huge pages for a small file: `src/allocator.rs`).
static ON_COMPILING: std::sync::OnceLock<fn(usize)> = std::sync::OnceLock::new();

/// Registers the function called with a workflow text's length before it is compiled; the
/// first registration wins.
pub fn on_compiling(hook: fn(usize)) {
    let _ = ON_COMPILING.set(hook);
}

/// A workflow text of `len` bytes is about to be parsed and checked.
pub(crate) fn compiling(len: usize) {
    if let Some(hook) = ON_COMPILING.get() {
        hook(len);
    }
}

/// Registers the function [`compiled`] calls; the first registration wins.
pub fn on_compiled(hook: fn()) {
    let _ = ON_COMPILED.set(hook);
}

/// A workflow has been parsed, checked and planned, and is about to run: calls the function
/// registered with [`on_compiled`], if any. `conductor run`, `resume` and the dashboard's runs
/// call it when they load a file; an embedder that compiles and runs workflows itself may.
pub fn compiled() {
    if let Some(hook) = ON_COMPILED.get() {
        hook();
    }
}
