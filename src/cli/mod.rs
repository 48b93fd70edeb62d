//! The `conductor` command line: parse the arguments, call the application layer, render
//! what it returns, and map its errors to exit codes in one place ([`exit_code`]).
//!
//! Exit codes: 0 success; 1 the input has errors (`check`, `fmt`), would change (`fmt
//! --check`), or a run FAILED or was CANCELLED; 2 the command could not do its work (usage,
//! unreadable files, a workflow that does not check, the store); 3 a run WAITS for a decision.

mod artifacts;
mod check;
mod dlq;
mod events;
mod fmt;
mod gc;
mod graph;
mod logs;
mod metrics;
mod output;
mod policy;
mod run;
mod runs;
mod scheduler;
mod serve;
mod show;
mod why;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{AppError, StoreSpec};

#[derive(Parser, Debug)]
#[command(
    name = "conductor",
    version,
    about = "Runs multi-agent software-delivery workflows declared in .cond files"
)]
pub(crate) struct Cli {
    /// The run store: a SQLite file, `memory` for a run nobody will inspect or resume, or a
    /// `postgres://user@host/db` URL shared by many processes and machines.
    #[arg(
        long,
        global = true,
        env = "CONDUCTOR_STORE",
        default_value = DEFAULT_STORE
    )]
    store: String,
    /// The project configuration (LLM providers); by default `conductor.toml` beside the
    /// workflow file, if there is one.
    #[arg(long, global = true, env = "CONDUCTOR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Check(check::Args),
    Run(run::RunArgs),
    Resume(run::ResumeArgs),
    Runs(runs::Args),
    Show(show::Args),
    Why(why::Args),
    Artifacts(artifacts::Args),
    Logs(logs::Args),
    Events(events::Args),
    Dlq {
        #[command(subcommand)]
        command: dlq::Command,
    },
    Gc(gc::Args),
    Policy {
        #[command(subcommand)]
        command: policy::Command,
    },
    Graph(graph::Args),
    Fmt(fmt::Args),
    Serve(serve::Args),
    /// Renders one template sent on stdin, under limits (the child `conductor` starts for
    /// templates that compute).
    #[command(name = crate::template::SANDBOX_SUBCOMMAND, hide = true)]
    RenderTemplate {
        cpu_seconds: u64,
    },
    Worker(worker::Args),
    Scheduler(scheduler::Args),
}

/// What the global options say.
pub(crate) struct Globals {
    pub store: StoreSpec,
    pub config: Option<PathBuf>,
    /// The same options written back as arguments (empty for the defaults), for the commands
    /// hints name: `conductor resume RUN{flags}` must find the run where it is.
    pub flags: String,
}

const DEFAULT_STORE: &str = ".conductor/conductor.db";

/// `--store`/`--config` as arguments, when they are not the defaults.
fn flags(store: &str, config: Option<&std::path::Path>) -> String {
    let mut out = String::new();
    if store != DEFAULT_STORE {
        out.push_str(&format!(" --store {}", crate::text::shell_quote(store)));
    }
    if let Some(c) = config {
        let c = c.to_string_lossy();
        out.push_str(&format!(" --config {}", crate::text::shell_quote(&c)));
    }
    out
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    // Not dumpable: the programs a run starts (same user) can neither read this process's
    // environment — the providers' API keys — through /proc/PID/environ nor ptrace it. The
    // programs themselves start dumpable again (exec resets it).
    let _ = nix::sys::prctl::set_dumpable(false);
    init_tracing();
    let cli = Cli::parse();
    if let Command::RenderTemplate { cpu_seconds } = cli.command {
        return crate::template::serve_sandbox(cpu_seconds);
    }
    if let Ok(exe) = std::env::current_exe() {
        crate::template::enable_sandbox(exe);
    }
    let globals = Globals {
        store: StoreSpec::parse(&cli.store),
        flags: flags(&cli.store, cli.config.as_deref()),
        config: cli.config,
    };
    let result = match cli.command {
        Command::Check(args) => check::run(args, &globals),
        Command::Run(args) => run::run(args, &globals),
        Command::Resume(args) => run::resume(args, &globals),
        Command::Runs(args) => runs::run(args, &globals),
        Command::Show(args) => show::run(args, &globals),
        Command::Why(args) => why::run(args, &globals),
        Command::Artifacts(args) => artifacts::run(args, &globals),
        Command::Logs(args) => logs::run(args, &globals),
        Command::Events(args) => events::run(args, &globals),
        Command::Dlq { command } => dlq::run(command, &globals),
        Command::Gc(args) => gc::run(args, &globals),
        Command::Policy { command } => policy::run(command),
        Command::Graph(args) => graph::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Serve(args) => serve::run(args, &globals),
        Command::RenderTemplate { .. } => Ok(ExitCode::SUCCESS),
        Command::Worker(args) => worker::run(args, &globals),
        Command::Scheduler(args) => scheduler::run(args, &globals),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            output::report(&e);
            exit_code(&e)
        }
    }
}

/// The one place errors become exit codes.
fn exit_code(e: &AppError) -> ExitCode {
    match e {
        AppError::Plan(_) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONDUCTOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
