//! Observers see every event after it is committed: the `--json` lines and the human view.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::model::{Event, EventKind, RunState, RunStatus, SkipReason, TaskStatus};

/// Receives a run's events as they are committed, and its final state.
pub trait Observer: Send {
    fn event(&mut self, event: &Event, state: &RunState);
    fn finished(&mut self, _state: &RunState) {}
}

/// One JSON object per line for every event; the last line is the final run state.
pub struct JsonLines<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> JsonLines<W> {
    pub fn new(out: W) -> JsonLines<W> {
        JsonLines { out }
    }
}

impl<W: Write + Send> Observer for JsonLines<W> {
    fn event(&mut self, event: &Event, _state: &RunState) {
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(self.out, "{line}");
        }
    }

    fn finished(&mut self, state: &RunState) {
        if let Ok(line) = serde_json::to_string(&state.view()) {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }
}

/// The view for people: a header, a section per phase and pass, a line per task, gate and
/// feedback decisions with their reasons, a summary; spinners for running tasks when stderr is
/// a terminal, plain lines otherwise.
pub struct HumanView {
    out: Box<dyn Write + Send>,
    progress: Option<MultiProgress>,
    bars: std::collections::HashMap<String, ProgressBar>,
    store: String,
    /// What each task's last attempt did, shown on its final line: files written, tokens,
    /// whether it came from the response cache.
    last_attempt: std::collections::HashMap<String, String>,
    files_written: usize,
    replayed_calls: u64,
    /// Each task's last failed attempt's error, for the retry line.
    last_error: std::collections::HashMap<String, String>,
    workspace: Option<std::path::PathBuf>,
}

