//! Conductor runs multi-agent software-delivery workflows declared in `.cond` files.
//!
//! Modules in dependency order; each uses only those above it:
//!
//! | module   | owns |
//! |----------|------|
//! | `source` | files, spans, line/column |
//! | `diag`   | diagnostics and their rendering (miette) |
//! | `syntax` | the pest grammar and the owned, spanned AST; the only place that sees pest |
//! | `policy` | the sandboxed rhai host; the only place that sees rhai |
//! | `check`  | AST → IR: names, settings, types, rules, templates, warnings |
//! | `plan`   | IR → petgraph DAG of tasks and gates, its analysis and exports |
//! | `model`  | run data: statuses, events, task results, the run state (a projection of events) |
//! | `store`  | the `Store` trait and its backends (memory) |
//! | `agents` | the `Agent` trait and the agent kinds (mock) |
//! | `exec`   | the scheduler: phases, dispatch, pools, retries, gates, feedback loop |
//! | `fmt`    | the canonical layout of a `.cond` file, printed from the AST |
//! | `cli`    | the `conductor` command line |

#![forbid(unsafe_code)]

pub mod agents;
pub mod check;
pub mod cli;
pub mod config;
pub mod diag;
pub mod exec;
pub mod fmt;
pub mod model;
pub mod plan;
pub mod policy;
pub mod source;
pub mod store;
pub mod syntax;
#[doc(hidden)]
pub mod testing;

pub use check::ir::Workflow;
pub use check::{check_file, check_source, Checked};
pub use diag::{Diagnostic, Severity};
pub use source::{SourceMap, Span};
