//! `conductor scheduler`: take over the runs of a PostgreSQL store that nobody drives (their
//! scheduler crashed or was cut off and its lease ran out), and drive them to their end.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{output, Globals};
use crate::app::scheduler::{Report, Scheduling};
use crate::app::{AppError, Stopped, StoreSpec, Watch};
use crate::exec::Observer;
use crate::report::JsonLines;

/// Take over and drive runs whose scheduler is gone (a PostgreSQL store).
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// How often the store is asked for runs nobody drives.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// Print every event of the runs it drives as a JSON line.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: Args, globals: &Globals) -> Result<ExitCode, AppError> {
    // It runs attempts and compiles nothing large: the allocator's setting for running.
    crate::compiled();
    if !matches!(globals.store, StoreSpec::Postgres(_)) {
        return Err(AppError::Usage(crate::app::scheduler::needs_postgres(
            "scheduler",
        )));
    }
    let s = Scheduling {
        store: globals.store.clone(),
        config: globals.config.clone(),
        poll: args.poll,
    };
    let json = args.json;
    let watch = Arc::new(move |_: &crate::model::RunId| Watch {
        observers: if json {
            vec![Box::new(JsonLines::new(std::io::stdout())) as Box<dyn Observer>]
        } else {
            Vec::new()
        },
        operator: None,
    });
    let report = Arc::new(move |r: Report| match r {
        Report::Took(run) if !json => {
            output::line(format!("run {run}: taken over"));
        }
        Report::Stopped(run, result) => match *result {
            Ok(Stopped::Ran { state, .. }) if !json => {
                output::line(format!(
                    "run {run}: {}",
                    state.status().as_str().to_uppercase()
                ));
            }
            Err(e) => output::err_line(format!("run {run}: {e}")),
            _ => {}
        },
        _ => {}
    });
    let cancel = CancellationToken::new();
    output::drive(cancel.clone(), async move {
        super::worker::terminate_on_sigterm(cancel.clone());
        crate::app::scheduler::schedule(s, cancel, watch, report).await
    })?;
    Ok(ExitCode::SUCCESS)
}
