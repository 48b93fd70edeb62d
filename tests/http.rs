//! http agents against a real HTTP server on 127.0.0.1 started by the test: the request as
//! rendered, JSON and text responses, and the error classes (429 with Retry-After and 503 are
//! retried, 400 is fatal, a refused connection is retryable).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use conductor::exec::{run, RunOptions};
use conductor::model::{ErrorCode, EventKind, RunState, TaskStatus};
use conductor::store::{MemoryStore, Store};
use conductor::{check_source, SourceMap};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// A tiny HTTP/1.1 server: each path answers from a script of (status, extra header, body),
/// the last entry repeating; every request is recorded.
async fn server(
    routes: HashMap<&'static str, Vec<(u16, &'static str, &'static str)>>,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            let log = log.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                let Some(req) = crate::support::read_request(&mut sock).await else {
                    return;
                };
                let body = String::from_utf8_lossy(&req.body).to_string();
                let path = req.path.clone();
                log.lock().unwrap().push(Seen {
                    method: req.method,
                    path: path.clone(),
                    headers: req.headers,
                    body,
                });
                let n = {
                    let mut c = calls.lock().unwrap();
                    let e = c.entry(path.clone()).or_default();
                    *e += 1;
                    *e - 1
                };
                let script =
                    routes
                        .get(path.as_str())
                        .cloned()
                        .unwrap_or(vec![(404, "", "no such route")]);
                let (status, extra, body) = script[n.min(script.len() - 1)];
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(response.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

async fn run_text(text: &str) -> (RunState, Vec<conductor::model::Event>) {
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, "t.cond", Path::new("t.cond"), text);
    let wf = checked
        .workflow
        .unwrap_or_else(|| panic!("{}", conductor::diag::render(&map, &checked.diags, false)));
    let plan = conductor::plan::plan(&wf).unwrap();
    let store = Arc::new(MemoryStore::new());
    let options = RunOptions::new(store.clone());
    let id = options.run_id.clone();
    let state = run(Arc::new(wf), Arc::new(plan), options).await.unwrap();
    let events = store.events(&id).unwrap();
    (state, events)
}

#[tokio::test]
async fn the_rendered_request_is_sent_and_json_comes_back_as_output() {
    let (base, seen) = server(HashMap::from([
        (
            "/deploy",
            vec![(
                200,
                "content-type: application/json\r\n",
                r#"{"release": "v7", "ok": true}"#,
            )],
        ),
        ("/plain", vec![(200, "", "all good")]),
    ]))
    .await;
    let text = format!(
        r#"workflow w {{
            param env = "staging"
            agent api {{
                kind = "http", method = "post", url = "{base}/deploy"
                headers = {{ "Content-Type" = "application/json", "X-Env" = "{{{{ params.env }}}}" }}
                body = "{{\"env\": \"{{{{ params.env }}}}\"}}"
            }}
            agent page {{ kind = "http", url = "{base}/plain" }}
            phase p {{ task deploy on api  task look on page after deploy }}
        }}"#
    );
    let (state, _) = run_text(&text).await;
    assert_eq!(state.task("deploy").unwrap().status, TaskStatus::Completed);
    assert_eq!(state.task("deploy").unwrap().output["release"], "v7");
    assert_eq!(state.task("look").unwrap().output["body"], "all good");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/deploy");
    assert_eq!(seen[0].headers["x-env"], "staging");
    assert_eq!(seen[0].headers["content-type"], "application/json");
    assert_eq!(seen[0].body, r#"{"env": "staging"}"#);
    let run = &state.workflow_id;
    assert_eq!(seen[0].headers["conductor-run"], run.to_string());
    assert_eq!(seen[0].headers["conductor-task"], "deploy");
    assert_eq!(seen[0].headers["conductor-attempt"], "1");
    assert_eq!(
        seen[0].headers["idempotency-key"],
        format!("{run}/deploy/1")
    );
    assert_eq!(seen[1].method, "GET");
}

