//! `--features otel`: a run's span tree exported over OTLP, following the OpenTelemetry GenAI
//! conventions — `invoke_workflow {workflow}` → `phase {name}` → `invoke_agent {pool}` per
//! attempt → `chat {model}` per model call with `gen_ai.usage.*` tokens — built from the
//! run's events by an [`Observer`], with the events' own times. Gate and feedback decisions
//! are span events with their rule and reason.
//!
//! Configured by the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `…_PROTOCOL` = `http/protobuf` or `http/json`,
//! `…_HEADERS`, `…_TIMEOUT`); nothing is exported unless an endpoint is set. A resumed run's
//! spans start a new trace (its earlier part was exported by the process that drove it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::exec::Observer;
use crate::model::{Event, EventKind, LlmCall, RunState, Timestamp};

/// Whether the environment asks for traces.
fn configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
}

/// The observer that exports the run's spans, when an OTLP endpoint is configured. `history`
/// is the last event of the log before this process drove the run.
pub(crate) fn observer(history: u64) -> Option<Box<dyn Observer>> {
    if !configured() {
        return None;
    }
    // The exporter's blocking HTTP client is built (and later dropped) off the async
    // runtime's threads, where blocking is not allowed.
    crate::agents::http::install_crypto();
    let built = std::thread::spawn(|| {
        opentelemetry_otlp::SpanExporter::builder()
            .build()
            .map(|exporter| {
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("conductor")
                            .build(),
                    )
                    .build()
            })
    })
    .join();
    match built {
        Ok(Ok(provider)) => Some(Box::new(Traces::new(provider, history))),
        Ok(Err(e)) => {
            tracing::warn!("no traces: the OTLP exporter cannot be set up: {e}");
            None
        }
        Err(_) => None,
    }
}

struct Traces {
    provider: Option<SdkTracerProvider>,
    tracer: SdkTracer,
    history: u64,
    run: Option<Context>,
    phase: Option<Context>,
    /// Open attempts by (task, attempt).
    attempts: HashMap<(Arc<str>, u32), Context>,
}

fn at(t: Timestamp) -> SystemTime {
    t.system_time()
}

impl Traces {
    fn new(provider: SdkTracerProvider, history: u64) -> Traces {
        Traces {
            tracer: provider.tracer("conductor"),
            provider: Some(provider),
            history,
            run: None,
            phase: None,
            attempts: HashMap::new(),
        }
    }

