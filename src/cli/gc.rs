//! `conductor gc --older-than AGE`: deletes finished runs older than an age.

use std::process::ExitCode;

use super::{output, Globals};
use crate::app::AppError;
use crate::text::plural;

/// Delete finished runs older than a given age.
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// An age like `30d`, `12h`.
    #[arg(long)]
    older_than: String,
}

pub(super) fn run(args: Args, globals: &Globals) -> Result<ExitCode, AppError> {
    let age = crate::app::parse_age(&args.older_than)?;
    let store = globals.store.open_existing()?;
    let (ids, problems) = crate::app::gc(&*store, &globals.store, age)?;
    for p in problems {
        output::warning(&p);
    }
    let n = ids.len();
    output::line(format!(
        "deleted {n} finished run{} older than {}, with their workspaces",
        plural(n as u64),
        args.older_than
    ));
    Ok(ExitCode::SUCCESS)
}
