//! `conductor check FILE...`: every problem of every file, with its place.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use super::output;
use super::Globals;
use crate::app::AppError;
use crate::check::{self, Checked};
use crate::config::Config;
use crate::diag;
use crate::source::SourceMap;
use crate::text::count;

/// Check workflow files and report every problem with its place.
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// `.cond` files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// How to print diagnostics.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Also print the plan's analysis: critical paths, widths, pool demand.
    #[arg(long)]
    explain: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

pub(super) fn run(args: Args, globals: &Globals) -> Result<ExitCode, AppError> {
    let mut any_error = false;
    let mut unreadable = false;
    let mut json = Vec::new();
    for path in &args.files {
        let mut map = SourceMap::new();
        let mut checked: Checked = match check::read_text(path) {
            Ok(text) => check::check_source(&mut map, &path.display().to_string(), path, &text),
            Err(diag) => {
                unreadable = true;
                Checked {
                    workflow: None,
                    diags: vec![diag],
                }
            }
        };
        if let Some(wf) = &checked.workflow {
            checked.diags.extend(crate::app::provider_warnings(
                wf,
                globals.config.as_deref(),
                path,
            ));
            // Prices come from conductor.toml; without one only tokens and calls are judged.
            let config = Config::from_process_env(globals.config.as_deref(), path).ok();
            checked.diags.extend(
                crate::plan::budget_warnings(wf, config.as_ref())
                    .into_iter()
                    .map(|(span, message)| diag::Diagnostic::warning(span, message)),
            );
        }
        any_error |= checked.has_errors();
        match args.format {
            Format::Json => json.extend(checked.diags.iter().map(|d| diag::to_json(&map, d))),
            Format::Text => {
                let config = args
                    .explain
                    .then(|| Config::from_process_env(globals.config.as_deref(), path).ok())
                    .flatten();
                any_error |= !text_report(path, &map, &checked, args.explain, config)
            }
        }
    }
    if args.format == Format::Json {
        output::line(serde_json::to_string_pretty(&json).unwrap_or_else(|_| "[]".into()));
    }
    Ok(if unreadable {
        ExitCode::from(2)
    } else if any_error {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints one file's diagnostics and summary (and analysis); false when planning failed.
fn text_report(
    path: &std::path::Path,
    map: &SourceMap,
    checked: &Checked,
    explain: bool,
    config: Option<Config>,
) -> bool {
    output::diagnostics(map, &checked.diags);
    let errors = checked.diags.iter().filter(|d| d.is_error()).count();
    let warnings = checked.diags.len() - errors;
    let warned = if warnings == 0 {
        String::new()
    } else {
        format!(", {}", count(warnings, "warning"))
    };
    let summary = match &checked.workflow {
        Some(wf) => format!(
            "ok: {} (workflow `{}`: {} phases, {} tasks, {} agents{warned})",
            path.display(),
            wf.name,
            wf.phases.len(),
            wf.tasks.len(),
            wf.agents.len(),
        ),
        None => format!(
            "error: {}: {}{warned}",
            path.display(),
            count(errors, "error")
        ),
    };
    output::line(summary);
    if let (true, Some(wf)) = (explain, &checked.workflow) {
        match crate::plan::plan(wf) {
            Ok(plan) => {
                output::text(&crate::plan::analysis_text(&plan.analysis));
                output::text(&crate::plan::estimate_text(wf, config.as_ref()));
            }
            Err(e) => {
                output::err_line(format!("error: {e}"));
                return false;
            }
        }
    }
    true
}
