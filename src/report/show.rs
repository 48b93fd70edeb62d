//! The texts of `conductor show` and `conductor runs`.

use std::fmt::Write;

use serde::Serialize;

use crate::model::{Event, EventKind, RunState, RunSummary, TaskStatus, Timestamp, Usage};
use crate::store::RunRecord;
use crate::text::plural;

/// How long a run took, or `-` while it has not finished.
pub fn duration_text(state: &RunState) -> String {
    span_text(state.started_at, state.completed_at)
}

/// `12.3s` from start to end, `-` while either is missing.
fn span_text(started: Option<Timestamp>, ended: Option<Timestamp>) -> String {
    match (started, ended) {
        (Some(a), Some(b)) => format!("{:.1}s", (b.0.saturating_sub(a.0)) as f64 / 1000.0),
        _ => "-".into(),
    }
}

/// `llm: 14 calls, 9120 input + 3400 output tokens`.
pub fn usage_line(u: &Usage) -> String {
    let mut line = format!(
        "llm: {} call{}, {} input + {} output tokens",
        u.calls,
        plural(u.calls),
        u.input_tokens,
        u.output_tokens
    );
    if u.calls > 0 {
        line.push_str(&cost_phrase(u));
    }
    if u.cached > 0 {
        line.push_str(&format!(
            "; {} task output(s) from the response cache (no cost)",
            u.cached
        ));
    }
    line
}

/// `, cost $0.0123`, or `, no cost (replayed)`.
pub(crate) fn cost_phrase(u: &Usage) -> String {
    let text = u.cost_text();
    if text.starts_with('$') {
        format!(", cost {text}")
    } else {
        format!(", {text}")
    }
}

/// `by phase: build $0.01, review $0.02; by pass: 1 $0.01, 2 $0.02`: where the money went,
/// when there was any spend.
pub fn cost_breakdown(state: &RunState) -> Option<String> {
    // Nothing to break down: no call, or every call replayed (the total already says so).
    if state.usage.calls == 0 || state.usage.replayed == state.usage.calls {
        return None;
    }
    let phases: Vec<String> = state
        .phase_usage
        .iter()
        .filter(|(_, u)| u.calls > 0)
        .map(|(p, u)| format!("{p} {}", u.cost_text()))
        .collect();
    let mut text = format!("cost by phase: {}", phases.join(", "));
    if state.pass_usage.len() > 1 {
        let passes: Vec<String> = state
            .pass_usage
            .iter()
            .enumerate()
            .map(|(i, u)| format!("{} {}", i + 1, u.cost_text()))
            .collect();
        text.push_str(&format!("; by pass: {}", passes.join(", ")));
    }
    Some(text)
}

/// One row of `conductor runs`.
#[derive(Clone, Debug, Serialize)]
pub struct RunRow {
    pub id: String,
    pub workflow: String,
    pub file: String,
    pub status: String,
    pub phase: Option<String>,
    #[serde(rename = "loop")]
    pub loop_count: u32,
    pub completed: usize,
    pub failed: usize,
    pub tasks: usize,
    pub started_at: String,
    pub duration: String,
    /// What its model calls cost (`-` without calls).
    pub cost: String,
    /// `--dry-run`: every agent was a mock.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// A child run: the run that started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl RunRow {
    /// The row of a run, from its record and its [`RunSummary`] (kept by the store, or
    /// [`RunState::summary`] of its folded log).
    pub fn new(record: &RunRecord, summary: &RunSummary) -> RunRow {
        RunRow {
            id: record.id.to_string(),
            workflow: record.workflow.clone(),
            file: record.file.clone(),
            status: summary.status.unwrap_or(record.status).as_str().to_string(),
            phase: summary.phase.clone(),
            loop_count: summary.feedback_loop_count,
            completed: summary.completed,
            failed: summary.failed,
            tasks: summary.tasks,
            started_at: record.created_at.to_string(),
            duration: span_text(summary.started_at, summary.completed_at),
            cost: summary.usage.cost_text(),
            dry_run: summary.dry_run,
            parent: summary.parent.as_ref().map(|p| p.to_string()),
        }
    }

