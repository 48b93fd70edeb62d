//! `conductor logs RUN TASK [--attempt N] [--follow]`: what a task's program printed — its
//! stdout on stdout, its stderr on stderr — live while it runs with `--follow`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use super::{output, Globals};
use crate::app::AppError;
use crate::model::{Event, EventKind, LogChunk, LogStream};

/// Print what a task's program printed (stdout and stderr, kept bounded: the head and the
/// tail of each stream, with a mark where output was cut).
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// A run id, or a unique prefix of one.
    run: String,
    task: String,
    /// Which attempt (1 is the first); by default the latest.
    #[arg(long, value_name = "N")]
    attempt: Option<u32>,
    /// Keep printing while the task runs (and, without `--attempt`, through its retries).
    #[arg(long)]
    follow: bool,
}

/// How often `--follow` looks for new output.
const POLL: Duration = Duration::from_millis(200);

pub(super) fn run(args: Args, globals: &Globals) -> Result<ExitCode, AppError> {
    let store = globals.store.open_existing()?;
    let run = crate::app::load_run(&*store, &args.run)?;
    let task = run.task(&args.task)?;
    let latest = task.attempts;
    let mut attempt = match args.attempt {
        Some(0) => return Err(AppError::Usage("`--attempt` counts from 1".into())),
        Some(n) if n > latest && !args.follow => {
            return Err(AppError::Usage(format!(
                "task `{}` has made {latest} attempt{}; there is no attempt {n}",
                args.task,
                crate::text::plural(latest)
            )))
        }
        Some(n) => n,
        None => latest.max(1),
    };
    let mut printer = Printer::default();
    if !args.follow {
        if latest == 0 {
            output::err_line(format!("task `{}` has not run yet", args.task));
        }
        printer.print_new(&store.logs(&run.id, &args.task, attempt)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut watch = Watch {
        task: &args.task,
        latest,
        finished: 0,
        task_final: task.status.is_final(),
        stopped: false,
        seen: 0,
    };
    watch.read(&run.events);
    loop {
        printer.print_new(&store.logs(&run.id, &args.task, attempt)?);
        if printer.gone {
            return Ok(ExitCode::SUCCESS);
        }
        if watch.finished >= attempt {
            if args.attempt.is_some() {
                return Ok(ExitCode::SUCCESS);
            }
            if watch.latest > attempt {
                // A retry started: follow it.
                attempt = watch.latest;
                printer = Printer::default();
                output::err_line(format!("── attempt {attempt} ──"));
                continue;
            }
            if watch.task_final || watch.stopped {
                return Ok(ExitCode::SUCCESS);
            }
        } else if watch.stopped {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(POLL);
        watch.read(&store.events_after(&run.id, watch.seen)?);
    }
}

/// What `--follow` learns from the run's events about one task.
struct Watch<'a> {
    task: &'a str,
    /// The task's latest attempt, and the latest that has finished.
    latest: u32,
    finished: u32,
    /// The task reached a final status after its latest attempt.
    task_final: bool,
    /// The run stopped or waits for a decision: its process has exited.
    stopped: bool,
    /// The last event read.
    seen: u64,
}

impl Watch<'_> {
    fn read(&mut self, events: &[Event]) {
        for e in events {
            self.seen = e.seq;
            self.stopped = e.kind.stops_run() || matches!(e.kind, EventKind::RunWaiting { .. });
            match &e.kind {
                EventKind::TaskDispatched { task, attempt, .. } if &**task == self.task => {
                    self.latest = self.latest.max(*attempt);
                    self.task_final = false;
                }
                EventKind::AttemptFinished { task, attempt, .. } if &**task == self.task => {
                    self.finished = self.finished.max(*attempt);
                }
                EventKind::TaskFinished { task, .. } | EventKind::TaskSkipped { task, .. }
                    if &**task == self.task =>
                {
                    self.task_final = true;
                }
                _ => {}
            }
        }
    }
}

/// Writes chunks to the stream they came from, remembering which it has written.
#[derive(Default)]
struct Printer {
    next: u32,
    /// The reader went away (a closed pipe): stop quietly.
    gone: bool,
}

impl Printer {
    fn print_new(&mut self, chunks: &[LogChunk]) {
        let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
        let from = self.next;
        for c in chunks.iter().filter(|c| c.seq >= from) {
            self.next = c.seq + 1;
            let written = match c.stream {
                LogStream::Stderr => err.write_all(&c.data),
                LogStream::Stdout | LogStream::Marker => out.write_all(&c.data),
            };
            if written.is_err() {
                self.gone = true;
                return;
            }
        }
        if out.flush().is_err() {
            self.gone = true;
        }
    }
}
