//! One attempt on a worker: the response cache, the agent under its timeout, then the files of
//! a successful output stored and written. Store and file I/O run on blocking threads.

use std::future::Future as _;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::agents::{self, AgentEnv, Attempt, Trace};
use crate::check::ir::TaskId;
use crate::config::Config;
use crate::model::{ArtifactRef, ErrorCode, LlmCall, LogChunk, OutputTail, TaskError};
use crate::store::Store;

/// A worker's report: one finished attempt.
pub(super) struct Done {
    pub task: TaskId,
    pub attempt: u32,
    pub instance: u32,
    pub result: Result<Value, TaskError>,
    pub elapsed: Duration,
    /// Whether the agent was called (a template error fails before it is, a cache hit
    /// answers instead).
    pub reached_agent: bool,
    pub calls: Vec<LlmCall>,
    /// Its model calls that got no reply, at their worst case.
    pub cut_off: crate::model::Spend,
    pub artifacts: Vec<ArtifactRef>,
    /// Served from the response cache.
    pub cached: bool,
    /// The end of what its program printed.
    pub tail: OutputTail,
}

impl Done {
    /// An attempt that failed before its agent was called.
    pub(super) fn unstarted(task: TaskId, attempt: u32, instance: u32, error: TaskError) -> Done {
        Done {
            task,
            attempt,
            instance,
            result: Err(error),
            elapsed: Duration::ZERO,
            reached_agent: false,
            calls: Vec::new(),
            cut_off: Default::default(),
            artifacts: Vec::new(),
            cached: false,
            tail: OutputTail::default(),
        }
    }
}

/// A dispatch's place in the response cache.
pub(super) struct CacheUse {
    pub key: String,
    /// Whether a stored output may answer (not while recording a cassette).
    pub read: bool,
}

/// Everything a worker needs for one attempt.
pub(super) struct Job {
    pub attempt: Arc<Attempt>,
    pub timeout: Duration,
    pub cache: Option<CacheUse>,
    pub store: Arc<dyn Store>,
    pub env: Arc<AgentEnv>,
    pub trace: Trace,
}

/// The response cache's key for a call: everything rendered for it, and for llm calls the
/// provider's whole configuration (it holds no secret: only the name of the key's variable).
pub(super) fn cache_key(config: &Config, call: &Value) -> String {
    use sha2::Digest;
    let provider = call
        .get("provider")
        .and_then(Value::as_str)
        .and_then(|p| config.providers.get(p))
        .map(|p| format!("{p:?}"));
    let key = json!({ "call": call, "provider_config": provider });
    format!("{:x}", sha2::Sha256::digest(key.to_string().as_bytes()))
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, TaskError> + Send + 'static,
) -> Result<T, TaskError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(TaskError::retryable(
            ErrorCode::Transient,
            format!("{what} failed: {e}"),
        ))
    })
}

/// How often a running attempt's output goes to the store (so `conductor logs --follow`
/// shows it live).
const LOG_FLUSH: Duration = Duration::from_millis(250);

/// Runs one attempt to its report, handing its program's output to the store as it comes.
pub(super) async fn run(job: Job, task: TaskId, instance: u32) -> Done {
    let begun = Instant::now();
    let attempt = job.attempt.attempt;
    let work = execute(&job);
    tokio::pin!(work);
    // An attempt that is over at its first poll (a cache hit, a mock) needs no flush timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    let (result, artifacts, cached) = match first {
        Poll::Ready(done) => done,
        Poll::Pending => {
            let mut flush = tokio::time::interval_at(Instant::now() + LOG_FLUSH, LOG_FLUSH);
            loop {
                tokio::select! {
                    done = &mut work => break done,
                    _ = flush.tick() => save_logs(&job, job.trace.take_pending()).await,
                }
            }
        }
    };
    let (rest, tail) = job.trace.finish();
    save_logs(&job, rest).await;
    let reached_agent = !cached && !result.as_ref().is_err_and(|e| e.not_started);
    Done {
        task,
        attempt,
        instance,
        result,
        elapsed: begun.elapsed(),
        reached_agent,
        calls: job.trace.take_calls(),
        cut_off: job.trace.cut_off(),
        artifacts,
        cached,
        tail,
    }
}

/// Stores pieces of the attempt's log (a failure to is logged, not the attempt's).
async fn save_logs(job: &Job, chunks: Vec<LogChunk>) {
    if chunks.is_empty() {
        return;
    }
    let redactor = &job.env.redactor;
    let chunks = if redactor.is_empty() {
        chunks
    } else {
        chunks
            .into_iter()
            .map(|mut c| {
                c.data = redactor.redact_bytes(&c.data).into_owned();
                c
            })
            .collect()
    };
    let (store, a) = (job.store.clone(), job.attempt.clone());
    let _ = blocking("storing the attempt's output", move || {
        if let Err(e) = store.append_log(&a.run_id, &a.task, a.attempt, &chunks) {
            tracing::warn!("cannot store the output of `{}`: {e}", a.task);
        }
        Ok(())
    })
    .await;
}