    pub const HEADER: [&'static str; 9] = [
        "ID",
        "WORKFLOW",
        "STATUS",
        "PHASE",
        "LOOP",
        "DONE/FAILED",
        "STARTED",
        "DURATION",
        "COST",
    ];

    /// The row as the table prints it.
    pub fn cells(&self) -> [String; 9] {
        [
            self.id.clone(),
            match &self.parent {
                Some(_) => format!("{} (child)", self.workflow),
                None => self.workflow.clone(),
            },
            if self.dry_run {
                format!("{} (dry)", self.status)
            } else {
                self.status.clone()
            },
            self.phase.clone().unwrap_or_else(|| "-".into()),
            self.loop_count.to_string(),
            format!("{}/{} of {}", self.completed, self.failed, self.tasks),
            self.started_at.clone(),
            self.duration.clone(),
            self.cost.clone(),
        ]
    }
}

/// `conductor show`: the run, every task, every attempt, gates, feedback, breakers. A fan-out
/// task is one line with its instances counted by status, followed by its failed instances;
/// `expand` names the fan-out tasks whose every instance is listed.
pub fn show_text(state: &RunState, events: &[Event], expand: &[&str]) -> String {
    let mut out = String::new();
    header(&mut out, state);
    let _ = writeln!(out, "\ntasks");
    let shown = |t: &crate::model::TaskResult| match &t.instance {
        Some(i) => t.status == TaskStatus::Failed || expand.contains(&&*i.of),
        None => true,
    };
    for t in state.tasks.iter().filter(|t| t.instance.is_none()) {
        let _ = writeln!(out, "{}", task_line(t, state));
        for &i in &t.instances {
            let inst = &state.tasks[i as usize];
            if shown(inst) {
                let _ = writeln!(out, "  {}", task_line(inst, state));
            }
        }
    }
    let _ = writeln!(out, "\nattempts");
    let mut hidden = 0usize;
    for e in events {
        if let Some((task, line)) = attempt_line(e) {
            match state.task(task) {
                Some(t) if !shown(t) => hidden += 1,
                _ => {
                    let _ = writeln!(out, "  {} {line}", e.at);
                }
            }
        }
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            "  … and {hidden} attempts of fan-out instances that did not fail (`conductor show {} TASK` lists a fan-out task's)",
            state.workflow_id
        );
    }
    decisions(&mut out, state, events);
    out
}

/// A task's line in `show`; a fan-out task's counts its instances.
fn task_line(t: &crate::model::TaskResult, state: &RunState) -> String {
    if !t.instances.is_empty() {
        let (total, counts) = state.instance_counts(&t.task);
        let counts: Vec<String> = counts
            .iter()
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        return format!(
            "  {:<20} {:<12} {:<11} {:<14} {total} instance{}: {}",
            format!("{} ×{total}", t.task),
            t.phase,
            t.status.as_str(),
            "-",
            plural(total as u64),
            counts.join(", ")
        );
    }
    let mut line = format!(
        "  {:<20} {:<12} {:<11} {:<14} {} attempt{}  {}ms",
        t.task,
        t.phase,
        t.status.as_str(),
        t.agent.as_deref().unwrap_or("-"),
        t.attempts,
        plural(t.attempts),
        t.duration_ms
    );
    let usage = t.usage();
    if usage.calls > 0 || usage.cut_off.llm_calls > 0 {
        line.push_str(&format!("  {}", usage.cost_text()));
    }
    if let Some(reason) = t.skip_reason {
        line.push_str(&format!("  skipped: {}", reason.as_str()));
    }
    if let Some(e) = &t.error {
        line.push_str(&format!("  {}", one_line(e)));
    }
    if let Some(c) = t.child_runs.last() {
        line.push_str(&format!("  child run {}", c.run));
    }
    if let Some(d) = &t.deferred {
        line.push_str(&format!(
            "  waiting: deferred by {}: {}",
            d.rule,
            one_line(&d.reason)
        ));
    }
    if let Some(a) = &t.approval {
        let asks = a
            .message
            .as_deref()
            .map(|m| format!(": {}", one_line(m)))
            .unwrap_or_default();
        line.push_str(&format!(
            "  waiting for approval{asks} (rejected at {} without a decision)",
            crate::model::Timestamp(a.due_ms())
        ));
    }
    if t.status == TaskStatus::Failed {
        for l in super::tail_lines(t.tail(), "      ") {
            line.push('\n');
            line.push_str(&l);
        }
    }
    line
}

