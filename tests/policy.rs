//! Rules evaluated as the executor will: compiled from a workflow, run against contexts, failing
//! closed with a cause when they throw, loop, overflow or return the wrong thing.

use std::path::Path;

use conductor::check::ir::{Rule, Workflow};
use conductor::policy::{PolicyHost, RuleCache, RuleContext, RuleKind, Severity, Verdict};
use conductor::{check_source, SourceMap};
use serde_json::json;

fn workflow(rules: &str) -> Workflow {
    let text = format!(
        r#"workflow w {{
            use "policies/standard.rhai"
            param threshold = 0.5
            agent a {{ kind = "mock" }}
            {rules}
        }}"#
    );
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, "w.cond", Path::new("w.cond"), &text);
    checked
        .workflow
        .unwrap_or_else(|| panic!("{}", conductor::diag::render(&map, &checked.diags, false)))
}

fn gate(code: &str) -> Rule {
    let wf = workflow(&format!("phase p {{ task t on a  gate {code} }}"));
    wf.phases[0].gate.clone().unwrap()
}

fn gate_ctx(completed: i64, total: i64) -> RuleContext {
    let rate = if total == 0 {
        1.0
    } else {
        completed as f64 / total as f64
    };
    let tasks: serde_json::Map<String, serde_json::Value> = (0..total)
        .map(|i| {
            let status = if i < completed { "completed" } else { "failed" };
            (
                if i == 0 {
                    "t".to_string()
                } else {
                    format!("t{i}")
                },
                json!({ "status": status, "output": { "approved": true }, "attempts": 1 }),
            )
        })
        .collect();
    RuleContext::from_json(
        RuleKind::Gate,
        &json!({
            "phase": "p", "total": total, "completed": completed, "failed": total - completed,
            "skipped": 0, "success_rate": rate, "tasks": tasks, "params": { "threshold": 0.5 },
            "loop_count": 0
        }),
    )
}

fn eval(rule: &Rule, ctx: &RuleContext) -> conductor::policy::Evaluation {
    PolicyHost::get().evaluate(&rule.compiled, ctx)
}

