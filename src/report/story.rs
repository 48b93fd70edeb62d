//! `conductor why RUN TASK`: the story of one task, from the log, with the rules and reasons.

use crate::model::{Event, EventKind, TaskResult};

/// The lines of a task's story: a header, then one line per event that concerns it.
/// `flags` are the `--store`/`--config` options the commands it suggests need.
pub fn why_text(
    result: &TaskResult,
    run: &str,
    workflow: &str,
    events: &[Event],
    flags: &str,
) -> Vec<String> {
    let task = &*result.task;
    let mut out = vec![format!(
        "task `{task}` of run {run} (workflow {workflow}, phase {}): {}",
        result.phase,
        result.status.as_str()
    )];
    if let Some(i) = &result.instance {
        out.push(format!(
            "  instance {} of the fan-out task `{}` (key `{}`), its item: {}",
            i.index + 1,
            i.of,
            i.key,
            crate::text::truncate(&i.item.to_string(), 200)
        ));
    }
    let mut in_phase = false;
    for e in events {
        if let EventKind::PhaseEntered { phase, .. } = &e.kind {
            in_phase = **phase == *result.phase;
        }
        if let Some(line) = line(task, &result.phase, in_phase, &e.kind, flags) {
            // One line per event, whatever its messages hold.
            out.push(format!("  {}  {}", e.at, crate::text::printable(&line)));
            if let EventKind::AttemptFinished {
                error: Some(_),
                tail,
                ..
            } = &e.kind
            {
                out.extend(super::tail_lines(tail, "      "));
            }
        }
    }
    out
}

/// What one event says about the task, if anything.
fn line(
    task: &str,
    phase_of_task: &str,
    in_phase: bool,
    kind: &EventKind,
    flags: &str,
) -> Option<String> {
    let mine = kind.task() == Some(task);
    Some(match kind {
        EventKind::PhaseEntered { phase, loop_count } if in_phase => {
            format!("phase {phase} entered (pass {})", loop_count + 1)
        }
        EventKind::ChildRunStarted {
            run, file, attempt, ..
        } if mine => format!(
            "attempt {attempt} is child run {run} of `{file}` (`conductor show {run}{flags}`)"
        ),
        EventKind::TaskDispatched { agent, attempt, .. } if mine => format!(
            "attempt {attempt} dispatched to {agent}: its dependencies were final and the enforce rules allowed it"
        ),
        EventKind::AttemptFinished {
            attempt,
            duration_ms,
            error,
            ..
        } if mine => match error {
            None => format!("attempt {attempt} succeeded after {duration_ms}ms"),
            Some(err) => format!(
                "attempt {attempt} failed after {duration_ms}ms: {err} ({})",
                if err.failure {
                    "the task reported failure: retried only for a listed exit code"
                } else if err.retryable {
                    "retryable"
                } else {
                    "not retryable"
                }
            ),
        },
        EventKind::RetryScheduled {
            attempt, delay_ms, ..
        } if mine => format!(
            "retry {attempt} scheduled after {delay_ms}ms of backoff: the error was retryable and attempts were left"
        ),
        EventKind::TaskSkipped { reason, detail, .. } if mine => format!(
            "skipped ({}){}",
            reason.as_str(),
            detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        EventKind::DeadLettered { entry } if mine => format!(
            "dead-lettered as {}: {} (see `conductor dlq show {}{flags}`)",
            entry.id, entry.reason, entry.id
        ),
        EventKind::Escalated { error, .. } if mine => {
            format!("escalated, as a non-retryable failure: {error}")
        }
        EventKind::Decided {
            decision,
            by,
            reason,
            ..
        } if mine => {
            let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            format!("decision: {} (by {by}){why}", decision.as_str())
        }
        EventKind::ApprovalRequested {
            message,
            timeout_ms,
            ..
        } if mine => {
            let asks = message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
            format!(
                "waits for approval{asks}; no decision within {} rejects it",
                crate::text::duration(std::time::Duration::from_millis(*timeout_ms))
            )
        }
        EventKind::WorkflowAmended { changes, .. } => {
            let mine: Vec<&String> = changes
                .iter()
                .filter(|c| c.starts_with(&format!("task `{task}`")))
                .collect();
            if mine.is_empty() {
                "the run was resumed with a changed workflow file".to_string()
            } else {
                let list: Vec<&str> = mine.iter().map(|c| c.as_str()).collect();
                format!("the run was resumed with a changed workflow file: {}", list.join("; "))
            }
        }
        EventKind::PolicyViolation { rule, reason, .. } if mine => {
            format!("denied by {rule}: {reason}; the run failed")
        }
        EventKind::TaskDeferred { rule, reason, .. } if mine => format!(
            "deferred by {rule}: {reason}; it waits, and the rule is asked again when what it sees changes"
        ),
        EventKind::FanOutExpanded { instances, .. } if mine => {
            let keys: Vec<&str> = instances.iter().take(8).map(|i| i.key.as_str()).collect();
            let more = instances.len().saturating_sub(keys.len());
            format!(
                "fanned out to {} instance{} ({}{}), recorded before any was dispatched",
                instances.len(),
                crate::text::plural(instances.len() as u64),
                keys.join(", "),
                if more > 0 { format!(", … {more} more") } else { String::new() }
            )
        }
        EventKind::TaskFinished { status, .. } if mine => {
            format!("finished {}", status.as_str())
        }
        EventKind::BreakerChanged {
            agent,
            state,
            reason,
        } if in_phase => format!(
            "the circuit breaker of `{agent}` became {}{}",
            state.as_str(),
            reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
        ),
        EventKind::GateDecided {
            phase,
            pass,
            reason,
            rule,
        } if **phase == *phase_of_task => format!(
            "the gate of phase {phase} {} ({rule}): {reason}",
            if *pass { "passed" } else { "failed" }
        ),
        EventKind::RunResumed { rerun } if rerun.iter().any(|t| &**t == task) => {
            "the run was resumed; this task was in flight at the stop and ran again".into()
        }
        _ => return None,
    })
}
