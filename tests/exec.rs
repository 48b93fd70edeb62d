//! End-to-end runs with mock agents under paused tokio time: the seed's scenarios, checked on
//! the recorded events and the final state.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use conductor::exec::{run, RunOptions};
use conductor::model::{ErrorCode, Event, EventKind, RunState, RunStatus, SkipReason, TaskStatus};
use conductor::store::{MemoryStore, Store};
use conductor::{check_source, SourceMap};
use tokio::time::Instant;

struct Outcome {
    state: RunState,
    events: Vec<Event>,
    elapsed: Duration,
}

impl Outcome {
    fn status(&self, task: &str) -> TaskStatus {
        self.state
            .task(task)
            .unwrap_or_else(|| panic!("no task {task}"))
            .status
    }

    fn phases_entered(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::PhaseEntered { phase, .. } => Some(phase.clone()),
                _ => None,
            })
            .collect()
    }

    /// (dispatch index, finish index) of each attempt of `task`, in event order.
    fn dispatch_order(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::TaskDispatched { task, .. } => Some(task.to_string()),
                _ => None,
            })
            .collect()
    }
}

async fn run_text(text: &str) -> Outcome {
    run_with(text, |_| {}).await
}

async fn run_with(text: &str, tweak: impl FnOnce(&mut RunOptions)) -> Outcome {
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, "t.cond", Path::new("t.cond"), text);
    let wf = checked
        .workflow
        .unwrap_or_else(|| panic!("{}", conductor::diag::render(&map, &checked.diags, false)));
    let plan = conductor::plan::plan(&wf).unwrap();
    let store = Arc::new(MemoryStore::new());
    let mut options = RunOptions::new(store.clone());
    tweak(&mut options);
    let id = options.run_id.clone();
    let begun = Instant::now();
    let state = run(Arc::new(wf), Arc::new(plan), options).await.unwrap();
    let elapsed = begun.elapsed();
    let events = store.events(&id).unwrap();
    // The state is a projection of the log: rebuilding it gives the same statuses.
    let rebuilt = RunState::from_events(&events);
    assert_eq!(rebuilt.status(), state.status());
    for t in &state.tasks {
        assert_eq!(
            rebuilt.task(&t.task).unwrap().status,
            t.status,
            "{}",
            t.task
        );
    }
    Outcome {
        state,
        events,
        elapsed,
    }
}

#[tokio::test(start_paused = true)]
async fn happy_path_through_three_phases() {
    let o = run_text(
        r#"workflow w {
            agent m { kind = "mock", latency = 100ms, count = 2, output = { severity = "ok" } }
            phase dev { task code on m  task review on m after code  task test on m after code }
            phase ops { task deploy on m }
            phase mon { task observe on m }
        }"#,
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Completed);
    assert_eq!(o.phases_entered(), ["dev", "ops", "mon"]);
    for t in ["code", "review", "test", "deploy", "observe"] {
        assert_eq!(o.status(t), TaskStatus::Completed, "{t}");
    }
    // code, then review and test together, then deploy, then observe.
    assert_eq!(o.elapsed, Duration::from_millis(400));
    assert_eq!(o.dispatch_order()[0], "code");
}

