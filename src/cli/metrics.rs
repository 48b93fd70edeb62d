//! `conductor run --metrics-listen ADDR`: the run's Prometheus metrics, served while it runs.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::app::{AppError, Prepared};
use crate::exec::Observer;
use crate::serve::metrics::observer::{Deps, MetricsObserver};
use crate::serve::metrics::Metrics;

/// Listens on `addr` and serves `/metrics` until the run ends (`cancel`, or the process).
pub(super) async fn listen(
    addr: SocketAddr,
    cancel: CancellationToken,
) -> Result<Metrics, AppError> {
    crate::serve::listen_allowed(&addr, false).map_err(AppError::Usage)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| AppError::Usage(format!("`--metrics-listen {addr}`: cannot listen: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    super::output::err_line(format!("metrics at http://{bound}/metrics"));
    let metrics = Metrics::new();
    let m = metrics.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::serve::metrics::serve_alone(m, listener, cancel).await {
            tracing::warn!("the metrics listener stopped: {e}");
        }
    });
    Ok(metrics)
}

/// The observer that counts the run's events.
pub(super) fn observer(metrics: Metrics, p: &Prepared<'_>) -> Box<dyn Observer> {
    Box::new(MetricsObserver::new(
        metrics,
        p.history,
        Some(Deps::of(p.workflow)),
    ))
}
