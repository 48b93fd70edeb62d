//! `conductor worker`: execute attempts of pools placed on workers (`placement = "workers"`),
//! claimed from a PostgreSQL store, until Ctrl-C (or SIGTERM); then the attempts it holds
//! finish and report before it exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{output, Globals};
use crate::app::{AppError, StoreSpec};
use crate::config::Config;
use crate::store::PostgresStore;
use crate::worker::WorkerOptions;

/// Execute attempts of pools placed on workers, claimed from a PostgreSQL store.
#[derive(clap::Args, Debug)]
pub(super) struct Args {
    /// Serve only this pool (agent name); repeat for several. By default every pool.
    #[arg(long = "pool", value_name = "NAME")]
    pools: Vec<String>,
    /// A label this worker has, matched against a pool's `labels`; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Attempts run at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// The lease on each attempt, renewed every third of it: a worker silent that long loses
    /// its attempts (they are retried elsewhere as AGENT_LOST).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// How often the queue is polled when no notification comes.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// Where the runs' workspaces go on this machine (`DIR/runs/RUN/work`).
    #[arg(long, value_name = "DIR", default_value = ".conductor/worker")]
    dir: PathBuf,
    /// Write each attempt's queue wait and claim→start time (ms) to this file.
    #[arg(long, value_name = "FILE", hide = true)]
    stats: Option<PathBuf>,
}

pub(super) fn run(args: Args, globals: &Globals) -> Result<ExitCode, AppError> {
    // It runs attempts and compiles nothing large: the allocator's setting for running.
    crate::compiled();
    let StoreSpec::Postgres(url) = &globals.store else {
        return Err(AppError::Usage(crate::app::scheduler::needs_postgres(
            "worker",
        )));
    };
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.labels {
        let Some((k, v)) = l.split_once('=') else {
            return Err(AppError::Usage(format!(
                "`--label {l}` needs the form KEY=VALUE"
            )));
        };
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    if args.lease < Duration::from_millis(300) {
        return Err(AppError::Usage(format!(
            "`--lease {}` is too short: heartbeats go every third of it; give at least 300ms",
            crate::text::duration(args.lease)
        )));
    }
    let here = std::env::current_dir().unwrap_or_default().join("worker");
    let config = Config::from_process_env(globals.config.as_deref(), &here)?;
    let options = WorkerOptions {
        pools: args.pools,
        labels,
        concurrency: args.concurrency as usize,
        lease: args.lease,
        batch: (args.concurrency as usize).min(256),
        poll: args.poll,
        dir: args.dir,
        stats: args.stats,
    };
    let url = url.clone();
    let cancel = CancellationToken::new();
    output::drive(cancel.clone(), async move {
        terminate_on_sigterm(cancel.clone());
        let store = Arc::new(PostgresStore::open(&url)?);
        output::line(format!(
            "worker {} serving {} with {} slot{}",
            store.owner(),
            if options.pools.is_empty() {
                "every pool".to_string()
            } else {
                format!(
                    "pool{} {}",
                    crate::text::plural(options.pools.len() as u64),
                    options.pools.join(", ")
                )
            },
            options.concurrency,
            crate::text::plural(options.concurrency as u64)
        ));
        crate::worker::serve(store, options, config, cancel)
            .await
            .map_err(AppError::from)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM (a service manager stopping the worker) stops it as Ctrl-C does.
pub(super) fn terminate_on_sigterm(cancel: CancellationToken) {
    tokio::spawn(async move {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
            cancel.cancel();
        }
    });
}
