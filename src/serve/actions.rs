//! The dashboard's buttons. Each calls what the command it mirrors calls — `conductor resume
//! RUN --decide TASK=D` and `conductor dlq retry ENTRY` go through [`crate::app::resume`],
//! `conductor dlq drop ENTRY` through `Store::drop_dead_letter` — and decisions are recorded
//! as made by `dashboard:USER`. A continued run is driven by this process in the background,
//! as `conductor resume` would drive it in the foreground.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{blocking, Server};
use crate::app::{self, AppError, Stopped, Watch};
use crate::model::{Decision, Timestamp};

/// What this process drives or drove, newest last (the last [`KEEP`]).
#[derive(Default)]
pub(crate) struct Jobs {
    list: Mutex<Vec<Job>>,
}

const KEEP: usize = 100;

#[derive(Clone, Serialize)]
pub(crate) struct Job {
    pub id: u64,
    /// What was asked, as the command line would say it.
    pub what: String,
    pub run: Option<String>,
    pub by: String,
    pub at: Timestamp,
    /// `running`, then the run's status when it stopped (`completed`, `waiting`, …), or
    /// `error`.
    pub state: String,
    pub error: Option<String>,
}

impl Jobs {
    fn add(&self, mut job: Job) -> u64 {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        job.id = list.last().map_or(1, |j| j.id + 1);
        let id = job.id;
        list.push(job);
        if list.len() > KEEP {
            let extra = list.len() - KEEP;
            list.drain(..extra);
        }
        id
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Job)) {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = list.iter_mut().find(|j| j.id == id) {
            f(j);
        }
    }

    fn snapshot(&self) -> Vec<Job> {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `GET /api/jobs`: the runs this server continued and how they stopped.
pub(crate) async fn jobs(State(server): State<Arc<Server>>) -> Json<Vec<Job>> {
    Json(server.jobs.snapshot())
}

#[derive(Deserialize)]
pub(crate) struct DecideBody {
    task: String,
    decision: String,
    /// Why, recorded with the decision (`resume --reason`).
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/runs/{run}/decide {"task": T, "decision": "retry"|"skip"|"abort"}`: what
/// `conductor resume RUN --decide T=D` does.
pub(crate) async fn decide(
    State(server): State<Arc<Server>>,
    Path(run): Path<String>,
    Json(body): Json<DecideBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let decision: Decision = body
        .decision
        .parse()
        .map_err(|e: crate::model::NotADecision| ApiError::BadRequest(e.to_string()))?;
    let check = server.clone();
    let task = body.task.clone();
    let id = blocking(move || {
        let id = super::api::find(&check, &run)?;
        // The same refusals `resume --decide` gives, before anything starts.
        let asked = check.runs.with(&id, |_, s| {
            s.awaiting_decision
                .iter()
                .any(|t| **t == *task)
                .then(|| s.task(&task).is_some_and(|t| t.approval.is_some()))
        })?;
        let refused = match asked {
            None => Some(crate::exec::ExecError::NotWaiting(task.clone())),
            Some(approval) => wrong_decision(&task, decision, approval),
        };
        match refused {
            Some(e) => Err(ApiError::App(AppError::Exec(e))),
            None => Ok(id),
        }
    })
    .await?;
    let what = format!(
        "conductor resume {id} --decide {}={}",
        body.task,
        decision.as_str()
    );
    let req = app::Resume {
        run: id.to_string(),
        decisions: vec![(body.task, decision)],
        params: Default::default(),
        reason: body.reason.filter(|r| !r.trim().is_empty()),
        dead_letter: None,
        record: None,
        config: server.config.clone(),
        store: server.spec.clone(),
        by: Some(server.decided_by()),
        layer: Some(server.metrics.store_layer()),
        budgets: Vec::new(),
    };
    drive(server, what, Some(id.to_string()), req).await
}

/// A decision that does not fit the question: retry for an approval, approve or reject for
/// an escalation (worded as `resume --decide` words it).
fn wrong_decision(
    task: &str,
    decision: Decision,
    approval: bool,
) -> Option<crate::exec::ExecError> {
    let (what, expected) = match (approval, decision) {
        (true, Decision::Retry) => ("waits for an approval", "approve, reject, skip or abort"),
        (false, d) if d.is_approval() => ("is not an approval task", "retry, skip or abort"),
        _ => return None,
    };
    Some(crate::exec::ExecError::WrongDecision {
        task: task.to_string(),
        decision: decision.as_str(),
        what,
        expected,
    })
}

/// `POST /api/dlq/{entry}/retry`: what `conductor dlq retry ENTRY` does.
pub(crate) async fn retry(
    State(server): State<Arc<Server>>,
    Path(entry): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let check = server.clone();
    let e = entry.clone();
    let run = blocking(move || {
        let letters = check.store.dead_letters(None)?;
        let dl = letters
            .into_iter()
            .find(|d| d.id == e)
            .ok_or(ApiError::App(AppError::UnknownDeadLetter(e)))?;
        Ok(dl.run_id.to_string())
    })
    .await?;
    let req = app::Resume {
        run: String::new(),
        decisions: Vec::new(),
        params: Default::default(),
        reason: None,
        dead_letter: Some(entry.clone()),
        record: None,
        config: server.config.clone(),
        store: server.spec.clone(),
        // After the command's own words: the state gives a `dlq retry` a fresh history.
        by: Some(server.decided_by()),
        layer: Some(server.metrics.store_layer()),
        budgets: Vec::new(),
    };
    drive(
        server,
        format!("conductor dlq retry {entry}"),
        Some(run),
        req,
    )
    .await
}

/// `POST /api/dlq/{entry}/drop`: what `conductor dlq drop ENTRY` does.
pub(crate) async fn drop(
    State(server): State<Arc<Server>>,
    Path(entry): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let by = server.decided_by();
    blocking(move || {
        if !server.store.drop_dead_letter(&entry)? {
            return Err(ApiError::App(AppError::UnknownDeadLetter(entry)));
        }
        // The queue keeps no record of who dropped an entry (nor does the command line's
        // drop); the server's log does.
        tracing::info!("{by} dropped dead letter {entry}");
        server.jobs.add(Job {
            id: 0,
            what: format!("conductor dlq drop {entry}"),
            run: entry.split(':').next().map(str::to_string),
            by: by.clone(),
            at: Timestamp::now(),
            state: "dropped".into(),
            error: None,
        });
        Ok(Json(json!({ "dropped": entry, "by": by })))
    })
    .await
}

/// Continues a run in the background. Answers once the run is held and its workflow loaded
/// (202), or with the error that stopped it before (the command line's message).
async fn drive(
    server: Arc<Server>,
    what: String,
    run: Option<String>,
    req: app::Resume,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let cancel = server.cancel.child_token();
    let mut handle = tokio::spawn(async move {
        app::resume(req, cancel, move |_p| {
            let _ = ready_tx.send(());
            #[allow(unused_mut)]
            let mut observers = Vec::new();
            #[cfg(feature = "otel")]
            observers.extend(super::otel::observer(_p.history));
            Watch {
                observers,
                operator: None,
            }
        })
        .await
    });
    tokio::select! {
        biased;
        ready = ready_rx => {
            if ready.is_err() {
                // The run ended before it was watched: its result says why.
                return finished_early(&mut handle).await;
            }
        }
        result = &mut handle => return early_result(result),
    }
    let by = server.decided_by();
    let id = server.jobs.add(Job {
        id: 0,
        what: what.clone(),
        run: run.clone(),
        by: by.clone(),
        at: Timestamp::now(),
        state: "running".into(),
        error: None,
    });
    let jobs = server.clone();
    tokio::spawn(async move {
        let (state, error) = match handle.await {
            Ok(Ok(Stopped::Ran { state, .. } | Stopped::Finished { state, .. })) => {
                (state.status().as_str().to_string(), None)
            }
            Ok(Err(e)) => ("error".to_string(), Some(e.to_string())),
            Err(e) => ("error".to_string(), Some(e.to_string())),
        };
        if let Some(e) = &error {
            tracing::warn!("`{what}` stopped: {e}");
        }
        jobs.jobs.update(id, |j| {
            j.state = state;
            j.error = error;
        });
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job": id, "run": run, "by": by })),
    ))
}

type Driven = Result<Result<Stopped, AppError>, tokio::task::JoinError>;

async fn finished_early(
    handle: &mut tokio::task::JoinHandle<Result<Stopped, AppError>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    early_result(handle.await)
}

/// A run that stopped before it was watched: an error, or nothing to continue.
fn early_result(result: Driven) -> Result<(StatusCode, Json<Value>), ApiError> {
    match result {
        Ok(Ok(Stopped::Finished { run, state })) => Err(ApiError::Conflict(format!(
            "run {run} is {}; there is nothing to resume",
            state.status().as_str()
        ))),
        Ok(Ok(Stopped::Ran { state, .. })) => Ok((
            StatusCode::OK,
            Json(json!({ "status": state.status().as_str() })),
        )),
        Ok(Err(e)) => Err(ApiError::App(e)),
        Err(e) => Err(ApiError::Internal(format!(
            "the run stopped unexpectedly: {e}"
        ))),
    }
}
