//! llm agents against model servers on 127.0.0.1 started by the tests, speaking the OpenAI
//! chat completions and Anthropic messages wire formats: the request as sent, replies parsed
//! and validated, the error classes (429 with Retry-After and 500 retried, 400 fatal, a
//! provider that hangs), the corrective turn for a reply that is not valid JSON, usage,
//! artifacts in the workspace, record and replay, and the response cache.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conductor::config::{Config, ProviderConfig, ProviderKind, ResponseFormat};
use conductor::exec::{run, RunOptions};
use conductor::model::{ErrorCode, Event, EventKind, RunState, RunStatus, TaskStatus};
use conductor::store::{MemoryStore, Store};
use conductor::{check_source, SourceMap};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Value,
}

#[derive(Clone)]
pub(crate) struct Reply {
    status: u16,
    headers: String,
    body: String,
    pub(crate) delay: Duration,
}

pub(crate) fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        headers: String::new(),
        body: body.into(),
        delay: Duration::ZERO,
    }
}

/// A model server: answers every request from `script` in order (the last reply repeats) and
/// records what it was sent.
pub(crate) async fn model_server(script: Vec<Reply>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let counter = Arc::new(Mutex::new(0usize));
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (log, counter, script) = (log.clone(), counter.clone(), script.clone());
            tokio::spawn(async move {
                let Some(req) = crate::support::read_request(&mut sock).await else {
                    return;
                };
                let body = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let (path, headers) = (req.path, req.headers);
                let n = {
                    let mut c = counter.lock().unwrap();
                    *c += 1;
                    *c - 1
                };
                log.lock().unwrap().push(Seen {
                    path,
                    headers,
                    body,
                });
                let r = script[n.min(script.len() - 1)].clone();
                tokio::time::sleep(r.delay).await;
                let response = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{}\r\n{}",
                    r.status,
                    r.body.len(),
                    r.headers,
                    r.body
                );
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// An OpenAI chat completion whose message is `content`.
pub(crate) fn openai_reply(content: &str) -> Reply {
    reply(
        200,
        json!({
            "id": "c1", "object": "chat.completion", "model": "served-model",
            "choices": [{ "index": 0, "finish_reason": "stop",
                          "message": { "role": "assistant", "content": content } }],
            "usage": { "prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150 }
        })
        .to_string(),
    )
}

fn anthropic_reply(text: &str) -> Reply {
    reply(
        200,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{ "type": "text", "text": text }],
            "stop_reason": "end_turn",
            "usage": { "input_tokens": 200, "output_tokens": 40 }
        })
        .to_string(),
    )
}

pub(crate) fn provider(
    kind: ProviderKind,
    base_url: &str,
    key_env: Option<&str>,
) -> ProviderConfig {
    ProviderConfig {
        kind,
        base_url: base_url.to_string(),
        model: Some("default-model".into()),
        api_key_env: key_env.map(str::to_string),
        cassette: None,
        timeout: Duration::from_secs(30),
        max_tokens: None,
        temperature: None,
        response_format: ResponseFormat::JsonObject,
        max_tokens_field: "max_tokens".into(),
    }
}

pub(crate) fn config(providers: Vec<(&str, ProviderConfig)>) -> Arc<Config> {
    Arc::new(Config {
        path: None,
        providers: providers
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect::<BTreeMap<_, _>>(),
        ..Config::default()
    })
}

/// The default provider: OpenAI-compatible at `base`, no key.
pub(crate) fn openai_at(base: &str) -> Arc<Config> {
    config(vec![(
        "default",
        provider(ProviderKind::Openai, &format!("{base}/v1"), None),
    )])
}

pub(crate) struct Ran {
    pub(crate) state: RunState,
    pub(crate) events: Vec<Event>,
}

pub(crate) async fn run_with(
    text: &str,
    config: Arc<Config>,
    store: Arc<dyn Store>,
    workspace: Option<&Path>,
) -> Result<Ran, String> {
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, "t.cond", Path::new("t.cond"), text);
    let wf = checked
        .workflow
        .unwrap_or_else(|| panic!("{}", conductor::diag::render(&map, &checked.diags, false)));
    let plan = conductor::plan::plan(&wf).unwrap();
    let mut options = RunOptions::new(store.clone());
    options.config = config;
    options.workspace = workspace.map(Path::to_path_buf);
    let id = options.run_id.clone();
    let state = run(Arc::new(wf), Arc::new(plan), options)
        .await
        .map_err(|e| e.to_string())?;
    let events = store.events(&id).unwrap();
    Ok(Ran { state, events })
}

