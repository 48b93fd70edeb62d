//! Which store a command uses, from a URL-like argument: a file path (SQLite) or `memory`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::AppError;
use crate::store::{MemoryStore, SqliteStore, Store};

/// Where runs are kept, as `--store` / `CONDUCTOR_STORE` give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoreSpec {
    /// Nothing kept between commands.
    Memory,
    /// A SQLite file (created when missing).
    Sqlite(PathBuf),
}

impl StoreSpec {
    pub(crate) fn parse(arg: &str) -> StoreSpec {
        match arg {
            "memory" => StoreSpec::Memory,
            path => StoreSpec::Sqlite(PathBuf::from(
                path.strip_prefix("sqlite://").unwrap_or(path),
            )),
        }
    }

    /// The folder beside the store where runs' workspaces and locks go.
    pub(crate) fn home(&self) -> Option<PathBuf> {
        match self {
            StoreSpec::Memory => None,
            StoreSpec::Sqlite(path) => Some(
                path.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
            ),
        }
    }

    /// Opens the store for a new run, creating it when missing.
    pub(crate) fn open_for_run(&self) -> Result<Arc<dyn Store>, AppError> {
        Ok(match self {
            StoreSpec::Memory => Arc::new(MemoryStore::new()),
            StoreSpec::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
        })
    }

    /// Opens an existing store to read or continue its runs.
    pub(crate) fn open_existing(&self) -> Result<Arc<dyn Store>, AppError> {
        match self {
            StoreSpec::Memory => Err(AppError::MemoryStore),
            StoreSpec::Sqlite(path) if !path.exists() => Err(AppError::NoStore(path.clone())),
            StoreSpec::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path)?)),
        }
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Sqlite(p) => write!(f, "{}", p.display()),
        }
    }
}
