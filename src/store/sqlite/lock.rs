//! Holding a run: an exclusive lock on a file beside the store, released by the operating
//! system when the process ends, however it ends.

use std::path::Path;

use crate::model::RunId;
use crate::store::{RunLease, StoreError};

pub(super) struct RunLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl RunLease for RunLock {}

/// A run held by this process: when it is released, the run's projection rows still queued
/// are written first, so none is written after another process takes the run.
pub(super) struct Held {
    pub _lock: RunLock,
    pub run: RunId,
    pub projector: Option<std::sync::Arc<super::projector::Shared>>,
}

impl RunLease for Held {}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(p) = &self.projector {
            p.drain(&self.run);
        }
        // `_lock` is released after this.
    }
}

impl RunLock {
    pub(super) fn acquire(store: &Path, run: &RunId) -> Result<RunLock, StoreError> {
        let dir = store
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("locks");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::CannotCreate {
            path: dir.clone(),
            cause: e.to_string(),
        })?;
        let path = dir.join(format!("{run}.lock"));
        let io = |e: &dyn std::fmt::Display| StoreError::Io {
            path: path.clone(),
            cause: e.to_string(),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(&e))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(RunLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StoreError::Busy {
                run: run.clone(),
                lock: path.clone(),
            }),
            Err((_, e)) => Err(io(&e)),
        }
    }
}
