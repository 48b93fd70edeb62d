//! The seed's error flow under injected failures: retries with backoff, the dead-letter queue,
//! escalation (skip, abort, retry after a decision, waiting), the circuit breaker, timeouts that
//! kill real processes, and a run that survives a 30% failure rate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use conductor::exec::{run, Escalation, Operator, RunOptions};
use conductor::model::{
    BreakerState, Decision, ErrorCode, Event, EventKind, RunState, RunStatus, SkipReason,
    TaskStatus,
};
use conductor::store::{MemoryStore, Store};
use conductor::{check_source, SourceMap};

struct Outcome {
    state: RunState,
    events: Vec<Event>,
    store: Arc<MemoryStore>,
}

async fn run_with(text: &str, tweak: impl FnOnce(&mut RunOptions)) -> Outcome {
    let dir = std::env::temp_dir();
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, "t.cond", &dir.join("t.cond"), text);
    let wf = checked
        .workflow
        .unwrap_or_else(|| panic!("{}", conductor::diag::render(&map, &checked.diags, false)));
    let plan = conductor::plan::plan(&wf).unwrap();
    let store = Arc::new(MemoryStore::new());
    let mut options = RunOptions::new(store.clone());
    tweak(&mut options);
    let id = options.run_id.clone();
    let state = run(Arc::new(wf), Arc::new(plan), options).await.unwrap();
    let events = store.events(&id).unwrap();
    Outcome {
        state,
        events,
        store,
    }
}

async fn run_text(text: &str) -> Outcome {
    run_with(text, |_| {}).await
}

fn retry_delays(o: &Outcome, task: &str) -> Vec<u64> {
    o.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::RetryScheduled {
                task: t, delay_ms, ..
            } if &**t == task => Some(*delay_ms),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn exponential_backoff_doubles_with_jitter_up_to_its_cap() {
    let o = run_text(
        r#"workflow w {
            agent flaky { kind = "mock", fail_first = 5, circuit_breaker = breaker(10, 1s) }
            phase p { task a on flaky { retry = 5, backoff = exponential(1s, 6s) } }
        }"#,
    )
    .await;
    assert_eq!(o.state.task("a").unwrap().status, TaskStatus::Completed);
    assert_eq!(o.state.task("a").unwrap().attempts, 6);
    let delays = retry_delays(&o, "a");
    assert_eq!(delays.len(), 5);
    for (i, d) in delays.iter().enumerate() {
        let base = (1000u64 << i).min(6000) as f64;
        assert!(
            (*d as f64) >= base * 0.75 - 1.0,
            "delay {i}: {d} below {base}"
        );
        assert!(
            (*d as f64) <= (base * 1.25).min(6000.0) + 1.0,
            "delay {i}: {d} above {base}"
        );
    }
    // Every failed attempt is recorded with its error.
    let failed_attempts = o
        .events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::AttemptFinished { error: Some(err), .. } if err.code == ErrorCode::Transient))
        .count();
    assert_eq!(failed_attempts, 5);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_go_to_the_dead_letter_queue_and_the_gate_decides() {
    let o = run_text(
        r#"workflow w {
            agent broken { kind = "mock", fail_first = 99 }
            agent ok { kind = "mock" }
            phase p {
                task a on broken { retry = 2, backoff = fixed(1s), input = { why = "demo" } }
                task b on ok
                gate { completed >= 1 }
            }
            phase q { task c on ok }
        }"#,
    )
    .await;
    assert_eq!(
        o.state.status(),
        RunStatus::Completed,
        "the gate passed with one completed"
    );
    let a = o.state.task("a").unwrap();
    assert_eq!(a.status, TaskStatus::Failed);
    assert_eq!(a.attempts, 3);
    let dlq = o.store.dead_letters(None).unwrap();
    assert_eq!(dlq.len(), 1);
    let entry = &dlq[0];
    assert_eq!(&*entry.task, "a");
    assert_eq!(&*entry.pool, "broken");
    assert_eq!(entry.reason, "3 attempts failed");
    assert_eq!(entry.attempts.len(), 3);
    assert!(entry.attempts.iter().all(|at| at.error.is_some()));
    assert_eq!(entry.attempts[0].retry_delay_ms, Some(1000));
    assert_eq!(entry.request["input"]["why"], "demo");
    assert_eq!(o.state.dead_letters, vec![entry.id.clone()]);
}

