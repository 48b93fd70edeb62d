//! `conductor run FILE` and `conductor resume RUN`: start or continue a run, watch it, and
//! turn how it ended into the exit code (0 COMPLETED, 1 FAILED or CANCELLED, 3 WAITING).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{output, Globals};
use crate::app::{self, AppError, Prepared, Stopped, Watch};
use crate::exec::{
    ApprovalQuestion, DecisionFuture, Escalation, Observer, Operator, Reply, ReplyFuture,
};
use crate::model::{Decision, RunStatus};
use crate::report::{HumanView, JsonLines};

/// Run a workflow: phases in order, independent tasks at the same time.
#[derive(clap::Args, Debug)]
pub(super) struct RunArgs {
    file: PathBuf,
    /// A param value, `NAME=VALUE` (VALUE is read as JSON when it parses, else a string).
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// A param value read from a file (for secrets: it never appears in a command line).
    #[arg(long = "param-file", value_name = "NAME=PATH")]
    param_files: Vec<String>,
    /// Print every event as a JSON line; the last line is the final run state.
    #[arg(long)]
    json: bool,
    /// Replace every agent with a zero-latency mock shaped like its role: exercises rules,
    /// gates and loops without side effects.
    #[arg(long)]
    dry_run: bool,
    /// Write every LLM provider exchange to this cassette file, for the `replay` provider.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Serve the run's Prometheus metrics at `http://ADDR/metrics` while it runs.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// Continue a stopped run from its log (a crash, Ctrl-C, or a run waiting for a decision).
#[derive(clap::Args, Debug)]
pub(super) struct ResumeArgs {
    /// A run id, or a unique prefix of one.
    run: String,
    /// Answer an escalation (`TASK=retry`, `TASK=skip` or `TASK=abort`) or an approval task
    /// (`TASK=approve` or `TASK=reject`).
    #[arg(long = "decide", value_name = "TASK=DECISION")]
    decide: Vec<String>,
    /// A budget's new limit for the rest of the run: `SCOPE.QUANTITY=VALUE`, e.g.
    /// `workflow.usd=5`, `agent.coding.llm_calls=80`, `task.review.wall=30m`.
    #[arg(long = "budget", value_name = "SCOPE.QUANTITY=VALUE")]
    budget: Vec<String>,
    /// A secret param's value again (secret values are not stored): `NAME=VALUE`.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// A secret param's value from a file.
    #[arg(long = "param-file", value_name = "NAME=PATH")]
    param_files: Vec<String>,
    /// Why: recorded with the decisions (an approval's output carries it).
    #[arg(long, value_name = "TEXT", requires = "decide")]
    reason: Option<String>,
    #[arg(long)]
    json: bool,
    /// Write the resumed part's LLM provider exchanges to this cassette (extending it).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

pub(super) fn run(args: RunArgs, globals: &Globals) -> Result<ExitCode, AppError> {
    let mut params = app::parse_params(&args.params)?;
    app::read_param_files(&args.param_files, &mut params)?;
    let mut start = app::Start {
        params,
        file: args.file,
        dry_run: args.dry_run,
        record: args.record,
        config: globals.config.clone(),
        store: globals.store.clone(),
        layer: None,
    };
    let (cancel, halt) = (CancellationToken::new(), CancellationToken::new());
    let flags = globals.flags.clone();
    let json = args.json;
    let listen = args.metrics_listen;
    let stopped = output::drive_stops(cancel.clone(), halt.clone(), async move {
        let metrics = match listen {
            Some(addr) => Some(super::metrics::listen(addr, cancel.clone()).await?),
            None => None,
        };
        start.layer = metrics.as_ref().map(|m| m.store_layer());
        let stop = app::Stop { cancel, halt };
        app::start(start, stop, |p| {
            let mut w = watch(p, json, &flags);
            if let Some(m) = metrics {
                w.observers.push(super::metrics::observer(m, p));
            }
            w
        })
        .await
    })?;
    Ok(ended(stopped, json, &globals.flags))
}

pub(super) fn resume(args: ResumeArgs, globals: &Globals) -> Result<ExitCode, AppError> {
    let decisions = args
        .decide
        .iter()
        .map(|d| app::parse_decision(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut params = app::parse_params(&args.params)?;
    app::read_param_files(&args.param_files, &mut params)?;
    let req = app::Resume {
        run: args.run,
        params,
        decisions,
        reason: args.reason,
        dead_letter: None,
        budgets: args
            .budget
            .iter()
            .map(|b| app::parse_budget(b))
            .collect::<Result<Vec<_>, _>>()?,
        record: args.record,
        config: globals.config.clone(),
        store: globals.store.clone(),
        by: None,
        layer: None,
    };
    let (cancel, halt) = (CancellationToken::new(), CancellationToken::new());
    let flags = globals.flags.clone();
    let json = args.json;
    let stopped = output::drive_stops(cancel.clone(), halt.clone(), async move {
        app::resume(req, app::Stop { cancel, halt }, |p| watch(p, json, &flags)).await
    })?;
    Ok(ended(stopped, json, &globals.flags))
}

/// `conductor dlq retry ENTRY`.
pub(super) fn retry_dead_letter(entry: &str, globals: &Globals) -> Result<ExitCode, AppError> {
    let req = app::Resume {
        run: String::new(),
        params: Default::default(),
        decisions: Vec::new(),
        reason: None,
        dead_letter: Some(entry.to_string()),
        budgets: Vec::new(),
        record: None,
        config: globals.config.clone(),
        store: globals.store.clone(),
        by: None,
        layer: None,
    };
    let (cancel, halt) = (CancellationToken::new(), CancellationToken::new());
    let flags = globals.flags.clone();
    let stopped = output::drive_stops(cancel.clone(), halt.clone(), async move {
        app::resume(req, app::Stop { cancel, halt }, |p| watch(p, false, &flags)).await
    })?;
    Ok(ended(stopped, false, &globals.flags))
}

/// The observers of a run on the command line, and the operator when there is a terminal.
fn watch(p: &Prepared<'_>, json: bool, flags: &str) -> Watch {
    // The workflow's warnings are shown before the run starts.
    output::diagnostics(p.map, p.warnings);
    let observer: Box<dyn Observer> = if json {
        Box::new(JsonLines::new(std::io::stdout()))
    } else {
        let store = match &p.workspace {
            Some(w) => format!("{}  workspace {}", p.store, w.display()),
            None => p.store.clone(),
        };
        Box::new(
            HumanView::new(Box::new(std::io::stdout()), store)
                .with_workspace(p.workspace.clone())
                .with_flags(flags.to_string()),
        )
    };
    let operator: Option<Arc<dyn Operator>> = (std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal())
    .then(|| Arc::new(TerminalOperator) as Arc<dyn Operator>);
    #[allow(unused_mut)]
    let mut observers = vec![observer];
    #[cfg(feature = "otel")]
    observers.extend(crate::serve::otel::observer(p.history));
    Watch {
        observers,
        operator,
    }
}

/// 0 COMPLETED, 1 FAILED or CANCELLED, 3 WAITING for a decision.
fn ended(stopped: Stopped, json: bool, flags: &str) -> ExitCode {
    match stopped {
        Stopped::Ran { state, recorded } => {
            if let (Some(path), false) = (recorded, json) {
                output::line(format!(
                    "recorded the provider exchanges to {}",
                    path.display()
                ));
            }
            match state.status() {
                RunStatus::Completed => ExitCode::SUCCESS,
                RunStatus::Waiting => ExitCode::from(3),
                _ => ExitCode::from(1),
            }
        }
        Stopped::Finished { run, state } if state.status() == RunStatus::Completed => {
            output::line(format!(
                "run {run} is already completed; there is nothing to resume"
            ));
            ExitCode::SUCCESS
        }
        Stopped::Finished { run, state } => {
            let failed: Vec<&str> = state
                .tasks
                .iter()
                .filter(|t| t.status == crate::model::TaskStatus::Failed)
                .map(|t| &*t.task)
                .collect();
            let hint = match failed.first() {
                Some(t) => format!(
                    "; to fix and retry a failed task, edit the workflow and run `conductor resume {run}{flags} --decide {t}=retry`"
                ),
                None => String::new(),
            };
            output::line(format!(
                "run {run} failed ({}); there is nothing to resume{hint}",
                state.error.as_deref().unwrap_or("no reason recorded")
            ));
            ExitCode::from(1)
        }
    }
}

/// Asks the operator at the terminal what to do with a task that failed fatally, and whether
/// to approve an approval task.
struct TerminalOperator;

/// Reads lines from the terminal on a thread of its own, not the runtime's blocking pool: a
/// run that ends while the question is open must not wait for a line nobody will type. `ask`
/// gets each line and says whether it is an answer (else the prompt is shown again); end of
/// input gives `None` and the run waits for `resume --decide`.
fn ask_terminal<T: Send + 'static>(
    prompt: String,
    mut ask: impl FnMut(&str) -> Option<T> + Send + 'static,
) -> tokio::sync::oneshot::Receiver<Option<T>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let answer = loop {
            output::err_text(&prompt);
            let mut line = String::new();
            match std::io::stdin().read_line(&mut line) {
                Ok(0) | Err(_) => break None,
                Ok(_) => {
                    if let Some(a) = ask(&line) {
                        break Some(a);
                    }
                }
            }
        };
        let _ = tx.send(answer);
    });
    rx
}

