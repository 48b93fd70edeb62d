//! `apply` for every event kind: the state it makes and the changes it reports.

use std::sync::Arc;

use super::*;
use crate::model::{
    BreakerState, DeadLetter, Decision, ErrorCode, EventKind, LlmCall, RunId, RunStatus,
    SkipReason, TaskError, TaskInfo, TaskStatus, Timestamp,
};
use crate::policy::Severity;

fn ev(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        at: Timestamp(1_000 * seq),
        kind,
    }
}

fn started() -> RunState {
    let mut s = RunState::default();
    let info = |name: &str, phase: &str| TaskInfo {
        name: name.into(),
        phase: phase.into(),
        agent: "m".into(),
    };
    s.apply(&ev(
        1,
        EventKind::RunStarted {
            run_id: RunId::from("r1"),
            workflow: "w".into(),
            file: "w.cond".into(),
            params: Default::default(),
            tasks: vec![info("a", "p"), info("b", "p"), info("c", "q")],
            agents: vec!["m-01".into(), "m-02".into()],
            dry_run: false,
            source: None,
            parent: None,
            imports: Default::default(),
        },
    ));
    s
}

fn err(retryable: bool) -> TaskError {
    let mut e = TaskError::fatal(ErrorCode::Transient, "boom");
    e.retryable = retryable;
    e
}

fn task(name: &str) -> Arc<str> {
    Arc::from(name)
}

#[test]
fn run_started_lists_every_task_pending_and_every_instance_idle() {
    let s = started();
    assert_eq!(s.status(), RunStatus::InProgress);
    assert_eq!(s.tasks.len(), 3);
    assert!(s.tasks.iter().all(|t| t.status == TaskStatus::Pending));
    assert_eq!(s.agent_states.len(), 2);
    assert_eq!(s.task_index("c"), Some(2));
}

#[test]
fn dispatch_and_attempt_move_task_and_instance() {
    let mut s = started();
    let mut ch = Changes {
        rows: true,
        ..Changes::default()
    };
    s.apply_tracked(
        &ev(
            2,
            EventKind::TaskDispatched {
                task: task("a"),
                agent: task("m-01"),
                attempt: 1,
            },
        ),
        &mut ch,
    );
    assert_eq!(s.task("a").unwrap().status, TaskStatus::InProgress);
    assert_eq!(s.agent_states["m-01"].status, AgentStatus::Running);
    s.apply_tracked(
        &ev(
            3,
            EventKind::AttemptFinished {
                task: task("a"),
                agent: task("m-01"),
                attempt: 1,
                duration_ms: 5,
                output: None,
                error: Some(err(true)),
                calls: vec![LlmCall {
                    provider: "p".into(),
                    model: "m".into(),
                    input_tokens: 3,
                    output_tokens: 4,
                    cached_input_tokens: 0,
                    duration_ms: 1,
                    replayed: false,
                    usd: None,
                }],
                artifacts: vec![],
                cached: false,
                cut_off: Default::default(),
                tail: Default::default(),
            },
        ),
        &mut ch,
    );
    let a = s.task("a").unwrap();
    assert_eq!(a.history.len(), 1);
    assert_eq!(a.history[0].agent.as_deref(), Some("m-01"));
    assert_eq!(s.usage.input_tokens, 3);
    assert_eq!(s.agent_states["m-01"].status, AgentStatus::Idle);
    assert_eq!(ch.attempts.len(), 1);
    assert_eq!(ch.task_rows(&s).len(), 1);
    assert_eq!(ch.agent_rows(&s).len(), 1);
}

#[test]
fn an_attempt_under_the_pool_name_never_had_an_instance() {
    let mut s = started();
    s.apply(&ev(
        2,
        EventKind::AttemptFinished {
            task: task("a"),
            agent: task("m"),
            attempt: 1,
            duration_ms: 0,
            output: None,
            error: Some(err(true)),
            calls: vec![],
            artifacts: vec![],
            cached: false,
            cut_off: Default::default(),
            tail: Default::default(),
        },
    ));
    assert_eq!(s.task("a").unwrap().history[0].agent, None);
}

#[test]
fn retry_scheduled_keeps_when_it_is_due() {
    let mut s = started();
    s.apply(&ev(
        2,
        EventKind::AttemptFinished {
            task: task("a"),
            agent: task("m-01"),
            attempt: 1,
            duration_ms: 0,
            output: None,
            error: Some(err(true)),
            calls: vec![],
            artifacts: vec![],
            cached: false,
            cut_off: Default::default(),
            tail: Default::default(),
        },
    ));
    s.apply(&ev(
        3,
        EventKind::RetryScheduled {
            task: task("a"),
            attempt: 2,
            delay_ms: 500,
        },
    ));
    let a = s.task("a").unwrap();
    assert_eq!(a.status, TaskStatus::Pending);
    assert_eq!(
        a.retry_due,
        Some(RetryDue {
            at_ms: 3_500,
            delay_ms: 500
        })
    );
    assert_eq!(a.history[0].retry_delay_ms, Some(500));
}

