//! Prices and budgets against a model server on 127.0.0.1 that reports known usage (120
//! prompt and 30 completion tokens a call): the cost of each call, task, phase, pass and run;
//! budgets that stop calls before they are made, at each level and under parallel tasks;
//! replayed calls spend nothing; what `on_budget` does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conductor::config::{Config, Price, ProviderKind};
use conductor::model::{ErrorCode, RunStatus, TaskStatus, Usd};
use conductor::store::MemoryStore;

use crate::llm::{model_server, openai_reply, provider, run_with, CODER_JSON};

/// $1 per million input tokens, $2 per million output tokens: a call costs
/// 120 × 1 + 30 × 2 = 180 micro-dollars.
const CALL_USD: f64 = 0.00018;

/// A folder whose `conductor.toml` points at the model server at `base`, with the prices of
/// [`priced`], for tests that run the binary.
fn priced_folder(base: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("conductor.toml"),
        format!(
            "[providers.default]\nkind = \"openai\"\nbase_url = \"{base}/v1\"\nmodel = \"m\"\n\
             [providers.default.prices]\nm = {{ input = 1, output = 2 }}\n"
        ),
    )
    .unwrap();
    dir
}

fn priced(base: &str) -> Arc<Config> {
    let mut p = provider(ProviderKind::Openai, &format!("{base}/v1"), None);
    p.timeout = Duration::from_secs(30);
    let price = Price {
        input: 1.0,
        output: 2.0,
        cached_input: 0.5,
    };
    Arc::new(Config {
        path: None,
        providers: BTreeMap::from([("default".to_string(), p)]),
        prices: BTreeMap::from([(
            "default".to_string(),
            BTreeMap::from([("*".to_string(), price)]),
        )]),
    })
}

#[tokio::test]
async fn each_call_task_phase_pass_and_run_has_its_cost() {
    let (base, _) = model_server(vec![openai_reply(CODER_JSON)]).await;
    let text = r#"workflow w {
        agent coding { kind = "llm", role = "coder" }
        phase build { task a on coding { prompt = "a" } task b on coding { prompt = "b" } }
        phase check { task c on coding { prompt = "c" } }
    }"#;
    let ran = run_with(text, priced(&base), Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    assert_eq!(ran.state.status(), RunStatus::Completed);
    let call = Usd::from_dollars(CALL_USD);
    assert_eq!(ran.state.usage.usd, Usd(call.0 * 3));
    assert_eq!(ran.state.task("a").unwrap().usage().usd, call);
    assert_eq!(ran.state.phase_usage["build"].usd, Usd(call.0 * 2));
    assert_eq!(ran.state.phase_usage["check"].usd, call);
    assert_eq!(ran.state.pass_usage.len(), 1);
    assert_eq!(ran.state.pass_usage[0].usd, Usd(call.0 * 3));
    let calls: Vec<_> = ran
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            conductor::model::EventKind::AttemptFinished { calls, .. } => Some(calls.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(calls.iter().all(|c| c.usd == Some(call)), "{calls:?}");
    let shown = conductor::report::show_text(&ran.state, &ran.events, &[]);
    assert!(shown.contains("cost $0.00054"), "{shown}");
    assert!(shown.contains("build $0.00036"), "{shown}");
    let json = serde_json::to_value(ran.state.view()).unwrap();
    assert_eq!(json["usage"]["usd"], serde_json::json!(0.00054));
    assert_eq!(
        json["task_results"]["a"]["usage"]["usd"],
        serde_json::json!(0.00018)
    );
}

#[tokio::test]
async fn a_call_budget_of_the_workflow_holds_under_parallel_tasks() {
    let mut slow = openai_reply(CODER_JSON);
    slow.delay = Duration::from_millis(150);
    let (base, seen) = model_server(vec![slow]).await;
    // Five tasks start at once on five instances; three calls fit.
    let text = r#"workflow w {
        budget = { llm_calls = 3 }
        agent coding { kind = "llm", role = "coder", count = 5 }
        phase p {
            min_success_rate = 0.0
            task a on coding { prompt = "a", retry = 3 }
            task b on coding { prompt = "b", retry = 3 }
            task c on coding { prompt = "c", retry = 3 }
            task d on coding { prompt = "d", retry = 3 }
            task e on coding { prompt = "e", retry = 3 }
        }
    }"#;
    let ran = run_with(text, priced(&base), Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3, "no call past the budget");
    assert_eq!(ran.state.usage.calls, 3);
    let over: Vec<_> = ran
        .state
        .tasks
        .iter()
        .filter(|t| t.error.as_ref().map(|e| e.code) == Some(ErrorCode::BudgetExceeded))
        .collect();
    assert_eq!(over.len(), 2);
    for t in over {
        assert_eq!(t.status, TaskStatus::Failed);
        assert_eq!(t.attempts, 1, "BUDGET_EXCEEDED is not retried");
        let m = &t.error.as_ref().unwrap().message;
        assert!(
            m.contains("the workflow's budget (3 llm_calls)") && m.contains("3 of 3 llm_calls"),
            "{m}"
        );
    }
}