impl Operator for TerminalOperator {
    fn decide<'a>(&'a self, q: &'a Escalation) -> DecisionFuture<'a> {
        let prompt = format!(
            "\ntask `{}` failed after {} attempt{}: {}\nretry, skip or abort? [r/s/a] ",
            q.task,
            q.attempts,
            crate::text::plural(q.attempts),
            q.error
        );
        let rx = ask_terminal(prompt, |line| match line.parse::<Decision>() {
            Ok(d) if !d.is_approval() => Some((d, "operator at the terminal".to_string())),
            Ok(_) => {
                output::err_line("answer retry, skip or abort");
                None
            }
            Err(e) => {
                output::err_line(&e);
                None
            }
        });
        Box::pin(async move { rx.await.ok().flatten() })
    }

    fn approve<'a>(&'a self, q: &'a ApprovalQuestion) -> ReplyFuture<'a> {
        let asks = q
            .message
            .as_deref()
            .map(|m| format!(":\n{m}"))
            .unwrap_or_default();
        let prompt = format!(
            "\ntask `{}` asks for approval{asks}\napprove or reject? [y/n, optionally followed by a reason] ",
            q.task
        );
        let rx = ask_terminal(prompt, |line| {
            let line = line.trim();
            let (word, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            match word.parse::<Decision>() {
                Ok(d) if d.is_approval() || d == Decision::Abort => Some(Reply {
                    decision: d,
                    by: format!("{} at the terminal", crate::app::who()),
                    reason: Some(reason.trim().to_string()).filter(|r| !r.is_empty()),
                }),
                _ => {
                    output::err_line("answer y (approve) or n (reject), or abort");
                    None
                }
            }
        });
        Box::pin(async move { rx.await.ok().flatten() })
    }
}
