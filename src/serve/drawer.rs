//! The task drawer: the `why` story, every attempt with what it was asked (when the log
//! keeps it), its output or error, what it printed and wrote, and the diff of its files
//! against the previous pass.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{blocking, Server};
use crate::model::EventKind;

/// `GET /api/runs/{run}/tasks/{task}`.
pub(crate) async fn drawer(
    State(server): State<Arc<Server>>,
    Path((run, task)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let run = crate::app::load_run(&*server.store, &run)?;
        let result = run.task(&task)?;
        let why =
            crate::report::why_text(result, run.id.as_str(), &run.state.workflow, &run.events, "");
        let mut pass = 0;
        let mut attempts: Vec<Value> = Vec::new();
        for e in &run.events {
            match &e.kind {
                EventKind::PhaseEntered { loop_count, .. } => pass = *loop_count,
                EventKind::TaskDispatched { task: t, agent, attempt } if **t == *task => {
                    attempts.push(json!({
                        "attempt": attempt, "pass": pass, "agent": agent,
                        "start": e.at.0, "end": null,
                    }));
                }
                EventKind::AttemptFinished {
                    task: t,
                    attempt,
                    duration_ms,
                    output,
                    error,
                    calls,
                    artifacts,
                    cached,
                    tail,
                    agent,
                    ..
                } if **t == *task => {
                    let open = attempts.iter_mut().rev().find(|a| {
                        a["attempt"] == json!(attempt) && a["end"].is_null()
                    });
                    let fields = json!({
                        "attempt": attempt, "pass": pass, "agent": agent,
                        "end": e.at.0, "duration_ms": duration_ms, "output": output,
                        "error": error, "calls": calls, "artifacts": artifacts,
                        "cached": cached, "tail": tail,
                    });
                    match open {
                        Some(a) => merge(a, fields),
                        None => attempts.push(fields),
                    }
                }
                EventKind::RetryScheduled { task: t, attempt, delay_ms } if **t == *task => {
                    if let Some(a) = attempts
                        .iter_mut()
                        .rev()
                        .find(|a| a["attempt"] == json!(attempt.saturating_sub(1)))
                    {
                        a["backoff_ms"] = json!(delay_ms);
                    }
                }
                _ => {}
            }
        }
        let letters: Vec<_> = run
            .state
            .dead_letter_entries
            .iter()
            .filter(|d| *d.task == *task)
            .collect();
        let files: Vec<_> = run.state.artifacts.iter().filter(|a| *a.task == *task).collect();
        Ok(Json(json!({
            "task": task,
            "row": super::board::row(result, &run.state),
            "why": why,
            "attempts": attempts,
            // The log keeps the request an attempt was sent only for a dead-lettered task.
            "requests": letters.iter().map(|d| json!({"entry": d.id, "request": d.request})).collect::<Vec<_>>(),
            "dead_letters": letters,
            "artifacts": files,
        })))
    })
    .await
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

#[derive(Deserialize)]
pub(crate) struct DiffQuery {
    path: String,
    /// The pass whose version to compare with the one before it; by default the latest.
    pass: Option<u32>,
}

/// `GET /api/runs/{run}/tasks/{task}/diff?path=P[&pass=N]`: a unified diff of the task's
/// file `P` as written in pass N (by default its latest pass) against its last version from
/// an earlier pass.
pub(crate) async fn diff(
    State(server): State<Arc<Server>>,
    Path((run, task)): Path<(String, String)>,
    Query(q): Query<DiffQuery>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let id = super::api::find(&server, &run)?;
        let versions = server.runs.with(&id, |_, state| {
            state
                .artifacts
                .iter()
                .filter(|a| *a.task == *task && *a.path == *q.path)
                .map(|a| (a.loop_count, a.sha256.clone()))
                .collect::<Vec<_>>()
        })?;
        let Some(pass) = q.pass.or_else(|| versions.last().map(|v| v.0)) else {
            return Err(ApiError::NotFound(format!(
                "task `{task}` of run {id} wrote no `{}`",
                q.path
            )));
        };
        let new = versions.iter().rev().find(|v| v.0 == pass);
        let old = versions.iter().rev().find(|v| v.0 < pass);
        let Some(new) = new else {
            return Err(ApiError::NotFound(format!(
                "task `{task}` wrote no `{}` in pass {pass}",
                q.path
            )));
        };
        let text = |sha: &str| -> Result<String, ApiError> {
            let bytes = super::api::artifact_bytes(&server, &id, sha)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        let after = text(&new.1)?;
        let before = match old {
            Some(o) => text(&o.1)?,
            None => String::new(),
        };
        let diff = similar::TextDiff::from_lines(&before, &after)
            .unified_diff()
            .context_radius(3)
            .header(
                &old.map_or("(none)".to_string(), |o| {
                    format!("{} (pass {})", q.path, o.0)
                }),
                &format!("{} (pass {pass})", q.path),
            )
            .to_string();
        Ok(Json(json!({
            "path": q.path,
            "pass": pass,
            "previous_pass": old.map(|o| o.0),
            "diff": diff,
        })))
    })
    .await
}
