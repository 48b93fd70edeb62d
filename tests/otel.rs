//! `--features otel`: `conductor run` exports the run's span tree over OTLP/HTTP (JSON) to a
//! receiver on 127.0.0.1 started by the test, set up only by `OTEL_EXPORTER_OTLP_*`; the
//! llm task's model is a server on 127.0.0.1 too.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

/// Answers every request with `reply` and keeps the bodies it was sent.
async fn server(reply: Value) -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (log, reply) = (log.clone(), reply.clone());
            tokio::spawn(async move {
                while let Some(req) = crate::support::read_request(&mut sock).await {
                    let body = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                    log.lock().unwrap().push((req.path, body));
                    let text = reply.to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if sock.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_exports_its_span_tree_with_genai_conventions() {
    let (model, _) = server(json!({
        "id": "c1", "object": "chat.completion", "model": "test-model",
        "choices": [{ "index": 0, "finish_reason": "stop",
            "message": { "role": "assistant", "content": "{\"severity\":\"ok\",\"summary\":\"a haiku\"}" } }],
        "usage": { "prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150 }
    }))
    .await;
    let (otlp, received) = server(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/serve/traced.cond");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_conductor"))
        .current_dir(dir.path())
        .args(["--store", "memory", "run"])
        .arg(&file)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("CONDUCTOR_PROVIDERS_DEFAULT_KIND", "openai")
        .env(
            "CONDUCTOR_PROVIDERS_DEFAULT_BASE_URL",
            format!("{model}/v1"),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let received = received.lock().unwrap().clone();
    assert!(
        received.iter().all(|(path, _)| path == "/v1/traces"),
        "{received:?}"
    );
    let spans: Vec<Value> = received
        .iter()
        .flat_map(|(_, body)| {
            body["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
        .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
        .collect();
    let named =
        |name: &str| -> Vec<&Value> { spans.iter().filter(|s| s["name"] == name).collect() };
    let root = named("invoke_workflow traced");
    assert_eq!(root.len(), 1, "{spans:#?}");
    let root = root[0];
    assert!(root["parentSpanId"].as_str().unwrap_or("").is_empty());
    let phases = [named("phase write"), named("phase check")];
    for p in &phases {
        assert_eq!(p.len(), 1);
        assert_eq!(p[0]["parentSpanId"], root["spanId"]);
        assert_eq!(p[0]["traceId"], root["traceId"]);
    }
    // Attempts under their phase: the retried task has two.
    let draft = named("invoke_agent writer");
    assert_eq!(draft.len(), 1);
    assert_eq!(draft[0]["parentSpanId"], phases[0][0]["spanId"]);
    let verify = named("invoke_agent flaky");
    assert_eq!(verify.len(), 2, "a failed attempt and its retry");
    assert!(
        verify.iter().any(|s| s["status"]["code"] == 2),
        "the failed one is an error"
    );
    // The model call, with its usage.
    let chat = named("chat test-model");
    assert_eq!(chat.len(), 1, "{spans:#?}");
    let chat = chat[0];
    assert_eq!(chat["parentSpanId"], draft[0]["spanId"]);
    assert_eq!(chat["kind"], 3, "CLIENT");
    assert_eq!(
        attr(chat, "gen_ai.operation.name").unwrap()["stringValue"],
        "chat"
    );
    assert_eq!(
        attr(chat, "gen_ai.provider.name").unwrap()["stringValue"],
        "default"
    );
    let tokens = |k: &str| attr(chat, k).unwrap()["intValue"].to_string();
    assert_eq!(tokens("gen_ai.usage.input_tokens").trim_matches('"'), "120");
    assert_eq!(tokens("gen_ai.usage.output_tokens").trim_matches('"'), "30");
    // Gate decisions as events of their phase.
    let events = phases[0][0]["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["name"] == "gate write"),
        "{events:?}"
    );
}
