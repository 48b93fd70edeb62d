//! `conductor runs`: the runs in the store.

use std::process::ExitCode;

use super::{output, Globals};
use crate::app::AppError;
use crate::model::RunStatus;
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
    let listed = crate::store::list_runs(
        &*store,
        |r| args.workflow.as_ref().is_none_or(|w| *w == r.workflow),
        |e| output::warning(&e.to_string()),
    )?;
    let rows: Vec<RunRow> = listed
        .iter()
        .filter(|(r, s)| status.is_none_or(|want| s.status.unwrap_or(r.status) == want))
        .map(|(r, s)| RunRow::new(r, s))
        .collect();
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