#[tokio::test(start_paused = true)]
async fn a_fatal_error_is_skipped_or_aborts_as_on_escalation_says() {
    let text = |mode: &str| {
        format!(
            r#"workflow w {{
                on_escalation = "{mode}"
                agent bad {{ kind = "mock", fail_first = 1, error = "fatal" }}
                agent ok {{ kind = "mock" }}
                phase p {{ task a on bad  task b on ok after a  gate {{ true }} }}
            }}"#
        )
    };
    let o = run_text(&text("skip")).await;
    assert_eq!(o.state.status(), RunStatus::Completed);
    let a = o.state.task("a").unwrap();
    assert_eq!(a.status, TaskStatus::Skipped);
    assert_eq!(a.skip_reason, Some(SkipReason::Decision));
    assert_eq!(a.attempts, 1, "a fatal error is not retried");
    // A task skipped by decision does not fail its dependents.
    assert_eq!(o.state.task("b").unwrap().status, TaskStatus::Completed);
    let decided = o.events.iter().find_map(|e| match &e.kind {
        EventKind::Decided { decision, by, .. } => Some((*decision, by.clone())),
        _ => None,
    });
    assert_eq!(
        decided,
        Some((Decision::Skip, "on_escalation = \"skip\"".to_string()))
    );

    let o = run_text(&text("abort")).await;
    assert_eq!(o.state.status(), RunStatus::Failed);
    assert_eq!(o.state.task("a").unwrap().status, TaskStatus::Failed);
    let error = o.state.error.clone().unwrap();
    assert!(
        error.contains("aborted by on_escalation = \"abort\""),
        "{error}"
    );
}

/// An operator that answers from a script and remembers what it was asked.
struct Scripted {
    answers: Mutex<Vec<Decision>>,
    asked: Mutex<Vec<String>>,
}

