//! The run screen's data: the laid-out plan, every task's row (its status as the dashboard
//! colours it), each feedback pass's statuses, the attempts for the Gantt chart with their
//! retries and backoffs, tokens per task and pass, and the gates', the feedback's and people's
//! decisions. Statuses come from [`RunState`] (the one reader of the log); the timeline lists
//! events as `show` does.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::layout::{self, Layout};
use super::{blocking, Server};
use crate::model::{Event, EventKind, RunState, TaskResult, TaskStatus};

/// A task as the dashboard shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    pub name: Arc<str>,
    /// The plan node it is drawn as: the task, or for a fan-out instance `t[key]`, `t`.
    pub node: Arc<str>,
    pub phase: Arc<str>,
    /// `pending`, `running`, `retrying` (waiting out a backoff), `deferred` (held by an
    /// `enforce` rule), `waiting_decision`, `completed`, `failed`, `skipped`, `cancelled`.
    /// A pending task whose dependencies are done waits for an instance: the page draws it
    /// as `queued` from the plan's edges.
    pub status: &'static str,
    pub attempts: u32,
    pub agent: Option<Arc<str>>,
    pub error: Option<String>,
    pub deferred: Option<String>,
    /// When a scheduled retry is due (ms since the epoch).
    pub retry_at: Option<u64>,
    pub duration_ms: u64,
    pub skip: Option<&'static str>,
    /// A fan-out task once expanded: how many instances it has (the plan node is drawn
    /// from their statuses, not from the task's own).
    #[serde(skip_serializing_if = "is_zero")]
    pub instances: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The dashboard's status of a task.
pub(crate) fn status(t: &TaskResult, state: &RunState) -> &'static str {
    match t.status {
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Skipped => "skipped",
        TaskStatus::Cancelled => "cancelled",
        TaskStatus::InProgress => "running",
        TaskStatus::Pending if state.awaiting_decision.contains(&t.task) => "waiting_decision",
        TaskStatus::Pending if t.retry_due.is_some() => "retrying",
        TaskStatus::Pending if t.deferred.is_some() => "deferred",
        TaskStatus::Pending => "pending",
    }
}

pub(crate) fn row(t: &TaskResult, state: &RunState) -> Row {
    Row {
        name: t.task.clone(),
        node: match &t.instance {
            Some(i) => i.of.clone(),
            None => Arc::from(layout::group_of(&t.task)),
        },
        phase: t.phase.clone(),
        status: status(t, state),
        attempts: t.attempts,
        agent: t.agent.clone(),
        error: t.error.as_ref().map(ToString::to_string),
        deferred: t
            .deferred
            .as_ref()
            .map(|d| format!("deferred by {}: {}", d.rule, d.reason)),
        retry_at: t.retry_due.map(|r| r.at_ms),
        duration_ms: t.duration_ms,
        skip: t.skip_reason.map(|s| s.as_str()),
        instances: t.instances.len() as u32,
    }
}

/// The run as a whole.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Summary {
    pub id: String,
    pub workflow: String,
    pub file: String,
    pub status: &'static str,
    pub phase: Option<String>,
    /// The feedback pass now running, from 0.
    pub pass: u32,
    pub error: Option<String>,
    pub waiting: Vec<Arc<str>>,
    pub dead_letters: usize,
    pub usage: crate::model::Usage,
    pub started_at: Option<u64>,
    pub completed_at: Option<u64>,
    pub last_seq: u64,
    pub dry_run: bool,
}

pub(crate) fn summary(state: &RunState) -> Summary {
    Summary {
        id: state.workflow_id.to_string(),
        workflow: state.workflow.clone(),
        file: state.file.clone(),
        status: state.status().as_str(),
        phase: state.current_phase.clone(),
        pass: state.feedback_loop_count,
        error: state.error.clone(),
        waiting: state.awaiting_decision.clone(),
        dead_letters: state.dead_letters.len(),
        usage: state.usage,
        started_at: state.started_at.map(|t| t.0),
        completed_at: state.completed_at.map(|t| t.0),
        last_seq: state.last_seq,
        dry_run: state.dry_run,
    }
}

/// One attempt: a bar of the Gantt chart.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Bar {
    pub task: Arc<str>,
    pub pass: u32,
    pub attempt: u32,
    /// The agent instance (or the pool, when the attempt never found an instance).
    pub agent: Arc<str>,
    pub start: u64,
    pub end: Option<u64>,
    pub error: Option<String>,
    /// The backoff after it, when a retry was scheduled.
    pub backoff_ms: Option<u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub calls: u32,
    pub cached: bool,
}

