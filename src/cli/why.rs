//! `conductor why RUN TASK`: why a task ran, was skipped, retried, dead-lettered or escalated.

use std::process::ExitCode;

use super::{output, Globals};
use crate::app::AppError;

/// Explain a task: why it ran, was skipped, retried, dead-lettered or escalated.
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    run: String,
    task: String,
}

pub(super) fn run(args: Args, globals: &Globals) -> Result<ExitCode, AppError> {
    let store = globals.store.open_existing()?;
    let run = crate::app::load_run(&*store, &args.run)?;
    let result = run.task(&args.task)?;
    let mut lines = crate::report::why_text(
        result,
        run.id.as_str(),
        &run.state.workflow,
        &run.events,
        &globals.flags,
    );
    if !result.instances.is_empty() {
        let (total, counts) = run.state.instance_counts(&result.task);
        let counts: Vec<String> = counts
            .iter()
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        lines.push(format!(
            "  its {total} instances now: {} (each: `conductor why {} '{}[KEY]'{}`)",
            counts.join(", "),
            run.id.as_str(),
            result.task,
            globals.flags
        ));
    }
    for line in lines {
        if !output::line(crate::text::terminal_safe(&line)) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
