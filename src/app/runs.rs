//! Starting and continuing runs: everything between "the user asked" and the executor — the
//! workflow, its params and configuration, the store and the run's lease, the workspace, the
//! cassette recorder.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{AppError, StoreSpec};
use crate::agents::llm::Recorder;
use crate::config::Config;
use crate::exec::{DlqRetry, Observer, Operator, ResumeRequest, RunOptions};
use crate::model::{Decision, RunId, RunState, RunStatus, TaskStatus};
use crate::store::Store;

/// A new run, as asked for.
pub(crate) struct Start {
    pub file: PathBuf,
    pub params: BTreeMap<String, serde_json::Value>,
    pub dry_run: bool,
    /// `--record FILE`: write every provider exchange to this cassette.
    pub record: Option<PathBuf>,
    /// `--config FILE`; by default `conductor.toml` beside the workflow.
    pub config: Option<PathBuf>,
    pub store: StoreSpec,
    /// Wraps the store the run writes to (the metrics' timing of appends).
    pub layer: Option<StoreLayer>,
}

/// Wraps a run's store: what the dashboard and `--metrics-listen` time appends with.
pub(crate) type StoreLayer = Arc<dyn Fn(Arc<dyn Store>) -> Arc<dyn Store> + Send + Sync>;

/// A run to continue, as asked for.
pub(crate) struct Resume {
    /// A run id, or a unique prefix of one.
    pub run: String,
    pub decisions: Vec<(String, Decision)>,
    /// Secret params' values again (they are not stored).
    pub params: BTreeMap<String, serde_json::Value>,
    /// `--reason`: why, recorded with the decisions.
    pub reason: Option<String>,
    /// `conductor dlq retry ENTRY`: the dead letter to run again.
    pub dead_letter: Option<String>,
    /// `--budget`: budgets given new limits.
    pub budgets: Vec<(crate::model::BudgetScope, crate::model::Limits)>,
    pub record: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub store: StoreSpec,
    /// Who decides, as the `decided` events record it (`dashboard:NAME`); by default the
    /// login name, [`who`].
    pub by: Option<String>,
    pub layer: Option<StoreLayer>,
}

/// What the caller watches a run with, decided once the run's id, store and workspace are
/// known.
pub(crate) struct Watch {
    pub observers: Vec<Box<dyn Observer>>,
    pub operator: Option<Arc<dyn Operator>>,
}

/// What the caller is told before the run starts, to set up its watch.
pub(crate) struct Prepared<'a> {
    pub store: String,
    pub workspace: Option<PathBuf>,
    /// The workflow's warnings, and the files they point into.
    pub warnings: &'a [crate::diag::Diagnostic],
    pub map: &'a crate::source::SourceMap,
    /// The last event of the run's log before this process drove it (0 for a new run):
    /// observers are shown the history first, and counters must not count it again.
    pub history: u64,
    /// The checked workflow and its plan.
    pub workflow: &'a crate::check::ir::Workflow,
}

/// How a run stopped.
pub(crate) enum Stopped {
    /// It ran (or ran on) to an end: completed, failed, cancelled or waiting.
    Ran {
        state: RunState,
        /// The cassette written, with `--record`.
        recorded: Option<PathBuf>,
    },
    /// There was nothing to continue: the run had already finished.
    Finished { run: RunId, state: RunState },
}

/// `NAME=VALUE` pairs; VALUE is read as JSON when it parses, else as a string.
pub(crate) fn parse_params(
    pairs: &[String],
) -> Result<BTreeMap<String, serde_json::Value>, AppError> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(AppError::Usage(format!(
                "`--param {pair}` needs the form NAME=VALUE"
            )));
        };
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        if let Some(at) = crate::limits::too_deep(&value) {
            return Err(AppError::Usage(format!(
                "`--param {}=…`: the value nests deeper than {} levels, at `{at}`; values are \
                 limited to {} levels",
                name.trim(),
                crate::limits::MAX_VALUE_DEPTH,
                crate::limits::MAX_VALUE_DEPTH
            )));
        }
        out.insert(name.trim().to_string(), value);
    }
    Ok(out)
}