pub(crate) const CODER_JSON: &str = r#"{"files": [{"path": "src/hello.py", "content": "print('hello')\n"}], "summary": "prints hello"}"#;

#[tokio::test]
async fn openai_requests_carry_the_role_prompt_settings_and_key_and_files_reach_the_workspace() {
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    std::env::set_var("LLM_TEST_OPENAI_KEY", "sk-test-openai-123456");
    let cfg = config(vec![(
        "default",
        provider(
            ProviderKind::Openai,
            &format!("{base}/v1"),
            Some("LLM_TEST_OPENAI_KEY"),
        ),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let text = r#"workflow w {
        param feature = "say hello"
        agent coding { kind = "llm", role = "coder", model = "gpt-test", temperature = 0.3, max_tokens = 500 }
        phase p { task implement on coding { prompt = "Implement: {{ params.feature }}" } }
    }"#;
    let ran = run_with(text, cfg, Arc::new(MemoryStore::new()), Some(dir.path()))
        .await
        .unwrap();
    let t = ran.state.task("implement").unwrap();
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    assert_eq!(t.output["summary"], "prints hello");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.headers["authorization"], "Bearer sk-test-openai-123456");
    assert_eq!(r.body["model"], "gpt-test");
    assert_eq!(r.body["temperature"], 0.3);
    assert_eq!(r.body["max_tokens"], 500);
    assert_eq!(r.body["response_format"], json!({ "type": "json_object" }));
    let messages = r.body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"]
        .as_str()
        .unwrap()
        .starts_with("You are the coder"));
    assert_eq!(
        messages[1],
        json!({ "role": "user", "content": "Implement: say hello" })
    );

    // Usage per call and per run.
    assert_eq!(ran.state.usage.calls, 1);
    assert_eq!(ran.state.usage.input_tokens, 120);
    assert_eq!(ran.state.usage.output_tokens, 30);
    let calls = ran.events.iter().find_map(|e| match &e.kind {
        EventKind::AttemptFinished { calls, .. } if !calls.is_empty() => Some(calls.clone()),
        _ => None,
    });
    assert_eq!(calls.unwrap()[0].model, "served-model");

    // The file is in the workspace and recorded as an artifact of the attempt.
    let written = std::fs::read_to_string(dir.path().join("src/hello.py")).unwrap();
    assert_eq!(written, "print('hello')\n");
    let artifacts = conductor::model::RunState::from_events(&ran.events).artifacts;
    assert_eq!(artifacts.len(), 1);
    assert_eq!(&*artifacts[0].path, "src/hello.py");
    assert_eq!(&*artifacts[0].task, "implement");
}

#[tokio::test]
async fn json_schema_response_format_sends_the_roles_schema() {
    let monitor =
        r#"{"severity": "ok", "summary": "fine", "findings": [], "metrics": {"p99_ms": 12}}"#;
    let (base, seen) = model_server(vec![openai_reply(monitor)]).await;
    let mut p = provider(ProviderKind::Openai, &format!("{base}/v1"), None);
    p.response_format = ResponseFormat::JsonSchema;
    p.max_tokens_field = "max_completion_tokens".into();
    let text = r#"workflow w {
        agent watch { kind = "llm", role = "monitor" }
        phase p { task observe on watch { prompt = "look" } }
    }"#;
    let ran = run_with(
        text,
        config(vec![("default", p)]),
        Arc::new(MemoryStore::new()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        ran.state.task("observe").unwrap().output["metrics"]["p99_ms"],
        12
    );
    let body = seen.lock().unwrap()[0].body.clone();
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["max_completion_tokens"], 4096);
    assert!(body.get("max_tokens").is_none());
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["required"],
        json!(["severity", "summary", "findings", "metrics"])
    );
    assert!(
        !seen.lock().unwrap()[0]
            .headers
            .contains_key("authorization"),
        "no key configured, none sent"
    );
}

