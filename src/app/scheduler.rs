//! `conductor scheduler`: a long-lived process that takes over runs nobody drives — their
//! scheduler crashed or was cut off, and its lease ran out. Taking a run is `resume` at the
//! next epoch: its state is rebuilt from the log, attempts still alive on workers are adopted,
//! the rest run again. Several schedulers may watch one store: each run goes to exactly one,
//! the one whose lease update wins.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{AppError, Resume, Stopped, StoreSpec, Watch};
use crate::model::RunId;
use crate::store::StoreError;

/// What a scheduler reports as it works.
pub(crate) enum Report {
    /// A run was taken over.
    Took(RunId),
    /// A run it drove stopped (completed, failed, cancelled, waiting), or could not go on.
    Stopped(RunId, Box<Result<Stopped, AppError>>),
}

/// How a scheduler looks for runs.
pub(crate) struct Scheduling {
    pub store: StoreSpec,
    pub config: Option<std::path::PathBuf>,
    /// How often the store is asked for runs nobody drives.
    pub poll: Duration,
}

/// Takes over orphaned runs until `cancel`; then the runs it drives stop as a Ctrl-C stops a
/// run (CANCELLED, resumable).
pub(crate) async fn schedule(
    s: Scheduling,
    cancel: CancellationToken,
    watch: Arc<dyn Fn(&RunId) -> Watch + Send + Sync>,
    report: Arc<dyn Fn(Report) + Send + Sync>,
) -> Result<(), AppError> {
    let store = s.store.open_existing()?;
    let queue = store
        .work_queue()
        .ok_or_else(|| AppError::Usage(needs_postgres("scheduler")))?;
    let driving: Arc<Mutex<HashSet<RunId>>> = Arc::default();
    // A run that could not be resumed (its workflow file is not here) is tried again later,
    // not on every poll.
    let mut failed: HashMap<RunId, Instant> = HashMap::new();
    let mut runs = tokio::task::JoinSet::new();
    loop {
        let q = queue.clone();
        let orphans = tokio::task::spawn_blocking(move || q.orphaned_runs())
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Postgres {
                    cause: e.to_string(),
                })
            });
        match orphans {
            Ok(orphans) => {
                for run in orphans {
                    let busy = driving
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(&run);
                    let recent = failed
                        .get(&run)
                        .is_some_and(|t| t.elapsed() < Duration::from_secs(30));
                    if busy || recent {
                        continue;
                    }
                    failed.remove(&run);
                    driving
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(run.clone());
                    let req = Resume {
                        run: run.to_string(),
                        decisions: Vec::new(),
                        params: Default::default(),
                        reason: None,
                        dead_letter: None,
                        record: None,
                        config: s.config.clone(),
                        store: s.store.clone(),
                    };
                    let (token, watch, report) =
                        (cancel.child_token(), watch.clone(), report.clone());
                    let id = run.clone();
                    runs.spawn(async move {
                        let result = super::resume(req, token, |_| {
                            report(Report::Took(id.clone()));
                            watch(&id)
                        })
                        .await;
                        (id, result, report)
                    });
                }
            }
            Err(e) => tracing::warn!("cannot look for runs to take over: {e}"),
        }
        let reap = |joined: Option<Result<(RunId, Result<Stopped, AppError>, _), _>>,
                    failed: &mut HashMap<RunId, Instant>| {
            if let Some(Ok((id, result, report))) = joined {
                driving
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                let report: Arc<dyn Fn(Report) + Send + Sync> = report;
                match result {
                    // Another scheduler (or `resume`) won the race: nothing to say.
                    Err(AppError::Store(StoreError::Held { .. })) => {}
                    Err(e) => {
                        failed.insert(id.clone(), Instant::now());
                        report(Report::Stopped(id, Box::new(Err(e))));
                    }
                    Ok(stopped) => report(Report::Stopped(id, Box::new(Ok(stopped)))),
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(s.poll) => {}
            joined = runs.join_next(), if !runs.is_empty() => reap(joined, &mut failed),
        }
        while let Some(joined) = runs.try_join_next() {
            reap(Some(joined), &mut failed);
        }
    }
    while let Some(joined) = runs.join_next().await {
        if let Ok((id, result, report)) = joined {
            report(Report::Stopped(id, Box::new(result)));
        }
    }
    Ok(())
}

/// The message for a command that needs the PostgreSQL store.
pub(crate) fn needs_postgres(command: &str) -> String {
    format!(
        "`conductor {command}` works on a PostgreSQL store shared by many processes: give it with \
         `--store postgres://user@host/db` or CONDUCTOR_STORE"
    )
}