/// The largest value `--param-file` reads.
const PARAM_FILE_LIMIT: u64 = 1 << 20;

/// `NAME=PATH` pairs: each value is the file's text (one trailing newline dropped) — a way to
/// pass a secret that never appears in a command line.
pub(crate) fn read_param_files(
    pairs: &[String],
    into: &mut BTreeMap<String, serde_json::Value>,
) -> Result<(), AppError> {
    for pair in pairs {
        let Some((name, path)) = pair.split_once('=') else {
            return Err(AppError::Usage(format!(
                "`--param-file {pair}` needs the form NAME=PATH"
            )));
        };
        let cannot = |e: String| AppError::Usage(format!("`--param-file {name}={path}`: {e}"));
        let bytes = crate::files::read_limited(std::path::Path::new(path), PARAM_FILE_LIMIT)
            .map_err(|e| cannot(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| cannot(e.to_string()))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        into.insert(
            name.trim().to_string(),
            serde_json::Value::String(text.to_string()),
        );
    }
    Ok(())
}

/// `TASK=retry|skip|abort`.
pub(crate) fn parse_decision(text: &str) -> Result<(String, Decision), AppError> {
    let Some((task, decision)) = text.split_once('=') else {
        return Err(AppError::Usage(format!(
            "`--decide {text}` needs the form TASK=retry|skip|abort"
        )));
    };
    let decision = decision
        .parse::<Decision>()
        .map_err(|e| AppError::Usage(format!("`--decide {text}`: {e}")))?;
    Ok((task.trim().to_string(), decision))
}

/// `SCOPE.QUANTITY=VALUE`, e.g. `workflow.usd=5` or `agent.coding.llm_calls=80`: the new
/// limit of one quantity of one budget.
pub(crate) fn parse_budget(
    text: &str,
) -> Result<(crate::model::BudgetScope, crate::model::Limits), AppError> {
    use crate::model::{BudgetScope, Limits, Usd};
    let usage = |why: &str| {
        AppError::Usage(format!(
            "`--budget {text}`: {why}; write SCOPE.QUANTITY=VALUE, SCOPE one of `workflow`, \
             `phase.NAME`, `agent.NAME`, `task.NAME` and QUANTITY one of `usd`, `tokens`, \
             `llm_calls`, `wall` (e.g. `--budget workflow.usd=5`)"
        ))
    };
    let (left, value) = text.split_once('=').ok_or_else(|| usage("no `=`"))?;
    let (scope, quantity) = left
        .trim()
        .rsplit_once('.')
        .ok_or_else(|| usage("no quantity"))?;
    let scope = match scope.split_once('.') {
        None if scope == "workflow" => BudgetScope::Workflow,
        Some(("phase", n)) => BudgetScope::Phase(n.to_string()),
        Some(("agent", n)) => BudgetScope::Agent(n.to_string()),
        Some(("task", n)) => BudgetScope::Task(n.to_string()),
        _ => return Err(usage(&format!("`{scope}` is not a budget's scope"))),
    };
    let value = value.trim();
    let int = || {
        value
            .parse::<u64>()
            .map_err(|_| usage(&format!("`{value}` is not a whole number")))
    };
    let mut limits = Limits::default();
    match quantity {
        "usd" => {
            let usd = value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| usage(&format!("`{value}` is not an amount of dollars")))?;
            limits.usd = Some(Usd::from_dollars(usd));
        }
        "tokens" => limits.tokens = Some(int()?),
        "llm_calls" => limits.llm_calls = Some(int()?),
        "wall" => {
            let d = humantime::parse_duration(value)
                .map_err(|_| usage(&format!("`{value}` is not a duration such as `30m`")))?;
            limits.wall_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        }
        other => return Err(usage(&format!("`{other}` is not a quantity"))),
    }
    Ok((scope, limits))
}

fn open_recorder(record: Option<&PathBuf>) -> Result<Option<Arc<Recorder>>, AppError> {
    record
        .map(|file| {
            Recorder::create(file)
                .map(Arc::new)
                .map_err(AppError::Cassette)
        })
        .transpose()
}