#[test]
fn inline_gates_return_bools_or_decisions() {
    let ctx = gate_ctx(9, 10);
    assert_eq!(
        eval(&gate("{ success_rate >= 0.8 }"), &ctx).verdict,
        Verdict::Gate {
            pass: true,
            reason: None
        }
    );
    let e = eval(&gate("{ success_rate >= 0.95 }"), &ctx);
    assert!(matches!(e.verdict, Verdict::Gate { pass: false, .. }));
    assert!(e.error.is_none());
    let e = eval(
        &gate(r#"{ if failed > 0 { fail(`${failed} failed`) } else { pass() } }"#),
        &ctx,
    );
    assert_eq!(
        e.verdict,
        Verdict::Gate {
            pass: false,
            reason: Some("1 failed".into())
        }
    );
    let e = eval(
        &gate("{ tasks.t.output.approved && params.threshold < success_rate }"),
        &ctx,
    );
    assert_eq!(
        e.verdict,
        Verdict::Gate {
            pass: true,
            reason: None
        }
    );
}

#[test]
fn standard_phase_gate_passes_at_exactly_the_threshold_and_fails_with_nothing_completed() {
    let rule = gate("phase_gate(0.8)");
    assert!(matches!(
        eval(&rule, &gate_ctx(8, 10)).verdict,
        Verdict::Gate { pass: true, .. }
    ));
    assert!(matches!(
        eval(&rule, &gate_ctx(7, 10)).verdict,
        Verdict::Gate { pass: false, .. }
    ));
    match eval(&rule, &gate_ctx(0, 0)).verdict {
        Verdict::Gate {
            pass: false,
            reason: Some(r),
        } => assert!(r.contains("completed"), "{r}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn enforce_rules_allow_and_defer() {
    let wf = workflow("enforce max_concurrent_tasks(2)  phase p { task t on a }");
    let rule = &wf.enforce[0];
    let ctx = |running: i64| {
        RuleContext::from_json(
            RuleKind::Enforce,
            &json!({ "task": { "name": "t", "agent": "a", "phase": "p", "attempt": 1, "timeout_ms": 1000 },
                     "pool": { "name": "a", "count": 1, "idle": 1, "running": 0, "failed": 0, "breaker": "closed" },
                     "running": { "a": running }, "running_total": running, "params": {}, "loop_count": 0, "elapsed_ms": 5 }),
        )
    };
    assert!(matches!(
        eval(rule, &ctx(1)).verdict,
        Verdict::Enforce { allow: true, .. }
    ));
    match eval(rule, &ctx(2)).verdict {
        Verdict::Enforce {
            allow: false,
            defer: true,
            reason: Some(r),
        } => assert!(r.contains('2'), "{r}"),
        other => panic!("n running of n must defer: {other:?}"),
    }
}

#[test]
fn feedback_rules_give_a_severity() {
    let wf = workflow(
        r#"phase p { task t on a }
           feedback { if tasks.t.output.severity == "high" { error("too slow") } else { ok() } }"#,
    );
    let rule = &wf.feedback.as_ref().unwrap().rule;
    let ctx = |sev: &str| {
        RuleContext::from_json(
            RuleKind::Feedback,
            &json!({ "tasks": { "t": { "status": "completed", "output": { "severity": sev } } },
                     "params": {}, "loop_count": 0, "max_loops": 3 }),
        )
    };
    assert_eq!(
        eval(rule, &ctx("high")).verdict,
        Verdict::Feedback {
            severity: Severity::Error,
            summary: "too slow".into()
        }
    );
    assert_eq!(
        eval(rule, &ctx("low")).verdict,
        Verdict::Feedback {
            severity: Severity::Ok,
            summary: String::new()
        }
    );
}

#[test]
fn a_rule_that_throws_fails_closed_with_the_cause() {
    let e = eval(&gate(r#"{ throw "no data" }"#), &gate_ctx(1, 1));
    assert!(matches!(e.verdict, Verdict::Gate { pass: false, .. }));
    let cause = e.error.unwrap().cause;
    assert!(cause.contains("no data"), "{cause}");
}

#[test]
fn a_rule_of_the_wrong_type_fails_closed() {
    let e = eval(&gate(r#"{ "yes" }"#), &gate_ctx(1, 1));
    assert!(matches!(e.verdict, Verdict::Gate { pass: false, .. }));
    let cause = e.error.unwrap().cause;
    assert!(
        cause.contains("must return a bool, `pass()` or `fail(reason)`"),
        "{cause}"
    );

    let wf = workflow("phase p { task t on a } feedback { true }");
    let e = eval(
        &wf.feedback.unwrap().rule,
        &RuleContext::from_json(RuleKind::Feedback, &json!({})),
    );
    assert!(matches!(
        e.verdict,
        Verdict::Feedback {
            severity: Severity::Critical,
            ..
        }
    ));
}

#[test]
fn an_endless_loop_stops_at_the_operation_limit() {
    let e = eval(&gate("{ let n = 0; loop { n += 1; } }"), &gate_ctx(1, 1));
    let err = e.error.expect("stopped");
    assert!(err.limit, "{err:?}");
    assert!(err.cause.contains("operations"), "{}", err.cause);
    assert!(matches!(e.verdict, Verdict::Gate { pass: false, .. }));
}

#[test]
fn deep_recursion_and_huge_values_hit_limits() {
    let e = eval(&gate("{ fn f(n) { f(n + 1) } f(0) }"), &gate_ctx(1, 1));
    assert!(e.error.expect("stopped").limit);
    let e = eval(
        &gate(r#"{ let s = "x"; loop { s += s; } }"#),
        &gate_ctx(1, 1),
    );
    assert!(e.error.expect("stopped").limit);
}

#[test]
fn the_context_is_read_only() {
    let e = eval(&gate("{ success_rate = 1.0; true }"), &gate_ctx(0, 1));
    assert!(matches!(e.verdict, Verdict::Gate { pass: false, .. }));
    assert!(e.error.is_some());
    let e = eval(
        &gate(r#"{ tasks.t.status = "completed"; true }"#),
        &gate_ctx(0, 1),
    );
    assert!(e.error.is_some(), "mutating a context map must fail: {e:?}");
}

#[test]
fn results_are_cached_by_rule_and_context() {
    let rule = gate("{ success_rate >= 0.5 }");
    let mut cache = RuleCache::new(16);
    let host = PolicyHost::get();
    let a = host.evaluate_cached(&mut cache, &rule.compiled, &gate_ctx(1, 2));
    let b = host.evaluate_cached(&mut cache, &rule.compiled, &gate_ctx(1, 2));
    let c = host.evaluate_cached(&mut cache, &rule.compiled, &gate_ctx(0, 2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!((cache.hits, cache.misses), (1, 2));
}