impl Bar {
    /// An attempt that started at `start` and has not ended yet.
    fn open(task: &Arc<str>, pass: u32, attempt: u32, agent: &Arc<str>, start: u64) -> Bar {
        Bar {
            task: task.clone(),
            pass,
            attempt,
            agent: agent.clone(),
            start,
            end: None,
            error: None,
            backoff_ms: None,
            input_tokens: 0,
            output_tokens: 0,
            calls: 0,
            cached: false,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct GateView {
    pub phase: String,
    pub pass: u32,
    pub passed: bool,
    pub reason: String,
    pub rule: String,
    pub at: u64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct FeedbackView {
    pub pass: u32,
    pub severity: String,
    pub summary: String,
    pub rule: String,
    pub at: u64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct DecisionView {
    pub task: Arc<str>,
    pub pass: u32,
    pub decision: &'static str,
    pub by: String,
    pub reason: Option<String>,
    pub at: u64,
}

/// Tokens of one task in one pass.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Tokens {
    pub input: u64,
    pub output: u64,
    pub calls: u32,
    /// What the priced calls cost (`conductor.toml` prices); replayed calls cost nothing.
    pub usd: crate::model::Usd,
    /// Calls with no price configured: their cost is unknown.
    pub unpriced: u32,
    /// Calls answered from a cassette.
    pub replayed: u32,
}

/// What the events say happened when, in order: attempts, decisions, tokens.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Timeline {
    pub pass: u32,
    pub attempts: Vec<Bar>,
    pub gates: Vec<GateView>,
    pub feedback: Vec<FeedbackView>,
    pub decisions: Vec<DecisionView>,
    /// `tokens[pass][task]`.
    pub tokens: Vec<HashMap<Arc<str>, Tokens>>,
    #[serde(skip)]
    open: HashMap<(Arc<str>, u32), usize>,
}

impl Timeline {
    /// Adds one event; returns the index of the bar it opened or changed, if any.
    pub(crate) fn add(&mut self, e: &Event) -> Option<usize> {
        let at = e.at.0;
        match &e.kind {
            EventKind::PhaseEntered { loop_count, .. }
            | EventKind::LoopStarted { loop_count, .. } => {
                self.pass = *loop_count;
            }
            EventKind::TaskDispatched {
                task,
                agent,
                attempt,
            } => {
                self.attempts
                    .push(Bar::open(task, self.pass, *attempt, agent, at));
                let i = self.attempts.len() - 1;
                self.open.insert((task.clone(), *attempt), i);
                return Some(i);
            }
            EventKind::AttemptFinished {
                task,
                agent,
                attempt,
                duration_ms,
                error,
                calls,
                cached,
                ..
            } => {
                return Some(self.finished(
                    task,
                    agent,
                    *attempt,
                    at,
                    *duration_ms,
                    error,
                    calls,
                    *cached,
                ))
            }
            EventKind::RetryScheduled {
                task,
                attempt,
                delay_ms,
            } => {
                // `attempt` is the one to come; the backoff follows the one before.
                let i = self
                    .open
                    .get(&(task.clone(), attempt.saturating_sub(1)))
                    .copied();
                if let Some(i) = i {
                    self.attempts[i].backoff_ms = Some(*delay_ms);
                }
                return i;
            }
            EventKind::GateDecided {
                phase,
                pass,
                reason,
                rule,
            } => self.gates.push(GateView {
                phase: phase.clone(),
                pass: self.pass,
                passed: *pass,
                reason: reason.clone(),
                rule: rule.clone(),
                at,
            }),
            EventKind::FeedbackDecided {
                severity,
                summary,
                rule,
                ..
            } => self.feedback.push(FeedbackView {
                pass: self.pass,
                severity: format!("{severity:?}").to_lowercase(),
                summary: summary.clone(),
                rule: rule.clone(),
                at,
            }),
            EventKind::Decided {
                task,
                decision,
                by,
                reason,
            } => self.decisions.push(DecisionView {
                task: task.clone(),
                pass: self.pass,
                decision: decision.as_str(),
                by: by.clone(),
                reason: reason.clone(),
                at,
            }),
            _ => {}
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn finished(
        &mut self,
        task: &Arc<str>,
        agent: &Arc<str>,
        attempt: u32,
        at: u64,
        duration_ms: u64,
        error: &Option<crate::model::TaskError>,
        calls: &[crate::model::LlmCall],
        cached: bool,
    ) -> usize {
        let i = match self.open.get(&(task.clone(), attempt)) {
            Some(&i) => i,
            None => {
                // Never dispatched (the breaker rejected it): a bar of its own length.
                self.attempts.push(Bar::open(
                    task,
                    self.pass,
                    attempt,
                    agent,
                    at.saturating_sub(duration_ms),
                ));
                self.attempts.len() - 1
            }
        };
        let (input, output) = calls.iter().fold((0, 0), |(i, o), c| {
            (i + c.input_tokens, o + c.output_tokens)
        });
        let bar = &mut self.attempts[i];
        bar.end = Some(at.max(bar.start));
        bar.error = error.as_ref().map(ToString::to_string);
        bar.input_tokens = input;
        bar.output_tokens = output;
        bar.calls = calls.len() as u32;
        bar.cached = cached;
        let pass = self.pass as usize;
        if calls.is_empty() {
            return i;
        }
        if self.tokens.len() <= pass {
            self.tokens.resize_with(pass + 1, HashMap::new);
        }
        let t = self.tokens[pass].entry(task.clone()).or_default();
        t.input += input;
        t.output += output;
        t.calls += calls.len() as u32;
        for c in calls {
            match (c.replayed, c.usd) {
                (true, _) => t.replayed += 1,
                (false, Some(usd)) => t.usd = t.usd.plus(usd),
                (false, None) => t.unpriced += 1,
            }
        }
        i
    }
}

/// One finished pass: the status each task ended it with.
#[derive(Debug, Serialize)]
pub(crate) struct Pass {
    pub pass: u32,
    pub statuses: Vec<&'static str>,
}

/// Everything the run screen draws.
#[derive(Serialize)]
struct Board<'a> {
    run: Summary,
    layout: &'a Layout,
    tasks: Vec<Row>,
    /// Earlier passes (the current one is `tasks`), statuses in the order of `tasks`.
    passes: Vec<Pass>,
    timeline: Timeline,
    agents: Vec<&'a String>,
    dead_letters: Vec<crate::model::DeadLetter>,
    questions: Vec<super::api::Question>,
}

/// `GET /api/runs/{run}/board`.
pub(crate) async fn board(
    State(server): State<Arc<Server>>,
    Path(run): Path<String>,
) -> Result<Response, ApiError> {
    blocking(move || {
        let id = super::api::find(&server, &run)?;
        let events = server.store.events(&id)?;
        let mut state = RunState::default();
        let mut timeline = Timeline::default();
        let mut passes = Vec::new();
        for e in &events {
            if let EventKind::LoopStarted { .. } = e.kind {
                passes.push(Pass {
                    pass: state.feedback_loop_count,
                    statuses: state.tasks.iter().map(|t| status(t, &state)).collect(),
                });
            }
            state.apply(e);
            timeline.add(e);
        }
        let layout = layout_of(&server, &state);
        let board = Board {
            run: summary(&state),
            layout: &layout,
            tasks: state.tasks.iter().map(|t| row(t, &state)).collect(),
            passes,
            timeline,
            agents: state.agent_states.keys().collect(),
            dead_letters: server.store.dead_letters(Some(&id))?,
            questions: super::api::questions(id.as_str(), &state),
        };
        let body = serde_json::to_string(&board).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
    })
    .await
}

/// The run's layout, computed once: from its workflow file when that still describes the
/// run, else from its log.
fn layout_of(server: &Server, state: &RunState) -> Arc<Layout> {
    let mut cache = server.layouts.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = cache.get(&state.workflow_id) {
        return l.clone();
    }
    let from_file = crate::app::load(std::path::Path::new(&state.file))
        .ok()
        .filter(|loaded| layout::describes(&loaded.workflow, state))
        .map(|loaded| layout::from_plan(&loaded.workflow, &loaded.plan));
    let layout = Arc::new(from_file.unwrap_or_else(|| layout::from_log(state)));
    // A run not started yet has no tasks in its log: do not keep its empty picture.
    if !state.tasks.is_empty() {
        cache.insert(state.workflow_id.clone(), layout.clone());
    }
    layout
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LlmCall, Timestamp, Usd};

    fn call(usd: Option<f64>, replayed: bool) -> LlmCall {
        LlmCall {
            provider: "default".into(),
            model: "m".into(),
            input_tokens: 100,
            output_tokens: 10,
            cached_input_tokens: 0,
            duration_ms: 1,
            replayed,
            usd: usd.map(Usd::from_dollars),
        }
    }

    #[test]
    fn tokens_per_task_and_pass_carry_the_cost_of_priced_calls_only() {
        let mut t = Timeline::default();
        let finished = |seq, calls| Event {
            seq,
            at: Timestamp(seq),
            kind: EventKind::AttemptFinished {
                task: "review".into(),
                agent: "reviewer-01".into(),
                attempt: 1,
                duration_ms: 1,
                output: None,
                error: None,
                calls,
                cut_off: Default::default(),
                artifacts: Vec::new(),
                cached: false,
                tail: Default::default(),
            },
        };
        t.add(&finished(
            1,
            vec![call(Some(0.25), false), call(None, false)],
        ));
        t.add(&finished(2, vec![call(Some(0.5), false), call(None, true)]));
        let r = &t.tokens[0]["review"];
        assert_eq!((r.calls, r.input, r.output), (4, 400, 40));
        assert_eq!(r.usd, Usd::from_dollars(0.75));
        assert_eq!((r.unpriced, r.replayed), (1, 1));
    }
}
