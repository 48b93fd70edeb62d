//! The dispatcher's concepts, each on a small workflow under paused time: dispatch order and
//! limits, the error handler's branches, escalation without an operator, resume from a log,
//! and the journal's order of commit and observation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::escalation::Escalations;
use super::*;
use crate::check::ir::TaskId;
use crate::model::{Decision, ErrorCode, EventKind, RunStatus, SkipReason, TaskError, TaskStatus};
use crate::store::MemoryStore;

fn compile(text: &str) -> (Arc<Workflow>, Arc<Plan>) {
    let mut map = crate::source::SourceMap::new();
    let checked =
        crate::check::check_source(&mut map, "t.cond", std::path::Path::new("t.cond"), text);
    let wf = checked
        .workflow
        .unwrap_or_else(|| panic!("{}", crate::diag::render(&map, &checked.diags, false)));
    let plan = crate::plan::plan(&wf).unwrap();
    (Arc::new(wf), Arc::new(plan))
}

async fn run_text(text: &str) -> (RunState, Vec<Event>) {
    let (wf, plan) = compile(text);
    let store = Arc::new(MemoryStore::new());
    let options = RunOptions::new(store.clone());
    let id = options.run_id.clone();
    let state = run(wf, plan, options).await.unwrap();
    (state, store.events(&id).unwrap())
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

#[tokio::test(start_paused = true)]
async fn dispatch_goes_in_declaration_order_within_max_parallel() {
    let (state, events) = run_text(
        r#"workflow w { max_parallel = 1
            agent m { kind = "mock", latency = 10ms, count = 3 }
            phase p { task c on m  task a on m  task b on m } }"#,
    )
    .await;
    assert_eq!(state.status(), RunStatus::Completed);
    let order: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TaskDispatched { task, .. } => Some(&**task),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["c", "a", "b"]);
    // One at a time: each dispatch follows the previous task's end.
    let k = kinds(&events);
    let first_finish = k.iter().position(|k| *k == "task_finished").unwrap();
    let second_dispatch = k.iter().rposition(|k| *k == "task_dispatched").unwrap();
    assert!(first_finish < second_dispatch);
}

#[tokio::test(start_paused = true)]
async fn dispatch_gives_up_after_agent_wait_and_counts_an_attempt() {
    let (state, events) = run_text(
        r#"workflow w { agent_wait = 50ms
            agent m { kind = "mock", latency = 1s, retry = 0 }
            phase p { task a on m  task b on m  gate { true } } }"#,
    )
    .await;
    let b = state.task("b").unwrap();
    assert_eq!(b.status, TaskStatus::Failed);
    assert_eq!(b.error.as_ref().unwrap().code, ErrorCode::NoAvailableAgent);
    let under_pool = events.iter().any(|e| {
        matches!(&e.kind, EventKind::AttemptFinished { task, agent, .. } if &**task == "b" && &**agent == "m")
    });
    assert!(
        under_pool,
        "the attempt that found no instance is logged under the pool"
    );
}

#[tokio::test(start_paused = true)]
async fn outcome_retries_then_dead_letters_with_the_history() {
    let (state, events) = run_text(
        r#"workflow w { agent m { kind = "mock", fail_first = 9, retry = 2, backoff = fixed(10ms) }
            phase p { task a on m  gate { true } } }"#,
    )
    .await;
    let retries = kinds(&events)
        .iter()
        .filter(|k| **k == "retry_scheduled")
        .count();
    assert_eq!(retries, 2);
    let entry = state.dead_letter_entries.first().expect("dead-lettered");
    assert_eq!(entry.attempts.len(), 3);
    assert_eq!(entry.reason, "3 attempts failed");
    assert_eq!(entry.attempts[0].retry_delay_ms, Some(10));
    assert_eq!(state.task("a").unwrap().status, TaskStatus::Failed);
}

#[tokio::test(start_paused = true)]
async fn outcome_escalates_a_fatal_error_and_aborts_without_an_operator() {
    let (state, events) = run_text(
        r#"workflow w { agent m { kind = "mock", fail_first = 1, error = "fatal" }
            phase p { task a on m  task b on m after a } }"#,
    )
    .await;
    assert!(kinds(&events).contains(&"escalated"));
    assert_eq!(state.status(), RunStatus::Failed);
    assert!(state
        .error
        .as_deref()
        .unwrap()
        .contains("aborted by on_escalation"));
}