#[tokio::test(start_paused = true)]
async fn a_failed_gate_ends_the_run_and_no_later_phase_runs() {
    let o = run_text(
        r#"workflow w {
            agent ok { kind = "mock" }
            agent bad { kind = "mock", fail_first = 9, retry = 0 }
            phase one { task a on ok  task b on bad  gate { success_rate >= 0.9 } }
            phase two { task c on ok }
        }"#,
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Failed);
    assert_eq!(o.phases_entered(), ["one"]);
    assert_eq!(o.status("c"), TaskStatus::Pending);
    let error = o.state.error.clone().unwrap();
    assert!(error.contains("gate of phase `one` failed"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn when_false_skips_the_task() {
    let o = run_text(
        r#"workflow w {
            param deploy = false
            agent m { kind = "mock" }
            phase p { task a on m  task b on m { when { params.deploy } }  gate { true } }
        }"#,
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Completed);
    assert_eq!(o.status("b"), TaskStatus::Skipped);
    assert_eq!(
        o.state.task("b").unwrap().skip_reason,
        Some(SkipReason::WhenFalse)
    );
    assert_eq!(o.state.task("b").unwrap().attempts, 0);
}

#[tokio::test(start_paused = true)]
async fn dependents_of_a_failed_task_are_skipped_as_upstream_failed() {
    let o = run_text(
        r#"workflow w {
            agent m { kind = "mock" }
            agent bad { kind = "mock", fail_first = 9, retry = 0 }
            phase p {
                task a on bad  task b on m after a  task c on m after b  task d on m
                gate { true }
            }
        }"#,
    )
    .await;
    assert_eq!(o.status("a"), TaskStatus::Failed);
    for t in ["b", "c"] {
        assert_eq!(o.status(t), TaskStatus::Skipped, "{t}");
        assert_eq!(
            o.state.task(t).unwrap().skip_reason,
            Some(SkipReason::UpstreamFailed)
        );
    }
    assert_eq!(o.status("d"), TaskStatus::Completed);
    assert!(!o.dispatch_order().contains(&"b".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_policy_deny_fails_the_run_with_the_violation() {
    let o = run_text(
        r#"workflow w {
            agent m { kind = "mock", latency = 1s, count = 4 }
            enforce {
                if running_total >= 2 { deny(`${running_total} tasks are already running`) } else { allow() }
            }
            phase p { task a on m  task b on m  task c on m }
        }"#,
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Failed);
    let violation = o
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::PolicyViolation { task, rule, reason } => {
                Some((task.clone(), rule.clone(), reason.clone()))
            }
            _ => None,
        })
        .expect("a violation event");
    assert_eq!(&*violation.0, "c");
    assert!(
        violation.1.starts_with("rule at t.cond:"),
        "{}",
        violation.1
    );
    assert!(
        violation.2.contains("2 tasks are already running"),
        "{}",
        violation.2
    );
    // a and b were given instances in the same turn, before c was denied: nothing is
    // dispatched after a violation.
    assert_eq!(o.status("a"), TaskStatus::Pending);
    assert!(o.dispatch_order().is_empty(), "{:?}", o.dispatch_order());
    let error = o.state.error.clone().unwrap();
    assert!(error.starts_with("policy violation"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_deferring_policy_holds_tasks_back_and_the_run_completes() {
    let o = run_text(
        r#"workflow w {
            use "policies/standard.rhai"
            agent m { kind = "mock", latency = 100ms, count = 10 }
            enforce max_concurrent_tasks(2)
            phase p {
                task t0 on m  task t1 on m  task t2 on m  task t3 on m  task t4 on m
                task t5 on m  task t6 on m  task t7 on m  task t8 on m  task t9 on m
            }
        }"#,
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Completed);
    // Never more than two running: count dispatches minus finishes along the log.
    let mut running = 0i32;
    let mut most = 0;
    for e in &o.events {
        match &e.kind {
            EventKind::TaskDispatched { .. } => running += 1,
            EventKind::AttemptFinished { .. } => running -= 1,
            _ => {}
        }
        most = most.max(running);
    }
    assert_eq!(most, 2);
    // Five waves of two, 100 ms each.
    assert_eq!(o.elapsed, Duration::from_millis(500));
    let deferred = o
        .events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::TaskDeferred { .. }))
        .count();
    assert_eq!(
        deferred, 8,
        "each task held back is recorded once, with its rule and reason"
    );
    let why = o
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::TaskDeferred { rule, reason, .. } => Some(format!("{rule}: {reason}")),
            _ => None,
        })
        .unwrap();
    assert!(
        why.contains("max_concurrent_tasks") && why.contains("2 tasks are already running"),
        "{why}"
    );
}

