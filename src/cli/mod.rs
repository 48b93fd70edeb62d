//! The `conductor` command line: arguments → library → rendered output → exit code.
//!
//! Exit codes: 0 success; 1 the input has errors (`check`, `fmt`), or would change
//! (`fmt --check`); 2 usage errors, such as a file that cannot be read, and — for commands that
//! need a valid workflow, like `graph` — a workflow that does not check.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::check::{self, Checked};
use crate::diag::{self, Diagnostic};
use crate::source::SourceMap;

mod inspect;

#[derive(Parser, Debug)]
#[command(
    name = "conductor",
    version,
    about = "Runs multi-agent software-delivery workflows declared in .cond files"
)]
pub struct Cli {
    /// The run store: a SQLite file, or `memory` for a run nobody will inspect or resume.
    #[arg(
        long,
        global = true,
        env = "CONDUCTOR_STORE",
        default_value = ".conductor/conductor.db"
    )]
    store: PathBuf,
    /// The project configuration (LLM providers); by default `conductor.toml` beside the
    /// workflow file, if there is one.
    #[arg(long, global = true, env = "CONDUCTOR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check workflow files and report every problem with its place.
    Check {
        /// `.cond` files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// How to print diagnostics.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also print the plan's analysis: critical paths, widths, pool demand.
        #[arg(long)]
        explain: bool,
    },
    /// Run a workflow: phases in order, independent tasks at the same time.
    Run {
        file: PathBuf,
        /// A param value, `NAME=VALUE` (VALUE is read as JSON when it parses, else a string).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
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
    },
    /// Continue a stopped run from its log (a crash, Ctrl-C, or a run waiting for a decision).
    Resume {
        /// A run id, or a unique prefix of one.
        run: String,
        /// Answer an escalation: `TASK=retry`, `TASK=skip` or `TASK=abort`.
        #[arg(long = "decide", value_name = "TASK=DECISION")]
        decide: Vec<String>,
        #[arg(long)]
        json: bool,
        /// Write the resumed part's LLM provider exchanges to this cassette (extending it).
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
    },
    /// List runs in the store.
    Runs {
        /// Only runs with this status (pending, in_progress, waiting, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a run: its state, every task with its attempts, gates and feedback with reasons.
    Show {
        /// A run id, or a unique prefix of one.
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Explain a task: why it ran, was skipped, retried, dead-lettered or escalated.
    Why { run: String, task: String },
    /// List the files a run's agents wrote, or export them with --out.
    Artifacts {
        /// A run id, or a unique prefix of one.
        run: String,
        /// Write the run's files (their latest versions) into this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Every version, not just the latest of each path.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print a run's event log as JSON lines.
    Events {
        run: String,
        /// Keep printing new events until the run finishes.
        #[arg(long)]
        follow: bool,
    },
    /// The dead-letter queue: tasks that could not succeed on their own.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Delete finished runs older than a given age.
    Gc {
        /// An age like `30d`, `12h`.
        #[arg(long)]
        older_than: String,
    },
    /// Work with policy rules.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print a workflow's execution plan as text, Graphviz DOT, Mermaid, JSON or SVG.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Rewrite workflow files in the canonical layout (`-` reads stdin, writes stdout).
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; exit 1 and name the files that would change.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// List dead-lettered tasks.
    List {
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one entry with its attempts and the request it was sent.
    Show { entry: String },
    /// Remove an entry from the queue (it stays in the run's log).
    Drop { entry: String },
    /// Re-run the task in its run and, when the run stopped in that task's phase, continue it.
    Retry { entry: String },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Run every `fn test_*()` in `*_test.rhai` files (each tests its sibling `X.rhai`).
    Test {
        /// Files or folders to search; the current folder when none is given.
        paths: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
    Mermaid,
    Json,
    Svg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let store_path = cli.store.clone();
    let config = cli.config.clone();
    let config = config.as_deref();
    match cli.command {
        Command::Runs {
            status,
            workflow,
            json,
        } => with_store(&store_path, |s| {
            inspect::runs(s, status.as_deref(), workflow.as_deref(), json)
        }),
        Command::Resume {
            run,
            decide,
            json,
            record,
        } => resume(
            &store_path,
            config,
            &run,
            &decide,
            json,
            None,
            record.as_deref(),
        ),
        Command::Artifacts {
            run,
            out,
            all,
            json,
        } => with_store(&store_path, |s| {
            inspect::artifacts(s, &run, out.as_deref(), all, json)
        }),
        Command::Show { run, json } => with_store(&store_path, |s| inspect::show(s, &run, json)),
        Command::Why { run, task } => with_store(&store_path, |s| inspect::why(s, &run, &task)),
        Command::Events { run, follow } => {
            with_store(&store_path, |s| inspect::events(s, &run, follow))
        }
        Command::Dlq { command } => with_store(&store_path, |s| match command {
            DlqCommand::List { run, json } => inspect::dlq_list(s, run.as_deref(), json),
            DlqCommand::Show { entry } => inspect::dlq_show(s, &entry),
            DlqCommand::Drop { entry } => inspect::dlq_drop(s, &entry),
            DlqCommand::Retry { entry } => dlq_retry(s, &store_path, config, &entry),
        }),
        Command::Gc { older_than } => {
            with_store(&store_path, |s| inspect::gc(s, &store_path, &older_than))
        }
        Command::Check {
            files,
            format,
            explain,
        } => check_files(&files, format, explain, config),
        Command::Policy {
            command: PolicyCommand::Test { paths },
        } => policy_test(&paths),
        Command::Run {
            file,
            params,
            json,
            dry_run,
            record,
        } => run(
            &file,
            &params,
            json,
            dry_run,
            &store_path,
            config,
            record.as_deref(),
        ),
        Command::Graph {
            file,
            format,
            output,
        } => graph(&file, format, output.as_deref()),
        Command::Fmt { files, check } => fmt_files(&files, check),
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

fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn check_files(
    files: &[PathBuf],
    format: Format,
    explain: bool,
    config: Option<&std::path::Path>,
) -> ExitCode {
    let mut any_error = false;
    let mut unreadable = false;
    let mut json = Vec::new();
    let mut stderr = std::io::stderr().lock();
    let mut stdout = std::io::stdout().lock();
    for path in files {
        let mut map = SourceMap::new();
        let mut checked: Checked = match check::read_text(path) {
            Ok(text) => check::check_source(&mut map, &path.display().to_string(), path, &text),
            Err(diag) => {
                unreadable = true;
                Checked {
                    workflow: None,
                    diags: vec![diag],
                }
            }
        };
        if let Some(wf) = &checked.workflow {
            checked.diags.extend(provider_warnings(wf, config, path));
        }
        any_error |= checked.has_errors();
        match format {
            Format::Json => json.extend(checked.diags.iter().map(|d| diag::to_json(&map, d))),
            Format::Text => {
                let _ = write!(stderr, "{}", diag::render(&map, &checked.diags, color()));
                let errors = checked.diags.iter().filter(|d| d.is_error()).count();
                let warnings = checked.diags.len() - errors;
                let summary = match &checked.workflow {
                    Some(wf) => format!(
                        "ok: {} (workflow `{}`: {} phases, {} tasks, {} agents{})",
                        path.display(),
                        wf.name,
                        wf.phases.len(),
                        wf.tasks.len(),
                        wf.agents.len(),
                        plural_suffix(warnings, "warning")
                    ),
                    None => format!(
                        "error: {}: {}{}",
                        path.display(),
                        count(errors, "error"),
                        plural_suffix(warnings, "warning")
                    ),
                };
                let _ = writeln!(stdout, "{summary}");
                if let (true, Some(wf)) = (explain, &checked.workflow) {
                    match crate::plan::plan(wf) {
                        Ok(plan) => {
                            let _ =
                                write!(stdout, "{}", crate::plan::analysis_text(&plan.analysis));
                        }
                        Err(e) => {
                            let _ = writeln!(stderr, "error: {e}");
                            any_error = true;
                        }
                    }
                }
            }
        }
    }
    if format == Format::Json {
        let text = serde_json::to_string_pretty(&json).unwrap_or_else(|_| "[]".into());
        let _ = writeln!(stdout, "{text}");
    }
    if unreadable {
        ExitCode::from(2)
    } else if any_error {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn plural_suffix(n: usize, what: &str) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {}", count(n, what))
    }
}

fn fmt_files(files: &[PathBuf], check_only: bool) -> ExitCode {
    let mut code = 0u8;
    let mut stderr = std::io::stderr().lock();
    for path in files {
        let stdin = path.as_os_str() == "-";
        let text = if stdin {
            let mut buf = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut buf) {
                let _ = writeln!(stderr, "error: cannot read standard input: {e}");
                return ExitCode::from(2);
            }
            buf
        } else {
            match check::read_text(path) {
                Ok(text) => text,
                Err(diag) => {
                    let _ = write!(
                        stderr,
                        "{}",
                        diag::render(&SourceMap::new(), &[diag], color())
                    );
                    code = 2;
                    continue;
                }
            }
        };
        let name = if stdin {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        let formatted = match crate::fmt::format_source(&name, &text) {
            Ok(f) => f,
            Err((map, diags)) => {
                let _ = write!(stderr, "{}", diag::render(&map, &diags, color()));
                code = code.max(1);
                continue;
            }
        };
        if stdin {
            print!("{formatted}");
        } else if formatted != text {
            if check_only {
                println!("would reformat {}", path.display());
                code = code.max(1);
            } else if let Err(e) = std::fs::write(path, &formatted) {
                let d = Diagnostic::general(format!("cannot write `{}`: {e}", path.display()));
                let _ = write!(stderr, "{}", diag::render(&SourceMap::new(), &[d], color()));
                code = 2;
            } else {
                println!("formatted {}", path.display());
            }
        }
    }
    ExitCode::from(code)
}

/// Loads, checks and plans a file, printing diagnostics; the exit code on failure.
fn load_plan(
    path: &std::path::Path,
) -> Result<(SourceMap, crate::Workflow, crate::plan::Plan), ExitCode> {
    let mut map = SourceMap::new();
    let text = match check::read_text(path) {
        Ok(text) => text,
        Err(diag) => {
            eprint!("{}", diag::render(&map, &[diag], color()));
            return Err(ExitCode::from(2));
        }
    };
    let checked = check::check_source(&mut map, &path.display().to_string(), path, &text);
    eprint!("{}", diag::render(&map, &checked.diags, color()));
    let Some(wf) = checked.workflow else {
        return Err(ExitCode::from(2));
    };
    match crate::plan::plan(&wf) {
        Ok(plan) => Ok((map, wf, plan)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn graph(
    path: &std::path::Path,
    format: GraphFormat,
    output: Option<&std::path::Path>,
) -> ExitCode {
    let (map, wf, plan) = match load_plan(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let bytes: Vec<u8> = match format {
        GraphFormat::Text => crate::plan::to_text(&wf, &plan).into_bytes(),
        GraphFormat::Dot => crate::plan::to_dot(&wf, &plan).into_bytes(),
        GraphFormat::Mermaid => crate::plan::to_mermaid(&wf, &plan).into_bytes(),
        GraphFormat::Json => {
            let json = crate::plan::to_json(&wf, &plan, &map);
            let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
            text.push('\n');
            text.into_bytes()
        }
        GraphFormat::Svg => match render_svg(&crate::plan::to_dot(&wf, &plan)) {
            Ok(svg) => svg,
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
        },
    };
    match output {
        Some(out) => {
            if let Err(e) = std::fs::write(out, &bytes) {
                eprintln!("error: cannot write `{}`: {e}", out.display());
                return ExitCode::from(2);
            }
        }
        None => {
            let _ = std::io::stdout().lock().write_all(&bytes);
        }
    }
    ExitCode::SUCCESS
}

/// Renders DOT to SVG with Graphviz's `dot`.
fn render_svg(dot: &str) -> Result<Vec<u8>, String> {
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "`--format svg` needs Graphviz's `dot`, which is not installed; install it \
                 (`apt-get install graphviz`, `brew install graphviz`) or use `--format dot`"
                    .to_string()
            } else {
                format!("cannot run `dot`: {e}")
            }
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(dot.as_bytes())
            .map_err(|e| format!("cannot send the graph to `dot`: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`dot` failed: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`dot` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

fn policy_test(paths: &[PathBuf]) -> ExitCode {
    use crate::policy::testing;
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    let files = match testing::discover(&paths) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if files.is_empty() {
        eprintln!(
            "error: no `*_test.rhai` files under {}",
            paths
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        match testing::run_file(file) {
            Ok(results) => {
                for r in results {
                    match &r.failure {
                        None => {
                            passed += 1;
                            println!("ok    {}  {}", r.file.display(), r.name);
                        }
                        Some(why) => {
                            failed += 1;
                            println!("FAIL  {}  {}: {why}", r.file.display(), r.name);
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL  {e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Warnings for llm agents whose provider the project configuration does not define (or a
/// configuration that does not load): `conductor run` would stop before starting.
fn provider_warnings(
    wf: &crate::Workflow,
    explicit: Option<&std::path::Path>,
    path: &std::path::Path,
) -> Vec<Diagnostic> {
    let llm: Vec<(&crate::check::ir::Agent, &str)> = wf
        .agents
        .iter()
        .filter_map(|a| match &a.kind {
            crate::check::ir::AgentKind::Llm(l) => Some((a, l.provider.as_str())),
            _ => None,
        })
        .collect();
    let Some((first, _)) = llm.first() else {
        return Vec::new();
    };
    let config = match crate::config::Config::from_process_env(explicit, path) {
        Ok(c) => c,
        Err(e) => {
            return vec![Diagnostic::warning(
                first.span,
                format!("the llm agents cannot run: {e}"),
            )]
        }
    };
    // One warning per missing provider, at the first agent that uses it.
    let mut missing: Vec<(&str, Vec<&crate::check::ir::Agent>)> = Vec::new();
    for (a, provider) in llm {
        if config.providers.contains_key(provider) {
            continue;
        }
        match missing.iter_mut().find(|(p, _)| *p == provider) {
            Some((_, agents)) => agents.push(a),
            None => missing.push((provider, vec![a])),
        }
    }
    let where_ = match &config.path {
        Some(p) => format!("`{}` does not define it", p.display()),
        None => "there is no conductor.toml beside the workflow (and no --config)".to_string(),
    };
    missing
        .into_iter()
        .map(|(provider, agents)| {
            let names: Vec<String> = agents.iter().map(|a| format!("`{}`", a.name)).collect();
            Diagnostic::warning(
                agents[0].span,
                format!(
                    "provider `{provider}` (used by {}) is not configured: {where_}",
                    names.join(", ")
                ),
            )
            .with_label("`conductor run` would stop before starting")
            .with_help(format!(
                "add [providers.{provider}] to conductor.toml beside the workflow (or give \
                 --config FILE){}; `--dry-run` needs no provider",
                crate::config::env_kind_var(provider)
                    .map(|v| format!(", or set {v}"))
                    .unwrap_or_default()
            ))
        })
        .collect()
}

/// `NAME=VALUE` pairs; VALUE as JSON when it parses, else as a string.
fn parse_params(
    pairs: &[String],
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, String> {
    let mut out = std::collections::BTreeMap::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("`--param {pair}` needs the form NAME=VALUE"));
        };
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        out.insert(name.trim().to_string(), value);
    }
    Ok(out)
}

/// Opens the SQLite store for an inspection command.
fn with_store(
    path: &std::path::Path,
    f: impl FnOnce(&std::sync::Arc<crate::store::SqliteStore>) -> ExitCode,
) -> ExitCode {
    if path.as_os_str() == "memory" {
        eprintln!(
            "error: the memory store keeps nothing between commands; give a file with --store"
        );
        return ExitCode::from(2);
    }
    if !path.exists() {
        eprintln!(
            "error: no store at `{}` (runs are kept there by `conductor run`; choose another with --store or CONDUCTOR_STORE)",
            path.display()
        );
        return ExitCode::from(2);
    }
    match crate::store::SqliteStore::open(path) {
        Ok(store) => f(&std::sync::Arc::new(store)),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(
    path: &std::path::Path,
    params: &[String],
    json: bool,
    dry_run: bool,
    store_path: &std::path::Path,
    config: Option<&std::path::Path>,
    record: Option<&std::path::Path>,
) -> ExitCode {
    let params = match parse_params(params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (_map, wf, plan) = match load_plan(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if let Err(e) = crate::exec::resolve_params(&wf, &params) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let config = match load_config(config, path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let recorder = match open_recorder(record) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let store: std::sync::Arc<dyn crate::store::Store> = if store_path.as_os_str() == "memory" {
        std::sync::Arc::new(crate::store::MemoryStore::new())
    } else {
        match crate::store::SqliteStore::open(store_path) {
            Ok(s) => std::sync::Arc::new(s),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let mut options = crate::exec::RunOptions::new(store.clone());
    let _lock = if store_path.as_os_str() == "memory" {
        None
    } else {
        match crate::store::RunLock::acquire(store_path, &options.run_id) {
            Ok(lock) => Some(lock),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    options.params = params;
    options.file = path.display().to_string();
    if dry_run {
        options.agents = crate::agents::AgentMode::DryRun;
    }
    options.workspace = workspace(store_path, &options.run_id);
    let workspace_dir = options.workspace.clone();
    options.config = std::sync::Arc::new(config);
    options.recorder = recorder.clone();
    attach(&mut options, json, store.describe());
    let cancel = options.cancel.clone();
    let code = drive(
        cancel,
        crate::exec::run(std::sync::Arc::new(wf), std::sync::Arc::new(plan), options),
    );
    if code == ExitCode::from(2) {
        // The run could not start (an agent could not be built): leave no empty workspace.
        if let Some(dir) = &workspace_dir {
            if std::fs::remove_dir(dir).is_ok() {
                if let Some(run_dir) = dir.parent() {
                    let _ = std::fs::remove_dir(run_dir);
                }
            }
        }
    } else if let (Some(r), false) = (&recorder, json) {
        println!("recorded the provider exchanges to {}", r.path().display());
    }
    code
}

/// `--record FILE`: the cassette recorder, or the exit code after saying what is wrong.
fn open_recorder(
    record: Option<&std::path::Path>,
) -> Result<Option<std::sync::Arc<crate::agents::llm::Recorder>>, ExitCode> {
    record
        .map(|file| {
            crate::agents::llm::Recorder::create(file)
                .map(std::sync::Arc::new)
                .map_err(|e| {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                })
        })
        .transpose()
}

/// The project configuration of a workflow, or the exit code after saying what is wrong.
fn load_config(
    explicit: Option<&std::path::Path>,
    workflow: &std::path::Path,
) -> Result<crate::config::Config, ExitCode> {
    crate::config::Config::from_process_env(explicit, workflow).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// The run's working folder beside a file store, `runs/RUN/work`, created; none for the
/// memory store (shell agents then start in the workflow's folder).
fn workspace(store_path: &std::path::Path, run: &crate::model::RunId) -> Option<PathBuf> {
    if store_path.as_os_str() == "memory" {
        return None;
    }
    let dir = store_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .join("runs")
        .join(&*run.0)
        .join("work");
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(std::path::absolute(&dir).unwrap_or(dir)),
        Err(e) => {
            eprintln!(
                "warning: cannot create the workspace `{}`: {e}",
                dir.display()
            );
            None
        }
    }
}

/// The observers of a run on the command line, and the operator when there is a terminal.
fn attach(options: &mut crate::exec::RunOptions, json: bool, store: String) {
    let store = match &options.workspace {
        Some(w) => format!("{store}  workspace {}", w.display()),
        None => store,
    };
    if json {
        options
            .observers
            .push(Box::new(crate::exec::JsonLines::new(std::io::stdout())));
    } else {
        let workspace = options.workspace.clone();
        options.observers.push(Box::new(
            crate::exec::HumanView::new(Box::new(std::io::stdout()), store)
                .with_workspace(workspace),
        ));
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        options.escalations = Some(std::sync::Arc::new(TerminalOperator));
    }
}

/// Runs a scheduler to its end on a multi-threaded runtime and turns the outcome into the exit
/// code. The scheduler runs as a spawned task, not on the blocking main thread: completions
/// from worker threads reach it without a cross-thread wake of `block_on`.
fn drive(
    cancel: tokio_util::sync::CancellationToken,
    scheduler: impl std::future::Future<Output = Result<crate::model::RunState, crate::exec::ExecError>>
        + Send
        + 'static,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        let handle = tokio::spawn(scheduler);
        with_ctrl_c(cancel, handle).await
    });
    exit_code(result)
}

/// Waits for the scheduler, cancelling the run on Ctrl-C.
async fn with_ctrl_c(
    cancel: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<Result<crate::model::RunState, crate::exec::ExecError>>,
) -> Result<Result<crate::model::RunState, crate::exec::ExecError>, tokio::task::JoinError> {
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    let result = handle.await;
    ctrl_c.abort();
    result
}

/// 0 COMPLETED, 1 FAILED or CANCELLED, 2 could not run, 3 WAITING for a decision.
fn exit_code(
    result: Result<Result<crate::model::RunState, crate::exec::ExecError>, tokio::task::JoinError>,
) -> ExitCode {
    match result {
        Ok(Ok(state)) => match state.status() {
            crate::model::RunStatus::Completed => ExitCode::SUCCESS,
            crate::model::RunStatus::Waiting => ExitCode::from(3),
            _ => ExitCode::from(1),
        },
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: the run stopped unexpectedly: {e}");
            ExitCode::from(1)
        }
    }
}

fn dlq_retry(
    store: &std::sync::Arc<crate::store::SqliteStore>,
    store_path: &std::path::Path,
    config: Option<&std::path::Path>,
    entry: &str,
) -> ExitCode {
    use crate::store::Store;
    let entries = match store.dead_letters(None) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(dl) = entries.into_iter().find(|e| e.id == entry) else {
        eprintln!("error: no dead letter `{entry}` (see `conductor dlq list`)");
        return ExitCode::from(2);
    };
    let code = resume(
        store_path,
        config,
        &dl.run_id.0,
        &[],
        false,
        Some((dl.task.to_string(), dl.id.clone())),
        None,
    );
    if code != ExitCode::from(2) {
        // Handled: the retry is in the run's log, with its own outcome.
        let _ = store.drop_dead_letter(entry);
    }
    code
}

fn resume(
    store_path: &std::path::Path,
    config: Option<&std::path::Path>,
    id: &str,
    decide: &[String],
    json: bool,
    retry: Option<(String, String)>,
    record: Option<&std::path::Path>,
) -> ExitCode {
    use crate::store::Store;
    let mut decisions = Vec::new();
    for d in decide {
        let Some((task, decision)) = d.split_once('=') else {
            eprintln!("error: `--decide {d}` needs the form TASK=retry|skip|abort");
            return ExitCode::from(2);
        };
        match decision.parse::<crate::model::Decision>() {
            Ok(decision) => decisions.push((task.trim().to_string(), decision)),
            Err(e) => {
                eprintln!("error: `--decide {d}`: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if store_path.as_os_str() == "memory" || !store_path.exists() {
        eprintln!(
            "error: no store at `{}` to resume from",
            store_path.display()
        );
        return ExitCode::from(2);
    }
    let store = match crate::store::SqliteStore::open(store_path) {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let run_id = match inspect::find_run(store.as_ref(), id) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _lock = match crate::store::RunLock::acquire(store_path, &run_id) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let events = match store.events(&run_id) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let state = crate::model::RunState::from_events(&events);
    match state.status() {
        crate::model::RunStatus::Completed if retry.is_none() => {
            println!("run {run_id} is already completed; there is nothing to resume");
            return ExitCode::SUCCESS;
        }
        crate::model::RunStatus::Completed => {
            eprintln!(
                "error: run {run_id} completed (its gate passed without this task); start a new run to run it again"
            );
            return ExitCode::from(2);
        }
        crate::model::RunStatus::Failed if retry.is_none() => {
            println!(
                "run {run_id} failed ({}); there is nothing to resume",
                state.error.as_deref().unwrap_or("no reason recorded")
            );
            return ExitCode::from(1);
        }
        _ => {}
    }
    let path = std::path::PathBuf::from(&state.file);
    let (_map, wf, plan) = match load_plan(&path) {
        Ok(loaded) => loaded,
        Err(code) => {
            eprintln!(
                "error: cannot load `{}`, the workflow of run {run_id}; resume from the folder the run started in",
                path.display()
            );
            return code;
        }
    };
    let config = match load_config(config, &path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let recorder = match open_recorder(record) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut options = crate::exec::RunOptions::new(store.clone());
    options.workspace = workspace(store_path, &run_id);
    options.config = std::sync::Arc::new(config);
    options.recorder = recorder;
    attach(&mut options, json, store.describe());
    let cancel = options.cancel.clone();
    drive(
        cancel,
        crate::exec::resume(
            std::sync::Arc::new(wf),
            std::sync::Arc::new(plan),
            options,
            events,
            decisions,
            retry,
        ),
    )
}

/// Asks the operator at the terminal what to do with a task that failed fatally.
struct TerminalOperator;

impl crate::exec::Escalations for TerminalOperator {
    fn decide<'a>(&'a self, q: &'a crate::exec::Escalation) -> crate::exec::DecisionFuture<'a> {
        let prompt = format!(
            "\ntask `{}` failed after {} attempt{}: {}\nretry, skip or abort? [r/s/a] ",
            q.task,
            q.attempts,
            if q.attempts == 1 { "" } else { "s" },
            q.error
        );
        Box::pin(async move {
            // A thread of its own, not the runtime's blocking pool: a run that ends while the
            // question is open must not wait for a line nobody will type.
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let answer = loop {
                    eprint!("{prompt}");
                    let mut line = String::new();
                    match std::io::stdin().read_line(&mut line) {
                        // End of input: nobody can answer; the run waits for `resume --decide`.
                        Ok(0) | Err(_) => break None,
                        Ok(_) => match line.parse::<crate::model::Decision>() {
                            Ok(d) => break Some((d, "operator at the terminal".to_string())),
                            Err(e) => eprintln!("{e}"),
                        },
                    }
                };
                let _ = tx.send(answer);
            });
            rx.await.ok().flatten()
        })
    }
}
