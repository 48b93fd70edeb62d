//! `conductor serve` as a user runs it: a real server process on 127.0.0.1, real HTTP, a
//! real SQLite store written by real `conductor run` processes. The page itself is tested in
//! Chromium by `tests/browser` (see `browser.rs`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const OPS: &str = "tests/fixtures/serve/ops.cond";
const LOOP: &str = "tests/fixtures/serve/loop.cond";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn conductor(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
    c.current_dir(dir)
        .env("CONDUCTOR_STORE", dir.join("db"))
        .env_remove("CONDUCTOR_TOKEN")
        .stdin(Stdio::null());
    c
}

/// Runs a workflow to where it stops; returns its id.
fn run(dir: &Path, file: &str) -> String {
    let out = conductor(dir)
        .args(["run", "--json"])
        .arg(fixture(file))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    last["workflow_id"].as_str().unwrap().to_string()
}

/// A `conductor serve` process, stopped when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = conductor(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--user", "tester"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Server { child, port }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, &[], "")
    }

    pub fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// A POST as the dashboard's page sends it.
    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        let origin = self.origin();
        self.request(
            "POST",
            path,
            &[("Origin", &origin), ("Content-Type", "application/json")],
            body,
        )
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: 127.0.0.1:{}\r\n", self.port));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        (status, body)
    }

    /// Waits until `GET /api/runs` shows the run with this status.
    pub fn wait_status(&self, run: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let runs = self.json("/api/runs");
            let now = runs
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"] == run)
                .map(|r| r["status"].as_str().unwrap_or("").to_string());
            if now.as_deref() == Some(status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "run {run} is {now:?}, not {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

fn lines_json(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_api_returns_what_the_commands_json_outputs_return() {
    let dir = tempfile::tempdir().unwrap();
    let id = run(dir.path(), OPS);
    let server = Server::start(dir.path(), &[]);
    // `show --json`
    let out = conductor(dir.path())
        .args(["show", &id, "--json"])
        .output()
        .unwrap();
    let show: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(server.json(&format!("/api/runs/{id}/state")), show);
    // `events`
    let out = conductor(dir.path())
        .args(["events", &id])
        .output()
        .unwrap();
    let events = Value::Array(lines_json(&out.stdout));
    assert_eq!(server.json(&format!("/api/runs/{id}/events")), events);
    // `dlq list --json`
    let out = conductor(dir.path())
        .args(["dlq", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        server.json("/api/dlq"),
        Value::Array(lines_json(&out.stdout))
    );
    // `runs --json`, with what needs a person
    let runs = server.json("/api/runs?status=waiting");
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["id"], id.as_str());
    assert_eq!(runs[0]["waiting"], serde_json::json!(["fragile"]));
    assert_eq!(runs[0]["dead_letters"], 1);
    assert_eq!(
        server.json("/api/runs?status=completed"),
        serde_json::json!([])
    );
    let (status, body) = server.get("/api/runs?status=nope");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("use one of pending"), "{body}");
    // `why`
    let why = server.json(&format!("/api/runs/{id}/tasks/flaky_step/why"));
    let text = why["lines"].to_string();
    assert!(text.contains("dead-lettered as"), "{text}");
    // A prefix of the id, as the commands take it; an unknown run or task is a 404 with
    // the commands' message.
    let board = server.json(&format!("/api/runs/{}/board", &id[..12]));
    assert_eq!(board["layout"]["source"], "workflow");
    assert_eq!(board["layout"]["nodes"].as_array().unwrap().len(), 7);
    let (status, body) = server.get("/api/runs/nosuchrun/state");
    assert_eq!(status, 404);
    assert!(body.contains("no run `nosuchrun`"), "{body}");
    let (status, body) = server.get(&format!("/api/runs/{id}/tasks/flaky_stp/why"));
    assert_eq!(status, 404);
    assert!(body.contains("did you mean `flaky_step`?"), "{body}");
}

#[test]
fn a_decision_and_a_dead_letter_retry_change_the_run_as_the_commands_would() {
    let dir = tempfile::tempdir().unwrap();
    let id = run(dir.path(), OPS);
    let server = Server::start(dir.path(), &[]);
    // Not waiting: refused with the command's message, nothing started.
    let (status, body) = server.post(
        &format!("/api/runs/{id}/decide"),
        r#"{"task":"prepare","decision":"retry"}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("is not waiting for a decision"), "{body}");
    let (status, body) = server.post(
        &format!("/api/runs/{id}/decide"),
        r#"{"task":"fragile","decision":"maybe"}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.post(
        &format!("/api/runs/{id}/decide"),
        r#"{"task":"fragile","decision":"retry"}"#,
    );
    assert_eq!(status, 202, "{body}");
    // The dead-lettered task's dependent was skipped: the gate fails the run.
    server.wait_status(&id, "failed");
    let entry = server.json("/api/dlq")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = server.post(&format!("/api/dlq/{entry}/retry"), "");
    assert_eq!(status, 202, "{body}");
    server.wait_status(&id, "completed");
    // The log says who decided, as `resume --decide` and `dlq retry` record it.
    let out = conductor(dir.path())
        .args(["events", &id])
        .output()
        .unwrap();
    let decided: Vec<String> = lines_json(&out.stdout)
        .into_iter()
        .filter(|e| e["event"] == "decided")
        .map(|e| format!("{} {} {}", e["task"], e["decision"], e["by"]))
        .collect();
    assert_eq!(
        decided[0], r#""fragile" "retry" "dashboard:tester (conductor resume --decide)""#,
        "{decided:?}"
    );
    assert!(
        decided[1].starts_with(&format!(
            r#""flaky_step" "retry" "conductor dlq retry {entry} by dashboard:tester"#
        )),
        "{decided:?}"
    );
    assert_eq!(server.json("/api/dlq"), serde_json::json!([]));
    let jobs = server.json("/api/jobs");
    assert_eq!(jobs[1]["state"], "completed", "{jobs}");
}

#[test]
fn an_approval_is_asked_with_its_buttons_and_approved_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let id = run(dir.path(), "tests/fixtures/serve/release.cond");
    let server = Server::start(dir.path(), &[]);
    let questions = server.json("/api/decisions");
    let q = &questions.as_array().unwrap()[0];
    assert_eq!(q["kind"], "approval", "{questions}");
    assert_eq!(q["message"], "Release 2.1.0?");
    assert_eq!(q["actions"], json!(["approve", "reject", "skip", "abort"]));
    // Retry is an escalation's answer, refused as `resume --decide` refuses it.
    let (status, body) = server.post(
        &format!("/api/runs/{id}/decide"),
        r#"{"task":"sign_off","decision":"retry"}"#,
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("approve, reject, skip or abort"), "{body}");
    let (status, body) = server.post(
        &format!("/api/runs/{id}/decide"),
        r#"{"task":"sign_off","decision":"approve","reason":"notes read"}"#,
    );
    assert_eq!(status, 202, "{body}");
    server.wait_status(&id, "completed");
    let out = conductor(dir.path())
        .args(["events", &id])
        .output()
        .unwrap();
    let decided: Vec<Value> = lines_json(&out.stdout)
        .into_iter()
        .filter(|e| e["event"] == "decided")
        .collect();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["decision"], "approve");
    assert_eq!(decided[0]["reason"], "notes read");
    assert_eq!(
        decided[0]["by"],
        "dashboard:tester (conductor resume --decide)"
    );
}

#[test]
fn dropping_a_dead_letter_removes_it_from_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), OPS);
    let server = Server::start(dir.path(), &[]);
    let entry = server.json("/api/dlq")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = server.post(&format!("/api/dlq/{entry}/drop"), "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.json("/api/dlq"), serde_json::json!([]));
    let (status, body) = server.post(&format!("/api/dlq/{entry}/drop"), "");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no dead letter"), "{body}");
}

