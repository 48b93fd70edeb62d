//! Templates that compute — loops, assignments, macros, repetition — render in a separate
//! process (the `conductor` binary itself, started as `conductor __render-template`) under
//! operating-system limits: [`TEMPLATE_MEMORY`] of memory, [`TEMPLATE_TIME`] (or the task's
//! shorter `timeout`) of wall-clock time, and a CPU-time limit behind it. A template engine
//! cannot bound its own memory — a string doubled thirty times asks for gigabytes in thirty
//! steps, and a refused allocation aborts the whole process — so the process that may run out
//! is one that can be lost: its death becomes the task's error, and the run goes on.
//!
//! The parent sends the template's source and the part of the context it reads as JSON on the
//! child's stdin, and reads `{"ok": text}` or `{"error": message}` from its stdout. Ctrl-C,
//! SIGTERM and SIGHUP ([`interrupt`]) kill a render in progress.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::RenderError;
use crate::limits::{TEMPLATE_MEMORY, TEMPLATE_OUTPUT, TEMPLATE_TIME};

/// The subcommand the child runs.
pub(crate) const SUBCOMMAND: &str = "__render-template";

static HELPER: OnceLock<PathBuf> = OnceLock::new();
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

/// Renders computing templates in child processes of `exe` (the `conductor` binary) from now
/// on. Without it (Conductor embedded as a library) they render in this process, bounded by
/// instructions and output but not by memory.
pub(crate) fn enable(exe: PathBuf) {
    let _ = HELPER.set(exe);
}

pub(crate) fn available() -> bool {
    HELPER.get().is_some()
}

/// Kills renders in progress: the run is being cancelled.
pub(crate) fn interrupt() {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

/// What the child is asked.
#[derive(Serialize, Deserialize)]
struct Request {
    source: String,
    what: String,
    strict: bool,
    context: serde_json::Value,
}

/// What the child answers.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Ok(String),
    Error(String),
}

/// Renders `source` in a child process within `time`.
pub(crate) fn render(
    source: &str,
    context: serde_json::Value,
    what: &dyn std::fmt::Display,
    strict: bool,
    time: Duration,
) -> Result<String, RenderError> {
    let Some(exe) = HELPER.get() else {
        return Err(RenderError(format!(
            "template {what}: no process to render it in"
        )));
    };
    let fail = |cause: String| RenderError(format!("template {what}: {cause}"));
    let request = serde_json::to_vec(&Request {
        source: source.to_string(),
        what: what.to_string(),
        strict,
        context,
    })
    .map_err(|e| fail(format!("its context cannot be sent: {e}")))?;
    let interrupts = INTERRUPTS.load(Ordering::SeqCst);
    let mut child = Command::new(exe)
        .arg(SUBCOMMAND)
        .arg(time.as_secs().saturating_add(1).to_string())
        // Nothing in a template reads the environment; the keys stay here.
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a terminal's Ctrl-C is ours to handle, not a reason to fail the task.
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot start the process that renders it: {e}")))?;
    let stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&request);
        }
    });
    let out = reader(child.stdout.take(), TEMPLATE_OUTPUT * 7 + 4096);
    let err = reader(child.stderr.take(), 64 * 1024);
    let deadline = Instant::now() + time;
    let mut pause = Duration::from_micros(100);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        if Instant::now() >= deadline || INTERRUPTS.load(Ordering::SeqCst) != interrupts {
            let _ = child.kill();
            let _ = child.wait();
            let _ = writer.join();
            return Err(if INTERRUPTS.load(Ordering::SeqCst) != interrupts {
                fail("rendering was interrupted".into())
            } else {
                fail(format!(
                    "rendering took longer than {} and was stopped",
                    crate::text::duration(time)
                ))
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    };
    let _ = writer.join();
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if status.is_some_and(|s| s.success()) {
        return match serde_json::from_slice::<Response>(&out) {
            Ok(Response::Ok(text)) => Ok(text),
            Ok(Response::Error(message)) => Err(RenderError(message)),
            Err(e) => Err(fail(format!("its renderer answered nonsense: {e}"))),
        };
    }
    Err(fail(died(&String::from_utf8_lossy(&err))))
}

/// Why the child died, from what it printed.
fn died(stderr: &str) -> String {
    if stderr.contains("memory allocation") || stderr.contains("capacity overflow") {
        format!(
            "rendering needed more than {} MiB of memory and was stopped",
            TEMPLATE_MEMORY >> 20
        )
    } else if stderr.contains("overflowed its stack") {
        "rendering nested too deeply (macros calling macros?) and was stopped".to_string()
    } else {
        format!(
            "rendering was stopped: it used more than {} MiB of memory or {} of time",
            TEMPLATE_MEMORY >> 20,
            crate::text::duration(TEMPLATE_TIME)
        )
    }
}

/// Reads a pipe to its end on a thread, keeping at most `cap` bytes.
fn reader(
    pipe: Option<impl Read + Send + 'static>,
    cap: usize,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(pipe) = pipe {
            let _ = pipe.take(cap as u64).read_to_end(&mut out);
        }
        out
    })
}

/// The child: limits itself, reads one request, renders it here, answers, exits.
pub(crate) fn serve(cpu_seconds: u64) -> ExitCode {
    use nix::sys::resource::{setrlimit, Resource};
    let _ = setrlimit(Resource::RLIMIT_DATA, TEMPLATE_MEMORY, TEMPLATE_MEMORY);
    let _ = setrlimit(Resource::RLIMIT_CPU, cpu_seconds, cpu_seconds + 1);
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        return ExitCode::from(2);
    }
    let response = match serde_json::from_slice::<Request>(&input) {
        Ok(req) => match super::render_source(&req.source, &req.context, &req.what, req.strict) {
            Ok(text) => Response::Ok(text),
            Err(e) => Response::Error(e.0),
        },
        Err(e) => Response::Error(format!("the render request cannot be read: {e}")),
    };
    let text = serde_json::to_vec(&response).unwrap_or_default();
    match std::io::stdout().write_all(&text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(2),
    }
}
