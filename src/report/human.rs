//! The view of a run for people: a header, a section per phase and pass, a line per task, gate
//! and feedback decisions with their reasons, a summary; spinners for running tasks when both
//! streams are a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::Observer;
use crate::model::{
    ArtifactRef, DeadLetter, Event, EventKind, LlmCall, RunState, RunStatus, SkipReason, TaskError,
    TaskStatus,
};
use crate::text::{millis, plural};

pub struct HumanView {
    out: Box<dyn Write + Send>,
    progress: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    store: String,
    /// What each task's last attempt did, shown on its final line: files written, tokens,
    /// whether it came from the response cache.
    last_attempt: HashMap<String, String>,
    files_written: usize,
    replayed_calls: u64,
    /// Each task's last failed attempt's error, for the retry line.
    last_error: HashMap<String, String>,
    workspace: Option<std::path::PathBuf>,
    /// The `--store`/`--config` options the run was started with, for the commands hints name.
    flags: String,
}

impl HumanView {
    /// Writes to `out`; shows live progress on stderr when both streams are a terminal.
    pub fn new(out: Box<dyn Write + Send>, store: String) -> HumanView {
        // Lines printed through the progress bars go to stderr, and a redirected stdout must
        // still get every line.
        let progress = (std::io::stderr().is_terminal() && std::io::stdout().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        HumanView {
            out,
            progress,
            bars: HashMap::new(),
            store,
            last_attempt: HashMap::new(),
            files_written: 0,
            replayed_calls: 0,
            last_error: HashMap::new(),
            workspace: None,
            flags: String::new(),
        }
    }

    /// Names the run's working folder in the summary, where agents' files are.
    pub fn with_workspace(mut self, dir: Option<std::path::PathBuf>) -> HumanView {
        self.workspace = dir;
        self
    }

    /// The options (`--store …`, `--config …`) the commands this view suggests need.
    pub fn with_flags(mut self, flags: String) -> HumanView {
        self.flags = flags;
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

    fn start_bar(&mut self, task: &str, agent: &str, attempt: u32) {
        let Some(mp) = &self.progress else {
            return;
        };
        let bar = mp.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let attempt = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        bar.set_message(format!("{task:<20} {agent}{attempt}"));
        bar.enable_steady_tick(Duration::from_millis(100));
        self.bars.insert(task.to_string(), bar);
    }

    fn retry_line(&mut self, task: &str, attempt: u32, delay_ms: u64, state: &RunState) -> String {
        self.stop_bar(task);
        // The error of the attempt this retry follows, from the events (the state may be a
        // later one when a resumed run's history is shown).
        let why = self.last_error.get(task).cloned().unwrap_or_else(|| {
            state
                .task(task)
                .and_then(|t| t.error.as_ref())
                .map(|e| e.to_string())
                .unwrap_or_default()
        });
        format!(
            "  ↻ {task:<20} attempt {} failed ({why}); retry {attempt} in {}",
            attempt - 1,
            millis(delay_ms)
        )
    }

    fn finished_line(
        &mut self,
        task: &str,
        status: TaskStatus,
        error: Option<&TaskError>,
        state: &RunState,
    ) -> String {
        self.stop_bar(task);
        let t = state.task(task);
        let agent = t.and_then(|t| t.agent.as_deref()).unwrap_or("-");
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
            plural(attempts),
            millis(ms)
        );
        if let Some(e) = error {
            text.push_str(&format!("  {}", one_line(e)));
        }
        if let Some(extra) = self.last_attempt.remove(task) {
            text.push_str(&extra);
        }
        if let Some(t) = t.filter(|t| status == TaskStatus::Failed && !t.tail().is_empty()) {
            for line in super::tail_lines(t.tail(), "      ") {
                text.push('\n');
                text.push_str(&line);
            }
            text.push_str(&format!(
                "\n      │ (all of it: `conductor logs {} {task}{}`)",
                state.workflow_id, self.flags
            ));
        }
        text
    }

    /// Notes what an attempt did, for its task's final line.
    fn attempt_done(
        &mut self,
        task: &str,
        calls: &[LlmCall],
        artifacts: &[ArtifactRef],
        cached: bool,
        error: Option<&TaskError>,
    ) {
        if let Some(e) = error {
            self.last_error.insert(task.to_string(), e.to_string());
        }
        let mut extra = String::new();
        if cached {
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
            let paths: Vec<&str> = artifacts.iter().map(|a| &*a.path).collect();
            extra.push_str(&format!("  → {}", paths.join(", ")));
        }
        self.last_attempt.insert(task.to_string(), extra);
    }

    /// The line an event prints, if any (task events first, then the run's).
    fn describe(&mut self, event: &Event, state: &RunState) -> Option<String> {
        Some(match &event.kind {
            EventKind::TaskDispatched {
                task,
                agent,
                attempt,
            } => {
                self.start_bar(task, agent, *attempt);
                return None;
            }
            // A fan-out's instances print only when they fail; their group prints the counts.
            EventKind::RetryScheduled { task, .. } if is_instance(state, task) => {
                self.stop_bar(task);
                return None;
            }
            EventKind::RetryScheduled {
                task,
                attempt,
                delay_ms,
            } => self.retry_line(task, *attempt, *delay_ms, state),
            EventKind::TaskFinished { task, status, .. }
                if *status != TaskStatus::Failed && is_instance(state, task) =>
            {
                self.stop_bar(task);
                self.last_attempt.remove(&**task);
                return None;
            }
            EventKind::TaskFinished { task, status, .. } if is_group(state, task) => {
                group_line(task, *status, state, &self.flags)
            }
            EventKind::TaskFinished {
                task,
                status,
                error,
            } => self.finished_line(task, *status, error.as_ref(), state),
            // Where to look: the child is a run of its own (a fan-out's are in `show`).
            EventKind::ChildRunStarted {
                task, run, file, ..
            } if !is_instance(state, task) => {
                format!("  ↳ {task:<20} child run {run} of {file}")
            }
            EventKind::FanOutExpanded { task, instances } => format!(
                "  ⋔ {task:<20} fans out to {} instance{}",
                instances.len(),
                plural(instances.len() as u64)
            ),
            EventKind::AttemptFinished {
                task,
                calls,
                artifacts,
                cached,
                error,
                ..
            } => {
                self.attempt_done(task, calls, artifacts, *cached, error.as_ref());
                return None;
            }
            EventKind::TaskSkipped { task, .. } if is_instance(state, task) => return None,
            EventKind::TaskSkipped { task, reason, .. } => {
                let why = match reason {
                    SkipReason::WhenFalse => "its `when` rule is false",
                    SkipReason::UpstreamFailed => "upstream_failed",
                    SkipReason::Decision => "skipped by decision",
                    SkipReason::EmptyFanOut => "a fan-out over nothing",
                    SkipReason::WrapUp => "a budget ran out (wrap_up)",
                    SkipReason::SiblingFailed => "a sibling failed (`fail_fast`)",
                };
                format!("  - {task:<20} {:<14} skipped    {why}", "-")
            }
            EventKind::Escalated { task, error } => {
                self.stop_bar(task);
                format!("  ! {task:<20} escalated: {}", one_line(error))
            }
            other => return run_line(other, state, &self.store, &self.flags),
        })
    }
}

fn is_instance(state: &RunState, task: &str) -> bool {
    state.task(task).is_some_and(|t| t.instance.is_some())
}

fn is_group(state: &RunState, task: &str) -> bool {
    state.task(task).is_some_and(|t| !t.instances.is_empty())
}

/// A fan-out task's one line: its verdict and its instances counted by status.
fn group_line(task: &str, status: TaskStatus, state: &RunState, flags: &str) -> String {
    let mark = match status {
        TaskStatus::Completed => "✓",
        TaskStatus::Failed => "✗",
        TaskStatus::Cancelled => "⊘",
        _ => "·",
    };
    let (total, counts) = state.instance_counts(task);
    let mut parts = Vec::new();
    for (s, n) in counts {
        parts.push(format!("{n} {}", s.as_str()));
    }
    let error = state
        .task(task)
        .and_then(|t| t.error.as_ref())
        .map(|e| format!("  {}", one_line(e)))
        .unwrap_or_default();
    format!(
        "  {mark} {:<20} {:<14} {:<10} {total} instance{}: {}{error}  (each: `conductor show {} {task}{flags}`)",
        format!("{task} ×{total}"),
        "-",
        status.as_str(),
        plural(total as u64),
        parts.join(", "),
        state.workflow_id
    )
}

/// The line of an event about the run rather than one task.
fn run_line(kind: &EventKind, state: &RunState, store: &str, flags: &str) -> Option<String> {
    Some(match kind {
        EventKind::RunStarted {
            run_id,
            workflow,
            file,
            dry_run,
            ..
        } => {
            let dry = if *dry_run {
                "\ndry run: every agent is a mock shaped like its role; nothing runs, no file is written"
            } else {
                ""
            };
            format!("run {run_id}  workflow {workflow}  file {file}  store {store}{dry}")
        }
        EventKind::PhaseEntered { phase, loop_count } => {
            let pass = if *loop_count > 0 {
                format!(" (pass {})", loop_count + 1)
            } else {
                String::new()
            };
            format!("\nphase {phase}{pass}")
        }
        EventKind::PolicyViolation { task, rule, reason } => {
            format!(
                "  ✗ policy violation: {rule} denied `{task}`: {}",
                one_line(reason)
            )
        }
        EventKind::TaskDeferred { task, rule, reason } => {
            format!(
                "  ⏸ {task:<20} waits: deferred by {rule}: {}",
                one_line(reason)
            )
        }
        EventKind::GateDecided {
            phase,
            pass,
            reason,
            rule,
        } => {
            let verdict = if *pass { "passed" } else { "FAILED" };
            format!("  gate {phase} {verdict} ({rule}): {}", one_line(reason))
        }
        EventKind::FeedbackDecided {
            severity, summary, ..
        } => {
            if summary.is_empty() {
                format!("\nfeedback: {severity}")
            } else {
                format!("\nfeedback: {severity}: {}", one_line(summary))
            }
        }
        EventKind::LoopStarted { loop_count, target } => {
            format!("loop {loop_count}: back to phase {target}")
        }
        EventKind::Warning { message } => format!("warning: {}", one_line(message)),
        EventKind::BudgetRaised { scope, limits } => {
            format!("{scope} is now {}", limits.describe())
        }
        EventKind::BreakerChanged {
            agent,
            state: b,
            reason,
        } => {
            let why = reason
                .as_deref()
                .map(|r| format!(": {}", one_line(r)))
                .unwrap_or_default();
            format!("  ⚡ circuit breaker of `{agent}` is {}{why}", b.as_str())
        }
        EventKind::DeadLettered { entry } => dead_letter_line(entry),
        EventKind::Decided {
            task,
            decision,
            by,
            reason,
        } => {
            let why = reason
                .as_deref()
                .map(|r| format!(": {}", one_line(r)))
                .unwrap_or_default();
            format!(
                "  → {task:<20} {} (decided by {}){why}",
                decision.as_str(),
                one_line(by)
            )
        }
        EventKind::ApprovalRequested { task, message, .. } => {
            let asks = message
                .as_deref()
                .map(|m| format!(": {}", one_line(m)))
                .unwrap_or_default();
            format!("  ? {task:<20} waits for approval{asks}")
        }
        EventKind::RunWaiting { tasks } => {
            let mut text = String::from("\nthe run waits for a decision; answer with");
            for t in tasks {
                let approval = state.task(t).is_some_and(|r| r.approval.is_some());
                let choices = if approval {
                    "approve|reject [--reason TEXT]"
                } else {
                    "retry|skip|abort"
                };
                // A fan-out instance's brackets are a shell pattern: quote the argument.
                let arg = if t.contains('[') {
                    format!("'{t}={choices}'")
                } else {
                    format!("{t}={choices}")
                };
                text.push_str(&format!(
                    "\n  conductor resume {}{flags} --decide {arg}",
                    state.workflow_id
                ));
            }
            text
        }
        EventKind::WorkflowAmended { changes, .. } => {
            let mut text = String::from("the workflow file changed; the run goes on with it:");
            for c in changes {
                text.push_str(&format!("\n  {c}"));
            }
            if changes.is_empty() {
                text.push_str(" (no change that affects the run: comments or layout)");
            }
            text
        }
        EventKind::RunReopened { phase, .. } => format!(
            "back to phase {phase}: a failed task runs again (the `always` phases run again at the end)"
        ),
        EventKind::RunEnding { status, .. } => format!(
            "\nthe normal phases are over (the run ends {}); its `always` phases run now",
            status.as_str().to_uppercase()
        ),
        EventKind::RunResumed { rerun } => {
            let again = if rerun.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = rerun.iter().map(|t| &**t).collect();
                format!("; in flight at the stop, run again: {}", names.join(", "))
            };
            format!("\nresumed {}{again}", state.workflow_id)
        }
        _ => return None,
    })
}

