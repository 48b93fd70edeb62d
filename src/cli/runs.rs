//! `conductor runs`: the runs in the store.

use std::process::ExitCode;

use super::{output, Globals};
use crate::app::AppError;
use crate::model::{RunState, RunStatus};
use crate::report::RunRow;

/// List runs in the store.
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// Only runs with this status (pending, in_progress, waiting, completed, failed, cancelled).
    #[arg(long)]
    status: Option<String>,
    /// Only runs of this workflow.
    #[arg(long)]
    workflow: Option<String>,
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: Args, globals: &Globals) -> Result<ExitCode, AppError> {
    let status = match &args.status {
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            AppError::Usage(format!(
                "`--status {s}`: use one of pending, in_progress, waiting, completed, failed, cancelled"
            ))
        })?),
        None => None,
    };
    let store = globals.store.open_existing()?;
    let mut rows = Vec::new();
    for r in store.runs()? {
        if args.workflow.as_ref().is_some_and(|w| *w != r.workflow) {
            continue;
        }
        // One run whose log cannot be read is reported, not a reason to list no run at all.
        let state = match store.events(&r.id) {
            Ok(events) => RunState::from_events(&events),
            Err(e) => {
                output::warning(&e.to_string());
                RunState::default()
            }
        };
        if status.is_some_and(|s| state.status.unwrap_or(r.status) != s) {
            continue;
        }
        rows.push(RunRow::new(&r, &state));
    }
    if args.json {
        for row in &rows {
            if !output::line(serde_json::to_string(row).unwrap_or_default()) {
                break;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let widths = [22, 18, 12, 14, 4, 11, 24, 9, 10];
    let format = |cells: [String; 9]| {
        cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 4 || i == 5 || i == 7 || i == 8 {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    output::line(format(RunRow::HEADER.map(str::to_string)));
    for row in &rows {
        if !output::line(format(row.cells())) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
