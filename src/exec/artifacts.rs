//! Artifacts: the files agents produce. An output with `files: [{path, content}]` (every
//! file-writing LLM role; any agent may produce one) has each file stored in the store under
//! the SHA-256 of its content and written into the run's workspace, so the next task — a shell
//! agent running the tests the tester wrote — finds it there. The attempt's event lists what
//! was written (path, hash, size): the run's artifacts are read back from its log.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::files::{self, WriteError};
use crate::model::{ArtifactRef, ErrorCode, TaskError};
use crate::store::Store;

/// Stores and writes the files of an output. Entries that are not `{path, content}` with two
/// strings are not files and are left alone; a path that would leave the workspace fails the
/// attempt (INVALID_OUTPUT).
pub(super) fn save(
    store: &dyn Store,
    workspace: Option<&Path>,
    output: &Value,
) -> Result<Vec<ArtifactRef>, TaskError> {
    let Some(Value::Array(list)) = output.get("files") else {
        return Ok(Vec::new());
    };
    let unsafe_path = |e: files::UnsafePath| {
        TaskError::fatal(
            ErrorCode::InvalidOutput,
            format!("the task's output names a file it may not write: {e}"),
        )
    };
    let mut saved = Vec::new();
    for f in list {
        let (Some(path), Some(content)) = (
            f.get("path").and_then(Value::as_str),
            f.get("content").and_then(Value::as_str),
        ) else {
            continue;
        };
        files::check_path(path).map_err(unsafe_path)?;
        let path = files::normalize(path);
        let sha256 = format!("{:x}", Sha256::digest(content.as_bytes()));
        store
            .put_artifact(&sha256, content.as_bytes())
            .map_err(|e| {
                // A full disk or a busy store may pass: the attempt is retryable.
                TaskError::retryable(
                    ErrorCode::Transient,
                    format!("cannot store the file `{path}`: {e}"),
                )
            })?;
        if let Some(dir) = workspace {
            files::write_under(dir, &path, content.as_bytes()).map_err(|e| match e {
                WriteError::Unsafe(u) => unsafe_path(u),
                // The same output would fail the same way: asking again cannot help.
                invalid @ WriteError::Invalid { .. } => {
                    TaskError::fatal(ErrorCode::InvalidOutput, invalid.to_string())
                }
                io @ WriteError::Io { .. } => {
                    TaskError::retryable(ErrorCode::Transient, io.to_string())
                }
            })?;
        }
        saved.push(ArtifactRef {
            path: path.into(),
            sha256: sha256.into(),
            size: content.len() as u64,
        });
    }
    Ok(saved)
}