/// How a run is stopped from outside: `cancel` ends it CANCELLED after its `always` phases
/// have run; `halt` ends it at once. One token for both makes a single stop final.
pub(crate) struct Stop {
    pub cancel: CancellationToken,
    pub halt: CancellationToken,
}

impl From<CancellationToken> for Stop {
    fn from(token: CancellationToken) -> Stop {
        Stop {
            cancel: token.clone(),
            halt: token,
        }
    }
}

/// Starts a run and drives it to its end.
pub(crate) async fn start(
    req: Start,
    stop: impl Into<Stop>,
    watch: impl FnOnce(&Prepared<'_>) -> Watch,
) -> Result<Stopped, AppError> {
    let loaded = super::load(&req.file)?;
    crate::exec::resolve_params(&loaded.workflow, &req.params)?;
    let config = Config::from_process_env(req.config.as_deref(), &req.file)?;
    let recorder = open_recorder(req.record.as_ref())?;
    let store = layered(req.store.open_for_run()?, req.layer.as_ref());
    let mut options = RunOptions::new(store.clone());
    let _lease = store.lease(&options.run_id)?;
    let stop = stop.into();
    options.cancel = stop.cancel;
    let halt = stop.halt.clone();
    options.halt = stop.halt;
    options.params = req.params;
    options.file = req.file.display().to_string();
    options.dry_run = req.dry_run;
    // A dry run writes nothing; a run nobody can inspect works in a folder removed after it.
    options.workspace = match (&req.store, req.dry_run) {
        (_, true) => None,
        (StoreSpec::Memory, false) => super::workspace::temporary(&options.run_id),
        _ => super::workspace::create(&req.store, &options.run_id),
    };
    options.config = Arc::new(config);
    options.recorder = recorder.clone();
    options.source = Some(super::amend::store_source(&*store, &loaded.source)?);
    let children = super::child::Children::new(store.clone(), req.store.clone(), req.config, halt);
    options.children = Some(children.clone());
    attach(&mut options, &*store, &loaded, 0, watch);
    let workspace = options.workspace.clone();
    let temporary = req.store == StoreSpec::Memory;
    let result = crate::exec::run(Arc::new(loaded.workflow), Arc::new(loaded.plan), options).await;
    children.wait().await;
    if let (true, Some(dir)) = (temporary, &workspace) {
        super::workspace::remove_temporary(dir);
    }
    match result {
        Ok(state) => Ok(Stopped::Ran {
            state,
            recorded: recorder.map(|r| r.path().to_path_buf()),
        }),
        Err(e) => {
            // The run could not start (an agent could not be set up): leave no empty workspace.
            if let Some(dir) = &workspace {
                super::workspace::remove_if_empty(dir);
            }
            Err(e.into())
        }
    }
}

fn layered(store: Arc<dyn Store>, layer: Option<&StoreLayer>) -> Arc<dyn Store> {
    match layer {
        Some(wrap) => wrap(store),
        None => store,
    }
}

fn attach(
    options: &mut RunOptions,
    store: &dyn Store,
    loaded: &super::Loaded,
    history: u64,
    watch: impl FnOnce(&Prepared<'_>) -> Watch,
) {
    let w = watch(&Prepared {
        store: store.describe(),
        workspace: options.workspace.clone(),
        warnings: &loaded.warnings,
        map: &loaded.map,
        history,
        workflow: &loaded.workflow,
    });
    options.observers = w.observers;
    options.operator = w.operator;
}

/// Who is deciding, for the record: the login name the environment gives.
pub(crate) fn who() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "an unnamed user".to_string())
}

