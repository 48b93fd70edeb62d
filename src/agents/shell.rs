//! The `shell` agent: runs a program with arguments (never through a shell), in its own
//! process group, capturing bounded stdout and stderr. Dropping the attempt's future (timeout,
//! cancellation) kills the whole group, so no grandchild outlives it.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use serde::{Deserialize, Serialize};

use super::{AgentEnv, AgentFuture, Renderer, Trace};
use crate::check::ir;
use crate::model::{ErrorCode, LogStream, TaskError};

/// Bytes of stdout and of stderr kept; past it, the tail is kept.
pub(super) const OUTPUT_LIMIT: usize = 1 << 20;

/// How long output is still read after the program exits, when something else holds its pipes.
const PIPE_GRACE: Duration = Duration::from_millis(250);

/// A shell agent's command for one attempt: argv (each element one argument, never parsed by
/// a shell), the working directory and extra environment, all rendered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShellCall {
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
}

/// Renders a shell pool's command, working directory and environment.
pub(super) fn prepare(
    sh: &ir::ShellAgent,
    agent: &str,
    r: &Renderer<'_>,
) -> Result<ShellCall, TaskError> {
    let what = |part: &str| format!("`{part}` of agent `{agent}`");
    let mut argv = Vec::with_capacity(sh.command.len());
    let mut operands = false;
    for t in &sh.command {
        let rendered = r.render(t, &what("command"))?;
        let items = if t.expands {
            crate::template::split_argv(rendered)
        } else {
            vec![rendered]
        };
        if !argv.is_empty() && !operands {
            for item in &items {
                refuse_option(t, item, argv.len(), &what("command"))?;
            }
        }
        // A `--` the author wrote ends the options: what follows is an operand.
        operands |= !t.dynamic && t.text == "--";
        argv.extend(items);
    }
    if argv.is_empty() {
        return Err(TaskError::fatal(
            ErrorCode::InvalidInput,
            format!(
                "{}: no program to run (the list it expands is empty)",
                what("command")
            ),
        ));
    }
    let workdir = r.render_opt(sh.workdir.as_ref(), &what("workdir"))?;
    let env = sh
        .env
        .iter()
        .map(|(k, v)| Ok((k.clone(), r.render(v, &what("env"))?)))
        .collect::<Result<Vec<_>, TaskError>>()?;
    Ok(ShellCall { argv, workdir, env })
}

/// A value from a template must not become an option of the program: `python3 "{{ x }}"` with
/// `x = "-c…"` would run code. An argument whose text starts with a template's value (its
/// template begins with `{{`) may not start with `-`, unless it follows a `--` argument written
/// in the workflow, or its first expression ends with the `option` filter
/// (`"{{ params.flags | option }}"`), the author's word that an option is meant.
fn refuse_option(t: &ir::Template, arg: &str, at: usize, what: &str) -> Result<(), TaskError> {
    if !arg.starts_with('-') || !t.dynamic || !t.source.starts_with("{{") || opts_in(&t.source) {
        return Ok(());
    }
    Err(TaskError::fatal(
        ErrorCode::InvalidInput,
        format!(
            "{what}: argument {at} would be `{}`, which the program would read as an option; a \
             value from a template may not start with `-` unless it follows a `--` argument or \
             is marked `{{{{ … | option }}}}`",
            crate::text::truncate(&crate::text::printable(arg), 60)
        ),
    ))
}

/// Whether the first expression of a template ends with the `option` filter.
fn opts_in(source: &str) -> bool {
    let Some(inner) = source.strip_prefix("{{") else {
        return false;
    };
    let inner = inner.split("}}").next().unwrap_or("");
    let inner = inner.trim_end().trim_end_matches('-');
    inner
        .rsplit('|')
        .next()
        .is_some_and(|last| inner.contains('|') && last.trim() == "option")
}

/// Kills a process group, and every descendant that left it, when dropped, unless disarmed.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            super::process_tree::kill_tree(pgid);
        }
    }
}

/// Why a program could not start. Running out of a shared resource — file descriptors,
/// processes, memory — passes as other tasks finish: back-pressure, retried like a transient
/// error, never a reason to abort the run. Anything else (no such program, a bad `workdir`)
/// would fail the same way again.
fn spawn_error(program: &str, workdir: &std::path::Path, e: &std::io::Error) -> TaskError {
    use nix::errno::Errno;
    let exhausted = e.raw_os_error().map(Errno::from_raw).is_some_and(|n| {
        matches!(
            n,
            Errno::EMFILE | Errno::ENFILE | Errno::EAGAIN | Errno::ENOMEM
        )
    });
    let message = format!("cannot run `{program}` in `{}`: {e}", workdir.display());
    if exhausted {
        TaskError {
            not_started: true,
            ..TaskError::retryable(ErrorCode::Transient, message)
        }
    } else {
        TaskError::fatal(ErrorCode::InvalidInput, message)
    }
}