#[tokio::test]
async fn anthropic_requests_use_the_messages_format() {
    let review = r#"{"approved": false, "score": 40, "findings": ["no tests"], "recommendations": ["add tests"]}"#;
    let (base, seen) = model_server(vec![anthropic_reply(review)]).await;
    std::env::set_var("LLM_TEST_ANTHROPIC_KEY", "sk-ant-test-987654");
    let mut p = provider(
        ProviderKind::Anthropic,
        &base,
        Some("LLM_TEST_ANTHROPIC_KEY"),
    );
    p.max_tokens = Some(777);
    let text = r#"workflow w {
        agent rev { kind = "llm", role = "reviewer", provider = "claude", temperature = 1.5 }
        phase p { task review on rev { prompt = "Review the change" } gate { true } }
    }"#;
    let ran = run_with(
        text,
        config(vec![("claude", p)]),
        Arc::new(MemoryStore::new()),
        None,
    )
    .await
    .unwrap();
    let t = ran.state.task("review").unwrap();
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    assert_eq!(t.output["approved"], false);
    assert_eq!(ran.state.usage.input_tokens, 200);
    assert_eq!(ran.state.usage.output_tokens, 40);

    let r = seen.lock().unwrap()[0].clone();
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.headers["x-api-key"], "sk-ant-test-987654");
    assert_eq!(r.headers["anthropic-version"], "2023-06-01");
    assert!(!r.headers.contains_key("authorization"));
    assert_eq!(r.body["model"], "default-model");
    assert_eq!(r.body["max_tokens"], 777);
    assert_eq!(r.body["temperature"], 1.0, "Anthropic's range ends at 1");
    assert!(r.body["system"]
        .as_str()
        .unwrap()
        .starts_with("You are the code reviewer"));
    assert_eq!(
        r.body["messages"],
        json!([{ "role": "user", "content": "Review the change" }])
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_and_a_400_is_fatal() {
    let mut limited = reply(429, r#"{"error": {"message": "slow down"}}"#);
    limited.headers = "retry-after: 1\r\n".into();
    let (base, seen) = model_server(vec![
        limited,
        reply(500, r#"{"error": {"message": "internal"}}"#),
        openai_reply(CODER_JSON),
    ])
    .await;
    let text = r#"workflow w {
        agent coding { kind = "llm", role = "coder", retry = 3, backoff = fixed(10ms) }
        phase p { task implement on coding { prompt = "go" } }
    }"#;
    let cfg = openai_at(&base);
    let ran = run_with(text, cfg, Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    let t = ran.state.task("implement").unwrap();
    assert_eq!(t.status, TaskStatus::Completed);
    assert_eq!(t.attempts, 3);
    assert_eq!(seen.lock().unwrap().len(), 3);
    let delays: Vec<u64> = ran
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::RetryScheduled { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays[0], 1000, "Retry-After: 1 outweighs the 10ms backoff");
    let errors: Vec<ErrorCode> = ran
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AttemptFinished { error: Some(e), .. } => Some(e.code),
            _ => None,
        })
        .collect();
    assert_eq!(errors, vec![ErrorCode::RateLimited, ErrorCode::Http]);

    // 400: the request is wrong; another attempt cannot help.
    let (base, seen) = model_server(vec![reply(
        400,
        r#"{"error": {"message": "max_tokens is too large"}}"#,
    )])
    .await;
    let cfg = openai_at(&base);
    let ran = run_with(text, cfg, Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    let t = ran.state.task("implement").unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    let e = t.error.as_ref().unwrap();
    assert_eq!(e.code, ErrorCode::Http);
    assert!(!e.retryable);
    assert!(
        e.message.contains("400") && e.message.contains("max_tokens is too large"),
        "{}",
        e.message
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(ran.state.status(), RunStatus::Failed);
}

#[tokio::test]
async fn a_reply_that_is_not_json_gets_one_corrective_turn() {
    let (base, seen) = model_server(vec![
        openai_reply("Sure! Here is the code you asked for."),
        openai_reply(CODER_JSON),
    ])
    .await;
    let text = r#"workflow w {
        agent coding { kind = "llm", role = "coder" }
        phase p { task implement on coding { prompt = "go" } }
    }"#;
    let cfg = openai_at(&base);
    let ran = run_with(text, cfg, Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    let t = ran.state.task("implement").unwrap();
    assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
    assert_eq!(t.attempts, 1, "the corrective turn is part of the attempt");
    assert_eq!(ran.state.usage.calls, 2, "both calls are counted");
    let seen = seen.lock().unwrap().clone();
    let messages = seen[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(
        messages[2]["content"],
        "Sure! Here is the code you asked for."
    );
    let correction = messages[3]["content"].as_str().unwrap();
    assert!(
        correction.contains("not valid JSON") && correction.contains("only the JSON object"),
        "{correction}"
    );
}

#[tokio::test]
async fn two_unusable_replies_fail_the_task_as_invalid_output() {
    // Valid JSON, wrong shape: the path leaves the workspace.
    let evil = r#"{"files": [{"path": "../../etc/evil", "content": "x"}], "summary": "s"}"#;
    let (base, seen) = model_server(vec![openai_reply(evil)]).await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let text = r#"workflow w {
        agent coding { kind = "llm", role = "coder", retry = 3, backoff = fixed(10ms) }
        phase p { task implement on coding { prompt = "go" } }
    }"#;
    let cfg = openai_at(&base);
    let ran = run_with(text, cfg, Arc::new(MemoryStore::new()), Some(&work))
        .await
        .unwrap();
    let t = ran.state.task("implement").unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    let e = t.error.as_ref().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidOutput);
    assert!(e.message.contains("leaves the workspace"), "{}", e.message);
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "one corrective turn, and INVALID_OUTPUT is not retried"
    );
    assert!(std::fs::read_dir(&work).unwrap().next().is_none());
    assert!(!dir.path().join("etc/evil").exists());
    assert!(!dir.path().parent().unwrap().join("etc/evil").exists());
}

#[tokio::test]
async fn a_provider_that_hangs_times_out_and_is_retried() {
    let mut slow = openai_reply(CODER_JSON);
    slow.delay = Duration::from_secs(30);
    let (base, seen) = model_server(vec![slow]).await;
    let mut p = provider(ProviderKind::Openai, &format!("{base}/v1"), None);
    p.timeout = Duration::from_millis(300);
    let text = r#"workflow w {
        on_escalation = "skip"
        agent coding { kind = "llm", role = "coder", retry = 1, backoff = fixed(10ms) }
        phase p { task implement on coding { prompt = "go" } gate { true } }
    }"#;
    let ran = run_with(
        text,
        config(vec![("default", p)]),
        Arc::new(MemoryStore::new()),
        None,
    )
    .await
    .unwrap();
    let t = ran.state.task("implement").unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.error.as_ref().unwrap().code, ErrorCode::Timeout);
    assert_eq!(t.attempts, 2);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn malformed_provider_bodies_are_errors_not_panics() {
    let (base, _) = model_server(vec![
        reply(200, "<html>proxy error</html>"),
        reply(200, r#"{"choices": []}"#),
        reply(200, r#"{"choices": [{"message": {"content": null}}]}"#),
    ])
    .await;
    let text = r#"workflow w {
        on_escalation = "skip"
        agent coding { kind = "llm", role = "coder", retry = 2, backoff = fixed(10ms) }
        phase p { task implement on coding { prompt = "go" } gate { true } }
    }"#;
    let cfg = openai_at(&base);
    let ran = run_with(text, cfg, Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    let messages: Vec<String> = ran
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AttemptFinished { error: Some(e), .. } => Some(e.message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages[0].contains("not JSON") && messages[0].contains("proxy error"));
    assert!(messages[1].contains("no `choices`") || messages[1].contains("choices"));
    assert!(messages[2].contains("message.content"));
}

#[tokio::test]
async fn an_unset_key_variable_or_provider_is_a_clear_error_before_the_run() {
    let text = r#"workflow w {
        agent coding { kind = "llm", role = "coder" }
        phase p { task implement on coding { prompt = "go" } }
    }"#;
    let cfg = config(vec![(
        "default",
        provider(
            ProviderKind::Openai,
            "http://127.0.0.1:9/v1",
            Some("LLM_TEST_NEVER_SET_KEY"),
        ),
    )]);
    let e = run_with(text, cfg, Arc::new(MemoryStore::new()), None)
        .await
        .err()
        .unwrap();
    assert!(
        e.contains("LLM_TEST_NEVER_SET_KEY") && e.contains("not set"),
        "{e}"
    );
    let e = run_with(text, config(vec![]), Arc::new(MemoryStore::new()), None)
        .await
        .err()
        .unwrap();
    assert!(
        e.contains("provider `default` is not configured") && e.contains("conductor.toml"),
        "{e}"
    );
}

#[tokio::test]
async fn a_recorded_run_replays_offline_and_a_changed_prompt_is_a_clear_miss() {
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("cassette.json");
    let text = r#"workflow w {
        agent coding { kind = "llm", role = "coder" }
        phase p { task implement on coding { prompt = "Implement {{ params.what }}" } }
        param what = "hello"
    }"#;
    let mut map = SourceMap::new();
    let wf = check_source(&mut map, "t.cond", Path::new("t.cond"), text)
        .workflow
        .unwrap();
    let plan = conductor::plan::plan(&wf).unwrap();
    let mut options = RunOptions::new(Arc::new(MemoryStore::new()));
    options.config = openai_at(&base);
    options.recorder = Some(Arc::new(
        conductor::agents::llm::Recorder::create(&cassette).unwrap(),
    ));
    let recorded = run(Arc::new(wf), Arc::new(plan), options).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&cassette).unwrap()).unwrap();
    assert_eq!(saved["exchanges"][0]["task"], "implement");
    assert_eq!(saved["exchanges"][0]["role"], "coder");

    // Replay: the same output, no server asked.
    let mut replay = provider(ProviderKind::Replay, "", None);
    replay.cassette = Some(cassette.clone());
    let ran = run_with(
        text,
        config(vec![("default", replay.clone())]),
        Arc::new(MemoryStore::new()),
        None,
    )
    .await
    .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1, "replay asks nobody");
    assert_eq!(
        ran.state.task("implement").unwrap().output,
        recorded.task("implement").unwrap().output
    );
    assert_eq!(ran.state.usage.input_tokens, 120);
    assert_eq!(ran.state.usage.usd, conductor::model::Usd::ZERO);
    assert_eq!(ran.state.usage.cost_text(), "no cost (replayed)");
    assert_eq!(ran.state.usage.spend(), conductor::model::Spend::default());

    // A different prompt is not in the cassette.
    let changed = text.replace("\"hello\"", "\"goodbye\"");
    let ran = run_with(
        &changed,
        config(vec![("default", replay)]),
        Arc::new(MemoryStore::new()),
        None,
    )
    .await
    .unwrap();
    let e = ran.state.task("implement").unwrap().error.clone().unwrap();
    assert_eq!(e.code, ErrorCode::ReplayMiss);
    assert!(
        e.message.contains("task `implement`")
            && e.message.contains("role coder")
            && e.message.contains("Implement goodbye"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn cache_true_reuses_an_identical_dispatch_across_runs() {
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let text = r#"workflow w {
        agent coding { kind = "llm", role = "coder" }
        phase p {
            task cached on coding { prompt = "same every time", cache = true }
            task fresh on coding { prompt = "asked every time" }
        }
    }"#;
    let cfg = openai_at(&base);
    let dir = tempfile::tempdir().unwrap();
    let first = run_with(text, cfg.clone(), store.clone(), None)
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
    let second = run_with(text, cfg, store.clone(), Some(dir.path()))
        .await
        .unwrap();
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "only the uncached task asked the model again"
    );
    assert_eq!(
        second.state.task("cached").unwrap().output,
        first.state.task("cached").unwrap().output
    );
    let cached_flags: HashMap<String, bool> = second
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AttemptFinished { task, cached, .. } => Some((task.to_string(), *cached)),
            _ => None,
        })
        .collect();
    assert!(cached_flags["cached"]);
    assert!(!cached_flags["fresh"]);
    assert_eq!(second.state.usage.cached, 1);
    assert_eq!(second.state.usage.calls, 1);
    // A cached output's files are still written into the new run's workspace.
    assert!(dir.path().join("src/hello.py").exists());
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_never_reach_the_store_the_cassette_the_workspace_or_the_output() {
    const OPENAI_KEY: &str = "sk-planted-openai-7f3a9c2e51b04d68";
    const ANTHROPIC_KEY: &str = "sk-planted-anthropic-0c8e2b7a9d41f356";
    // The servers echo the key back, as a 401 message or a confused model might.
    let echo = format!(
        r#"{{"files": [{{"path": "key.txt", "content": "{OPENAI_KEY}"}}], "summary": "the key is {OPENAI_KEY}"}}"#
    );
    let (openai, openai_seen) = model_server(vec![
        reply(
            500,
            format!(r#"{{"error": {{"message": "Incorrect API key provided: {OPENAI_KEY}"}}}}"#),
        ),
        openai_reply(&echo),
    ])
    .await;
    let (anthropic, anthropic_seen) = model_server(vec![reply(
        401,
        format!(r#"{{"error": {{"message": "invalid x-api-key {ANTHROPIC_KEY}"}}}}"#),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("conductor.toml"),
        format!(
            "[providers.default]\nkind = \"openai\"\nbase_url = \"{openai}/v1\"\nmodel = \"m\"\n\
             api_key_env = \"PLANTED_OPENAI_KEY\"\n\
             [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{anthropic}\"\nmodel = \"c\"\n\
             api_key_env = \"PLANTED_ANTHROPIC_KEY\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("wf.cond"),
        r#"workflow secrets {
            on_escalation = "skip"
            agent coding { kind = "llm", role = "coder", retry = 2, backoff = fixed(10ms) }
            agent review { kind = "llm", role = "reviewer", provider = "claude" }
            agent snoop { kind = "shell", command = ["env"] }
            phase p {
                task implement on coding { prompt = "write it" }
                task check on review { prompt = "review it" }
                task look on snoop
                gate { true }
            }
        }"#,
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_conductor");
    let mut outputs = Vec::new();
    for json in [false, true] {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.current_dir(dir.path())
            .env("PLANTED_OPENAI_KEY", OPENAI_KEY)
            .env("PLANTED_ANTHROPIC_KEY", ANTHROPIC_KEY)
            .env("CONDUCTOR_LOG", "trace")
            .args(["run", "wf.cond", "--record", "cassette.json"]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().await.unwrap();
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
        outputs.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    // The keys were used...
    let seen = openai_seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        3,
        "a 500 and a success in the first run, a success in the second"
    );
    assert!(seen
        .iter()
        .all(|s| s.headers["authorization"] == format!("Bearer {OPENAI_KEY}")));
    assert_eq!(
        anthropic_seen.lock().unwrap()[0].headers["x-api-key"],
        ANTHROPIC_KEY
    );
    assert!(
        outputs[0].contains("[redacted]"),
        "the echoed key shows as [redacted]: {}",
        outputs[0]
    );
    // ...and appear nowhere: not in stdout or stderr (trace logging on), not in any file the
    // runs left — the SQLite store and its WAL, the workspace, the cassette — not even through
    // a shell task printing its environment (it ran: its output is in the --json lines).
    assert!(outputs[2].contains("PATH="), "{}", outputs[2]);
    for (i, text) in outputs.iter().enumerate() {
        assert!(
            !text.contains(OPENAI_KEY) && !text.contains(ANTHROPIC_KEY),
            "output {i}: {text}"
        );
    }
    let files = files_under(dir.path());
    assert!(files.iter().any(|f| f.ends_with("conductor.db")));
    assert!(files.iter().any(|f| f.ends_with("key.txt")), "{files:?}");
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(OPENAI_KEY) && !text.contains(ANTHROPIC_KEY),
            "the key is in {}",
            f.display()
        );
    }
}

#[tokio::test]
async fn files_are_never_written_through_a_symbolic_link_in_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    // What an earlier shell task could leave behind.
    std::os::unix::fs::symlink(&outside, work.join("link")).unwrap();
    let text = r#"workflow w {
        agent writer { kind = "mock", output = { files = [{ path = "link/planted.txt", content = "x" }], summary = "" } }
        phase p { task write on writer }
    }"#;
    let ran = run_with(
        text,
        config(vec![]),
        Arc::new(MemoryStore::new()),
        Some(&work),
    )
    .await
    .unwrap();
    let t = ran.state.task("write").unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    let e = t.error.as_ref().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidOutput);
    assert!(e.message.contains("symbolic link"), "{}", e.message);
    assert!(!outside.join("planted.txt").exists());
}

#[tokio::test]
async fn a_dry_run_neither_reads_nor_fills_the_response_cache() {
    let (base, seen) = model_server(vec![openai_reply(CODER_JSON)]).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let text = r#"workflow w {
        agent coding { kind = "llm", role = "coder" }
        phase p { task t on coding { prompt = "go", cache = true } }
    }"#;
    let mut map = SourceMap::new();
    let wf = Arc::new(
        check_source(&mut map, "t.cond", Path::new("t.cond"), text)
            .workflow
            .unwrap(),
    );
    let plan = Arc::new(conductor::plan::plan(&wf).unwrap());
    let cfg = openai_at(&base);
    let mut options = RunOptions::new(store.clone());
    options.dry_run = true;
    options.config = cfg.clone();
    let dry = run(wf.clone(), plan.clone(), options).await.unwrap();
    assert_eq!(dry.task("t").unwrap().output["summary"], "dry run");
    let mut options = RunOptions::new(store.clone());
    options.config = cfg;
    let real = run(wf, plan, options).await.unwrap();
    assert_eq!(real.task("t").unwrap().output["summary"], "prints hello");
    assert_eq!(real.usage.cached, 0);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_output_naming_a_path_outside_the_workspace_fails_whatever_agent_made_it() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let text = r#"workflow w {
        agent writer { kind = "mock", output = { files = [{ path = "ok.txt", content = "fine" }, { path = "../escaped.txt", content = "x" }] } }
        phase p { task write on writer }
    }"#;
    let ran = run_with(
        text,
        config(vec![]),
        Arc::new(MemoryStore::new()),
        Some(&work),
    )
    .await
    .unwrap();
    let e = ran.state.task("write").unwrap().error.clone().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidOutput);
    assert!(e.message.contains("leaves the workspace"), "{}", e.message);
    assert!(!dir.path().join("escaped.txt").exists());
}

