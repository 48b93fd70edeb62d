//! `conductor dlq list|show|retry|drop`: the dead-letter queue.

use std::process::ExitCode;

use super::{output, Globals};
use crate::app::AppError;

#[derive(clap::Subcommand, Debug)]
pub(super) enum Command {
    /// List dead-lettered tasks.
    List {
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one entry with its attempts and the request it was sent.
    Show {
        entry: String,
        /// The entry as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an entry from the queue (it stays in the run's log).
    Drop { entry: String },
    /// Re-run the task in its run and, when the run stopped in that task's phase, continue it.
    Retry { entry: String },
}

pub(super) fn run(command: Command, globals: &Globals) -> Result<ExitCode, AppError> {
    if let Command::Retry { entry } = &command {
        return super::run::retry_dead_letter(entry, globals);
    }
    let store = globals.store.open_existing()?;
    match command {
        Command::List { run, json } => {
            let run = run.map(|r| crate::app::find_run(&*store, &r)).transpose()?;
            let entries = store.dead_letters(run.as_ref())?;
            if json {
                for e in &entries {
                    output::line(serde_json::to_string(e).unwrap_or_default());
                }
                return Ok(ExitCode::SUCCESS);
            }
            output::line(format!(
                "{:<22} {:<16} {:<12} {:>8}  {:<24} REASON",
                "ENTRY", "TASK", "POOL", "ATTEMPTS", "AT"
            ));
            for e in &entries {
                output::line(list_row(e));
            }
        }
        Command::Show { entry, json } => {
            let entries = store.dead_letters(None)?;
            let e = entries
                .iter()
                .find(|e| e.id == entry)
                .ok_or(AppError::UnknownDeadLetter(entry))?;
            if json {
                output::line(serde_json::to_string_pretty(e).unwrap_or_default());
            } else {
                for line in dead_letter_text(e, &globals.flags) {
                    output::line(crate::text::terminal_safe(&line));
                }
            }
        }
        Command::Drop { entry } => {
            if !store.drop_dead_letter(&entry)? {
                return Err(AppError::UnknownDeadLetter(entry));
            }
            output::line(format!("dropped {entry}"));
        }
        Command::Retry { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// One row of `dlq list`; every value on one line, whatever it holds.
fn list_row(e: &crate::model::DeadLetter) -> String {
    let safe = |s: &str| crate::text::printable(s).into_owned();
    format!(
        "{:<22} {:<16} {:<12} {:>8}  {:<24} {}",
        safe(&e.id),
        safe(&e.task),
        safe(&e.pool),
        e.attempts.len(),
        e.at.to_string(),
        safe(&e.reason)
    )
}

/// A dead letter for people: why, its attempts (each failed one with the end of what it
/// printed), the request, and how to retry it.
fn dead_letter_text(e: &crate::model::DeadLetter, flags: &str) -> Vec<String> {
    let mut out = vec![
        format!(
            "entry {}  run {}  task {}  phase {}",
            e.id, e.run_id, e.task, e.phase
        ),
        format!("pool {}  at {}", e.pool, e.at),
        format!("reason {}", e.reason),
        "attempts".to_string(),
    ];
    for a in &e.attempts {
        let error = a.error.as_ref().map_or("ok".to_string(), |e| e.to_string());
        out.push(format!(
            "  #{} on {:<14} {}ms  {error}",
            a.attempt,
            a.agent.as_deref().unwrap_or(&e.pool),
            a.duration_ms
        ));
        out.extend(crate::report::tail_lines(&a.tail, "    "));
    }
    if !e.request.is_null() {
        out.push("request".to_string());
        let text = serde_json::to_string_pretty(&e.request).unwrap_or_default();
        out.extend(text.lines().map(|l| format!("  {l}")));
    }
    out.push(format!(
        "retry it with `conductor dlq retry {}{flags}`; its output: `conductor logs {} {}{flags}`",
        e.id, e.run_id, e.task
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_row_stays_one_line_whatever_its_reason_holds() {
        let entry = crate::model::DeadLetter {
            id: "r1:5".into(),
            run_id: crate::model::RunId("r1".into()),
            task: "t".into(),
            phase: "p".into(),
            pool: "m".into(),
            reason: "bad\nr2:9   fake   m   1  \u{1b}[2J\u{202e}".into(),
            attempts: Vec::new(),
            request: serde_json::Value::Null,
            at: crate::model::Timestamp(0),
        };
        let row = list_row(&entry);
        assert!(!row.contains('\n') && !row.contains('\u{1b}') && !row.contains('\u{202e}'));
        assert!(
            row.ends_with("bad\\nr2:9   fake   m   1  \\u{1b}[2J\\u{202e}"),
            "{row}"
        );
    }
}
