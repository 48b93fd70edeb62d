//! Everything the application layer can fail with, one enum: the command line maps it to an
//! exit code in one place.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::diag::Diagnostic;
use crate::exec::ExecError;
use crate::source::SourceMap;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    /// A value on the command line is malformed.
    #[error("{0}")]
    Usage(String),
    /// The workflow does not check (or cannot be read); the diagnostics say why.
    #[error("the workflow has errors")]
    Invalid {
        map: Box<SourceMap>,
        diags: Vec<Diagnostic>,
    },
    /// The workflow checks but cannot be planned.
    #[error("{0}")]
    Plan(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("no store at `{}` (runs are kept there by `conductor run`; choose another with --store or CONDUCTOR_STORE)", .0.display())]
    NoStore(PathBuf),
    #[error("the memory store keeps nothing between commands; give a file with --store")]
    MemoryStore,
    #[error("no run `{id}` in the store `{store}`")]
    UnknownRun { id: String, store: String },
    #[error("`{0}` matches {1} runs; give more of the id")]
    AmbiguousRun(String, usize),
    #[error("run {run} has no task `{task}`{hint}")]
    UnknownTask {
        run: String,
        task: String,
        hint: String,
    },
    #[error(
        "the workflow file `{file}` no longer has the tasks run {run} started with: {}. A resume \
         goes on with changed settings, prompts, commands and rules, not a changed shape; start \
         a new run for the changed workflow",
        differences.join("; ")
    )]
    ChangedShape {
        file: String,
        run: String,
        differences: Vec<String>,
    },
    #[error("no dead letter `{0}` (see `conductor dlq list`)")]
    UnknownDeadLetter(String),
    #[error("cannot load `{file}`, the workflow of run {run}; resume from the folder the run started in")]
    WorkflowGone { file: String, run: String },
    #[error(
        "run {0} completed (its gate passed without this task); start a new run to run it again"
    )]
    CompletedAlready(String),
    #[error(transparent)]
    Cassette(#[from] crate::agents::llm::CassetteError),
    #[error("the run's log names a file it may not write: {0}")]
    UnsafeArtifact(crate::files::UnsafePath),
    #[error("`{path}` ({hash}) is not in the store `{store}`")]
    MissingArtifact {
        path: String,
        hash: String,
        store: String,
    },
    #[error(transparent)]
    Write(#[from] crate::files::WriteError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}