#[tokio::test(start_paused = true)]
async fn tasks_wait_for_a_busy_pool_instead_of_failing() {
    let o = run_text(
        r#"workflow w {
            agent one { kind = "mock", latency = 100ms }
            phase p { task a on one  task b on one  task c on one }
        }"#,
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Completed);
    assert_eq!(o.elapsed, Duration::from_millis(300), "one after another");
    assert_eq!(
        o.dispatch_order(),
        ["a", "b", "c"],
        "first come, first served"
    );
    for t in ["a", "b", "c"] {
        assert_eq!(o.state.task(t).unwrap().agent.as_deref(), Some("one-01"));
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_longer_than_agent_wait_fails_with_no_available_agent() {
    let o = run_text(
        r#"workflow w {
            agent_wait = 150ms
            agent one { kind = "mock", latency = 100ms }
            phase p { task a on one  task b on one  task c on one { retry = 0 }  gate { true } }
        }"#,
    )
    .await;
    assert_eq!(o.status("a"), TaskStatus::Completed);
    assert_eq!(o.status("b"), TaskStatus::Completed);
    assert_eq!(o.status("c"), TaskStatus::Failed);
    let error = o.state.task("c").unwrap().error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::NoAvailableAgent);
}

#[tokio::test(start_paused = true)]
async fn the_feedback_loop_runs_twice_then_completes() {
    let o = run_text(
        r#"workflow w {
            agent m { kind = "mock", latency = 10ms }
            phase dev { task code on m { input = { pass = "{{ loop_count }}" } } }
            phase mon { task observe on m }
            feedback to dev { if loop_count < 2 { error(`still broken after ${loop_count}`) } else { ok() } }
        }"#,
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Completed);
    assert_eq!(o.state.feedback_loop_count, 2);
    assert_eq!(
        o.phases_entered(),
        ["dev", "mon", "dev", "mon", "dev", "mon"]
    );
    assert!(o.state.warnings.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_loop_limit_completes_with_a_warning_or_fails() {
    let text = |on_max: &str| {
        format!(
            r#"workflow w {{
                max_feedback_loops = 1
                on_max_loops = "{on_max}"
                agent m {{ kind = "mock", output = {{ severity = "critical", summary = "down" }} }}
                phase dev {{ task code on m }}
                phase mon {{ task observe on m }}
                feedback to dev {{ critical("service down") }}
            }}"#
        )
    };
    let o = run_text(&text("complete")).await;
    assert_eq!(o.state.status(), RunStatus::Completed);
    assert_eq!(o.state.feedback_loop_count, 1);
    assert_eq!(o.state.warnings.len(), 1, "{:?}", o.state.warnings);
    assert!(
        o.state.warnings[0].contains("critical"),
        "{:?}",
        o.state.warnings
    );

    let o = run_text(&text("fail")).await;
    assert_eq!(o.state.status(), RunStatus::Failed);
    assert!(o.state.error.clone().unwrap().contains("after 1 loop"));
}