#[tokio::test(start_paused = true)]
async fn escalation_with_ask_and_no_operator_leaves_the_run_waiting() {
    let (state, _) = run_text(
        r#"workflow w { on_escalation = "ask"
            agent m { kind = "mock", fail_first = 1, error = "fatal" }
            phase p { task a on m } }"#,
    )
    .await;
    assert_eq!(state.status(), RunStatus::Waiting);
    assert_eq!(state.awaiting_decision, [Arc::<str>::from("a")]);
}

#[test]
fn escalations_put_wait_and_close() {
    let mut e = Escalations::new(None);
    let t = TaskId(3);
    e.put(t, TaskError::fatal(ErrorCode::Fatal, "x"));
    assert!(e.is_open(t) && e.has_waiting() && !e.asking());
    e.close(t);
    assert!(!e.is_open(t) && !e.has_waiting());
}

#[tokio::test(start_paused = true)]
async fn resume_runs_again_what_was_in_flight_and_keeps_what_completed() {
    let (wf, plan) = compile(
        r#"workflow w { agent m { kind = "mock", latency = 100ms }
            phase p { task a on m  task b on m after a } }"#,
    );
    let store = Arc::new(MemoryStore::new());
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut options = RunOptions::new(store.clone());
    options.cancel = cancel.clone();
    let id = options.run_id.clone();
    let handle = tokio::spawn(run(wf.clone(), plan.clone(), options));
    tokio::time::sleep(Duration::from_millis(150)).await;
    cancel.cancel();
    let stopped = handle.await.unwrap().unwrap();
    assert_eq!(stopped.status(), RunStatus::Cancelled);
    assert_eq!(stopped.task("a").unwrap().status, TaskStatus::Completed);
    let events = store.events(&id).unwrap();
    let state = resume(
        wf,
        plan,
        RunOptions::new(store.clone()),
        events,
        ResumeRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(state.status(), RunStatus::Completed);
    let all = store.events(&id).unwrap();
    let dispatched_a = all
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::TaskDispatched { task, .. } if &**task == "a"))
        .count();
    assert_eq!(
        dispatched_a, 1,
        "a completed before the stop and never ran again"
    );
    let resumed = all
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::RunResumed { rerun } => Some(rerun.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(resumed, [Arc::<str>::from("b")]);
}

/// Records what it saw: the number of events the store held when each event was observed.
struct Witness {
    store: Arc<MemoryStore>,
    seen: Arc<Mutex<Vec<(u64, usize)>>>,
}

impl Observer for Witness {
    fn event(&mut self, event: &Event, state: &RunState) {
        let stored = self.store.events(&state.workflow_id).map_or(0, |e| e.len());
        self.seen.lock().unwrap().push((event.seq, stored));
    }
}

#[tokio::test(start_paused = true)]
async fn the_journal_commits_before_observers_see_an_event() {
    let (wf, plan) = compile(
        r#"workflow w { agent m { kind = "mock" } phase p { task a on m { when { false } } task b on m } }"#,
    );
    let store = Arc::new(MemoryStore::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut options = RunOptions::new(store.clone());
    options.observers.push(Box::new(Witness {
        store: store.clone(),
        seen: seen.clone(),
    }));
    let state = run(wf, plan, options).await.unwrap();
    assert_eq!(
        state.task("a").unwrap().skip_reason,
        Some(SkipReason::WhenFalse)
    );
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    for (seq, stored) in seen.iter() {
        assert!(
            *stored as u64 >= *seq,
            "event {seq} observed before it was stored"
        );
    }
}

const APPROVAL: &str = r#"workflow w {
    agent m { kind = "mock", output = { built = "v1.2" } }
    agent gatekeeper { kind = "approval" }
    agent deployer { kind = "mock", output = { note = "{{ tasks.gate.output.decision }} by {{ tasks.gate.output.by }}" } }
    phase build { task image on m }
    phase release {
        task gate on gatekeeper { prompt = "deploy {{ tasks.image.output.built }}?"  timeout = 1h }
        task deploy on deployer after gate
    }
}"#;

