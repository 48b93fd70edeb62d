//! `conductor show RUN`: a run's state, every task with its attempts, gates and feedback.

use std::process::ExitCode;

use super::{output, Globals};
use crate::app::AppError;

/// Show a run: its state, every task with its attempts, gates and feedback with reasons.
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// A run id, or a unique prefix of one.
    run: String,
    /// Fan-out tasks whose every instance to list (by default only failed instances are).
    tasks: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: Args, globals: &Globals) -> Result<ExitCode, AppError> {
    let store = globals.store.open_existing()?;
    let run = crate::app::load_run(&*store, &args.run)?;
    if args.json {
        output::line(serde_json::to_string_pretty(&run.state.view()).unwrap_or_default());
    } else {
        for t in &args.tasks {
            if run.state.task(t).is_none() {
                return Err(AppError::Usage(format!(
                    "run {} has no task `{t}`",
                    run.state.workflow_id
                )));
            }
        }
        let expand: Vec<&str> = args.tasks.iter().map(String::as_str).collect();
        // Errors and tails quote what programs printed: no escape sequence reaches the terminal.
        let text = crate::report::show_text(&run.state, &run.events, &expand);
        output::text(&crate::text::terminal_safe(&text));
    }
    Ok(ExitCode::SUCCESS)
}
