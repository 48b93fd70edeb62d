//! Conductor's integration tests: one binary, a module per area.

mod support;

mod browser;
mod budget;
mod childruns;
mod ci;
mod cli;
mod crash;
mod diagnostics;
mod distributed;
mod errors;
mod examples;
mod exec;
mod fanout;
mod fmt;
mod graph;
mod hardening;
mod http;
mod imports;
mod llm;
mod mutations;
#[cfg(feature = "otel")]
mod otel;
mod policy;
mod projections;
mod robustness;
mod sdlc;
mod secrets;
mod semantics;
mod serve;
mod shell;
mod soak;
mod store;
