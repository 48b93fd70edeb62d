//! `conductor artifacts RUN`: the files a run's agents wrote; `--out DIR` exports them.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{output, Globals};
use crate::app::AppError;
use crate::text::{plural, short_hash};

/// List the files a run's agents wrote, or export them with --out.
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// A run id, or a unique prefix of one.
    run: String,
    /// Write the run's files (their latest versions) into this folder.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Every version, not just the latest of each path.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: Args, globals: &Globals) -> Result<ExitCode, AppError> {
    let store = globals.store.open_existing()?;
    let run = crate::app::load_run(&*store, &args.run)?;
    if let Some(dir) = &args.out {
        let written = crate::app::export_artifacts(&*store, &run, dir)?;
        output::line(format!(
            "wrote {written} file{} of run {} to {}",
            plural(written as u64),
            run.id,
            dir.display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let files: Vec<_> = run
        .state
        .artifacts
        .iter()
        .filter(|a| args.all || !a.superseded)
        .collect();
    if args.json {
        output::line(serde_json::to_string_pretty(&files).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    if files.is_empty() {
        output::line(format!("run {} has no artifacts", run.id));
        return Ok(ExitCode::SUCCESS);
    }
    output::line(format!(
        "{:<32} {:>8}  {:<12}  {:<16} {:>4}  ATTEMPT",
        "PATH", "BYTES", "SHA256", "TASK", "PASS"
    ));
    for a in files {
        let line = format!(
            "{:<32} {:>8}  {:<12}  {:<16} {:>4}  #{}{}",
            crate::text::printable(&a.path),
            a.size,
            short_hash(&a.sha256),
            a.task,
            a.loop_count + 1,
            a.attempt,
            if a.superseded {
                "  (replaced later)"
            } else {
                ""
            }
        );
        if !output::line(line) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
