//! The read-only JSON endpoints. Each returns what the command line's `--json` output of the
//! same command returns (`runs`, `show`, `events`, `artifacts`, `dlq list`), or for commands
//! without one (`why`, `logs`) the same content as data.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{blocking, Server};
use crate::app::AppError;
use crate::model::{RunId, RunState, RunStatus};
use crate::report::RunRow;

/// One row of the runs screen: `conductor runs --json`'s row, and what needs a person.
#[derive(Serialize)]
pub(crate) struct RunListRow {
    #[serde(flatten)]
    pub row: RunRow,
    /// Tasks waiting for a decision.
    pub waiting: Vec<Arc<str>>,
    /// Dead letters of the run not yet retried or dropped.
    pub dead_letters: usize,
}

#[derive(Deserialize)]
pub(crate) struct RunsQuery {
    status: Option<String>,
    workflow: Option<String>,
}

/// `GET /api/runs?status=&workflow=`: `conductor runs --json`, as one array.
pub(crate) async fn runs(
    State(server): State<Arc<Server>>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Vec<RunListRow>>, ApiError> {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`status={s}`: use one of pending, in_progress, waiting, completed, failed, cancelled"
            ))
        })?),
        None => None,
    };
    let workflow = q.workflow.filter(|w| !w.is_empty());
    blocking(move || {
        let letters = server.store.dead_letter_counts()?;
        let rows = server.runs.summaries(|record, summary| {
            let keep = workflow.as_ref().is_none_or(|w| *w == record.workflow)
                && status.is_none_or(|s| summary.status.unwrap_or(record.status) == s);
            keep.then(|| RunListRow {
                row: RunRow::new(record, summary),
                waiting: summary.waiting.clone(),
                dead_letters: letters.get(&record.id).copied().unwrap_or(0),
            })
        })?;
        Ok(Json(rows.into_iter().flatten().collect()))
    })
    .await
}

/// A run named by id or unique prefix.
pub(crate) fn find(server: &Server, run: &str) -> Result<RunId, ApiError> {
    Ok(crate::app::find_run(&*server.store, run)?)
}