/// A reviewer that never approves: the feedback loops until the agent's money runs out.
fn never_approves(budget: &str, on_budget: &str) -> String {
    format!(
        r#"workflow w {{
        max_feedback_loops = 50
        {on_budget}
        agent coding {{ kind = "llm", role = "coder", max_tokens = 100, {budget} }}
        agent reviewing {{ kind = "mock", output = {{ severity = "error", summary = "never" }} }}
        agent reporting {{ kind = "mock" }}
        phase build {{ task implement on coding {{ prompt = "go" }} }}
        phase review {{ task review on reviewing }}
        phase report {{
            always = true
            task tell on reporting
        }}
        feedback to build {{ error("the reviewer never approves") }}
    }}"#
    )
}

#[tokio::test]
async fn an_agent_usd_budget_stops_a_loop_with_the_exact_spend_and_no_call_past_it() {
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    let limit = 0.003;
    let text = never_approves(&format!("budget = {{ usd = {limit} }}"), "");
    let ran = run_with(&text, priced(&base), Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    let made = seen.lock().unwrap().len() as u64;
    assert!(made >= 2, "some calls fit: {made}");
    let call = Usd::from_dollars(CALL_USD);
    assert_eq!(ran.state.usage.calls, made);
    assert_eq!(ran.state.usage.usd, Usd(call.0 * made), "the exact spend");
    assert_eq!(
        ran.state.task("implement").unwrap().usage().calls,
        made,
        "a task's usage counts over every pass"
    );
    let story: Vec<String> = ran.events.iter().map(|e| format!("{:?}", e.kind)).collect();
    assert_eq!(
        ran.state.status(),
        RunStatus::Failed,
        "{:#?}",
        &story[story.len() - 12..]
    );
    let e = ran.state.task("implement").unwrap().error.clone().unwrap();
    assert_eq!(e.code, ErrorCode::BudgetExceeded);
    assert!(
        e.message.contains("the budget of agent `coding`"),
        "{}",
        e.message
    );
    // The refused call's worst case did not fit after `made` calls, and did after one less:
    // the loop stopped at the first call that could overspend, not before.
    let worst = e.message.split("this call may cost $").nth(1).unwrap();
    let worst: f64 = worst.split(' ').next().unwrap().parse().unwrap();
    let worst = Usd::from_dollars(worst);
    let limit = Usd::from_dollars(limit);
    assert!(Usd(call.0 * made).plus(worst) > limit, "{}", e.message);
    assert!(
        Usd(call.0 * (made - 1)).plus(worst) <= limit,
        "{}",
        e.message
    );
    assert_eq!(ran.state.pass_usage.len() as u64, made + 1);
}

#[tokio::test]
async fn wrap_up_ends_the_loop_and_runs_the_always_phases() {
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    let text = never_approves("budget = { llm_calls = 2 }", "on_budget = \"wrap_up\"");
    let ran = run_with(&text, priced(&base), Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    let story: Vec<String> = ran.events.iter().map(|e| format!("{:?}", e.kind)).collect();
    assert_eq!(seen.lock().unwrap().len(), 2, "{story:#?}");
    assert_eq!(ran.state.status(), RunStatus::Completed);
    assert_eq!(
        ran.state.task("tell").unwrap().status,
        TaskStatus::Completed
    );
    let reviews = story
        .iter()
        .filter(|k| k.starts_with("PhaseEntered { phase: \"review\""))
        .count();
    assert_eq!(
        reviews, 2,
        "the third pass stopped at its model call: no review after it"
    );
    assert_eq!(
        ran.state
            .task("implement")
            .unwrap()
            .error
            .as_ref()
            .map(|e| e.code),
        Some(ErrorCode::BudgetExceeded)
    );
    assert!(ran.state.warnings.iter().any(|w| w.contains("wrap_up")));
}

#[tokio::test]
async fn a_usd_budget_without_a_price_refuses_the_call() {
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    let text = r#"workflow w {
        agent coding { kind = "llm", role = "coder" }
        phase p { task a on coding { prompt = "a", budget = { usd = 1 } } }
    }"#;
    let ran = run_with(
        text,
        crate::llm::openai_at(&base),
        Arc::new(MemoryStore::new()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 0);
    let e = ran.state.task("a").unwrap().error.clone().unwrap();
    assert_eq!(e.code, ErrorCode::BudgetExceeded);
    assert!(e.message.contains("no price"), "{}", e.message);
}

#[test]
fn check_points_at_each_mistake_in_a_budget() {
    let text = std::fs::read_to_string("tests/fixtures/budget_mistakes.cond").unwrap();
    let mut map = conductor::SourceMap::new();
    let path = std::path::Path::new("budget_mistakes.cond");
    let checked = conductor::check_source(&mut map, "budget_mistakes.cond", path, &text);
    assert!(checked.workflow.is_none());
    let shown = conductor::diag::render(&map, &checked.diags, false);
    for (message, at) in [
        (
            "`pause` is not a valid `on_budget`",
            "budget_mistakes.cond:2:17",
        ),
        (
            "`budget.tokens` must be at least 0, found `-1`",
            "budget_mistakes.cond:3:70",
        ),
        (
            "this budget limits nothing: agent `checking` makes no model calls",
            "budget_mistakes.cond:4:46",
        ),
        (
            "`budget` expects a map, found an integer",
            "budget_mistakes.cond:6:18",
        ),
        (
            "`budget.wall` expects a duration",
            "budget_mistakes.cond:7:60",
        ),
        (
            "`usd` is set twice in this budget",
            "budget_mistakes.cond:7:73",
        ),
        ("this budget limits nothing\n", "budget_mistakes.cond:8:39"),
    ] {
        let i = shown
            .find(message)
            .unwrap_or_else(|| panic!("{message}\n{shown}"));
        let place = shown[i..].lines().nth(1).unwrap_or_default();
        assert!(place.contains(at), "{message} at {at}\n{shown}");
    }
}

#[tokio::test]
async fn a_feedback_rule_stops_looping_when_money_runs_low() {
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    let text = never_approves("budget = { usd = 0.003 }", "").replace(
        r#"feedback to build { error("the reviewer never approves") }"#,
        r#"feedback to build {
            if budget.by["agent.coding"].usd_left < 0.001 { ok("out of money") } else { error("again") }
        }"#,
    );
    let ran = run_with(&text, priced(&base), Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    assert_eq!(ran.state.status(), RunStatus::Completed);
    assert_eq!(ran.state.task("implement").unwrap().error, None);
    let made = seen.lock().unwrap().len() as u64;
    let spent = Usd(Usd::from_dollars(CALL_USD).0 * made);
    assert_eq!(ran.state.usage.usd, spent);
    // It stopped at the first pass that left less than $0.001.
    assert!(Usd::from_dollars(0.003).minus(spent) < Usd::from_dollars(0.001));
    let before = Usd(Usd::from_dollars(CALL_USD).0 * (made - 1));
    assert!(Usd::from_dollars(0.003).minus(before) >= Usd::from_dollars(0.001));
    assert_eq!(ran.state.feedback.as_ref().unwrap().summary, "out of money");
}

#[tokio::test]
async fn escalate_waits_and_a_resume_with_a_raised_budget_goes_on_from_what_was_spent() {
    use conductor::exec::{resume, ResumeRequest, RunOptions};
    use conductor::model::{BudgetScope, Decision, Limits};
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    let text = never_approves(
        "budget = { llm_calls = 2 }",
        "on_budget = \"escalate\"\n        on_escalation = \"ask\"",
    );
    let mut map = conductor::SourceMap::new();
    let path = std::path::Path::new("t.cond");
    let wf = Arc::new(
        conductor::check_source(&mut map, "t.cond", path, &text)
            .workflow
            .unwrap(),
    );
    let plan = Arc::new(conductor::plan::plan(&wf).unwrap());
    let store = Arc::new(MemoryStore::new());
    let mut options = RunOptions::new(store.clone());
    options.config = priced(&base);
    let id = options.run_id.clone();
    let waiting = conductor::exec::run(wf.clone(), plan.clone(), options)
        .await
        .unwrap();
    assert_eq!(waiting.status(), RunStatus::Waiting);
    assert_eq!(seen.lock().unwrap().len(), 2);
    let e = waiting.task("implement").unwrap().error.clone().unwrap();
    assert_eq!(e.code, ErrorCode::BudgetExceeded);

    // An unknown budget is refused before anything is recorded.
    let mut options = RunOptions::new(store.clone());
    options.config = priced(&base);
    let events = conductor::store::Store::events(&*store, &id).unwrap();
    let refused = resume(
        wf.clone(),
        plan.clone(),
        options,
        events.clone(),
        ResumeRequest {
            budgets: vec![(BudgetScope::Agent("nobody".into()), Limits::default())],
            ..Default::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("agent.nobody") && refused.contains("agent.coding"),
        "{refused}"
    );

    // Raised to 5 calls: 2 were spent before the stop, so 3 more are made.
    let mut options = RunOptions::new(store.clone());
    options.config = priced(&base);
    let raised = Limits {
        llm_calls: Some(5),
        ..Limits::default()
    };
    let resumed = resume(
        wf,
        plan,
        options,
        events,
        ResumeRequest {
            decisions: vec![("implement".into(), Decision::Retry)],
            budgets: vec![(BudgetScope::Agent("coding".into()), raised)],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        seen.lock().unwrap().len(),
        5,
        "no call past the raised budget"
    );
    assert_eq!(resumed.usage.calls, 5);
    assert_eq!(
        resumed.status(),
        RunStatus::Waiting,
        "escalated again at the new limit"
    );
    let m = resumed
        .task("implement")
        .unwrap()
        .error
        .clone()
        .unwrap()
        .message;
    assert!(m.contains("5 of 5 llm_calls"), "{m}");
}

#[test]
fn check_explain_prints_the_worst_case_and_warns_about_budgets_that_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("conductor.toml"),
        "[providers.default]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         model = \"m\"\n[providers.default.prices]\nm = { input = 1, output = 2 }\n",
    )
    .unwrap();
    let file = dir.path().join("w.cond");
    std::fs::write(
        &file,
        r#"workflow w {
    max_feedback_loops = 2
    budget = { llm_calls = 3 }
    agent coding { kind = "llm", role = "coder", max_tokens = 1000 }
    agent tiny { kind = "llm", role = "reviewer", max_tokens = 500, budget = { tokens = 100 } }
    phase build {
        task a on coding { prompt = "a", retry = 1 }
        task b on coding { prompt = "b" }
        task c on coding { prompt = "c" }
        task d on coding { prompt = "d" }
    }
    phase review { task r on tiny { prompt = "r" } }
}
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conductor"))
        .env("CONDUCTOR_STORE", "memory")
        .current_dir(dir.path())
        .args(["check", "--explain", "w.cond"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // build: a 2 turns × 2 attempts, b c d 2 turns × 4 attempts (the default retry is 3) = 28
    // calls of 1000 tokens at $2/M; both phases are in the feedback loop: 3 passes.
    assert!(
        stdout.contains(
            "phase build: each pass up to 28 llm calls, 28000 output tokens, $0.056; 3 passes at most"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("phase review: each pass up to 8 llm calls, 4000 output tokens, $0.008; 3 passes at most"),
        "{stdout}"
    );
    assert!(
        stdout.contains("run: up to 108 llm calls, 96000 output tokens, $0.192"),
        "{stdout}"
    );
    let flat = stderr.replace('│', " ");
    let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("the workflow's budget is certain to be exceeded: 5 llm calls are made in the first pass alone, and it allows 3"),
        "{stderr}"
    );
    assert!(
        flat.contains("the budget of agent `tiny` can never be met: 100 tokens"),
        "{stderr}"
    );
    assert!(flat.contains("w.cond:3:14"), "{stderr}");
}

/// The calls each task made, from the model server's log (the prompt names the task).
fn prompts(seen: &[crate::llm::Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| {
            let messages = s.body["messages"].as_array().cloned().unwrap_or_default();
            messages
                .last()
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn task_and_phase_budgets_stop_only_what_they_contain() {
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    // Task `a` may make 1 call over the run, phase `build` 3: the loop runs until they are
    // spent; task `b` (outside `a`'s budget, inside the phase's) runs on.
    let text = r#"workflow w {
        max_feedback_loops = 10
        agent coding { kind = "llm", role = "coder" }
        phase build {
            budget = { llm_calls = 3 }
            min_success_rate = 0.0
            task a on coding { prompt = "task a", budget = { llm_calls = 1 } }
            task b on coding { prompt = "task b" }
        }
        feedback to build { error("again") }
    }"#;
    let ran = run_with(text, priced(&base), Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    let sent = prompts(&seen.lock().unwrap());
    let a = sent.iter().filter(|p| p.contains("task a")).count();
    let b = sent.iter().filter(|p| p.contains("task b")).count();
    assert_eq!((a, b), (1, 2), "{sent:?}");
    assert_eq!(
        ran.state.pass_usage.len(),
        11,
        "every pass ran, refused calls and all"
    );
    assert_eq!(ran.state.phase_usage["build"].calls, 3);
    assert_eq!(ran.state.task("a").unwrap().usage().calls, 1);
    let events: Vec<String> = ran
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            conductor::model::EventKind::AttemptFinished {
                task,
                error: Some(err),
                ..
            } => Some(format!("{task}: {}", err.message)),
            _ => None,
        })
        .collect();
    assert!(
        events[0].starts_with("a: the budget of task `a` (1 llm_calls)"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("b: the budget of phase `build` (3 llm_calls)")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_and_resume_a_call_in_flight_counts_and_none_passes_the_budget() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut slow = openai_reply(CODER_JSON);
    slow.delay = Duration::from_millis(80);
    let (base, seen) = model_server(vec![slow]).await;
    let dir = priced_folder(&base);
    std::fs::write(
        dir.path().join("w.cond"),
        r#"workflow w {
    max_feedback_loops = 20
    budget = { llm_calls = 7 }
    agent coding { kind = "llm", role = "coder", count = 2 }
    agent reviewing { kind = "mock", output = { severity = "error", summary = "never" } }
    phase build {
        min_success_rate = 0.0
        task a on coding { prompt = "a" }
        task b on coding { prompt = "b" }
    }
    phase review { task r on reviewing }
}
"#,
    )
    .unwrap();
    let conductor = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
        c.current_dir(dir.path())
            .env("CONDUCTOR_STORE", dir.path().join("store.db"))
            .stdin(Stdio::null());
        c
    };
    // Killed once the second pass has started its calls.
    let (run, recorded_at_kill) = tokio::task::spawn_blocking({
        let mut cmd = conductor();
        let seen = seen.clone();
        move || {
            let mut child = cmd
                .args(["run", "w.cond", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut run = String::new();
            let mut calls = 0;
            for line in BufReader::new(child.stdout.take().unwrap()).lines() {
                let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap_or_default();
                if run.is_empty() {
                    run = v["run_id"].as_str().unwrap_or_default().to_string();
                }
                calls += v["calls"].as_array().map_or(0, Vec::len);
                if v["event"] == "task_dispatched" && v["task"] == "b" && calls >= 2 {
                    break;
                }
            }
            // Killed while the model works on a call (its reply takes 80 ms).
            let begun = std::time::Instant::now();
            while seen.lock().unwrap().len() <= calls && begun.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(2));
            }
            child.kill().unwrap();
            child.wait().unwrap();
            (run, calls)
        }
    })
    .await
    .unwrap();
    assert!(!run.is_empty());
    let sent_at_kill = seen.lock().unwrap().len();
    // Calls the model received whose replies the killed process never recorded.
    let in_flight = sent_at_kill - recorded_at_kill;
    let out = tokio::task::spawn_blocking({
        let mut cmd = conductor();
        let run = run.clone();
        move || cmd.args(["resume", &run]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let state: conductor::model::Usage = {
        let out = conductor().args(["show", &run, "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        serde_json::from_value(v["usage"].clone()).unwrap()
    };
    assert!(in_flight >= 1, "the kill came during a call");
    // Each call in flight at the kill was reserved on record before it was made: it counts
    // (at its worst case), so the calls the model received never pass the budget.
    assert_eq!(
        state.calls + state.cut_off.llm_calls,
        7,
        "the budget, counted from the log across the kill ({in_flight} in flight): {stdout}"
    );
    let received = seen.lock().unwrap().len();
    assert!(
        received <= 7 && received as u64 >= state.calls,
        "the model received {received} calls for a budget of 7: {stdout}"
    );
    assert_eq!(
        state.usd,
        Usd(Usd::from_dollars(CALL_USD).0 * state.calls),
        "replied calls cost what they used"
    );
    let runs = conductor().args(["runs"]).output().unwrap();
    let runs = String::from_utf8_lossy(&runs.stdout);
    assert!(
        runs.contains("COST") && runs.contains(&state.usd.to_string()),
        "{runs}"
    );
}

#[tokio::test]
async fn a_fan_out_tasks_budget_covers_all_its_instances() {
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    let text = r#"workflow w {
        agent coding { kind = "llm", role = "coder", count = 4 }
        phase p {
            min_success_rate = 0.0
            task t on coding {
                matrix = { n = ["1", "2", "3", "4"] }
                prompt = "part {{ item.n }}"
                budget = { llm_calls = 2 }
            }
        }
    }"#;
    let ran = run_with(text, priced(&base), Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
    let over = ran
        .state
        .tasks
        .iter()
        .filter(|t| t.error.as_ref().map(|e| e.code) == Some(ErrorCode::BudgetExceeded))
        .count();
    assert_eq!(over, 2, "two instances found no room");
}

#[tokio::test]
async fn an_output_from_the_response_cache_makes_no_call_and_spends_no_budget() {
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    let store: Arc<dyn conductor::store::Store> = Arc::new(MemoryStore::new());
    let text = r#"workflow w {
        agent coding { kind = "llm", role = "coder" }
        phase p { task a on coding { prompt = "same", cache = true } }
    }"#;
    run_with(text, priced(&base), store.clone(), None)
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
    // The same dispatch again, now with a budget of one token: the cache answers.
    let tight = text.replace(
        r#"agent coding { kind = "llm", role = "coder" }"#,
        r#"budget = { tokens = 1 }
        agent coding { kind = "llm", role = "coder" }"#,
    );
    let ran = run_with(&tight, priced(&base), store, None).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1, "no call");
    assert_eq!(ran.state.status(), RunStatus::Completed);
    assert_eq!(ran.state.usage.cached, 1);
    assert_eq!(ran.state.usage.calls, 0);
}

#[tokio::test]
async fn a_wrap_up_goes_on_after_a_resume() {
    use conductor::exec::{resume, ResumeRequest, RunOptions};
    use conductor::model::Decision;
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    // `a` finds no room and starts the wrap-up; `bad` waits for a decision meanwhile.
    let text = r#"workflow w {
        on_budget = "wrap_up"
        on_escalation = "ask"
        agent coding { kind = "llm", role = "coder", budget = { llm_calls = 0 } }
        agent flaky { kind = "mock", fail_first = 1, error = "fatal" }
        agent reporting { kind = "mock" }
        phase build {
            min_success_rate = 0.0
            task a on coding { prompt = "a" }
            task bad on flaky
        }
        phase later { task l on reporting }
        phase report {
            always = true
            task tell on reporting
        }
    }"#;
    let mut map = conductor::SourceMap::new();
    let path = std::path::Path::new("t.cond");
    let wf = Arc::new(
        conductor::check_source(&mut map, "t.cond", path, text)
            .workflow
            .unwrap(),
    );
    let plan = Arc::new(conductor::plan::plan(&wf).unwrap());
    let store = Arc::new(MemoryStore::new());
    let mut options = RunOptions::new(store.clone());
    options.config = priced(&base);
    let id = options.run_id.clone();
    let waiting = conductor::exec::run(wf.clone(), plan.clone(), options)
        .await
        .unwrap();
    assert_eq!(waiting.status(), RunStatus::Waiting);
    let events = conductor::store::Store::events(&*store, &id).unwrap();
    let mut options = RunOptions::new(store.clone());
    options.config = priced(&base);
    let done = resume(
        wf,
        plan,
        options,
        events,
        ResumeRequest {
            decisions: vec![("bad".into(), Decision::Skip)],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 0);
    assert_eq!(done.status(), RunStatus::Completed);
    assert_eq!(
        done.task("l").unwrap().status,
        TaskStatus::Pending,
        "no phase after the wrap-up"
    );
    assert_eq!(done.task("tell").unwrap().status, TaskStatus::Completed);
}

/// Attempts on `conductor worker` processes: the scheduler holds each attempt's allowance
/// (its first call's worst case) before sending it, so parallel attempts on a worker cannot
/// overspend either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_on_workers_hold_their_allowance_and_no_call_passes_the_budget() {
    use std::process::{Command, Stdio};
    let Some(db) = crate::support::postgres::database("budget_on_workers") else {
        return;
    };
    let mut slow = openai_reply(CODER_JSON);
    slow.delay = Duration::from_millis(150);
    let (base, seen) = model_server(vec![slow]).await;
    let dir = priced_folder(&base);
    std::fs::write(
        dir.path().join("w.cond"),
        r#"workflow w {
    budget = { llm_calls = 3 }
    agent coding { kind = "llm", role = "coder", count = 5, placement = "workers" }
    phase p {
        min_success_rate = 0.0
        task a on coding { prompt = "a", retry = 3 }
        task b on coding { prompt = "b", retry = 3 }
        task c on coding { prompt = "c", retry = 3 }
        task d on coding { prompt = "d", retry = 3 }
        task e on coding { prompt = "e", retry = 3 }
    }
}
"#,
    )
    .unwrap();
    let conductor = {
        let (dir, db) = (dir.path().to_path_buf(), db.clone());
        move || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
            c.current_dir(&dir)
                .env("CONDUCTOR_STORE", &db)
                .stdin(Stdio::null());
            c
        }
    };
    let mut worker = conductor()
        .args(["worker", "--concurrency", "5", "--poll", "100ms", "--dir"])
        .arg(dir.path().join("w1"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = tokio::task::spawn_blocking({
        let conductor = conductor.clone();
        move || conductor().args(["run", "w.cond"]).output().unwrap()
    })
    .await
    .unwrap();
    let _ = worker.kill();
    let _ = worker.wait();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "no call past the budget: {stdout}"
    );
    let run = stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let shown = conductor().args(["show", &run, "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["usage"]["calls"], 3, "{stdout}");
    let over: Vec<&serde_json::Value> = v["task_results"]
        .as_object()
        .unwrap()
        .values()
        .filter(|t| t["error"]["code"] == "BUDGET_EXCEEDED")
        .collect();
    assert_eq!(over.len(), 2, "{stdout}");
    for t in over {
        assert_eq!(t["attempts"], 1, "BUDGET_EXCEEDED is not retried: {t}");
    }
}