/// A message from outside (an error, a reason, a summary) on one line of the view: a newline in
/// it would start a line that looks like the view's own.
fn one_line(message: &(impl std::fmt::Display + ?Sized)) -> String {
    crate::text::printable(&message.to_string()).into_owned()
}

fn dead_letter_line(entry: &DeadLetter) -> String {
    format!(
        "  ☠ {:<20} dead-lettered ({}) as {}",
        entry.task,
        one_line(&entry.reason),
        entry.id
    )
}

impl Observer for HumanView {
    fn event(&mut self, event: &Event, state: &RunState) {
        if let Some(line) = self.describe(event, state) {
            // Messages carry what programs, services and models said.
            let line = match crate::text::terminal_safe(&line) {
                std::borrow::Cow::Borrowed(_) => line,
                std::borrow::Cow::Owned(safe) => safe,
            };
            self.line(line);
        }
    }

    fn finished(&mut self, state: &RunState) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
        let text = summary(
            state,
            self.replayed_calls,
            self.files_written,
            self.workspace.as_deref(),
            &self.flags,
        );
        self.line(text);
        let _ = self.out.flush();
    }
}

/// The run's last lines: its status and counts, its error, its token use and its files.
fn summary(
    state: &RunState,
    replayed_calls: u64,
    files_written: usize,
    workspace: Option<&std::path::Path>,
    flags: &str,
) -> String {
    let status = state.status();
    let mut text = format!(
        "\nrun {}{} {}: {} completed, {} failed, {} skipped, {} loop{}",
        state.workflow_id,
        if state.dry_run { " (dry run)" } else { "" },
        match status {
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Cancelled => "CANCELLED",
            RunStatus::Waiting => "WAITING",
            _ => status.as_str(),
        },
        state.count(TaskStatus::Completed),
        state.count(TaskStatus::Failed),
        state.count(TaskStatus::Skipped),
        state.feedback_loop_count,
        plural(state.feedback_loop_count),
    );
    if let Some(e) = &state.error {
        text.push_str(&format!("\n  {}", one_line(e)));
    }
    let u = &state.usage;
    if u.calls > 0 || u.cached > 0 {
        text.push_str(&format!(
            "\n  llm: {} call{}{}, {} input + {} output tokens",
            u.calls,
            plural(u.calls),
            if replayed_calls > 0 && replayed_calls == u.calls {
                " (replayed from a cassette)"
            } else {
                ""
            },
            u.input_tokens,
            u.output_tokens
        ));
        if u.calls > 0 {
            text.push_str(&super::show::cost_phrase(u));
        }
        if u.cached > 0 {
            text.push_str(&format!(
                "; {} task output{} from the response cache (no cost)",
                u.cached,
                plural(u.cached)
            ));
        }
        if let Some(b) = super::show::cost_breakdown(state) {
            text.push_str(&format!("\n  {b}"));
        }
    }
    if files_written > 0 {
        text.push_str(&format!(
            "\n  files: {files_written} written to {}; list or export them with `conductor artifacts {}{flags}`",
            workspace.map_or("the store".to_string(), |w| w.display().to_string()),
            state.workflow_id
        ));
    }
    text
}
