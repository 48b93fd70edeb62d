//! `conductor events RUN [--follow]`: the run's event log as JSON lines.

use std::io::Write;
use std::process::ExitCode;

use super::Globals;
use crate::app::AppError;

/// Print a run's event log as JSON lines.
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    run: String,
    /// Keep printing new events until the run finishes.
    #[arg(long)]
    follow: bool,
}

pub(super) fn run(args: Args, globals: &Globals) -> Result<ExitCode, AppError> {
    let store = globals.store.open_existing()?;
    let run = crate::app::find_run(&*store, &args.run)?;
    let mut last = 0;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        // Only the events after the last one printed: following a long run stays linear.
        let events = if last == 0 {
            store.events(&run)?
        } else {
            store.events_after(&run, last)?
        };
        for e in &events {
            if let Ok(line) = serde_json::to_string(e) {
                if writeln!(out, "{line}").is_err() {
                    return Ok(ExitCode::SUCCESS); // the reader went away
                }
            }
        }
        let _ = out.flush();
        // Only the last event says whether the run has stopped: a resumed run has older ones.
        let stopped = match events.last() {
            Some(e) => {
                last = e.seq;
                e.kind.stops_run()
            }
            None => false,
        };
        if !args.follow || (stopped && !events.is_empty()) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