#[test]
fn actions_need_the_token_and_the_dashboards_own_origin() {
    let dir = tempfile::tempdir().unwrap();
    let id = run(dir.path(), OPS);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let server = Server::start(dir.path(), &["--token-file", token_file.to_str().unwrap()]);
    let (status, _) = server.get("/api/runs");
    assert_eq!(status, 401);
    let (status, page) = server.get("/");
    assert_eq!(status, 200, "the page loads and asks for the token");
    assert!(page.contains("app.js"));
    let auth = [("x-conductor-token", "s3cret")];
    let (status, _) = server.request("GET", "/api/runs", &auth, "");
    assert_eq!(status, 200);
    let (status, _) = server.request("GET", "/api/runs?token=s3cret", &[], "");
    assert_eq!(status, 200, "the event stream sends the token in the query");
    // A page on another site, even with the token, may not act.
    let path = format!("/api/runs/{id}/decide");
    let body = r#"{"task":"fragile","decision":"skip"}"#;
    let json = ("Content-Type", "application/json");
    let (status, text) = server.request(
        "POST",
        &path,
        &[auth[0], json, ("Origin", "http://evil.example")],
        body,
    );
    assert_eq!(status, 403, "{text}");
    let (status, _) = server.request("POST", &path, &[json], body);
    assert_eq!(status, 401);
    let out = conductor(dir.path())
        .args(["show", &id, "--json"])
        .output()
        .unwrap();
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        state["status"], "waiting",
        "the refused requests changed nothing"
    );
}

#[test]
fn a_reachable_address_needs_a_token_and_a_rebound_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), OPS);
    let out = conductor(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("give `--token`"), "{stderr}");
    let server = Server::start(dir.path(), &[]);
    let (status, body) = server.request("GET", "/api/runs", &[("Host", "evil.example:80")], "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("loopback name"), "{body}");
    let (status, _) = server.request("GET", "/api/runs", &[("Host", "localhost:1")], "");
    assert_eq!(status, 200);
}

