//! Where a run's files go: `runs/RUN/work` beside a file store.

use std::path::PathBuf;

use super::StoreSpec;
use crate::model::RunId;

/// The run's working folder, created; none for the memory store (shell agents then start in
/// the workflow's folder).
pub(crate) fn create(store: &StoreSpec, run: &RunId) -> Option<PathBuf> {
    let dir = run_dir(store, run)?.join("work");
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(std::path::absolute(&dir).unwrap_or(dir)),
        Err(e) => {
            tracing::warn!("cannot create the workspace `{}`: {e}", dir.display());
            None
        }
    }
}

/// A working folder for a run in the memory store (nothing can inspect it afterwards): in the
/// system's temporary folder, never the workflow's own.
pub(crate) fn temporary(run: &RunId) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("conductor-{}", run.as_str()));
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            tracing::warn!("cannot create the workspace `{}`: {e}", dir.display());
            None
        }
    }
}

/// Removes a memory run's temporary workspace once the run is over.
pub(crate) fn remove_temporary(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!("cannot remove the workspace `{}`: {e}", dir.display());
    }
}

/// `runs/RUN` beside the store.
pub(crate) fn run_dir(store: &StoreSpec, run: &RunId) -> Option<PathBuf> {
    Some(store.home()?.join("runs").join(run.as_str()))
}

/// Removes a workspace that a run which could not start left empty.
pub(crate) fn remove_if_empty(dir: &std::path::Path) {
    if std::fs::remove_dir(dir).is_ok() {
        if let Some(run_dir) = dir.parent() {
            let _ = std::fs::remove_dir(run_dir);
        }
    }
}