/// Continues a stopped run (`conductor resume`, `conductor dlq retry`).
pub(crate) async fn resume(
    req: Resume,
    stop: impl Into<Stop>,
    watch: impl FnOnce(&Prepared<'_>) -> Watch,
) -> Result<Stopped, AppError> {
    let store = layered(req.store.open_existing()?, req.layer.as_ref());
    let (run_id, retry) = match &req.dead_letter {
        Some(entry) => {
            let dl = store
                .dead_letters(None)?
                .into_iter()
                .find(|e| e.id == *entry)
                .ok_or_else(|| AppError::UnknownDeadLetter(entry.clone()))?;
            let retry = DlqRetry {
                task: dl.task.clone(),
                entry: dl.id.clone(),
            };
            (dl.run_id, Some(retry))
        }
        None => (super::find_run(&*store, &req.run)?, None),
    };
    let _lease = store.lease(&run_id)?;
    let events = store.events(&run_id)?;
    let state = RunState::from_events(&events);
    // A failed run goes on only to retry a failed task (`--decide T=retry`, `dlq retry`).
    let retries_failed = req.decisions.iter().any(|(name, d)| {
        *d == Decision::Retry
            && state
                .task(name)
                .is_some_and(|t| t.status == TaskStatus::Failed)
    });
    match state.status() {
        RunStatus::Failed if retries_failed => {}
        RunStatus::Completed | RunStatus::Failed if retry.is_none() => {
            return Ok(Stopped::Finished { run: run_id, state })
        }
        RunStatus::Completed => return Err(AppError::CompletedAlready(run_id.to_string())),
        _ => {}
    }
    let file = PathBuf::from(&state.file);
    if !file.exists() {
        return Err(AppError::WorkflowGone {
            file: state.file.clone(),
            run: run_id.to_string(),
        });
    }
    // A file that no longer checks is reported as `check` would: the user is amending it.
    let loaded = super::load(&file)?;
    let amended = super::amend::amendment(&*store, &state, &loaded)?;
    let config = Config::from_process_env(req.config.as_deref(), &file)?;
    let recorder = open_recorder(req.record.as_ref())?;
    let mut options = RunOptions::new(store.clone());
    options.run_id = run_id.clone();
    options.params = req.params;
    let stop = stop.into();
    options.cancel = stop.cancel;
    let halt = stop.halt.clone();
    options.halt = stop.halt;
    options.workspace = (!state.dry_run)
        .then(|| super::workspace::create(&req.store, &run_id))
        .flatten();
    options.config = Arc::new(config);
    options.recorder = recorder.clone();
    let children = super::child::Children::new(store.clone(), req.store.clone(), req.config, halt);
    options.children = Some(children.clone());
    let history = events.last().map_or(0, |e| e.seq);
    attach(&mut options, &*store, &loaded, history, watch);
    let request = ResumeRequest {
        decisions: req.decisions,
        reason: req.reason,
        by: Some(req.by.unwrap_or_else(who)),
        amended,
        retry: retry.clone(),
        budgets: req.budgets,
    };
    let state = crate::exec::resume(
        Arc::new(loaded.workflow),
        Arc::new(loaded.plan),
        options,
        events,
        request,
    )
    .await;
    children.wait().await;
    let state = state?;
    if let Some(r) = &retry {
        // Handled: the retry is in the run's log, with its own outcome.
        let _ = store.drop_dead_letter(&r.entry);
    }
    Ok(Stopped::Ran {
        state,
        recorded: recorder.map(|r| r.path().to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_budget;
    use crate::model::{BudgetScope, Usd};

    #[test]
    fn budget_flags_name_a_scope_and_a_quantity() {
        let (s, l) = parse_budget("agent.coding.usd=2.5").unwrap();
        assert_eq!(s, BudgetScope::Agent("coding".into()));
        assert_eq!(l.usd, Some(Usd::from_dollars(2.5)));
        let (s, l) = parse_budget("workflow.wall=30m").unwrap();
        assert_eq!((s, l.wall_ms), (BudgetScope::Workflow, Some(1_800_000)));
        let (s, l) = parse_budget("task.review.llm_calls=40").unwrap();
        assert_eq!(
            (s, l.llm_calls),
            (BudgetScope::Task("review".into()), Some(40))
        );
        for (bad, why) in [
            ("workflow.usd", "no `=`"),
            ("workflow.usd=-1", "not an amount of dollars"),
            ("workflow.calls=3", "`calls` is not a quantity"),
            ("pool.coding.usd=1", "`pool.coding` is not a budget's scope"),
            ("task.a.tokens=1.5", "not a whole number"),
        ] {
            let e = parse_budget(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