impl HumanView {
    /// Writes to `out`; shows live progress on stderr when it is a terminal.
    pub fn new(out: Box<dyn Write + Send>, store: String) -> HumanView {
        // Live progress only when both streams are a terminal: lines printed through the
        // progress bars go to stderr, and a redirected stdout must still get every line.
        let progress = (std::io::stderr().is_terminal() && std::io::stdout().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        HumanView {
            out,
            progress,
            bars: std::collections::HashMap::new(),
            store,
            last_attempt: std::collections::HashMap::new(),
            files_written: 0,
            replayed_calls: 0,
            last_error: std::collections::HashMap::new(),
            workspace: None,
        }
    }

    /// Names the run's working folder in the summary, where agents' files are.
    pub fn with_workspace(mut self, dir: Option<std::path::PathBuf>) -> HumanView {
        self.workspace = dir;
        self
    }

    fn line(&mut self, text: String) {
        match &self.progress {
            Some(mp) => {
                let _ = mp.println(text);
            }
            None => {
                let _ = writeln!(self.out, "{text}");
            }
        }
    }

    fn stop_bar(&mut self, task: &str) {
        if let Some(bar) = self.bars.remove(task) {
            bar.finish_and_clear();
        }
    }
}

fn secs(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

impl Observer for HumanView {
    fn event(&mut self, event: &Event, state: &RunState) {
        match &event.kind {
            EventKind::RunStarted {
                run_id,
                workflow,
                file,
                ..
            } => {
                let store = self.store.clone();
                self.line(format!(
                    "run {run_id}  workflow {workflow}  file {file}  store {store}"
                ));
            }
            EventKind::PhaseEntered { phase, loop_count } => {
                let pass = if *loop_count > 0 {
                    format!(" (pass {})", loop_count + 1)
                } else {
                    String::new()
                };
                self.line(format!("\nphase {phase}{pass}"));
            }
            EventKind::TaskDispatched {
                task,
                agent,
                attempt,
            } => {
                if let Some(mp) = &self.progress {
                    let bar = mp.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    let attempt = if *attempt > 1 {
                        format!(" (attempt {attempt})")
                    } else {
                        String::new()
                    };
                    bar.set_message(format!("{task:<20} {agent}{attempt}"));
                    bar.enable_steady_tick(Duration::from_millis(100));
                    self.bars.insert(task.to_string(), bar);
                }
            }
            EventKind::RetryScheduled {
                task,
                attempt,
                delay_ms,
            } => {
                self.stop_bar(task);
                // The error of the attempt this retry follows, from the events (the state may
                // be a later one when a resumed run's history is shown).
                let why = self.last_error.get(&**task).cloned().unwrap_or_else(|| {
                    state
                        .task(task)
                        .and_then(|t| t.error.as_ref())
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                });
                self.line(format!(
                    "  ↻ {task:<20} attempt {} failed ({why}); retry {attempt} in {}",
                    attempt - 1,
                    secs(*delay_ms)
                ));
            }
            EventKind::TaskFinished {
                task,
                status,
                error,
            } => {
                self.stop_bar(task);
                let t = state.task(task);
                let agent = t
                    .and_then(|t| t.agent.as_deref())
                    .unwrap_or("-")
                    .to_string();
                let attempts = t.map_or(0, |t| t.attempts);
                let ms = t.map_or(0, |t| t.duration_ms);
                let mark = match status {
                    TaskStatus::Completed => "✓",
                    TaskStatus::Failed => "✗",
                    TaskStatus::Cancelled => "⊘",
                    _ => "·",
                };
                let mut text = format!(
                    "  {mark} {task:<20} {agent:<14} {:<10} {attempts} attempt{}  {}",
                    status.as_str(),
                    if attempts == 1 { "" } else { "s" },
                    secs(ms)
                );
                if let Some(e) = error {
                    text.push_str(&format!("  {e}"));
                }
                if let Some(extra) = self.last_attempt.remove(&**task) {
                    text.push_str(&extra);
                }
                self.line(text);
            }
            EventKind::AttemptFinished {
                task,
                calls,
                artifacts,
                cached,
                error,
                ..
            } => {
                if let Some(e) = error {
                    self.last_error.insert(task.to_string(), e.to_string());
                }
                let mut extra = String::new();
                if *cached {
                    extra.push_str("  (cached)");
                }
                if !calls.is_empty() {
                    let tokens: u64 = calls.iter().map(|c| c.input_tokens + c.output_tokens).sum();
                    let replayed = calls.iter().all(|c| c.replayed);
                    self.replayed_calls += calls.iter().filter(|c| c.replayed).count() as u64;
                    extra.push_str(&format!(
                        "  {tokens} tokens{}",
                        if replayed { " (replayed)" } else { "" }
                    ));
                }
                if !artifacts.is_empty() {
                    self.files_written += artifacts.len();
                    let paths: Vec<&str> = artifacts.iter().map(|a| a.path.as_str()).collect();
                    extra.push_str(&format!("  → {}", paths.join(", ")));
                }
                self.last_attempt.insert(task.to_string(), extra);
            }
            EventKind::TaskSkipped { task, reason, .. } => {
                let why = match reason {
                    SkipReason::WhenFalse => "its `when` rule is false",
                    SkipReason::UpstreamFailed => "upstream_failed",
                    SkipReason::Decision => "skipped by decision",
                };
                self.line(format!("  - {task:<20} {:<14} skipped    {why}", "-"));
            }
            EventKind::PolicyViolation { task, rule, reason } => {
                self.line(format!(
                    "  ✗ policy violation: {rule} denied `{task}`: {reason}"
                ));
            }
            EventKind::GateDecided {
                phase,
                pass,
                reason,
                rule,
            } => {
                let verdict = if *pass { "passed" } else { "FAILED" };
                self.line(format!("  gate {phase} {verdict} ({rule}): {reason}"));
            }
            EventKind::FeedbackDecided {
                severity, summary, ..
            } => {
                if summary.is_empty() {
                    self.line(format!("\nfeedback: {severity}"));
                } else {
                    self.line(format!("\nfeedback: {severity}: {summary}"));
                }
            }
            EventKind::LoopStarted { loop_count, target } => {
                self.line(format!("loop {loop_count}: back to phase {target}"));
            }
            EventKind::Warning { message } => self.line(format!("warning: {message}")),
            EventKind::BreakerChanged {
                agent,
                state,
                reason,
            } => {
                let why = reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                self.line(format!(
                    "  ⚡ circuit breaker of `{agent}` is {}{why}",
                    state.as_str()
                ));
            }
            EventKind::DeadLettered { entry } => {
                self.line(format!(
                    "  ☠ {:<20} dead-lettered ({}) as {}",
                    entry.task, entry.reason, entry.id
                ));
            }
            EventKind::Escalated { task, error } => {
                self.stop_bar(task);
                self.line(format!("  ! {task:<20} escalated: {error}"));
            }
            EventKind::Decided { task, decision, by } => {
                let decision = match decision {
                    crate::model::Decision::Retry => "retry",
                    crate::model::Decision::Skip => "skip",
                    crate::model::Decision::Abort => "abort",
                };
                self.line(format!("  → {task:<20} {decision} (decided by {by})"));
            }
            EventKind::RunWaiting { tasks } => {
                let names: Vec<&str> = tasks.iter().map(|t| &**t).collect();
                self.line(format!(
                    "\nthe run waits for a decision on {}; answer with `conductor resume {} --decide TASK=retry|skip|abort`",
                    names.join(", "),
                    state.workflow_id
                ));
            }
            EventKind::RunResumed { rerun } => {
                let again = if rerun.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = rerun.iter().map(|t| &**t).collect();
                    format!("; in flight at the stop, run again: {}", names.join(", "))
                };
                self.line(format!("\nresumed {}{again}", state.workflow_id));
            }
            EventKind::RunFinished { .. } => {}
        }
    }

    fn finished(&mut self, state: &RunState) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
        let count = |s: TaskStatus| state.tasks.iter().filter(|t| t.status == s).count();
        let status = state.status();
        let mut text = format!(
            "\nrun {} {}: {} completed, {} failed, {} skipped, {} loop{}",
            state.workflow_id,
            match status {
                RunStatus::Completed => "COMPLETED",
                RunStatus::Failed => "FAILED",
                RunStatus::Cancelled => "CANCELLED",
                RunStatus::Waiting => "WAITING",
                _ => status.as_str(),
            },
            count(TaskStatus::Completed),
            count(TaskStatus::Failed),
            count(TaskStatus::Skipped),
            state.feedback_loop_count,
            if state.feedback_loop_count == 1 {
                ""
            } else {
                "s"
            },
        );
        if let Some(e) = &state.error {
            text.push_str(&format!("\n  {e}"));
        }
        if state.usage.calls > 0 || state.usage.cached > 0 {
            text.push_str(&format!(
                "\n  llm: {} call{}{}, {} input + {} output tokens",
                state.usage.calls,
                if state.usage.calls == 1 { "" } else { "s" },
                if self.replayed_calls > 0 && self.replayed_calls == state.usage.calls {
                    " (replayed from a cassette)"
                } else {
                    ""
                },
                state.usage.input_tokens,
                state.usage.output_tokens
            ));
            if state.usage.cached > 0 {
                text.push_str(&format!(
                    "; {} task output{} from the response cache",
                    state.usage.cached,
                    if state.usage.cached == 1 { "" } else { "s" }
                ));
            }
        }
        if self.files_written > 0 {
            text.push_str(&format!(
                "\n  files: {} written to {}; list or export them with `conductor artifacts {}`",
                self.files_written,
                self.workspace
                    .as_ref()
                    .map_or("the store".to_string(), |w| w.display().to_string()),
                state.workflow_id
            ));
        }
        self.line(text);
        let _ = self.out.flush();
    }
}
