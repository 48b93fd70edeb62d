//! Which store a command uses, from a URL-like argument: a file path (SQLite), `memory`, or a
//! `postgres://` URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::AppError;
use crate::store::{is_postgres_url, MemoryStore, PostgresStore, SqliteStore, Store};

/// Where runs are kept, as `--store` / `CONDUCTOR_STORE` give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoreSpec {
    /// Nothing kept between commands.
    Memory,
    /// A SQLite file (created when missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database (its schema created when missing), shared by many processes.
    Postgres(String),
}

impl StoreSpec {
    pub(crate) fn parse(arg: &str) -> StoreSpec {
        match arg {
            "memory" => StoreSpec::Memory,
            url if is_postgres_url(url) => StoreSpec::Postgres(url.to_string()),
            path => StoreSpec::Sqlite(PathBuf::from(
                path.strip_prefix("sqlite://").unwrap_or(path),
            )),
        }
    }

    /// The folder beside the store where runs' workspaces and locks go; for a database, the
    /// default store's folder in the current directory (each machine has its own).
    pub(crate) fn home(&self) -> Option<PathBuf> {
        match self {
            StoreSpec::Memory => None,
            StoreSpec::Postgres(_) => Some(PathBuf::from(".conductor")),
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
            StoreSpec::Postgres(url) => Arc::new(PostgresStore::open(url)?),
        })
    }

    /// Opens an existing store to read or continue its runs.
    pub(crate) fn open_existing(&self) -> Result<Arc<dyn Store>, AppError> {
        match self {
            StoreSpec::Memory => Err(AppError::MemoryStore),
            StoreSpec::Sqlite(path) if !path.exists() => Err(AppError::NoStore(path.clone())),
            StoreSpec::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path)?)),
            StoreSpec::Postgres(url) => Ok(Arc::new(PostgresStore::open(url)?)),
        }
    }
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Sqlite(p) => write!(f, "{}", p.display()),
            StoreSpec::Postgres(url) => f.write_str(url),
        }
    }
}
