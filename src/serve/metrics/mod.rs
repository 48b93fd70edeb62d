//! `/metrics`: Conductor's counters and histograms in the Prometheus text format. Names are
//! `conductor_*`, durations in seconds, labels low-cardinality (workflow, phase, pool,
//! status, provider, model) — never a run's or a task's id.
//!
//! Counts come from an [`Observer`](crate::exec::Observer) of the runs' events
//! ([`observer::MetricsObserver`]): the server feeds it every run of its store as the run's
//! log grows (whichever process drives it), `conductor run --metrics-listen` attaches it to
//! its run. Store appends are timed by a wrapper around the store ([`timed::TimedStore`]).
//! Gauges of the store's contents (runs by status, dead letters and questions pending) are
//! read when scraped.

pub(crate) mod observer;
mod tailer;
pub(crate) mod timed;

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics::{Counter, Gauge, Histogram, Key, Label, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

pub(crate) use tailer::spawn_tailer;

use super::Server;
use crate::app::StoreLayer;

/// Buckets of duration histograms, in seconds: from a pure task's milliseconds to an LLM
/// agent's minutes.
const SECONDS: &[f64] = &[
    0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0,
];

/// Buckets of the store's append latency, in seconds.
const APPEND_SECONDS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// One registry of metrics (the server's, or a run's with `--metrics-listen`); cheap to
/// clone. Not the process-wide `metrics` recorder: tests run several side by side.
#[derive(Clone)]
pub(crate) struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

const META: metrics::Metadata<'static> =
    metrics::Metadata::new("conductor", metrics::Level::INFO, Some(module_path!()));

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let builder = PrometheusBuilder::new()
            .set_buckets(SECONDS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "conductor_store_append_seconds".into(),
                    ),
                    APPEND_SECONDS,
                )
            })
            // INVARIANT: the bucket lists above are constant and not empty, the only case
            // `set_buckets` refuses.
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let m = Metrics {
            inner: Arc::new(Inner { recorder, handle }),
        };
        m.describe();
        m
    }

    fn describe(&self) {
        let r = &self.inner.recorder;
        for (name, help) in observer::HELP {
            let text: metrics::SharedString = (*help).into();
            if name.ends_with("_total") {
                r.describe_counter((*name).into(), None, text);
            } else if name.ends_with("_seconds") {
                r.describe_histogram((*name).into(), Some(metrics::Unit::Seconds), text);
            } else {
                r.describe_gauge((*name).into(), None, text);
            }
        }
    }

    fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, v.to_string()))
            .collect();
        Key::from_parts(name, labels)
    }

    pub(crate) fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.inner
            .recorder
            .register_counter(&Self::key(name, labels), &META)
    }

    pub(crate) fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.inner
            .recorder
            .register_gauge(&Self::key(name, labels), &META)
    }

    pub(crate) fn histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Histogram {
        self.inner
            .recorder
            .register_histogram(&Self::key(name, labels), &META)
    }

    /// The text a Prometheus server scrapes.
    pub(crate) fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// Wraps a run's store so its appends are timed.
    pub(crate) fn store_layer(&self) -> StoreLayer {
        let m = self.clone();
        Arc::new(move |store| Arc::new(timed::TimedStore::new(store, m.clone())))
    }
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(server): State<Arc<Server>>) -> impl IntoResponse {
    let s = server.clone();
    // Gauges of what the store holds now; a store that cannot be read leaves the last values.
    let _ = tokio::task::spawn_blocking(move || store_gauges(&s)).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        server.metrics.render(),
    )
}

fn store_gauges(server: &Server) -> Result<(), crate::store::StoreError> {
    use crate::model::RunStatus;
    let m = &server.metrics;
    let mut by_status = [0f64; RunStatus::ALL.len()];
    let mut questions = 0usize;
    server.runs.summaries(|record, summary| {
        let status = summary.status.unwrap_or(record.status);
        if let Some(i) = RunStatus::ALL.iter().position(|s| *s == status) {
            by_status[i] += 1.0;
        }
        questions += summary.waiting.len();
    })?;
    for (i, s) in RunStatus::ALL.iter().enumerate() {
        m.gauge("conductor_runs", &[("status", s.as_str())])
            .set(by_status[i]);
    }
    m.gauge("conductor_escalations_pending", &[])
        .set(questions as f64);
    let letters: usize = server.store.dead_letter_counts()?.values().sum();
    m.gauge("conductor_dead_letters_pending", &[])
        .set(letters as f64);
    Ok(())
}

/// `conductor run --metrics-listen ADDR`: serves `/metrics` alone until `cancel`.
pub(crate) async fn serve_alone(
    metrics: Metrics,
    listener: tokio::net::TcpListener,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}