#[tokio::test(start_paused = true)]
async fn default_feedback_reads_the_severity_of_the_last_phase() {
    let o = run_text(
        r#"workflow w {
            max_feedback_loops = 2
            agent m { kind = "mock", output = { severity = "high", summary = "latency up" } }
            phase dev { task code on m }
            phase mon { task observe on m }
        }"#,
    )
    .await;
    // `high` reads as `error`: it loops until the limit, then completes with a warning.
    assert_eq!(o.state.feedback_loop_count, 2);
    assert_eq!(o.state.status(), RunStatus::Completed);
    assert_eq!(o.state.feedback.clone().unwrap().summary, "latency up");
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_timeout_is_cancelled_with_its_record_kept() {
    let o = run_text(
        r#"workflow w {
            timeout = 1s
            agent slow { kind = "mock", latency = 5s }
            phase p { task a on slow }
        }"#,
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Cancelled);
    assert_eq!(o.elapsed, Duration::from_secs(1));
    assert_eq!(o.status("a"), TaskStatus::Cancelled);
    assert!(o.state.error.clone().unwrap().contains("timeout of 1s"));
    assert!(matches!(
        o.events.last().unwrap().kind,
        EventKind::RunFinished {
            status: RunStatus::Cancelled,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_the_run() {
    let token = tokio_util::sync::CancellationToken::new();
    let t2 = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        t2.cancel();
    });
    let o = run_with(
        r#"workflow w { agent m { kind = "mock", latency = 1s } phase p { task a on m } }"#,
        |opts| opts.cancel = token,
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Cancelled);
    assert_eq!(o.elapsed, Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn independent_tasks_overlap_while_a_chain_stays_ordered() {
    let mut text = String::from(
        r#"workflow w { agent m { kind = "mock", latency = 200ms, count = 8 } phase p {"#,
    );
    for i in 0..8 {
        text.push_str(&format!(" task t{i} on m"));
    }
    text.push_str(" } }");
    let o = run_text(&text).await;
    assert_eq!(o.state.status(), RunStatus::Completed);
    assert_eq!(
        o.elapsed,
        Duration::from_millis(200),
        "8 × 200 ms on 8 instances"
    );

    let o = run_text(
        r#"workflow w { agent m { kind = "mock", latency = 200ms, count = 8 }
            phase p { task a on m  task b on m after a  task c on m after b } }"#,
    )
    .await;
    assert_eq!(o.elapsed, Duration::from_millis(600));
    assert_eq!(o.dispatch_order(), ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn retries_follow_the_backoff_then_succeed() {
    let o = run_text(
        r#"workflow w {
            agent flaky { kind = "mock", fail_first = 2, latency = 10ms }
            phase p { task a on flaky { retry = 3, backoff = fixed(1s) } }
        }"#,
    )
    .await;
    assert_eq!(o.status("a"), TaskStatus::Completed);
    assert_eq!(o.state.task("a").unwrap().attempts, 3);
    let delays: Vec<u64> = o
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::RetryScheduled { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [1000, 1000]);
    assert_eq!(o.elapsed, Duration::from_millis(2030));
}

#[tokio::test(start_paused = true)]
async fn an_undefined_template_variable_fails_the_task_naming_it() {
    let o = run_text(
        r#"workflow w {
            agent m { kind = "mock", output = { ok = true } }
            phase p {
                task a on m
                task b on m after a { input = { note = "{{ tasks.a.output.missing }}" } }
                gate { true }
            }
        }"#,
    )
    .await;
    assert_eq!(o.status("b"), TaskStatus::Failed);
    let error = o.state.task("b").unwrap().error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::Template);
    assert!(
        error.message.contains("`input` of task `b`"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("tasks.a.output.missing"),
        "{}",
        error.message
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_required_param_is_an_error_before_the_run() {
    let mut map = SourceMap::new();
    let text = r#"workflow w { param spec  agent m { kind = "mock" } phase p { task a on m } }"#;
    let wf = check_source(&mut map, "t.cond", Path::new("t.cond"), text)
        .workflow
        .unwrap();
    let plan = conductor::plan::plan(&wf).unwrap();
    let options = RunOptions::new(Arc::new(MemoryStore::new()));
    let err = run(Arc::new(wf), Arc::new(plan), options)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "missing required param `spec`");
}

#[tokio::test(start_paused = true)]
async fn a_policy_deny_stops_tasks_already_running() {
    let o = run_text(
        r#"workflow w {
            agent m { kind = "mock", latency = 1s, count = 4 }
            agent quick { kind = "mock", latency = 100ms }
            enforce { if task.name == "late" { deny("late is not allowed") } else { allow() } }
            phase p { task slow on m  task first on quick  task late on quick after first }
        }"#,
    )
    .await;
    assert_eq!(o.state.status(), RunStatus::Failed);
    assert_eq!(
        o.status("slow"),
        TaskStatus::Cancelled,
        "running work is stopped"
    );
    assert_eq!(o.status("late"), TaskStatus::Pending);
    assert_eq!(o.elapsed, Duration::from_millis(100));
}