/// Reads server-sent events from a stream until `stop` says so; returns (id, data) pairs.
fn read_sse(
    port: u16,
    path: &str,
    last_id: Option<u64>,
    mut stop: impl FnMut(&[(u64, Value)]) -> bool,
) -> Vec<(u64, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let extra = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{extra}\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut out = Vec::new();
    let mut id = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            return out;
        }
        let l = line.trim_end();
        if let Some(v) = l.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = l.strip_prefix("data: ") {
            out.push((id.unwrap(), serde_json::from_str(v).unwrap()));
            if stop(&out) {
                return out;
            }
        }
    }
}

fn seqs(messages: &[(u64, Value)]) -> Vec<u64> {
    messages
        .iter()
        .flat_map(|(_, m)| m["events"].as_array().unwrap().clone())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_event_stream_resumes_after_the_last_event_id_without_loss_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let id = run(dir.path(), LOOP);
    let server = Server::start(dir.path(), &[]);
    let last = server.json(&format!("/api/runs/{id}/state"));
    assert_eq!(last["status"], "completed");
    let total = server
        .json(&format!("/api/runs/{id}/events"))
        .as_array()
        .unwrap()
        .len() as u64;
    let path = format!("/api/runs/{id}/stream");
    let all = read_sse(server.port, &path, None, |m| seqs(m).last() == Some(&total));
    assert_eq!(seqs(&all), (1..=total).collect::<Vec<_>>());
    // Each message's id is its last event's seq.
    for (id, m) in &all {
        assert_eq!(
            Some(*id),
            m["events"]
                .as_array()
                .unwrap()
                .last()
                .and_then(|e| e["seq"].as_u64())
        );
    }
    // A browser that reconnects after event 7 gets 8 onwards.
    let rest = read_sse(server.port, &path, Some(7), |m| {
        seqs(m).last() == Some(&total)
    });
    assert_eq!(seqs(&rest), (8..=total).collect::<Vec<_>>());
    let rest = read_sse(server.port, &format!("{path}?after=12"), None, |m| {
        seqs(m).last() == Some(&total)
    });
    assert_eq!(seqs(&rest), (13..=total).collect::<Vec<_>>());
    // Rows follow the statuses: every task completed at the end.
    let done = all.last().unwrap().1["run"]["status"].clone();
    assert_eq!(done, "completed");
}

#[test]
fn the_stream_follows_a_run_another_process_drives() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), OPS); // the store exists before the server
    let server = Server::start(dir.path(), &[]);
    let mut child = conductor(dir.path())
        .args(["run"])
        .arg(fixture(LOOP))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let runs = server.json("/api/runs?workflow=looping");
        if let Some(r) = runs.as_array().unwrap().first() {
            break r["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    let path = format!("/api/runs/{id}/stream");
    let got = read_sse(server.port, &path, None, |m| {
        m.last()
            .is_some_and(|(_, m)| m["run"]["status"] == "completed")
    });
    let _ = child.wait();
    let s = seqs(&got);
    assert_eq!(s, (1..=*s.last().unwrap()).collect::<Vec<_>>());
    assert!(
        got.len() > 1,
        "the run arrived in several messages while it ran"
    );
    let rows: Vec<&Value> = got
        .iter()
        .flat_map(|(_, m)| m["tasks"].as_array().unwrap())
        .filter(|r| r["name"] == "wait_a_bit")
        .collect();
    assert!(rows.iter().any(|r| r["status"] == "running"), "{rows:?}");
}

#[test]
fn metrics_are_scraped_from_the_server_and_from_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let id = run(dir.path(), OPS);
    let server = Server::start(dir.path(), &[]);
    let (status, body) = server.post(
        &format!("/api/runs/{id}/decide"),
        r#"{"task":"fragile","decision":"retry"}"#,
    );
    assert_eq!(status, 202, "{body}");
    server.wait_status(&id, "failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) = server.get("/metrics");
        assert_eq!(status, 200);
        if text.contains("conductor_runs_total{workflow=\"ops\",status=\"failed\"} 1") {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for expected in [
        "conductor_attempts_total{pool=\"brittle\",outcome=\"ok\"} 1",
        "conductor_decisions_total{decision=\"retry\"} 1",
        "conductor_runs{status=\"failed\"} 1",
        "conductor_dead_letters_pending 1",
        "# TYPE conductor_attempt_duration_seconds histogram",
        "conductor_store_append_seconds_count",
    ] {
        assert!(text.contains(expected), "no `{expected}` in\n{text}");
    }
    assert!(!text.contains(&id), "a run id is a label");

    // `conductor run --metrics-listen`, scraped while the run runs.
    let mut child = conductor(dir.path())
        .args(["run", "--metrics-listen", "127.0.0.1:0"])
        .arg(fixture(LOOP))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .trim_end_matches("/metrics")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let scrape = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = scrape.get("/metrics");
        if text.contains("conductor_attempts_total{pool=\"m\",outcome=\"ok\"}") {
            assert!(
                text.contains("conductor_queue_wait_seconds_bucket{pool=\"slow\""),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