/// Starts the approval workflow and returns its store and log once it waits.
async fn waiting_for_approval() -> (Arc<Workflow>, Arc<Plan>, Arc<MemoryStore>, Vec<Event>) {
    let (wf, plan) = compile(APPROVAL);
    let store = Arc::new(MemoryStore::new());
    let options = RunOptions::new(store.clone());
    let id = options.run_id.clone();
    let state = run(wf.clone(), plan.clone(), options).await.unwrap();
    assert_eq!(state.status(), RunStatus::Waiting);
    assert_eq!(state.awaiting_decision, [Arc::<str>::from("gate")]);
    let gate = state.task("gate").unwrap();
    let wait = gate.approval.as_ref().unwrap();
    assert_eq!(wait.message.as_deref(), Some("deploy v1.2?"));
    assert_eq!(wait.timeout_ms, 3_600_000);
    assert_eq!(state.task("deploy").unwrap().status, TaskStatus::Pending);
    let events = store.events(&id).unwrap();
    (wf, plan, store, events)
}

fn decide(decision: Decision, reason: Option<&str>) -> ResumeRequest {
    ResumeRequest {
        decisions: vec![("gate".into(), decision)],
        reason: reason.map(str::to_string),
        by: Some("alice".into()),
        ..ResumeRequest::default()
    }
}

