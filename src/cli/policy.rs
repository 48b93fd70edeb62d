//! `conductor policy test [PATH...]`: the `fn test_*()` of `*_test.rhai` files.

use std::path::PathBuf;
use std::process::ExitCode;

use super::output;
use crate::app::AppError;
use crate::policy::testing;

#[derive(clap::Subcommand, Debug)]
pub(super) enum Command {
    /// Run every `fn test_*()` in `*_test.rhai` files (each tests its sibling `X.rhai`).
    Test {
        /// Files or folders to search; the current folder when none is given.
        paths: Vec<PathBuf>,
    },
}

pub(super) fn run(command: Command) -> Result<ExitCode, AppError> {
    let Command::Test { paths } = command;
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths
    };
    let files = testing::discover(&paths).map_err(|e| AppError::Usage(e.to_string()))?;
    if files.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| format!("`{}`", p.display())).collect();
        return Err(AppError::Usage(format!(
            "no `*_test.rhai` files under {}",
            names.join(", ")
        )));
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        match testing::run_file(file) {
            Ok(results) => {
                for r in results {
                    match &r.failure {
                        None => {
                            passed += 1;
                            output::line(format!("ok    {}  {}", r.file.display(), r.name));
                        }
                        Some(why) => {
                            failed += 1;
                            output::line(format!("FAIL  {}  {}: {why}", r.file.display(), r.name));
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                output::line(format!("FAIL  {e}"));
            }
        }
    }
    output::line(format!("{passed} passed, {failed} failed"));
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
