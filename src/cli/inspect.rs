//! Inspecting the durable store: `runs`, `show`, `events`, `dlq`, `gc`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use crate::model::{EventKind, RunId, RunState, TaskStatus};
use crate::store::{SqliteStore, Store};

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Resolves a run id or a unique prefix of one.
pub(super) fn find_run(store: &dyn Store, id: &str) -> Result<RunId, String> {
    let runs = store.runs().map_err(|e| e.to_string())?;
    if let Some(r) = runs.iter().find(|r| &*r.id.0 == id) {
        return Ok(r.id.clone());
    }
    let matches: Vec<_> = runs.iter().filter(|r| r.id.0.starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(format!("no run `{id}` in the store `{}`", store.describe())),
        many => Err(format!(
            "`{id}` matches {} runs; give more of the id",
            many.len()
        )),
    }
}

/// A run named by id or prefix, and its log.
fn load_run(
    store: &Arc<SqliteStore>,
    id: &str,
) -> Result<(RunId, Vec<crate::model::Event>), ExitCode> {
    let run = find_run(store.as_ref(), id).map_err(fail)?;
    let events = store.events(&run).map_err(fail)?;
    Ok((run, events))
}

/// How many tasks of a run completed and how many failed.
fn done_and_failed(state: &RunState) -> (usize, usize) {
    let count = |s: TaskStatus| state.tasks.iter().filter(|t| t.status == s).count();
    (count(TaskStatus::Completed), count(TaskStatus::Failed))
}

fn duration_text(state: &RunState) -> String {
    match (state.started_at, state.completed_at) {
        (Some(a), Some(b)) => format!("{:.1}s", (b.0.saturating_sub(a.0)) as f64 / 1000.0),
        (Some(_), None) => "-".into(),
        _ => "-".into(),
    }
}