#[test]
fn finished_skipped_and_phase_entered_again() {
    let mut s = started();
    s.apply(&ev(
        2,
        EventKind::TaskFinished {
            task: task("a"),
            status: TaskStatus::Failed,
            error: Some(err(false)),
        },
    ));
    s.apply(&ev(
        3,
        EventKind::TaskSkipped {
            task: task("b"),
            reason: SkipReason::UpstreamFailed,
            detail: None,
        },
    ));
    assert!(s.task("a").unwrap().failed_for_dependents());
    assert!(s.task("b").unwrap().failed_for_dependents());
    s.apply(&ev(
        4,
        EventKind::PhaseEntered {
            phase: "p".into(),
            loop_count: 1,
        },
    ));
    assert_eq!(s.task("a").unwrap().status, TaskStatus::Pending);
    assert_eq!(s.task("b").unwrap().skip_reason, None);
    assert_eq!(s.current_phase.as_deref(), Some("p"));
}

#[test]
fn gates_feedback_loops_warnings_breakers() {
    let mut s = started();
    s.apply(&ev(
        2,
        EventKind::GateDecided {
            phase: "p".into(),
            pass: true,
            reason: "fine".into(),
            rule: "default gate".into(),
        },
    ));
    s.apply(&ev(
        3,
        EventKind::FeedbackDecided {
            severity: Severity::Error,
            summary: "down".into(),
            details: serde_json::Value::Null,
            rule: "r".into(),
        },
    ));
    s.apply(&ev(
        4,
        EventKind::LoopStarted {
            loop_count: 1,
            target: "p".into(),
        },
    ));
    s.apply(&ev(
        5,
        EventKind::Warning {
            message: "w".into(),
        },
    ));
    s.apply(&ev(
        6,
        EventKind::BreakerChanged {
            agent: task("m"),
            state: BreakerState::Open,
            reason: None,
        },
    ));
    assert_eq!(s.gates.len(), 1);
    assert_eq!(s.feedback.as_ref().unwrap().severity, Severity::Error);
    assert_eq!(s.feedback_loop_count, 1);
    assert_eq!(s.warnings, ["w"]);
    assert_eq!(s.breakers["m"], BreakerState::Open);
}

#[test]
fn escalation_decisions_and_dead_letters() {
    let mut s = started();
    let mut ch = Changes {
        rows: true,
        ..Changes::default()
    };
    s.apply_tracked(
        &ev(
            2,
            EventKind::Escalated {
                task: task("a"),
                error: err(false),
            },
        ),
        &mut ch,
    );
    assert_eq!(s.awaiting_decision, [task("a")]);
    s.apply_tracked(
        &ev(
            3,
            EventKind::RunWaiting {
                tasks: vec![task("a")],
            },
        ),
        &mut ch,
    );
    assert_eq!(s.status(), RunStatus::Waiting);
    s.apply_tracked(
        &ev(
            4,
            EventKind::Decided {
                task: task("a"),
                decision: Decision::Retry,
                by: "op".into(),
                reason: None,
            },
        ),
        &mut ch,
    );
    assert!(s.awaiting_decision.is_empty());
    assert_eq!(ch.decisions.len(), 1);
    let entry = DeadLetter {
        id: "r1:5".into(),
        run_id: RunId::from("r1"),
        task: task("b"),
        phase: task("p"),
        pool: task("m"),
        reason: "x".into(),
        attempts: vec![],
        request: serde_json::Value::Null,
        at: Timestamp(0),
    };
    s.apply_tracked(&ev(5, EventKind::DeadLettered { entry }), &mut ch);
    assert_eq!(s.dead_letters, ["r1:5"]);
    assert_eq!(ch.dead_letters.len(), 1);
    assert!(ch.run);
}

#[test]
fn a_dlq_retry_clears_the_history_and_keeps_the_attempt_base() {
    let mut s = started();
    for (seq, kind) in [
        (
            2,
            EventKind::TaskDispatched {
                task: task("a"),
                agent: task("m-01"),
                attempt: 1,
            },
        ),
        (
            3,
            EventKind::AttemptFinished {
                task: task("a"),
                agent: task("m-01"),
                attempt: 1,
                duration_ms: 0,
                output: None,
                error: Some(err(true)),
                calls: vec![],
                artifacts: vec![],
                cached: false,
                cut_off: Default::default(),
                tail: Default::default(),
            },
        ),
        (
            4,
            EventKind::Decided {
                task: task("a"),
                decision: Decision::Retry,
                by: format!("{DLQ_RETRY_BY} r1:9"),
                reason: None,
            },
        ),
    ] {
        s.apply(&ev(seq, kind));
    }
    let a = s.task("a").unwrap();
    assert!(a.history.is_empty());
    assert_eq!(a.attempt_base, 1);
    assert_eq!(a.status, TaskStatus::Pending);
}

