//! How the command line prints: diagnostics (in colour on a terminal), errors, and lines
//! that tolerate a closed pipe.

use std::io::{IsTerminal, Write};

use crate::app::AppError;
use crate::diag::{self, Diagnostic};
use crate::source::SourceMap;

/// Colour only on a terminal, and not when `NO_COLOR` is set.
pub(super) fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Prints diagnostics on stderr.
pub(super) fn diagnostics(map: &SourceMap, diags: &[Diagnostic]) {
    if diags.is_empty() {
        return;
    }
    let _ = write!(std::io::stderr(), "{}", diag::render(map, diags, color()));
}

/// Says what went wrong, on stderr.
pub(super) fn report(e: &AppError) {
    match e {
        AppError::Invalid { map, diags } => diagnostics(map, diags),
        other => {
            let _ = writeln!(std::io::stderr(), "error: {other}");
        }
    }
}

/// A warning on stderr.
pub(super) fn warning(text: &str) {
    let _ = writeln!(std::io::stderr(), "warning: {text}");
}

/// Prints text on stdout as it is; false when it could not be written (a closed pipe, a full
/// disk): never a panic.
pub(super) fn text(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

/// Prints text on stderr. An unwritable stderr is ignored: there is nowhere left to say so,
/// and the exit code still tells.
pub(super) fn err_text(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// A line on stderr, as [`err_text`].
pub(super) fn err_line(text: impl std::fmt::Display) {
    err_text(&format!("{text}\n"));
}

/// Prints a line on stdout; false when the reader went away.
pub(super) fn line(text: impl std::fmt::Display) -> bool {
    writeln!(std::io::stdout(), "{text}").is_ok()
}

/// Waits for Ctrl-C, SIGTERM or SIGHUP — what a terminal, `timeout`, `docker stop`, systemd and
/// a closed SSH session send — all of which stop a run the same way: cancelled, its programs'
/// process groups killed, its state recorded. False when no handler could be installed.
async fn stop_signal() -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return tokio::signal::ctrl_c().await.is_ok();
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.is_ok(),
        _ = term.recv() => true,
        _ = hup.recv() => true,
    }
}

/// Runs a future to its end on a multi-threaded runtime, with Ctrl-C (or SIGTERM, SIGHUP)
/// cancelling `cancel`.
/// The work runs as a spawned task, not on the blocking main thread: completions from worker
/// threads reach it without a cross-thread wake of `block_on`.
pub(super) fn drive<T: Send + 'static>(
    cancel: tokio_util::sync::CancellationToken,
    work: impl std::future::Future<Output = Result<T, AppError>> + Send + 'static,
) -> Result<T, AppError> {
    drive_stops(cancel.clone(), cancel, work)
}

/// [`drive`] for a run: the first signal cancels `cancel` (the run's `always` phases still
/// run), a second one `halt` (the run ends at once).
pub(super) fn drive_stops<T: Send + 'static>(
    cancel: tokio_util::sync::CancellationToken,
    halt: tokio_util::sync::CancellationToken,
    work: impl std::future::Future<Output = Result<T, AppError>> + Send + 'static,
) -> Result<T, AppError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?;
    runtime.block_on(async move {
        let ctrl_c = tokio::spawn(async move {
            if stop_signal().await {
                cancel.cancel();
                crate::template::interrupt_renders();
                if stop_signal().await {
                    halt.cancel();
                }
            }
        });
        let result = tokio::spawn(work).await;
        ctrl_c.abort();
        result.unwrap_or_else(|e| {
            Err(AppError::Usage(format!(
                "the run stopped unexpectedly: {e}"
            )))
        })
    })
}