pub(super) fn runs(
    store: &Arc<SqliteStore>,
    status: Option<&str>,
    workflow: Option<&str>,
    json: bool,
) -> ExitCode {
    let records = match store.runs() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut rows = Vec::new();
    for r in records {
        if workflow.is_some_and(|w| w != r.workflow) {
            continue;
        }
        let events = match store.events(&r.id) {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        let state = RunState::from_events(&events);
        let st = state.status.unwrap_or(r.status);
        if status.is_some_and(|s| !s.eq_ignore_ascii_case(st.as_str())) {
            continue;
        }
        rows.push((r, state, st));
    }
    let mut out = std::io::stdout().lock();
    if json {
        for (r, state, st) in &rows {
            let (done, failed) = done_and_failed(state);
            let line = serde_json::json!({
                "id": &*r.id.0, "workflow": r.workflow, "file": r.file, "status": st.as_str(),
                "phase": state.current_phase, "loop": state.feedback_loop_count,
                "completed": done, "failed": failed, "tasks": state.tasks.len(),
                "started_at": r.created_at.to_string(), "duration": duration_text(state),
            });
            let _ = writeln!(out, "{line}");
        }
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(
        out,
        "{:<15} {:<18} {:<12} {:<14} {:>4} {:>11} {:<24} {:>9}",
        "ID", "WORKFLOW", "STATUS", "PHASE", "LOOP", "DONE/FAILED", "STARTED", "DURATION"
    );
    for (r, state, st) in &rows {
        let (done, failed) = done_and_failed(state);
        let _ = writeln!(
            out,
            "{:<15} {:<18} {:<12} {:<14} {:>4} {:>11} {:<24} {:>9}",
            &*r.id.0,
            r.workflow,
            st.as_str(),
            state.current_phase.as_deref().unwrap_or("-"),
            state.feedback_loop_count,
            format!("{done}/{failed} of {}", state.tasks.len()),
            r.created_at.to_string(),
            duration_text(state)
        );
    }
    ExitCode::SUCCESS
}

pub(super) fn show(store: &Arc<SqliteStore>, id: &str, json: bool) -> ExitCode {
    let (_, events) = match load_run(store, id) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let state = RunState::from_events(&events);
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&state.view()).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(
        out,
        "run {}  workflow {}  file {}\nstatus {}  phase {}  loops {}  started {}  duration {}",
        state.workflow_id,
        state.workflow,
        state.file,
        state.status().as_str(),
        state.current_phase.as_deref().unwrap_or("-"),
        state.feedback_loop_count,
        state.started_at.map_or("-".into(), |t| t.to_string()),
        duration_text(&state)
    );
    if !state.params.is_empty() {
        let params: Vec<String> = state
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "params {}", params.join(" "));
    }
    if let Some(e) = &state.error {
        let _ = writeln!(out, "error {e}");
    }
    if state.usage.calls > 0 || state.usage.cached > 0 {
        let _ = writeln!(out, "{}", usage_line(&state.usage));
    }
    let _ = writeln!(out, "\ntasks");
    for t in &state.tasks {
        let mut line = format!(
            "  {:<20} {:<12} {:<11} {:<14} {} attempt{}  {}ms",
            t.task,
            t.phase,
            t.status.as_str(),
            t.agent.as_deref().unwrap_or("-"),
            t.attempts,
            if t.attempts == 1 { "" } else { "s" },
            t.duration_ms
        );
        if let Some(reason) = t.skip_reason {
            line.push_str(&format!("  skipped: {reason:?}"));
        }
        if let Some(e) = &t.error {
            line.push_str(&format!("  {e}"));
        }
        let _ = writeln!(out, "{line}");
    }
    // Attempts, from the log.
    let _ = writeln!(out, "\nattempts");
    for e in &events {
        if let EventKind::AttemptFinished {
            task,
            agent,
            attempt,
            duration_ms,
            error,
            calls,
            artifacts,
            cached,
            ..
        } = &e.kind
        {
            let mut result = error.as_ref().map_or("ok".to_string(), |e| e.to_string());
            if *cached {
                result.push_str("  (from the response cache)");
            }
            if !calls.is_empty() {
                let (i, o) = calls.iter().fold((0, 0), |(i, o), c| {
                    (i + c.input_tokens, o + c.output_tokens)
                });
                result.push_str(&format!(
                    "  {} call{} {i}+{o} tokens",
                    calls.len(),
                    if calls.len() == 1 { "" } else { "s" }
                ));
            }
            if !artifacts.is_empty() {
                let paths: Vec<&str> = artifacts.iter().map(|a| a.path.as_str()).collect();
                result.push_str(&format!("  wrote {}", paths.join(", ")));
            }
            let _ = writeln!(
                out,
                "  {} {task:<20} #{attempt} on {agent:<14} {duration_ms}ms  {result}",
                e.at
            );
        }
        if let EventKind::RetryScheduled {
            task,
            attempt,
            delay_ms,
        } = &e.kind
        {
            let _ = writeln!(
                out,
                "  {} {task:<20} retry #{attempt} after {delay_ms}ms",
                e.at
            );
        }
    }
    if !state.gates.is_empty() {
        let _ = writeln!(out, "\ngates");
        for g in &state.gates {
            let _ = writeln!(
                out,
                "  {} (pass {}) {} by {}: {}",
                g.phase,
                g.loop_count + 1,
                if g.pass { "passed" } else { "FAILED" },
                g.rule,
                g.reason
            );
        }
    }
    for e in &events {
        if let EventKind::FeedbackDecided {
            severity,
            summary,
            rule,
            ..
        } = &e.kind
        {
            let _ = writeln!(out, "\nfeedback {severity} by {rule}: {summary}");
        }
    }
    if !state.breakers.is_empty() {
        let b: Vec<String> = state
            .breakers
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str()))
            .collect();
        let _ = writeln!(out, "\nbreakers {}", b.join(" "));
    }
    if !state.dead_letters.is_empty() {
        let _ = writeln!(out, "dead letters {}", state.dead_letters.join(" "));
    }
    if !state.warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings");
        for w in &state.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    ExitCode::SUCCESS
}

/// `llm: 14 calls, 9120 input + 3400 output tokens`.
pub(super) fn usage_line(u: &crate::model::Usage) -> String {
    let mut line = format!(
        "llm: {} call{}, {} input + {} output tokens",
        u.calls,
        if u.calls == 1 { "" } else { "s" },
        u.input_tokens,
        u.output_tokens
    );
    if u.cached > 0 {
        line.push_str(&format!(
            "; {} task output(s) from the response cache",
            u.cached
        ));
    }
    line
}

