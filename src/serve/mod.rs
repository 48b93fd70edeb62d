//! `conductor serve`: the dashboard. An axum server on the process's tokio runtime with one
//! embedded page (HTML, JS, CSS; no build step), JSON endpoints that return what the
//! command line's `--json` outputs return, a server-sent-events stream per run keyed by the
//! event sequence number, actions that call the same application code as `conductor resume
//! --decide` and `conductor dlq retry|drop`, and `/metrics` in the Prometheus text format.
//!
//! Everything shown is read from the store; the run state is [`crate::model::RunState`]
//! applied to the log, as everywhere else.

mod actions;
mod api;
mod assets;
mod board;
mod cache;
mod drawer;
mod error;
mod layout;
pub(crate) mod metrics;
#[cfg(feature = "otel")]
pub(crate) mod otel;
mod safety;
mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::app::{AppError, StoreSpec};
use crate::store::Store;

pub(crate) use safety::listen_allowed;

/// How the dashboard is served.
pub(crate) struct ServeOptions {
    pub store: StoreSpec,
    /// `--config`, for the runs the server continues.
    pub config: Option<PathBuf>,
    pub listen: SocketAddr,
    /// Required on every state-changing request (and on every request when set).
    pub token: Option<String>,
    /// Who the server's decisions are recorded as: `dashboard:USER`.
    pub user: String,
}

/// What the handlers share.
pub(crate) struct Server {
    pub store: Arc<dyn Store>,
    pub spec: StoreSpec,
    pub config: Option<PathBuf>,
    pub token: Option<String>,
    pub user: String,
    pub runs: cache::RunCache,
    /// Each run's laid-out plan, computed once.
    pub layouts:
        std::sync::Mutex<std::collections::HashMap<crate::model::RunId, Arc<layout::Layout>>>,
    pub metrics: metrics::Metrics,
    /// Runs this process is driving (after a decision or a dead-letter retry), and what
    /// happened to the last ones.
    pub jobs: actions::Jobs,
    /// Stops background work (the runs it drives) when the server stops.
    pub cancel: CancellationToken,
}

impl Server {
    pub(crate) fn new(
        opts: &ServeOptions,
        store: Arc<dyn Store>,
        cancel: CancellationToken,
    ) -> Arc<Server> {
        Arc::new(Server {
            runs: cache::RunCache::new(store.clone()),
            layouts: Default::default(),
            store,
            spec: opts.store.clone(),
            config: opts.config.clone(),
            token: opts.token.clone(),
            user: opts.user.clone(),
            metrics: metrics::Metrics::new(),
            jobs: actions::Jobs::default(),
            cancel,
        })
    }

    /// How decisions made here are recorded: `dashboard:USER`.
    pub(crate) fn decided_by(&self) -> String {
        format!("dashboard:{}", self.user)
    }
}

/// Every route of the dashboard.
pub(crate) fn router(server: Arc<Server>) -> Router {
    let api = Router::new()
        .route("/runs", get(api::runs))
        .route("/runs/{run}/state", get(api::state))
        .route("/runs/{run}/board", get(board::board))
        .route("/runs/{run}/events", get(api::events))
        .route("/runs/{run}/stream", get(stream::stream))
        .route("/runs/{run}/artifacts", get(api::artifacts))
        .route("/runs/{run}/artifacts/{sha}", get(api::artifact))
        .route("/runs/{run}/tasks/{task}", get(drawer::drawer))
        .route("/runs/{run}/tasks/{task}/why", get(api::why))
        .route("/runs/{run}/tasks/{task}/logs", get(api::logs))
        .route("/runs/{run}/tasks/{task}/diff", get(drawer::diff))
        .route("/runs/{run}/decide", post(actions::decide))
        .route("/dlq", get(api::dead_letters))
        .route("/dlq/{entry}/retry", post(actions::retry))
        .route("/dlq/{entry}/drop", post(actions::drop))
        .route("/decisions", get(api::decisions))
        .route("/jobs", get(actions::jobs))
        .route("/whoami", get(api::whoami));
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::file))
        .route("/metrics", get(metrics::scrape))
        .nest("/api", api)
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            safety::guard,
        ))
        .with_state(server)
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsafe(String),
    #[error("the server stopped: {0}")]
    Stopped(std::io::Error),
}

/// Binds, says where it listens through `bound`, and serves until `cancel`.
pub(crate) async fn serve(
    opts: ServeOptions,
    cancel: CancellationToken,
    bound: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    listen_allowed(&opts.listen, opts.token.is_some()).map_err(ServeError::Unsafe)?;
    let store = opts.store.open_existing()?;
    let server = Server::new(&opts, store, cancel.clone());
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Stopped)?;
    metrics::spawn_tailer(server.clone()).await;
    bound(addr);
    let app = router(server);
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .map_err(ServeError::Stopped)
}

/// Runs a store call (synchronous, possibly slow) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, error::ApiError> + Send + 'static,
) -> Result<T, error::ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| error::ApiError::Internal(format!("a request's work stopped: {e}")))?
}
