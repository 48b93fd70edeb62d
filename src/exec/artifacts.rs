//! Artifacts: the files agents produce. An output with `files: [{path, content}]` (every
//! file-writing LLM role; any agent may produce one) has each file stored in the store under
//! the SHA-256 of its content and written into the run's workspace, so the next task — a shell
//! agent running the tests the tester wrote — finds it there. The attempt's event lists what
//! was written (path, hash, size): the run's artifacts are read back from its log.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::agents::llm::roles::check_path;
use crate::model::{ArtifactRef, ErrorCode, Event, EventKind, TaskError};
use crate::store::Store;

/// Stores and writes the files of an output. Entries that are not `{path, content}` with two
/// strings are not files and are left alone; a path that would leave the workspace fails the
/// attempt (INVALID_OUTPUT).
pub(crate) fn save(
    store: &dyn Store,
    workspace: Option<&Path>,
    output: &Value,
) -> Result<Vec<ArtifactRef>, TaskError> {
    let Some(Value::Array(files)) = output.get("files") else {
        return Ok(Vec::new());
    };
    let mut saved = Vec::new();
    for f in files {
        let (Some(path), Some(content)) = (
            f.get("path").and_then(Value::as_str),
            f.get("content").and_then(Value::as_str),
        ) else {
            continue;
        };
        check_path(path).map_err(|e| {
            TaskError::fatal(
                ErrorCode::InvalidOutput,
                format!("the task's output names a file it may not write: {e}"),
            )
        })?;
        let normal = normalize(path);
        let path = normal.as_str();
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
            refuse_links(dir, path)?;
            let target = dir.join(path);
            let written = target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&target, content));
            written.map_err(|e| {
                TaskError::retryable(
                    ErrorCode::Transient,
                    format!("cannot write `{}`: {e}", target.display()),
                )
            })?;
        }
        saved.push(ArtifactRef {
            path: path.to_string(),
            sha256,
            size: content.len() as u64,
        });
    }
    Ok(saved)
}

/// A file is written only through real folders of the workspace: a symbolic link left there
/// by an earlier task (`ln -s /etc x`) must not carry a write outside it.
pub(crate) fn refuse_links(workspace: &Path, path: &str) -> Result<(), TaskError> {
    let mut at = workspace.to_path_buf();
    for part in Path::new(path).components() {
        at.push(part);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(TaskError::fatal(
                ErrorCode::InvalidOutput,
                format!(
                    "the task's output writes `{path}` through the symbolic link `{}`; files \
                     are written only inside the workspace",
                    at.display()
                ),
            ));
        }
    }
    Ok(())
}

/// `./a//b.txt` → `a/b.txt`: one spelling per file, so later versions replace earlier ones.
fn normalize(path: &str) -> String {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// One file of a run, as `conductor artifacts` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunArtifact {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// The task whose output it was, its attempt, and the feedback loop it ran in.
    pub task: String,
    pub attempt: u32,
    pub loop_count: u32,
    /// A later write to the same path replaced it in the workspace.
    pub superseded: bool,
}

/// Every file a run's agents wrote, in the order they were written.
pub fn list(events: &[Event]) -> Vec<RunArtifact> {
    let mut out: Vec<RunArtifact> = Vec::new();
    let mut loop_count = 0;
    for e in events {
        match &e.kind {
            EventKind::LoopStarted { loop_count: n, .. } => loop_count = *n,
            EventKind::AttemptFinished {
                task,
                attempt,
                artifacts,
                ..
            } => {
                for a in artifacts {
                    for earlier in out.iter_mut().filter(|o| o.path == a.path) {
                        earlier.superseded = true;
                    }
                    out.push(RunArtifact {
                        path: a.path.clone(),
                        sha256: a.sha256.clone(),
                        size: a.size,
                        task: task.to_string(),
                        attempt: *attempt,
                        loop_count,
                        superseded: false,
                    });
                }
            }
            _ => {}
        }
    }
    out
}