/// The first 12 digits of a hash (all of a shorter one: the log may have been edited).
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// `conductor artifacts RUN [--out DIR] [--all] [--json]`.
pub(super) fn artifacts(
    store: &Arc<SqliteStore>,
    id: &str,
    out_dir: Option<&std::path::Path>,
    all: bool,
    json: bool,
) -> ExitCode {
    let (run, events) = match load_run(store, id) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let files: Vec<_> = crate::exec::artifacts::list(&events)
        .into_iter()
        .filter(|a| all || !a.superseded)
        .collect();
    if let Some(dir) = out_dir {
        let mut written = 0;
        for a in files.iter().filter(|a| !a.superseded) {
            if let Err(e) = crate::agents::llm::roles::check_path(&a.path) {
                return fail(format!("the run's log names a file it may not write: {e}"));
            }
            if let Err(e) = crate::exec::artifacts::refuse_links(dir, &a.path) {
                return fail(e.message);
            }
            let content = match store.artifact(&a.sha256) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return fail(format!(
                        "`{}` ({}) is not in the store `{}`",
                        a.path,
                        short(&a.sha256),
                        store.describe()
                    ))
                }
                Err(e) => return fail(e),
            };
            let target = dir.join(&a.path);
            let result = target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&target, content));
            if let Err(e) = result {
                return fail(format!("cannot write `{}`: {e}", target.display()));
            }
            written += 1;
        }
        println!(
            "wrote {written} file{} of run {run} to {}",
            if written == 1 { "" } else { "s" },
            dir.display()
        );
        return ExitCode::SUCCESS;
    }
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&files).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if files.is_empty() {
        let _ = writeln!(out, "run {run} has no artifacts");
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(
        out,
        "{:<32} {:>8}  {:<12}  {:<16} {:>4}  ATTEMPT",
        "PATH", "BYTES", "SHA256", "TASK", "PASS"
    );
    for a in &files {
        let _ = writeln!(
            out,
            "{:<32} {:>8}  {:<12}  {:<16} {:>4}  #{}{}",
            a.path,
            a.size,
            short(&a.sha256),
            a.task,
            a.loop_count + 1,
            a.attempt,
            if a.superseded {
                "  (replaced later)"
            } else {
                ""
            }
        );
    }
    ExitCode::SUCCESS
}

