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