#[tokio::test(start_paused = true)]
async fn an_approval_waits_then_approve_continues_with_who_and_why() {
    let (wf, plan, store, events) = waiting_for_approval().await;
    let request = decide(Decision::Approve, Some("release notes checked"));
    let state = resume(wf, plan, RunOptions::new(store), events, request)
        .await
        .unwrap();
    assert_eq!(state.status(), RunStatus::Completed, "{:?}", state.error);
    let gate = state.task("gate").unwrap();
    assert_eq!(gate.status, TaskStatus::Completed);
    assert_eq!(gate.output["decision"], "approve");
    assert_eq!(gate.output["by"], "alice (conductor resume --decide)");
    assert_eq!(gate.output["reason"], "release notes checked");
    assert!(gate.approval.is_none());
    // Downstream templates see the decision.
    let deploy = state.task("deploy").unwrap();
    assert_eq!(
        deploy.output["note"],
        "approve by alice (conductor resume --decide)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rejected_approval_fails_the_task_once_and_skips_what_follows() {
    let (wf, plan, store, events) = waiting_for_approval().await;
    let state = resume(
        wf,
        plan,
        RunOptions::new(store),
        events,
        decide(Decision::Reject, None),
    )
    .await
    .unwrap();
    assert_eq!(state.status(), RunStatus::Failed);
    let gate = state.task("gate").unwrap();
    assert_eq!(gate.status, TaskStatus::Failed);
    assert_eq!(gate.attempts, 1);
    assert_eq!(gate.output["decision"], "reject");
    let error = gate.error.as_ref().unwrap();
    assert_eq!(error.code, ErrorCode::Rejected);
    assert!(error.failure);
    assert_eq!(
        state.task("deploy").unwrap().skip_reason,
        Some(SkipReason::UpstreamFailed)
    );
}

#[tokio::test(start_paused = true)]
async fn an_approval_is_decided_only_by_approve_or_reject_and_an_escalation_never_is() {
    let (wf, plan, store, events) = waiting_for_approval().await;
    let err = resume(
        wf,
        plan,
        RunOptions::new(store),
        events,
        decide(Decision::Retry, None),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("waits for an approval; decide approve, reject"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_undecided_approval_is_rejected_by_its_timeout() {
    let (wf, plan) = compile(
        r#"workflow w {
            agent gatekeeper { kind = "approval" }
            agent m { kind = "mock", latency = 2s }
            phase p { task gate on gatekeeper { timeout = 1s }  task slow on m }
        }"#,
    );
    // `slow` keeps the run going past the approval's timeout: nobody decides in time.
    let store = Arc::new(MemoryStore::new());
    let state = run(wf, plan, RunOptions::new(store)).await.unwrap();
    let gate = state.task("gate").unwrap();
    assert_eq!(gate.status, TaskStatus::Failed, "{:?}", state.status());
    assert_eq!(gate.output["decision"], "reject");
    assert_eq!(gate.output["reason"], "no decision within 1s");
    assert_eq!(state.task("slow").unwrap().status, TaskStatus::Completed);
}

/// Approves every approval, for the operator path.
struct Approver;

impl Operator for Approver {
    fn decide<'a>(&'a self, _q: &'a Escalation) -> DecisionFuture<'a> {
        Box::pin(async { None })
    }
    fn approve<'a>(&'a self, q: &'a ApprovalQuestion) -> ReplyFuture<'a> {
        let seen = q.message.clone();
        Box::pin(async move {
            Some(Reply {
                decision: Decision::Approve,
                by: "bob at the terminal".into(),
                reason: seen,
            })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_operator_answers_an_approval_without_the_run_stopping() {
    let (wf, plan) = compile(APPROVAL);
    let mut options = RunOptions::new(Arc::new(MemoryStore::new()));
    options.operator = Some(Arc::new(Approver));
    let state = run(wf, plan, options).await.unwrap();
    assert_eq!(state.status(), RunStatus::Completed);
    let gate = state.task("gate").unwrap();
    assert_eq!(gate.output["by"], "bob at the terminal");
    assert_eq!(gate.output["reason"], "deploy v1.2?");
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_approves_without_asking() {
    let (wf, plan) = compile(APPROVAL);
    let mut options = RunOptions::new(Arc::new(MemoryStore::new()));
    options.dry_run = true;
    let state = run(wf, plan, options).await.unwrap();
    assert_eq!(state.status(), RunStatus::Completed);
    assert_eq!(state.task("gate").unwrap().output["decision"], "approve");
}

/// Cancels the run once it has seen `after` tasks finish.
struct CancelAfter {
    after: usize,
    finished: usize,
    cancel: tokio_util::sync::CancellationToken,
}

impl Observer for CancelAfter {
    fn event(&mut self, event: &Event, _: &RunState) {
        if matches!(event.kind, EventKind::TaskFinished { .. }) {
            self.finished += 1;
            if self.finished == self.after {
                self.cancel.cancel();
            }
        }
    }
}

/// Zero-latency mock attempts are answered where they are dispatched, turn after turn, without
/// the scheduler waiting in between: it still commits what it records, sees a cancel and lets
/// the runtime's other tasks run while a long chain of them goes on.
#[tokio::test(flavor = "current_thread")]
async fn a_chain_of_zero_latency_tasks_commits_as_it_goes_and_stops_when_cancelled() {
    const TASKS: usize = 20_000;
    let mut text = String::from("workflow w { agent m { kind = \"mock\" } phase p { task t0 on m");
    for i in 1..TASKS {
        text.push_str(&format!(" task t{i} on m after t{}", i - 1));
    }
    text.push_str(" } }");
    let (wf, plan) = compile(&text);
    let store = Arc::new(MemoryStore::new());
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut options = RunOptions::new(store.clone());
    options.cancel = cancel.clone();
    options.observers.push(Box::new(CancelAfter {
        after: 100,
        finished: 0,
        cancel: cancel.clone(),
    }));
    let id = options.run_id.clone();
    // A task beside the run, on the same thread, gets its turns while the chain runs.
    let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let state = run(wf, plan, options).await.unwrap();
    ticker.abort();
    assert_eq!(state.status(), RunStatus::Cancelled);
    let done = state
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Completed)
        .count();
    assert!(
        (100..TASKS / 2).contains(&done),
        "the cancel stopped the chain soon after it was asked for: {done} of {TASKS} completed"
    );
    // Everything recorded is in the store, and folds to the same state.
    let events = store.events(&id).unwrap();
    assert_eq!(
        RunState::from_events(&events).status(),
        RunStatus::Cancelled
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::TaskFinished { .. }))
            .count(),
        state.tasks.iter().filter(|t| t.status.is_final()).count()
    );
    assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > 0);
}