pub(super) fn events(store: &Arc<SqliteStore>, id: &str, follow: bool) -> ExitCode {
    let run = match find_run(store.as_ref(), id) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut printed = 0usize;
    loop {
        let events = match store.events(&run) {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        let mut out = std::io::stdout().lock();
        for e in &events[printed.min(events.len())..] {
            if let Ok(line) = serde_json::to_string(e) {
                if writeln!(out, "{line}").is_err() {
                    return ExitCode::SUCCESS; // the reader went away
                }
            }
        }
        let _ = out.flush();
        printed = events.len();
        // Only the last event says whether the run has stopped: a resumed run has older ones.
        let finished = events.last().is_some_and(|e| {
            matches!(
                e.kind,
                EventKind::RunFinished { .. } | EventKind::RunWaiting { .. }
            )
        });
        if !follow || finished {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

pub(super) fn dlq_list(store: &Arc<SqliteStore>, run: Option<&str>, json: bool) -> ExitCode {
    let run = match run.map(|r| find_run(store.as_ref(), r)).transpose() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let entries = match store.dead_letters(run.as_ref()) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let mut out = std::io::stdout().lock();
    if json {
        for e in &entries {
            let _ = writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default());
        }
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(
        out,
        "{:<22} {:<16} {:<12} {:>8}  {:<24} REASON",
        "ENTRY", "TASK", "POOL", "ATTEMPTS", "AT"
    );
    for e in &entries {
        let _ = writeln!(
            out,
            "{:<22} {:<16} {:<12} {:>8}  {:<24} {}",
            e.id,
            e.task,
            e.pool,
            e.attempts.len(),
            e.at.to_string(),
            e.reason
        );
    }
    ExitCode::SUCCESS
}

pub(super) fn dlq_show(store: &Arc<SqliteStore>, entry: &str) -> ExitCode {
    let entries = match store.dead_letters(None) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    match entries.iter().find(|e| e.id == entry) {
        Some(e) => {
            println!("{}", serde_json::to_string_pretty(e).unwrap_or_default());
            ExitCode::SUCCESS
        }
        None => fail(format!(
            "no dead letter `{entry}` (see `conductor dlq list`)"
        )),
    }
}

pub(super) fn dlq_drop(store: &Arc<SqliteStore>, entry: &str) -> ExitCode {
    match store.drop_dead_letter(entry) {
        Ok(true) => {
            println!("dropped {entry}");
            ExitCode::SUCCESS
        }
        Ok(false) => fail(format!(
            "no dead letter `{entry}` (see `conductor dlq list`)"
        )),
        Err(e) => fail(e),
    }
}

pub(super) fn gc(
    store: &Arc<SqliteStore>,
    store_path: &std::path::Path,
    older_than: &str,
) -> ExitCode {
    let age = match humantime::parse_duration(older_than) {
        Ok(d) => d,
        Err(e) => {
            return fail(format!(
                "`--older-than {older_than}`: {e} (e.g. `30d`, `12h`)"
            ))
        }
    };
    let cutoff =
        crate::model::Timestamp(crate::model::now().0.saturating_sub(age.as_millis() as u64));
    match store.gc(cutoff) {
        Ok(ids) => {
            // Their workspaces too: `runs/RUN` beside the store.
            let runs_dir = store_path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .join("runs");
            for id in &ids {
                let dir = runs_dir.join(&*id.0);
                if dir.exists() {
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        eprintln!("warning: cannot remove `{}`: {e}", dir.display());
                    }
                }
            }
            let n = ids.len();
            println!(
                "deleted {n} finished run{} older than {older_than}, with their workspaces",
                if n == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `conductor why RUN TASK`: the story of one task, from the log, with the rules and reasons.
pub(super) fn why(store: &Arc<SqliteStore>, id: &str, task: &str) -> ExitCode {
    let (run, events) = match load_run(store, id) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let state = RunState::from_events(&events);
    let Some(result) = state.task(task) else {
        let names: Vec<&str> = state.tasks.iter().map(|t| &*t.task).collect();
        let hint = crate::diag::suggest(task, names.iter().copied())
            .map(|n| format!("; did you mean `{n}`?"))
            .unwrap_or_default();
        return fail(format!("run {run} has no task `{task}`{hint}"));
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "task `{task}` of run {run} (workflow {}, phase {}): {}",
        state.workflow,
        result.phase,
        result.status.as_str()
    );
    let mut in_phase = false;
    for e in &events {
        let at = e.at;
        let line = match &e.kind {
            EventKind::PhaseEntered { phase, loop_count } => {
                in_phase = **phase == *result.phase;
                in_phase.then(|| format!("phase {phase} entered (pass {})", loop_count + 1))
            }
            EventKind::TaskDispatched { task: t, agent, attempt } if &**t == task => {
                Some(format!("attempt {attempt} dispatched to {agent}: its dependencies were final and the enforce rules allowed it"))
            }
            EventKind::AttemptFinished { task: t, attempt, duration_ms, error, .. } if &**t == task => {
                Some(match error {
                    None => format!("attempt {attempt} succeeded after {duration_ms}ms"),
                    Some(err) => format!(
                        "attempt {attempt} failed after {duration_ms}ms: {err} ({})",
                        if err.retryable { "retryable" } else { "not retryable" }
                    ),
                })
            }
            EventKind::RetryScheduled { task: t, attempt, delay_ms } if &**t == task => {
                Some(format!("retry {attempt} scheduled after {delay_ms}ms of backoff: the error was retryable and attempts were left"))
            }
            EventKind::TaskSkipped { task: t, reason, detail } if &**t == task => Some(format!(
                "skipped ({}){}",
                match reason {
                    crate::model::SkipReason::WhenFalse => "when_false",
                    crate::model::SkipReason::UpstreamFailed => "upstream_failed",
                    crate::model::SkipReason::Decision => "decision",
                },
                detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
            )),
            EventKind::DeadLettered { entry } if &*entry.task == task => Some(format!(
                "dead-lettered as {}: {} (see `conductor dlq show {}`)",
                entry.id, entry.reason, entry.id
            )),
            EventKind::Escalated { task: t, error } if &**t == task => {
                Some(format!("escalated, as a non-retryable failure: {error}"))
            }
            EventKind::Decided { task: t, decision, by } if &**t == task => {
                Some(format!("decision: {decision:?} (by {by})").to_lowercase())
            }
            EventKind::PolicyViolation { task: t, rule, reason } if &**t == task => {
                Some(format!("denied by {rule}: {reason}; the run failed"))
            }
            EventKind::TaskFinished { task: t, status, .. } if &**t == task => {
                Some(format!("finished {}", status.as_str()))
            }
            EventKind::BreakerChanged { agent, state: b, reason } if in_phase => Some(format!(
                "the circuit breaker of `{agent}` became {}{}",
                b.as_str(),
                reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
            )),
            EventKind::GateDecided { phase, pass: ok, reason, rule } if **phase == *result.phase => {
                Some(format!(
                    "the gate of phase {phase} {} ({rule}): {reason}",
                    if *ok { "passed" } else { "failed" }
                ))
            }
            EventKind::RunResumed { rerun } if rerun.iter().any(|t| &**t == task) => {
                Some("the run was resumed; this task was in flight at the stop and ran again".into())
            }
            _ => None,
        };
        if let Some(line) = line {
            let _ = writeln!(out, "  {at}  {line}");
        }
    }
    ExitCode::SUCCESS
}