impl Operator for Scripted {
    fn decide<'a>(&'a self, q: &'a Escalation) -> conductor::exec::DecisionFuture<'a> {
        Box::pin(async move {
            self.asked
                .lock()
                .unwrap()
                .push(format!("{}: {}", q.task, q.error));
            let d = self.answers.lock().unwrap().pop()?;
            Some((d, "operator (test)".to_string()))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_operator_can_retry_a_task_after_a_fatal_error() {
    let operator = Arc::new(Scripted {
        answers: Mutex::new(vec![Decision::Retry]),
        asked: Mutex::new(Vec::new()),
    });
    let op = operator.clone();
    let o = run_with(
        r#"workflow w {
            agent bad { kind = "mock", fail_first = 1, error = "fatal" }
            phase p { task a on bad }
        }"#,
        move |opts| opts.operator = Some(op),
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Completed);
    let a = o.state.task("a").unwrap();
    assert_eq!(a.status, TaskStatus::Completed);
    assert_eq!(a.attempts, 2);
    let asked = operator.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(asked[0].starts_with("a: FATAL"), "{asked:?}");
    assert!(o.events.iter().any(|e| matches!(&e.kind,
        EventKind::Decided { decision: Decision::Retry, by, .. } if by == "operator (test)")));
}

#[tokio::test(start_paused = true)]
async fn asking_with_nobody_to_ask_leaves_the_run_waiting() {
    let o = run_text(
        r#"workflow w {
            on_escalation = "ask"
            agent bad { kind = "mock", fail_first = 1, error = "fatal" }
            agent ok { kind = "mock", latency = 1s }
            phase p { task a on bad  task b on ok }
        }"#,
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Waiting);
    assert_eq!(o.state.awaiting_decision.len(), 1);
    assert_eq!(&*o.state.awaiting_decision[0], "a");
    // The rest of the phase ran before the run stopped to wait.
    assert_eq!(o.state.task("b").unwrap().status, TaskStatus::Completed);
    assert!(matches!(
        o.events.last().unwrap().kind,
        EventKind::RunWaiting { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn the_circuit_breaker_opens_rejects_tries_half_open_and_closes() {
    let o = run_text(
        r#"workflow w {
            agent svc { kind = "mock", latency = 500ms, circuit_breaker = breaker(2, 1s) }
            agent clock { kind = "mock", latency = 3s }
            phase p {
                task a on svc { timeout = 100ms, retry = 0 }
                task b on svc { timeout = 100ms, retry = 0 }
                task c on svc
                task wait on clock
                task d on svc after wait
                gate { true }
            }
        }"#,
    )
    .await;
    let states: Vec<BreakerState> = o
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BreakerChanged { agent, state, .. } if &**agent == "svc" => Some(*state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::Closed
        ]
    );
    let status = |t: &str| o.state.task(t).unwrap().clone();
    assert_eq!(status("a").error.unwrap().code, ErrorCode::Timeout);
    assert_eq!(status("b").error.unwrap().code, ErrorCode::Timeout);
    // While open, c was not sent to the agent at all.
    let c = status("c");
    assert_eq!(c.status, TaskStatus::Failed);
    assert_eq!(c.attempts, 0);
    assert_eq!(c.error.unwrap().code, ErrorCode::CircuitOpen);
    // After the cooldown, d was the half-open trial, and succeeded.
    assert_eq!(status("d").status, TaskStatus::Completed);
    let dlq: Vec<String> = o
        .store
        .dead_letters(None)
        .unwrap()
        .iter()
        .map(|d| d.task.to_string())
        .collect();
    assert_eq!(dlq, ["a", "b", "c"]);
    assert_eq!(o.state.breakers.get("svc"), Some(&BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn enforce_rules_see_the_breaker() {
    let o = run_text(
        r#"workflow w {
            agent svc { kind = "mock", fail_first = 1, retry = 0, circuit_breaker = breaker(1, 1h) }
            agent clock { kind = "mock", latency = 100ms }
            enforce { if pool.breaker == "open" { deny(`the breaker of ${pool.name} is open`) } else { allow() } }
            phase p { task a on svc  task wait on clock  task b on svc after wait }
        }"#,
    )
    .await;
    assert_eq!(o.state.breakers.get("svc"), Some(&BreakerState::Open));
    assert_eq!(o.state.status(), RunStatus::Failed);
    let error = o.state.error.clone().unwrap();
    assert!(
        error.contains("denied task `b`: the breaker of svc is open"),
        "{error}"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_real_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let text = format!(
        r#"workflow w {{
            agent sh {{ kind = "shell", command = ["sh", "-c", "sleep 30 & echo $! > {0}; echo $$ >> {0}; wait"] }}
            phase p {{ task slow on sh {{ timeout = 300ms, retry = 0 }}  gate {{ true }} }}
        }}"#,
        pidfile.display()
    );
    let o = run_text(&text).await;
    let slow = o.state.task("slow").unwrap();
    assert_eq!(slow.status, TaskStatus::Failed);
    assert_eq!(slow.error.clone().unwrap().code, ErrorCode::Timeout);
    let pids = std::fs::read_to_string(&pidfile).unwrap();
    let pids: Vec<i32> = pids.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "the shell and its background sleep");
    for pid in pids {
        // Gone, or a zombie waiting to be reaped: either way not running.
        let mut alive = true;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            if stat.is_empty() || state == Some("Z") {
                alive = false;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive, "process {pid} still runs after the timeout");
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_under_a_30_percent_failure_rate_completes_with_retries() {
    let mut text = String::from(
        r#"workflow w {
            agent flaky { kind = "mock", latency = 20ms, count = 4, fail_rate = 0.3, seed = 42,
                          retry = 5, backoff = fixed(50ms), circuit_breaker = breaker(50, 1s) }
            phase p {"#,
    );
    for i in 0..40 {
        text.push_str(&format!(" task t{i} on flaky"));
    }
    text.push_str(" } }");
    let o = run_text(&text).await;
    assert_eq!(o.state.status(), RunStatus::Completed);
    assert!(o
        .state
        .tasks
        .iter()
        .all(|t| t.status == TaskStatus::Completed));
    let attempts: u32 = o.state.tasks.iter().map(|t| t.attempts).sum();
    let failures = o
        .events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::AttemptFinished { error: Some(_), .. }))
        .count() as u32;
    assert_eq!(
        attempts,
        40 + failures,
        "every failed attempt is recorded and retried"
    );
    assert!(
        failures >= 6,
        "a 30% rate over {attempts} attempts gave only {failures} failures"
    );
}

/// A `Write` the test can read back.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_shows_its_history_as_it_happened() {
    let text = r#"workflow w {
        on_escalation = "ask"
        agent flaky { kind = "mock", fail_first = 1, backoff = fixed(10ms) }
        agent bad { kind = "mock", fail_first = 1, error = "fatal" }
        phase one { task a on flaky }
        phase two { task b on bad  gate { true } }
    }"#;
    let o = run_text(text).await;
    assert_eq!(o.state.status(), RunStatus::Waiting);
    let mut map = SourceMap::new();
    let wf = check_source(
        &mut map,
        "t.cond",
        &std::env::temp_dir().join("t.cond"),
        text,
    )
    .workflow
    .unwrap();
    let plan = conductor::plan::plan(&wf).unwrap();
    let out = Buffer::default();
    let mut options = RunOptions::new(o.store.clone());
    options
        .observers
        .push(Box::new(conductor::report::HumanView::new(
            Box::new(out.clone()),
            "memory".into(),
        )));
    let state = conductor::exec::resume(
        Arc::new(wf),
        Arc::new(plan),
        options,
        o.events.clone(),
        conductor::exec::ResumeRequest {
            decisions: vec![("b".into(), Decision::Skip)],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(state.status(), RunStatus::Completed);
    let shown = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    // Task `a` completed in the end; the retry line of its history still names the failure.
    assert!(
        shown.contains("attempt 1 failed (TRANSIENT: mock failure of `a` (attempt 1))"),
        "{shown}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_waiting_behind_a_half_open_trial_keeps_its_agent_wait() {
    // 50ms: `f` times out and opens svc's breaker; 200ms: `trial` is the half-open trial (runs
    // until 2.2s); 300ms: `w` queues behind it with agent_wait 1s, so it gives up at 1.3s —
    // not later because `ping` finishing at 800ms woke the scheduler.
    let o = run_text(
        r#"workflow w {
            agent_wait = 1s
            agent svc { kind = "mock", latency = 2s, count = 2, circuit_breaker = breaker(1, 100ms) }
            agent clock { kind = "mock", latency = 200ms }
            agent clock2 { kind = "mock", latency = 300ms }
            agent ping { kind = "mock", latency = 800ms }
            agent marker { kind = "mock", latency = 1500ms }
            phase p {
                task f on svc { timeout = 50ms, retry = 0 }
                task c1 on clock
                task trial on svc after c1
                task c2 on clock2
                task w on svc after c2 { retry = 0 }
                task pg on ping
                task mk on marker
                gate { true }
            }
        }"#,
    )
    .await;
    let position = |pred: &dyn Fn(&EventKind) -> bool| o.events.iter().position(|e| pred(&e.kind));
    let w_gave_up = position(&|k| {
        matches!(k, EventKind::AttemptFinished { task, error: Some(e), .. }
            if &**task == "w" && e.code == ErrorCode::NoAvailableAgent)
    })
    .expect("w gave up waiting");
    let marker_done =
        position(&|k| matches!(k, EventKind::TaskFinished { task, .. } if &**task == "mk"))
            .unwrap();
    assert!(
        w_gave_up < marker_done,
        "w waited past its agent_wait: {:#?}",
        o.events.iter().map(|e| &e.kind).collect::<Vec<_>>()
    );
    assert_eq!(o.state.task("trial").unwrap().status, TaskStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_resumed_retry_waits_out_the_rest_of_its_backoff_and_its_dead_letter_has_every_attempt() {
    let text = r#"workflow w {
        agent flaky { kind = "mock", fail_first = 2, backoff = fixed(10s) }
        agent slow { kind = "mock", latency = 5s }
        phase p { task f on flaky { retry = 1 }  task mk on slow  gate { true } }
    }"#;
    let mut map = SourceMap::new();
    let wf = Arc::new(
        check_source(
            &mut map,
            "t.cond",
            &std::env::temp_dir().join("t.cond"),
            text,
        )
        .workflow
        .unwrap(),
    );
    let plan = Arc::new(conductor::plan::plan(&wf).unwrap());
    // The run stops (Ctrl-C) 1s in: `f` failed once and waits out its 10s backoff.
    let store = Arc::new(MemoryStore::new());
    let options = RunOptions::new(store.clone());
    let id = options.run_id.clone();
    let cancel = options.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
    });
    let stopped = run(wf.clone(), plan.clone(), options).await.unwrap();
    assert_eq!(stopped.status(), RunStatus::Cancelled);
    let events = store.events(&id).unwrap();
    let before = events.len();
    let state = conductor::exec::resume(
        wf,
        plan,
        RunOptions::new(store.clone()),
        events,
        conductor::exec::ResumeRequest {
            decisions: vec![],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let events = store.events(&id).unwrap();
    let resumed: Vec<&EventKind> = events[before..].iter().map(|e| &e.kind).collect();
    let finished = |name: &str| {
        resumed
            .iter()
            .position(|k| matches!(k, EventKind::AttemptFinished { task, .. } if &**task == name))
            .unwrap()
    };
    // `mk` runs again at once (5s); `f`'s retry comes ~9s later, not at the resume.
    assert!(finished("mk") < finished("f"), "{resumed:#?}");
    // The retry fails too: its dead letter lists both attempts, the one before the stop
    // included.
    assert_eq!(state.task("f").unwrap().status, TaskStatus::Failed);
    let dl = o_dead_letter(&store, "f");
    assert_eq!(
        dl.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(dl.attempts[0].retry_delay_ms, Some(10_000));
}

fn o_dead_letter(store: &MemoryStore, task: &str) -> conductor::model::DeadLetter {
    store
        .dead_letters(None)
        .unwrap()
        .into_iter()
        .find(|d| &*d.task == task)
        .unwrap()
}

/// Answers after thinking for a while, like a person at a terminal.
struct Slow;

impl Operator for Slow {
    fn decide<'a>(&'a self, _: &'a Escalation) -> conductor::exec::DecisionFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Some((Decision::Skip, "slow operator (test)".to_string()))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn the_run_goes_on_while_the_operator_thinks() {
    let o = run_with(
        r#"workflow w {
            on_escalation = "ask"
            agent bad { kind = "mock", fail_first = 1, error = "fatal" }
            agent ok { kind = "mock", latency = 2s }
            phase p { task a on bad  task b on ok  task c on ok after b  gate { true } }
        }"#,
        |opts| opts.operator = Some(Arc::new(Slow)),
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Completed);
    let kinds: Vec<&EventKind> = o.events.iter().map(|e| &e.kind).collect();
    let at = |pred: &dyn Fn(&EventKind) -> bool| kinds.iter().position(|k| pred(k)).unwrap();
    let decided = at(&|k| matches!(k, EventKind::Decided { .. }));
    // `b` (2s) and `c` after it (4s) finished while the question (10s) was open.
    let c_done = at(&|k| matches!(k, EventKind::TaskFinished { task, .. } if &**task == "c"));
    assert!(c_done < decided, "{kinds:#?}");
    assert_eq!(o.state.task("a").unwrap().status, TaskStatus::Skipped);
}