fn header(out: &mut String, state: &RunState) {
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
        duration_text(state)
    );
    if let Some(p) = &state.parent {
        let _ = writeln!(
            out,
            "child run of run {} (its task `{}`; `conductor show {}`)",
            p.run, p.task, p.run
        );
    }
    if let Some(outputs) = &state.outputs {
        let outputs: Vec<String> = outputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "outputs {}", outputs.join(" "));
    }
    if state.dry_run {
        let _ = writeln!(
            out,
            "dry run: every agent was a mock; nothing ran and no file was written"
        );
    }
    if state.amendments > 0 {
        let _ = writeln!(
            out,
            "amended: resumed {} time{} with a changed workflow file (see the workflow_amended events)",
            state.amendments,
            plural(state.amendments)
        );
    }
    if !state.params.is_empty() {
        let params: Vec<String> = state
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "params {}", params.join(" "));
    }
    if let Some(e) = &state.error {
        let _ = writeln!(out, "error {}", one_line(e));
    }
    if state.usage.calls > 0 || state.usage.cached > 0 {
        let _ = writeln!(out, "{}", usage_line(&state.usage));
    }
    if let Some(b) = cost_breakdown(state) {
        let _ = writeln!(out, "{b}");
    }
}

/// An attempt or a retry, as `show` lists them, with the task it is of.
fn attempt_line(e: &Event) -> Option<(&str, String)> {
    match &e.kind {
        EventKind::AttemptFinished {
            task,
            agent,
            attempt,
            duration_ms,
            error,
            calls,
            artifacts,
            cached,
            ..
        } => {
            let mut result = error.as_ref().map_or("ok".to_string(), one_line);
            if *cached {
                result.push_str("  (from the response cache)");
            }
            if !calls.is_empty() {
                let mut u = Usage::default();
                calls.iter().for_each(|c| u.add(c));
                result.push_str(&format!(
                    "  {} call{} {}+{} tokens {}",
                    u.calls,
                    plural(u.calls),
                    u.input_tokens,
                    u.output_tokens,
                    u.cost_text()
                ));
            }
            if !artifacts.is_empty() {
                let paths: Vec<&str> = artifacts.iter().map(|a| &*a.path).collect();
                result.push_str(&format!("  wrote {}", paths.join(", ")));
            }
            Some((
                task,
                format!("{task:<20} #{attempt} on {agent:<14} {duration_ms}ms  {result}"),
            ))
        }
        EventKind::RetryScheduled {
            task,
            attempt,
            delay_ms,
        } => Some((
            task,
            format!("{task:<20} retry #{attempt} after {delay_ms}ms"),
        )),
        _ => None,
    }
}

/// Gates, feedback, breakers, dead letters and warnings.
fn decisions(out: &mut String, state: &RunState, events: &[Event]) {
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
                one_line(&g.reason)
            );
        }
    }
    for e in events {
        if let EventKind::FeedbackDecided {
            severity,
            summary,
            rule,
            ..
        } = &e.kind
        {
            let _ = writeln!(
                out,
                "\nfeedback {severity} by {rule}: {}",
                one_line(summary)
            );
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
}

/// A message from outside (an error, a reason) on one line: a newline in it would start a line
/// that looks like the report's own.
fn one_line(message: &(impl std::fmt::Display + ?Sized)) -> String {
    crate::text::printable(&message.to_string()).into_owned()
}