#[test]
fn violations_resume_and_finish() {
    let mut s = started();
    s.apply(&ev(
        2,
        EventKind::TaskDispatched {
            task: task("a"),
            agent: task("m-01"),
            attempt: 1,
        },
    ));
    s.apply(&ev(
        3,
        EventKind::PolicyViolation {
            task: task("a"),
            rule: "r".into(),
            reason: "no".into(),
        },
    ));
    assert!(s.error.as_deref().unwrap().contains("denied task `a`: no"));
    s.apply(&ev(
        4,
        EventKind::RunResumed {
            rerun: vec![task("a")],
        },
    ));
    assert_eq!(s.status(), RunStatus::InProgress);
    assert_eq!(s.error, None);
    assert_eq!(s.task("a").unwrap().status, TaskStatus::Pending);
    assert_eq!(s.agent_states["m-01"].status, AgentStatus::Idle);
    s.apply(&ev(
        5,
        EventKind::RunFinished {
            status: RunStatus::Completed,
            error: None,
        },
    ));
    assert_eq!(s.status(), RunStatus::Completed);
    assert_eq!(s.completed_at, Some(Timestamp(5_000)));
    assert_eq!(s.last_seq, 5);
}

#[test]
fn a_reserved_call_counts_at_its_worst_case_when_its_attempt_never_finished() {
    let mut s = started();
    let worst = crate::model::Spend {
        llm_calls: 1,
        tokens: 500,
        usd: crate::model::Usd(7),
    };
    let dispatched = |seq, attempt| {
        ev(
            seq,
            EventKind::TaskDispatched {
                task: task("a"),
                agent: task("m-01"),
                attempt,
            },
        )
    };
    let reserved = |seq, attempt| {
        ev(
            seq,
            EventKind::CallReserved {
                task: task("a"),
                attempt,
                worst,
            },
        )
    };
    s.apply(&dispatched(2, 1));
    s.apply(&reserved(3, 1));
    // The log ends here (a kill -9 during the call): it is held, not yet spent.
    assert_eq!(s.task("a").unwrap().reserved, worst);
    assert!(s.usage.cut_off.is_zero());
    // The next attempt: the lost one's call counts, at its worst case, everywhere.
    s.apply(&dispatched(4, 2));
    assert!(s.task("a").unwrap().reserved.is_zero());
    assert_eq!(s.task("a").unwrap().usage().cut_off, worst);
    assert_eq!(s.usage.spend(), worst);
    assert_eq!(s.phase_usage["p"].spend(), worst);
    // A call whose attempt finished is settled by the attempt's own account.
    s.apply(&reserved(5, 2));
    s.apply(&ev(
        6,
        EventKind::AttemptFinished {
            task: task("a"),
            agent: task("m-01"),
            attempt: 2,
            duration_ms: 1,
            output: None,
            error: Some(err(false)),
            calls: vec![],
            cut_off: Default::default(),
            artifacts: vec![],
            cached: false,
            tail: Default::default(),
        },
    ));
    assert!(s.task("a").unwrap().reserved.is_zero());
    assert_eq!(s.usage.spend(), worst, "the failed call spent nothing");
}

#[test]
fn a_child_run_stays_open_until_its_attempt_finishes_and_outputs_are_kept() {
    let mut s = started();
    let child = |seq, run: &str, attempt| {
        ev(
            seq,
            EventKind::ChildRunStarted {
                task: task("a"),
                run: RunId::from(run),
                file: "deploy.cond".into(),
                attempt,
            },
        )
    };
    s.apply(&child(2, "c1", 1));
    let a = s.task("a").unwrap();
    assert_eq!(a.child_runs.len(), 1);
    assert!(
        a.child_runs[0].open,
        "started, not finished: a resume goes on with it"
    );
    // A resumed parent records the same child again for its next attempt: still one entry.
    s.apply(&child(3, "c1", 2));
    assert_eq!(s.task("a").unwrap().child_runs.len(), 1);
    s.apply(&ev(
        4,
        EventKind::AttemptFinished {
            task: task("a"),
            agent: task("m-01"),
            attempt: 2,
            duration_ms: 0,
            output: None,
            error: Some(err(false)),
            calls: vec![],
            artifacts: vec![],
            cached: false,
            cut_off: Default::default(),
            tail: Default::default(),
        },
    ));
    assert!(!s.task("a").unwrap().child_runs[0].open);
    s.apply(&child(5, "c2", 3));
    let runs: Vec<&str> = s
        .task("a")
        .unwrap()
        .child_runs
        .iter()
        .map(|c| &*c.run.0)
        .collect();
    assert_eq!(runs, ["c1", "c2"]);
    s.apply(&ev(
        6,
        EventKind::RunOutputs {
            outputs: [("url".to_string(), serde_json::json!("u"))].into(),
        },
    ));
    assert_eq!(s.outputs.unwrap()["url"], "u");
}

#[test]
fn a_task_that_spent_nothing_reads_as_zero_usage_and_an_empty_tail() {
    assert_eq!(crate::model::Usage::ZERO, crate::model::Usage::default());
    let t = TaskResult::new("a".into(), "p".into());
    assert!(t.usage().is_zero() && t.tail().is_empty());
    let json = serde_json::to_value(&t).unwrap();
    assert!(
        json.get("usage").is_none() && json.get("tail").is_none(),
        "{json}"
    );
}