/// `GET /api/runs/{run}/state`: `conductor show --json`.
pub(crate) async fn state(
    State(server): State<Arc<Server>>,
    Path(run): Path<String>,
) -> Result<Response, ApiError> {
    blocking(move || {
        let id = find(&server, &run)?;
        let body = server
            .runs
            .with(&id, |_, state| serde_json::to_string(&state.view()))?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    #[serde(default)]
    after: u64,
}

/// `GET /api/runs/{run}/events?after=SEQ`: `conductor events`, as one array.
pub(crate) async fn events(
    State(server): State<Arc<Server>>,
    Path(run): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<crate::model::Event>>, ApiError> {
    blocking(move || {
        let id = find(&server, &run)?;
        Ok(Json(server.store.events_after(&id, q.after)?))
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct ArtifactsQuery {
    #[serde(default)]
    all: bool,
}

/// `GET /api/runs/{run}/artifacts[?all=true]`: `conductor artifacts --json [--all]`.
pub(crate) async fn artifacts(
    State(server): State<Arc<Server>>,
    Path(run): Path<String>,
    Query(q): Query<ArtifactsQuery>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let id = find(&server, &run)?;
        let files = server.runs.with(&id, |_, state| {
            let files: Vec<_> = state
                .artifacts
                .iter()
                .filter(|a| q.all || !a.superseded)
                .collect();
            serde_json::to_value(files).unwrap_or(Value::Null)
        })?;
        Ok(Json(files))
    })
    .await
}

/// The most of one file the dashboard shows.
const MAX_ARTIFACT: usize = 4 << 20;

/// `GET /api/runs/{run}/artifacts/{sha256}`: a file the run wrote, as plain text (never as
/// a page: a file an agent wrote must not run script in the dashboard's origin).
pub(crate) async fn artifact(
    State(server): State<Arc<Server>>,
    Path((run, sha)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    blocking(move || {
        let id = find(&server, &run)?;
        let bytes = artifact_bytes(&server, &id, &sha)?;
        let shown = &bytes[..bytes.len().min(MAX_ARTIFACT)];
        Ok((
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CONTENT_DISPOSITION, "inline"),
            ],
            String::from_utf8_lossy(shown).into_owned(),
        )
            .into_response())
    })
    .await
}

/// A file of this run by content hash: one of another run is not served through it.
pub(crate) fn artifact_bytes(server: &Server, run: &RunId, sha: &str) -> Result<Vec<u8>, ApiError> {
    let path = server.runs.with(run, |_, state| {
        state
            .artifacts
            .iter()
            .find(|a| &*a.sha256 == sha)
            .map(|a| a.path.to_string())
    })?;
    let Some(path) = path else {
        return Err(ApiError::NotFound(format!(
            "run {run} wrote no file `{sha}`"
        )));
    };
    server.store.artifact(sha)?.ok_or_else(|| {
        ApiError::App(AppError::MissingArtifact {
            path,
            hash: crate::text::short_hash(sha).to_string(),
            store: server.store.describe(),
        })
    })
}

/// `GET /api/runs/{run}/tasks/{task}/why`: `conductor why`'s lines.
pub(crate) async fn why(
    State(server): State<Arc<Server>>,
    Path((run, task)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let run = crate::app::load_run(&*server.store, &run)?;
        let result = run.task(&task)?;
        let lines = crate::report::why_text(
            result,
            run.id.as_str(),
            &run.state.workflow,
            &run.events,
            "",
        );
        Ok(Json(json!({ "lines": lines })))
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct LogsQuery {
    attempt: Option<u32>,
}

/// `GET /api/runs/{run}/tasks/{task}/logs[?attempt=N]`: what `conductor logs` prints, by
/// stream (stdout, stderr, and markers where output was cut).
pub(crate) async fn logs(
    State(server): State<Arc<Server>>,
    Path((run, task)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let id = find(&server, &run)?;
        let attempts = server
            .runs
            .with(&id, |_, s| s.task(&task).map(|t| t.attempts))?;
        let Some(attempts) = attempts else {
            let run = crate::app::load_run(&*server.store, id.as_str())?;
            return Err(run.task(&task).err().map_or_else(
                || ApiError::NotFound(format!("no task `{task}`")),
                ApiError::App,
            ));
        };
        let attempt = match q.attempt {
            Some(0) => return Err(ApiError::BadRequest("`attempt` counts from 1".into())),
            Some(n) => n,
            None => attempts.max(1),
        };
        let chunks: Vec<Value> = server
            .store
            .logs(&id, &task, attempt)?
            .iter()
            .map(|c| {
                json!({
                    "seq": c.seq,
                    "stream": c.stream.as_str(),
                    "text": String::from_utf8_lossy(&c.data),
                })
            })
            .collect();
        Ok(Json(
            json!({ "task": task, "attempt": attempt, "attempts": attempts, "chunks": chunks }),
        ))
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct DlqQuery {
    run: Option<String>,
}

/// `GET /api/dlq[?run=RUN]`: `conductor dlq list --json`, as one array.
pub(crate) async fn dead_letters(
    State(server): State<Arc<Server>>,
    Query(q): Query<DlqQuery>,
) -> Result<Json<Vec<crate::model::DeadLetter>>, ApiError> {
    blocking(move || {
        let run = q
            .run
            .filter(|r| !r.is_empty())
            .map(|r| find(&server, &r))
            .transpose()?;
        Ok(Json(server.store.dead_letters(run.as_ref())?))
    })
    .await
}

/// One question for a person: an escalated task (retry, skip or abort) or an approval task
/// (approve, reject, skip or abort — what `resume --decide` accepts for each).
#[derive(Serialize)]
pub(crate) struct Question {
    pub run: String,
    pub workflow: String,
    pub task: Arc<str>,
    pub kind: &'static str,
    pub phase: Arc<str>,
    pub attempts: u32,
    pub error: Option<String>,
    /// What an approval task asks.
    pub message: Option<String>,
    /// The buttons, each the value `POST /api/runs/{run}/decide` takes.
    pub actions: Vec<&'static str>,
}

/// `GET /api/decisions`: every task of every run waiting for a person.
pub(crate) async fn decisions(
    State(server): State<Arc<Server>>,
) -> Result<Json<Vec<Question>>, ApiError> {
    blocking(move || {
        // Only runs that may wait: in progress, or stopped waiting for someone.
        let all = server.runs.states_where(
            |s| !s.waiting.is_empty(),
            |record, state| questions(record.id.as_str(), state),
        )?;
        Ok(Json(all.into_iter().flatten().collect()))
    })
    .await
}

/// The questions a run waits on.
pub(crate) fn questions(run: &str, state: &RunState) -> Vec<Question> {
    state
        .awaiting_decision
        .iter()
        .filter_map(|name| state.task(name))
        .map(|t| Question {
            run: run.to_string(),
            workflow: state.workflow.clone(),
            task: t.task.clone(),
            kind: if t.approval.is_some() {
                "approval"
            } else {
                "escalation"
            },
            phase: t.phase.clone(),
            attempts: t.attempts,
            error: t.error.as_ref().map(ToString::to_string),
            message: t.approval.as_ref().and_then(|a| a.message.clone()),
            actions: if t.approval.is_some() {
                vec!["approve", "reject", "skip", "abort"]
            } else {
                vec!["retry", "skip", "abort"]
            },
        })
        .collect()
}

/// `GET /api/whoami`: who decisions are recorded as.
pub(crate) async fn whoami(State(server): State<Arc<Server>>) -> Json<Value> {
    Json(json!({ "decided_by": server.decided_by(), "store": server.store.describe() }))
}