#[tokio::test]
async fn rate_limits_and_unavailability_are_retried_and_a_400_is_not() {
    let (base, seen) = server(HashMap::from([
        (
            "/limited",
            vec![(429, "retry-after: 1\r\n", "slow down"), (200, "", "{}")],
        ),
        (
            "/down",
            vec![(503, "", "maintenance"), (500, "", "oops"), (200, "", "{}")],
        ),
        ("/bad", vec![(400, "", "missing field `name`")]),
    ]))
    .await;
    let text = format!(
        r#"workflow w {{
            on_escalation = "skip"
            agent limited {{ kind = "http", url = "{base}/limited", retry = 2, backoff = fixed(10ms) }}
            agent down {{ kind = "http", url = "{base}/down", retry = 3, backoff = fixed(10ms) }}
            agent bad {{ kind = "http", url = "{base}/bad", retry = 3, backoff = fixed(10ms) }}
            phase p {{ task a on limited  task b on down  task c on bad  gate {{ true }} }}
        }}"#
    );
    let (state, events) = run_text(&text).await;
    assert_eq!(state.task("a").unwrap().status, TaskStatus::Completed);
    assert_eq!(state.task("a").unwrap().attempts, 2);
    let a_delay = events.iter().find_map(|e| match &e.kind {
        EventKind::RetryScheduled { task, delay_ms, .. } if &**task == "a" => Some(*delay_ms),
        _ => None,
    });
    assert_eq!(
        a_delay,
        Some(1000),
        "Retry-After: 1 outweighs the 10ms backoff"
    );
    assert_eq!(state.task("b").unwrap().status, TaskStatus::Completed);
    assert_eq!(state.task("b").unwrap().attempts, 3);
    // 400: fatal, not retried, escalated (skipped by on_escalation here).
    let c = state.task("c").unwrap();
    assert_eq!(c.status, TaskStatus::Skipped);
    assert_eq!(c.attempts, 1);
    let error = c.error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::Http);
    assert!(
        error.message.contains("400") && error.message.contains("missing field"),
        "{}",
        error.message
    );
    let bad_calls = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path == "/bad")
        .count();
    assert_eq!(bad_calls, 1);
}

#[tokio::test]
async fn a_listed_status_is_the_services_verdict_failed_at_once_and_not_escalated() {
    let (base, seen) = server(HashMap::from([
        ("/verdict", vec![(422, "", "deploy rejected: quota")]),
        ("/flaky", vec![(503, "", "maintenance"), (200, "", "{}")]),
    ]))
    .await;
    // `on_escalation = "abort"` would end the run if the 422 were escalated; a small breaker
    // would open if verdicts counted as errors.
    let text = format!(
        r#"workflow w {{
            on_escalation = "abort"
            agent verdict {{ kind = "http", url = "{base}/verdict", retry = 3, backoff = fixed(10ms),
                            fail_on_status = [409, 422], circuit_breaker = breaker(1, 30s) }}
            agent flaky {{ kind = "http", url = "{base}/flaky", retry = 3, backoff = fixed(10ms),
                          fail_on_status = [422] }}
            phase p {{ task a on verdict  task again on verdict after a  task b on flaky  gate {{ true }} }}
        }}"#
    );
    let (state, events) = run_text(&text).await;
    let a = state.task("a").unwrap();
    assert_eq!(a.status, TaskStatus::Failed);
    assert_eq!(a.attempts, 1, "a verdict is not retried");
    let error = a.error.clone().unwrap();
    assert!(error.failure, "{error:?}");
    assert!(error.message.contains("422"), "{}", error.message);
    // Its dependant is skipped, and nothing was dead-lettered or escalated.
    assert_eq!(state.task("again").unwrap().status, TaskStatus::Skipped);
    assert!(!events.iter().any(|e| matches!(
        e.kind,
        EventKind::DeadLettered { .. }
            | EventKind::Escalated { .. }
            | EventKind::BreakerChanged { .. }
    )));
    // A status not listed is still an error: the 503 is retried.
    assert_eq!(state.task("b").unwrap().status, TaskStatus::Completed);
    assert_eq!(state.task("b").unwrap().attempts, 2);
    let verdict_calls = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path == "/verdict")
        .count();
    assert_eq!(verdict_calls, 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_transient_error() {
    // Bind and drop, so the port is closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        r#"workflow w {{
            agent gone {{ kind = "http", url = "http://127.0.0.1:{port}/x", retry = 1, backoff = fixed(10ms) }}
            phase p {{ task a on gone  gate {{ true }} }}
        }}"#
    );
    let (state, _) = run_text(&text).await;
    let a = state.task("a").unwrap();
    assert_eq!(a.status, TaskStatus::Failed);
    assert_eq!(a.attempts, 2, "retried once, then dead-lettered");
    let error = a.error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::Transient);
    assert!(
        error.message.contains(&format!("127.0.0.1:{port}")),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_body_past_the_limit_is_refused_even_without_a_length() {
    // An HTTP/1.0-style answer: no Content-Length, the body ends when the connection closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.0 200 OK\r\nconnection: close\r\n\r\n")
                    .await;
                let chunk = vec![b'x'; 1 << 20];
                for _ in 0..11 {
                    if sock.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let text = format!(
        r#"workflow w {{
            on_escalation = "skip"
            agent big {{ kind = "http", url = "http://{addr}/big" }}
            phase p {{ task a on big  gate {{ true }} }}
        }}"#
    );
    let (state, _) = run_text(&text).await;
    let a = state.task("a").unwrap();
    let error = a.error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::InvalidOutput);
    assert!(
        error.message.contains("larger than 10 MiB"),
        "{}",
        error.message
    );
}
