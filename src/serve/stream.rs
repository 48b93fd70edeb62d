//! `GET /api/runs/{run}/stream`: the run's events as server-sent events. Each message carries
//! the events appended since the last one, the rows of the tasks they changed, the Gantt bars
//! they opened or closed and the run's summary; its `id` is the sequence number of its last
//! event. A browser that reconnects sends that id as `Last-Event-ID` (or the page passes
//! `?after=`), and the stream continues with the next event: none lost, none repeated.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};

use super::board::{self, Bar, Row, Summary, Timeline};
use super::error::ApiError;
use super::{blocking, Server};
use crate::model::{Changes, Event, RunId, RunState};
use crate::store::Store;

/// How often the store is asked for new events: the run may be driven by another process.
const POLL: Duration = Duration::from_millis(250);

/// At most this many events per message, so a long backlog arrives in pieces.
const MAX_EVENTS: usize = 2000;

#[derive(Deserialize)]
pub(crate) struct StreamQuery {
    after: Option<u64>,
}

#[derive(Serialize)]
struct Message<'a> {
    events: &'a [Event],
    tasks: Vec<Row>,
    bars: Vec<(usize, Bar)>,
    run: Summary,
}

/// What one connection remembers.
struct Follow {
    store: Arc<dyn Store>,
    run: RunId,
    state: RunState,
    timeline: Timeline,
    /// Events read but not yet sent (a backlog larger than one message).
    queued: Vec<Event>,
    cancel: tokio_util::sync::CancellationToken,
    first: bool,
}

pub(crate) async fn stream(
    State(server): State<Arc<Server>>,
    Path(run): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.after)
        .unwrap_or(0);
    let s = server.clone();
    let follow = blocking(move || {
        let id = super::api::find(&s, &run)?;
        let events = s.store.events(&id)?;
        let mut state = RunState::default();
        let mut timeline = Timeline::default();
        let mut queued = Vec::new();
        for e in events {
            if e.seq <= after {
                state.apply(&e);
                timeline.add(&e);
            } else {
                queued.push(e);
            }
        }
        Ok(Follow {
            store: s.store.clone(),
            run: id,
            state,
            timeline,
            queued,
            cancel: s.cancel.clone(),
            first: true,
        })
    })
    .await?;
    let events = stream::unfold(follow, |mut f| async move {
        loop {
            if !f.first && f.queued.is_empty() {
                tokio::select! {
                    _ = f.cancel.cancelled() => return None,
                    _ = tokio::time::sleep(POLL) => {}
                }
                let (store, run, last) = (f.store.clone(), f.run.clone(), f.state.last_seq);
                let read =
                    tokio::task::spawn_blocking(move || store.events_after(&run, last)).await;
                match read {
                    Ok(Ok(events)) => f.queued = events,
                    Ok(Err(e)) => {
                        tracing::warn!("the event stream of run {} stopped: {e}", f.run);
                        return None;
                    }
                    Err(_) => return None,
                }
            }
            f.first = false;
            if f.queued.is_empty() {
                continue;
            }
            let rest = f.queued.split_off(f.queued.len().min(MAX_EVENTS));
            let batch = std::mem::replace(&mut f.queued, rest);
            return Some((Ok(message(&mut f, &batch)), f));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Applies a batch and says what it changed.
fn message(f: &mut Follow, batch: &[Event]) -> SseEvent {
    let mut changes = Changes::default();
    let mut bars = Vec::new();
    for e in batch {
        f.state.apply_tracked(e, &mut changes);
        if let Some(i) = f.timeline.add(e) {
            bars.push(i);
        }
    }
    // A run's waiting and ending touch tasks the changes do not list: send every row then.
    let all = batch.iter().any(|e| {
        e.kind.stops_run()
            || matches!(
                e.kind,
                crate::model::EventKind::RunResumed { .. }
                    | crate::model::EventKind::Decided { .. }
            )
    });
    let mut touched = if all {
        (0..f.state.tasks.len()).collect()
    } else {
        changes.tasks
    };
    touched.sort_unstable();
    touched.dedup();
    bars.sort_unstable();
    bars.dedup();
    let msg = Message {
        events: batch,
        tasks: touched
            .into_iter()
            .filter_map(|i| f.state.tasks.get(i))
            .map(|t| board::row(t, &f.state))
            .collect(),
        bars: bars
            .into_iter()
            .filter_map(|i| f.timeline.attempts.get(i).map(|b| (i, b.clone())))
            .collect(),
        run: board::summary(&f.state),
    };
    let data = serde_json::to_string(&msg).unwrap_or_else(|_| "{}".into());
    let last = batch.last().map_or(f.state.last_seq, |e| e.seq);
    SseEvent::default().id(last.to_string()).data(data)
}
