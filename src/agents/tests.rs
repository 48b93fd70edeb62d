//! Every kind's call survives a trip through JSON: what a worker on another machine receives.

use super::*;
use crate::check::ir::{ErrorClass, Role};

fn attempt(call: AgentCall) -> Attempt {
    Attempt {
        run_id: RunId::from("r1"),
        task: "t".into(),
        phase: "p".into(),
        instance: "a-01".into(),
        attempt: 2,
        loop_count: 1,
        call,
    }
}

#[test]
fn every_agent_call_round_trips_through_json() {
    let calls = [
        AgentCall::Mock(MockCall {
            latency_ms: 20,
            fail: true,
            error: ErrorClass::Fatal,
            output: serde_json::json!({ "severity": "ok", "n": [1, 2] }),
            log: Some("/tmp/mock.log".into()),
        }),
        AgentCall::Shell(ShellCall {
            argv: vec!["python3".into(), "-m".into(), "unittest".into()],
            workdir: Some("src".into()),
            env: vec![("A".into(), "b=c".into())],
        }),
        AgentCall::Http(HttpCall {
            method: "POST".into(),
            url: "http://127.0.0.1:1/x".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some("{\"a\":1}".into()),
            fail_on_status: vec![422],
        }),
        AgentCall::Script(ScriptCall {
            function: "score".into(),
            modules: vec![Arc::from("fn score(ctx) { #{} }")],
            ctx: serde_json::json!({ "task": "t" }),
        }),
        AgentCall::Llm(ChatCall {
            provider: "default".into(),
            model: "gpt".into(),
            role: Some(Role::TestData),
            system: "sys".into(),
            prompt: "do it".into(),
            temperature: Some(0.2),
            max_tokens: 100,
        }),
    ];
    for call in calls {
        let a = attempt(call);
        let json = serde_json::to_string(&a).unwrap();
        let back: Attempt = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a, "{json}");
        let kind: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(kind["call"]["kind"], a.call.kind());
    }
}