/// Runs the program of one attempt.
pub(super) fn execute(shell: ShellCall, env: &AgentEnv, trace: Trace) -> AgentFuture {
    let base = env.base.clone();
    let default_dir = env.workspace.clone().unwrap_or_else(|| env.base.clone());
    let scrub = env.scrub.clone();
    Box::pin(async move {
        let Some((program, args)) = shell.argv.split_first() else {
            return Err(TaskError::fatal(
                ErrorCode::InvalidInput,
                "`command` is empty",
            ));
        };
        let workdir = match &shell.workdir {
            Some(w) => base.join(w),
            None => default_dir,
        };
        let mut cmd = tokio::process::Command::new(program);
        for name in scrub.iter() {
            cmd.env_remove(name);
        }
        cmd.args(args)
            .current_dir(&workdir)
            .envs(shell.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_error(program, &workdir, &e))?;
        // The child leads its own group (process_group(0)): its pid is the group id.
        let mut guard = GroupGuard {
            pgid: child.id().map(|p| p as i32),
        };
        let out_buf = Arc::new(Mutex::new(Captured::default()));
        let err_buf = Arc::new(Mutex::new(Captured::default()));
        let readers = (
            tokio::spawn(read_bounded(
                child.stdout.take(),
                out_buf.clone(),
                trace.clone(),
                LogStream::Stdout,
            )),
            tokio::spawn(read_bounded(
                child.stderr.take(),
                err_buf.clone(),
                trace.clone(),
                LogStream::Stderr,
            )),
        );
        let status = child.wait().await.map_err(|e| {
            TaskError::retryable(
                ErrorCode::AgentCrashed,
                format!("waiting for `{program}`: {e}"),
            )
        })?;
        // It finished on its own: what it started in the background (a service) lives on.
        guard.pgid = None;
        // A background process may hold the pipes open; take what came within a moment.
        let _ = tokio::time::timeout(PIPE_GRACE, async {
            let _ = readers.0.await;
            let _ = readers.1.await;
        })
        .await;
        let out = lock(&out_buf).text();
        let err = lock(&err_buf).text();
        let mut output = serde_json::json!({
            "exit_code": status.code(),
            "stdout": out,
            "stderr": err,
        });
        match status.code() {
            Some(0) => {
                if let Ok(parsed) = serde_json::from_str::<serde_json::Value>(out.trim()) {
                    if let (Some(obj), Some(fields)) = (output.as_object_mut(), parsed.as_object())
                    {
                        for (k, v) in fields {
                            obj.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                    output["json"] = parsed;
                }
                Ok(output)
            }
            // It ran and said no: a failure, its output in the attempt's log.
            Some(code) => Err(TaskError {
                exit_code: Some(code),
                ..TaskError::failure(
                    ErrorCode::ExitCode,
                    format!("`{program}` exited with status {code}{}", tail_hint(&err)),
                )
            }),
            None => Err(TaskError::retryable(
                ErrorCode::AgentCrashed,
                format!("`{program}` was killed by a signal"),
            )),
        }
    })
}

/// The last line of stderr, for error messages.
fn tail_hint(stderr: &str) -> String {
    match stderr.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => {
            let line: String = line.chars().take(200).collect();
            format!(": {line}")
        }
        None => String::new(),
    }
}

/// What a pipe gave: the last [`OUTPUT_LIMIT`] bytes and how many were cut before them.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: usize,
}

impl Captured {
    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.kept).into_owned();
        if self.dropped > 0 {
            format!("[… {} bytes cut …]\n{text}", self.dropped)
        } else {
            text
        }
    }
}

fn lock(m: &Mutex<Captured>) -> std::sync::MutexGuard<'_, Captured> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads a pipe to its end into `into`, keeping the tail.
async fn read_bounded(
    pipe: Option<impl AsyncRead + Unpin>,
    into: Arc<Mutex<Captured>>,
    trace: Trace,
    stream: LogStream,
) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                trace.output(stream, &chunk[..n]);
                let mut c = lock(&into);
                c.kept.extend_from_slice(&chunk[..n]);
                if c.kept.len() > OUTPUT_LIMIT {
                    let excess = c.kept.len() - OUTPUT_LIMIT;
                    c.kept.drain(..excess);
                    c.dropped += excess;
                }
            }
        }
    }
}
