//! What can go wrong with a store, in terms a user can act on.

use std::path::PathBuf;

use crate::model::RunId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run `{0}` is not in the store")]
    UnknownRun(RunId),
    #[error("run `{0}` is already in the store")]
    DuplicateRun(RunId),
    #[error("event {got} of run `{run}` does not follow event {last}")]
    OutOfOrder { run: RunId, last: u64, got: u64 },
    #[error("run `{run}` is being driven by another process (lock `{}`)", lock.display())]
    Busy { run: RunId, lock: PathBuf },
    #[error("`{}` is not a Conductor store, or it is damaged: {cause}", path.display())]
    NotAStore { path: PathBuf, cause: String },
    #[error("`{}` cannot be opened for writing ({cause}): a store needs to write its file and, beside it, `{}-wal` and `{}-shm`; check the permissions of the file and its folder", path.display(), path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(), path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())]
    NotWritable { path: PathBuf, cause: String },
    #[error("`{}` stayed locked by another process for {waited} (a run or `gc` writing the same store); nothing was lost: try again when it has finished", path.display())]
    Locked { path: PathBuf, waited: String },
    #[error("`{}` was written by a newer Conductor (schema {found}; this build knows {known})", path.display())]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("an event of run `{run}` cannot be read: {cause}")]
    UnreadableEvent { run: RunId, cause: String },
    #[error("cannot create `{}`: {cause}", path.display())]
    CannotCreate { path: PathBuf, cause: String },
    #[error("`{}`: {cause}", path.display())]
    Io { path: PathBuf, cause: String },
    #[error("PostgreSQL: {cause}")]
    Postgres { cause: String },
    #[error("PostgreSQL stayed unreachable for {waited}: {cause}")]
    Unreachable { waited: String, cause: String },
    #[error("run `{run}` is being driven by scheduler `{owner}` (its lease runs until {until}); `conductor resume` can take it over once the lease expires")]
    Held {
        run: RunId,
        owner: String,
        until: String,
    },
    #[error("this process no longer holds run `{run}` (lease epoch {epoch}): another scheduler took it over, so nothing more of it is written here")]
    LeaseLost { run: RunId, epoch: u64 },
    #[error(
        "this process does not hold run `{0}`: take its lease (`Store::lease`) before writing it"
    )]
    NotHeld(RunId),
    #[error("the store `{store}` cannot hand attempts to workers: `placement = \"workers\"` needs a PostgreSQL store (`--store postgres://…`)")]
    NoWorkers { store: String },
}