#[tokio::test]
async fn tokens_of_an_attempt_the_run_stopped_are_still_counted() {
    let mut hang = openai_reply(CODER_JSON);
    hang.delay = Duration::from_secs(30);
    // The first reply needs a corrective turn; the second never comes before the run's timeout.
    let (base, seen) = model_server(vec![openai_reply("not json"), hang]).await;
    let text = r#"workflow w {
        timeout = 1s
        agent coding { kind = "llm", role = "coder" }
        phase p { task implement on coding { prompt = "go" } }
    }"#;
    let cfg = openai_at(&base);
    let ran = run_with(text, cfg, Arc::new(MemoryStore::new()), None)
        .await
        .unwrap();
    assert_eq!(ran.state.status(), RunStatus::Cancelled);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(
        ran.state.usage.calls, 1,
        "the first call was made and paid for"
    );
    assert_eq!(ran.state.usage.input_tokens, 120);
}

#[tokio::test]
async fn a_dry_run_resumed_stays_a_dry_run() {
    // No provider is configured: only a dry run can run the llm agent.
    let text = r#"workflow w {
        on_escalation = "ask"
        agent coding { kind = "llm", role = "coder" }
        agent bad { kind = "mock", fail_first = 1, error = "fatal" }
        phase p { task a on bad  task b on coding after a { prompt = "go" } }
    }"#;
    let mut map = SourceMap::new();
    let wf = Arc::new(
        check_source(&mut map, "t.cond", Path::new("t.cond"), text)
            .workflow
            .unwrap(),
    );
    let plan = Arc::new(conductor::plan::plan(&wf).unwrap());
    let store = Arc::new(MemoryStore::new());
    let mut options = RunOptions::new(store.clone());
    options.dry_run = true;
    let id = options.run_id.clone();
    let waiting = run(wf.clone(), plan.clone(), options).await.unwrap();
    assert_eq!(waiting.status(), RunStatus::Waiting);
    let events = store.events(&id).unwrap();
    let resumed = conductor::exec::resume(
        wf,
        plan,
        RunOptions::new(store.clone()),
        events,
        conductor::exec::ResumeRequest {
            decisions: vec![("a".into(), conductor::model::Decision::Retry)],
            ..Default::default()
        },
    )
    .await
    .expect("resumed as a dry run, without a provider");
    assert_eq!(resumed.status(), RunStatus::Completed);
    assert_eq!(resumed.task("b").unwrap().output["summary"], "dry run");
}