async fn execute(job: &Job) -> (Result<Value, TaskError>, Vec<ArtifactRef>, bool) {
    let hit = match job.cache.as_ref().filter(|c| c.read) {
        Some(c) => cache_get(job.store.clone(), c.key.clone()).await,
        None => None,
    };
    let cached = hit.is_some();
    let result = match hit {
        Some(output) => Ok(output),
        None => {
            let begun = Instant::now();
            let mut work = agents::execute(&job.attempt, job.env.clone(), job.trace.clone());
            // A call over at its first poll (a mock) needs no timer; the others time out as
            // if the timer had started with them.
            let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
            let timed = match first {
                Poll::Ready(result) => Ok(result),
                Poll::Pending => match begun.checked_add(job.timeout) {
                    Some(deadline) => tokio::time::timeout_at(deadline, work).await,
                    None => Ok(work.await),
                },
            };
            match timed {
                Ok(result) => result,
                Err(_) => Err(TaskError::retryable(
                    ErrorCode::Timeout,
                    format!(
                        "the attempt took longer than its timeout of {}",
                        crate::text::duration(job.timeout)
                    ),
                )),
            }
        }
    };
    let output = match result {
        Ok(output) => output,
        Err(e) => return (Err(e), Vec::new(), cached),
    };
    // Refused before anything stores it: every reader of the log must be able to read it back.
    if let Some(at) = crate::limits::too_deep(&output) {
        return (Err(too_deep(&job.attempt.call, &at)), Vec::new(), cached);
    }
    if let Some(over) = over_limits(&output) {
        let message = format!(
            "the task's output ({}) {over}",
            output_source(&job.attempt.call)
        );
        return (
            Err(invalid_output(&job.attempt.call, message)),
            Vec::new(),
            cached,
        );
    }
    let mut artifacts = Vec::new();
    // Most outputs have no files: no trip to a blocking thread for them.
    if job.attempt.call.writes_files() && output.get("files").is_some_and(Value::is_array) {
        let (store, out) = (job.store.clone(), output.clone());
        let workspace = job.env.workspace.clone();
        let saved = blocking("saving the task's files", move || {
            super::artifacts::save(&*store, workspace.as_deref(), &out)
        })
        .await;
        match saved {
            Ok(saved) => artifacts = saved,
            Err(e) => return (Err(e), Vec::new(), cached),
        }
    }
    if let (Some(c), false) = (&job.cache, cached) {
        let (store, key, value) = (job.store.clone(), c.key.clone(), output.clone());
        let _ = blocking("filling the response cache", move || {
            if let Err(e) = store.cache_put(&key, &value) {
                tracing::warn!("cannot fill the response cache: {e}");
            }
            Ok(())
        })
        .await;
    }
    (Ok(output), artifacts, cached)
}

/// Which size limit an output crosses, if any: its size as JSON, its number of files or the
/// size of one file (`crate::limits`).
fn over_limits(output: &Value) -> Option<String> {
    use crate::files::size_text;
    use crate::limits::{MAX_ARTIFACTS, MAX_ARTIFACT_SIZE, MAX_OUTPUT_SIZE};
    if crate::limits::json_size(output, MAX_OUTPUT_SIZE) > MAX_OUTPUT_SIZE {
        return Some(format!(
            "is larger than {} as JSON (`MAX_OUTPUT_SIZE`)",
            size_text(MAX_OUTPUT_SIZE as u64)
        ));
    }
    let files = output.get("files").and_then(Value::as_array)?;
    let contents: Vec<(&str, &str)> = files
        .iter()
        .filter_map(|f| Some((f.get("path")?.as_str()?, f.get("content")?.as_str()?)))
        .collect();
    if contents.len() > MAX_ARTIFACTS {
        return Some(format!(
            "has {} files; an attempt may write at most {MAX_ARTIFACTS} (`MAX_ARTIFACTS`)",
            contents.len()
        ));
    }
    let (path, content) = contents
        .into_iter()
        .find(|(_, content)| content.len() > MAX_ARTIFACT_SIZE)?;
    Some(format!(
        "has the file `{}` of {} bytes; a file may have at most {} (`MAX_ARTIFACT_SIZE`)",
        crate::text::printable(path),
        content.len(),
        size_text(MAX_ARTIFACT_SIZE as u64)
    ))
}

/// Where an agent's output came from, in a user's words.
fn output_source(call: &agents::AgentCall) -> &'static str {
    match call {
        agents::AgentCall::Shell(_) => "the JSON its program printed",
        agents::AgentCall::Http(_) => "the JSON body the service answered",
        agents::AgentCall::Llm(_) => "the model's reply",
        agents::AgentCall::Script(_) => "the value its script returned",
        agents::AgentCall::Mock(_) => "its mock `output`",
        agents::AgentCall::Approval(_) => "its approval",
        agents::AgentCall::Child(_) => "its child run's outputs",
    }
}

/// An output nested deeper than [`crate::limits::MAX_VALUE_DEPTH`], with where it came from.
fn too_deep(call: &agents::AgentCall, at: &str) -> TaskError {
    let message = format!(
        "the task's output ({}) nests deeper than {} levels, at `{at}`; values are \
         limited to {} levels",
        output_source(call),
        crate::limits::MAX_VALUE_DEPTH,
        crate::limits::MAX_VALUE_DEPTH
    );
    invalid_output(call, message)
}

/// An output over a limit: `INVALID_OUTPUT`, retried only for a model.
pub(super) fn invalid_output(call: &agents::AgentCall, message: String) -> TaskError {
    // A model may answer differently next time; a program or a service would not.
    if matches!(call, agents::AgentCall::Llm(_)) {
        TaskError::retryable(ErrorCode::InvalidOutput, message)
    } else {
        TaskError::fatal(ErrorCode::InvalidOutput, message)
    }
}

async fn cache_get(store: Arc<dyn Store>, key: String) -> Option<Value> {
    blocking("reading the response cache", move || {
        Ok(match store.cache_get(&key) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("response cache unavailable: {e}");
                None
            }
        })
    })
    .await
    .ok()
    .flatten()
}
