//! Who an attempt is, told to what it runs: a shell program gets `CONDUCTOR_RUN`,
//! `CONDUCTOR_TASK`, `CONDUCTOR_ATTEMPT` and `CONDUCTOR_IDEMPOTENCY_KEY` in its environment, an
//! http request the same as `Conductor-Run`, `Conductor-Task`, `Conductor-Attempt` and
//! `Idempotency-Key` headers. The key (`RUN/TASK/ATTEMPT`) names one attempt: a system that
//! remembers the last key it accepted per task can refuse a stale writer — an attempt that
//! was given up on (a lost worker, a scheduler taken over) and runs on regardless.

use super::Attempt;
use crate::model::RunId;

/// The attempt's idempotency key.
pub fn idempotency_key(a: &Attempt) -> String {
    key(&a.run_id, &a.task, a.attempt)
}

fn key(run: &RunId, task: &str, attempt: u32) -> String {
    format!("{run}/{task}/{attempt}")
}

/// The variables and their values, environment-style.
pub(super) fn env(run: &RunId, task: &str, attempt: u32) -> [(String, String); 4] {
    [
        ("CONDUCTOR_RUN".into(), run.to_string()),
        ("CONDUCTOR_TASK".into(), task.to_string()),
        ("CONDUCTOR_ATTEMPT".into(), attempt.to_string()),
        ("CONDUCTOR_IDEMPOTENCY_KEY".into(), key(run, task, attempt)),
    ]
}

/// The same as HTTP headers.
pub(super) fn headers(run: &RunId, task: &str, attempt: u32) -> [(String, String); 4] {
    [
        ("Conductor-Run".into(), run.to_string()),
        ("Conductor-Task".into(), task.to_string()),
        ("Conductor-Attempt".into(), attempt.to_string()),
        ("Idempotency-Key".into(), key(run, task, attempt)),
    ]
}