    fn start(
        &self,
        name: String,
        kind: SpanKind,
        start: SystemTime,
        attributes: Vec<KeyValue>,
        parent: Option<&Context>,
    ) -> Context {
        let builder = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start)
            .with_attributes(attributes);
        let span = match parent {
            Some(p) => builder.start_with_context(&self.tracer, p),
            None => builder.start_with_context(&self.tracer, &Context::new()),
        };
        Context::new().with_span(span)
    }

    /// The run's span, started at the first event this process shows when the run's own
    /// start is history (a resumed run).
    fn run_span(&mut self, e: &Event, workflow: &str, run: &str) {
        let cx = self.start(
            format!("invoke_workflow {workflow}"),
            SpanKind::Internal,
            at(e.at),
            vec![
                KeyValue::new("gen_ai.operation.name", "invoke_workflow"),
                KeyValue::new("gen_ai.workflow.name", workflow.to_string()),
                KeyValue::new("conductor.run_id", run.to_string()),
            ],
            None,
        );
        self.run = Some(cx);
    }

    fn end_phase(&mut self, t: SystemTime) {
        if let Some(p) = self.phase.take() {
            p.span().end_with_timestamp(t);
        }
    }

    fn chat(&self, parent: &Context, end: SystemTime, calls: &[LlmCall]) {
        // Calls of one attempt run one after another, ending with the attempt.
        let total: u64 = calls.iter().map(|c| c.duration_ms).sum();
        let mut start = end
            .checked_sub(std::time::Duration::from_millis(total))
            .unwrap_or(end);
        for c in calls {
            let stop = start + std::time::Duration::from_millis(c.duration_ms);
            let cx = self.start(
                format!("chat {}", c.model),
                SpanKind::Client,
                start,
                vec![
                    KeyValue::new("gen_ai.operation.name", "chat"),
                    KeyValue::new("gen_ai.provider.name", c.provider.clone()),
                    KeyValue::new("gen_ai.request.model", c.model.clone()),
                    KeyValue::new("gen_ai.usage.input_tokens", c.input_tokens as i64),
                    KeyValue::new("gen_ai.usage.output_tokens", c.output_tokens as i64),
                    KeyValue::new("conductor.replayed", c.replayed),
                ],
                Some(parent),
            );
            cx.span().end_with_timestamp(stop);
            start = stop;
        }
    }

    fn show(&mut self, e: &Event, state: &RunState) {
        let t = at(e.at);
        if self.run.is_none() {
            let (workflow, run) = match &e.kind {
                EventKind::RunStarted {
                    workflow, run_id, ..
                } => (workflow.clone(), run_id.to_string()),
                _ => (state.workflow.clone(), state.workflow_id.to_string()),
            };
            self.run_span(e, &workflow, &run);
        }
        let run = self.run.clone().unwrap_or_default();
        match &e.kind {
            EventKind::PhaseEntered { phase, loop_count } => {
                self.end_phase(t);
                self.phase = Some(self.start(
                    format!("phase {phase}"),
                    SpanKind::Internal,
                    t,
                    vec![
                        KeyValue::new("conductor.phase", phase.clone()),
                        KeyValue::new("conductor.loop", *loop_count as i64),
                    ],
                    Some(&run),
                ));
            }
            EventKind::TaskDispatched {
                task,
                agent,
                attempt,
            } => {
                let pool = state
                    .task(task)
                    .map(|_| pool_of(agent))
                    .unwrap_or_else(|| pool_of(agent));
                let parent = self.phase.clone().unwrap_or_else(|| run.clone());
                let cx = self.start(
                    format!("invoke_agent {pool}"),
                    SpanKind::Internal,
                    t,
                    vec![
                        KeyValue::new("gen_ai.operation.name", "invoke_agent"),
                        KeyValue::new("gen_ai.agent.name", pool.to_string()),
                        KeyValue::new("conductor.task", task.to_string()),
                        KeyValue::new("conductor.attempt", *attempt as i64),
                        KeyValue::new("conductor.instance", agent.to_string()),
                    ],
                    Some(&parent),
                );
                self.attempts.insert((task.clone(), *attempt), cx);
            }
            EventKind::AttemptFinished {
                task,
                attempt,
                error,
                calls,
                cached,
                ..
            } => {
                if let Some(cx) = self.attempts.remove(&(task.clone(), *attempt)) {
                    self.chat(&cx, t, calls);
                    let span = cx.span();
                    span.set_attribute(KeyValue::new("conductor.cached", *cached));
                    if let Some(err) = error {
                        span.set_attribute(KeyValue::new("error.type", format!("{:?}", err.code)));
                        span.set_status(Status::error(err.message.clone()));
                    }
                    span.end_with_timestamp(t);
                }
            }
            EventKind::GateDecided {
                phase,
                pass,
                reason,
                rule,
            } => {
                let target = self.phase.clone().unwrap_or_else(|| run.clone());
                target.span().add_event_with_timestamp(
                    format!("gate {phase}"),
                    t,
                    vec![
                        KeyValue::new("conductor.passed", *pass),
                        KeyValue::new("conductor.rule", rule.clone()),
                        KeyValue::new("conductor.reason", reason.clone()),
                    ],
                );
            }
            EventKind::FeedbackDecided {
                severity,
                summary,
                rule,
                ..
            } => {
                run.span().add_event_with_timestamp(
                    "feedback",
                    t,
                    vec![
                        KeyValue::new("conductor.severity", format!("{severity:?}").to_lowercase()),
                        KeyValue::new("conductor.summary", summary.clone()),
                        KeyValue::new("conductor.rule", rule.clone()),
                    ],
                );
            }
            EventKind::RunWaiting { .. } | EventKind::RunFinished { .. } => {
                self.end_phase(t);
                for (_, cx) in self.attempts.drain() {
                    cx.span().end_with_timestamp(t);
                }
                let span = run.span();
                span.set_attribute(KeyValue::new("conductor.status", state.status().as_str()));
                if let Some(error) = &state.error {
                    span.set_status(Status::error(error.clone()));
                }
                span.end_with_timestamp(t);
                self.run = None;
            }
            _ => {}
        }
    }
}

/// `coder-01` → `coder`: an instance's pool.
fn pool_of(instance: &str) -> &str {
    match instance.rsplit_once('-') {
        Some((pool, n)) if n.chars().all(|c| c.is_ascii_digit()) => pool,
        _ => instance,
    }
}

impl Observer for Traces {
    fn event(&mut self, event: &Event, state: &RunState) {
        if event.seq > self.history {
            self.show(event, state);
        }
    }

    fn finished(&mut self, _state: &RunState) {
        if let Some(provider) = self.provider.take() {
            // Exported before the process exits; the blocking client is dropped off the
            // runtime's threads.
            let _ = std::thread::spawn(move || {
                if let Err(e) = provider.force_flush() {
                    tracing::warn!("traces not exported: {e}");
                }
                let _ = provider.shutdown();
            })
            .join();
        }
    }
}
