//! Reading runs back: finding one by id or prefix, loading its log, exporting its files,
//! cleaning up old ones.

use std::path::Path;

use super::{AppError, StoreSpec};
use crate::model::{Event, RunId, RunState, Timestamp};
use crate::store::Store;

/// Resolves a run id or a unique prefix of one.
pub(crate) fn find_run(store: &dyn Store, id: &str) -> Result<RunId, AppError> {
    let runs = store.runs()?;
    if let Some(r) = runs.iter().find(|r| &*r.id.0 == id) {
        return Ok(r.id.clone());
    }
    let matches: Vec<_> = runs.iter().filter(|r| r.id.0.starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(AppError::UnknownRun {
            id: id.to_string(),
            store: store.describe(),
        }),
        many => Err(AppError::AmbiguousRun(id.to_string(), many.len())),
    }
}

/// A run's log and the state it makes.
pub(crate) struct LoadedRun {
    pub id: RunId,
    pub events: Vec<Event>,
    pub state: RunState,
}

/// A run named by id or prefix, with its log.
pub(crate) fn load_run(store: &dyn Store, id: &str) -> Result<LoadedRun, AppError> {
    let id = find_run(store, id)?;
    let events = store.events(&id)?;
    let state = RunState::from_events(&events);
    Ok(LoadedRun { id, events, state })
}

impl LoadedRun {
    /// A task of the run by name; an unknown one is an error with the closest name.
    pub(crate) fn task(&self, name: &str) -> Result<&crate::model::TaskResult, AppError> {
        self.state.task(name).ok_or_else(|| {
            let names = self.state.tasks.iter().map(|t| &*t.task);
            let hint = crate::diag::suggest(name, names)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            AppError::UnknownTask {
                run: self.id.to_string(),
                task: name.to_string(),
                hint,
            }
        })
    }
}

/// Writes the latest version of each of a run's files into `dir`; returns how many.
pub(crate) fn export_artifacts(
    store: &dyn Store,
    run: &LoadedRun,
    dir: &Path,
) -> Result<usize, AppError> {
    let mut written = 0;
    for a in run.state.artifacts.iter().filter(|a| !a.superseded) {
        crate::files::check_path(&a.path).map_err(AppError::UnsafeArtifact)?;
        let content = store
            .artifact(&a.sha256)?
            .ok_or_else(|| AppError::MissingArtifact {
                path: a.path.to_string(),
                hash: crate::text::short_hash(&a.sha256).to_string(),
                store: store.describe(),
            })?;
        crate::files::write_under(dir, &a.path, &content)?;
        written += 1;
    }
    Ok(written)
}

/// An age like `30d` or `12h`.
pub(crate) fn parse_age(text: &str) -> Result<std::time::Duration, AppError> {
    // humantime takes a bare `0` as zero seconds; `--older-than 0` would delete every
    // finished run, the one mistake this option must not let through.
    if text.trim().chars().all(|c| c.is_ascii_digit()) {
        return Err(AppError::Usage(format!(
            "`--older-than {text}`: time unit needed, for example `{}s` or `{}d` (e.g. `30d`, \
             `12h`)",
            text.trim(),
            text.trim()
        )));
    }
    humantime::parse_duration(text)
        .map_err(|e| AppError::Usage(format!("`--older-than {text}`: {e} (e.g. `30d`, `12h`)")))
}

/// Deletes finished runs older than `age`, with their workspaces; returns their ids. A
/// workspace that cannot be removed is reported and left.
pub(crate) fn gc(
    store: &dyn Store,
    spec: &StoreSpec,
    age: std::time::Duration,
) -> Result<(Vec<RunId>, Vec<String>), AppError> {
    let cutoff = Timestamp(crate::model::now().0.saturating_sub(age.as_millis() as u64));
    let ids = store.gc(cutoff)?;
    let mut problems = Vec::new();
    for id in &ids {
        if let Some(dir) = super::workspace::run_dir(spec, id) {
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    problems.push(format!("cannot remove `{}`: {e}", dir.display()));
                }
            }
        }
    }
    Ok((ids, problems))
}
