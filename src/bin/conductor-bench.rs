//! Scheduling overhead of the executor, as the `conductor` binary runs it (no test-only tokio
//! features). Run with `cargo run --release --features bench --bin conductor-bench`
//! (`-- --quick` for 1k and 10k only).
//!
//! Targets (issue 5): ≤ 3 µs per task at 100,000 tasks for a chain and a fan-out with
//! zero-latency mock agents and the in-memory store, flat (±50%) from 1,000 to 100,000; the
//! makespan of 3 layers × 8 tasks × 50 ms on a pool of 8 within 8 ms of the ideal 150 ms; peak
//! memory for 100,000 tasks under 300 MB.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor::exec::{run, RunOptions};
use conductor::model::RunStatus;
use conductor::store::MemoryStore;
use conductor::workloads::{workflow, Shape};
use conductor::{check_source, SourceMap};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn compile(text: &str) -> (Arc<conductor::Workflow>, Arc<conductor::plan::Plan>) {
    let mut map = SourceMap::new();
    let wf = check_source(&mut map, "bench.cond", Path::new("bench.cond"), text)
        .workflow
        .expect("checks");
    let plan = conductor::plan::plan(&wf).expect("plans");
    (Arc::new(wf), Arc::new(plan))
}

fn run_once(rt: &tokio::runtime::Runtime, text: &str) -> Duration {
    run_on(rt, text, Arc::new(MemoryStore::new()))
}

fn run_on(
    rt: &tokio::runtime::Runtime,
    text: &str,
    store: Arc<dyn conductor::store::Store>,
) -> Duration {
    let (wf, plan) = compile(text);
    let n = wf.tasks.len();
    let options = RunOptions::new(store);
    let begun = Instant::now();
    let state = rt
        .block_on(async move { tokio::spawn(run(wf, plan, options)).await })
        .expect("joined")
        .expect("ran");
    let elapsed = begun.elapsed();
    assert_eq!(state.status(), RunStatus::Completed);
    assert_eq!(state.tasks.len(), n);
    elapsed
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `--memory SHAPE`: peak memory of compiling, then running, one 100,000-task workflow in a
/// fresh process (the high-water mark only grows, so each figure needs its own process).
fn memory(shape: Shape) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let text = workflow(shape, 100_000, 64);
    let (wf, plan) = compile(&text);
    drop(text);
    let after_compile = peak_rss_mb().unwrap_or(0.0);
    let options = RunOptions::new(Arc::new(MemoryStore::new()));
    let state = rt
        .block_on(async move { tokio::spawn(run(wf, plan, options)).await })
        .expect("joined")
        .expect("ran");
    assert_eq!(state.status(), RunStatus::Completed);
    println!(
        "{}: peak memory after compiling 100,000 tasks {after_compile:.0} MB, after running them {:.0} MB",
        shape.name(),
        peak_rss_mb().unwrap_or(0.0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--memory") {
        let shape = match args.get(i + 1).map(String::as_str) {
            Some("fan-out") => Shape::FanOut,
            _ => Shape::Chain,
        };
        memory(shape);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    scaling(&rt, quick);
    sqlite_fan_out(&rt);
    if !quick {
        memory_figures();
    }
    llm_figures(&rt, quick);
    makespan(&rt);
}

/// Time per task for a chain and a fan-out, from 1,000 tasks up.
fn scaling(rt: &tokio::runtime::Runtime, quick: bool) {
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    println!(
        "{:<8} {:>8} {:>12} {:>12}",
        "shape", "tasks", "run", "per task"
    );
    for shape in [Shape::Chain, Shape::FanOut] {
        for &n in sizes {
            let text = workflow(shape, n, 64);
            let runs = if n >= 100_000 { 3 } else { 7 };
            let mut times: Vec<Duration> = (0..runs).map(|_| run_once(rt, &text)).collect();
            times.sort();
            let median = times[times.len() / 2];
            println!(
                "{:<8} {:>8} {:>12.1?} {:>9.2} µs",
                shape.name(),
                n,
                median,
                median.as_secs_f64() * 1e6 / n as f64
            );
        }
    }
}

/// The durable store, side by side with memory: a 10,000-task fan-out.
fn sqlite_fan_out(rt: &tokio::runtime::Runtime) {
    let text = workflow(Shape::FanOut, 10_000, 64);
    let memory = {
        let mut t: Vec<Duration> = (0..5).map(|_| run_once(rt, &text)).collect();
        t.sort();
        t[2]
    };
    let mut sqlite_times = Vec::new();
    let mut size = 0u64;
    let mut events = 0usize;
    for _ in 0..5 {
        let dir = tempfile_dir();
        let path = dir.join("bench.db");
        let store = Arc::new(conductor::store::SqliteStore::open(&path).expect("store"));
        sqlite_times.push(run_on(rt, &text, store.clone()));
        let runs = conductor::store::Store::runs(store.as_ref()).expect("runs");
        events = conductor::store::Store::events(store.as_ref(), &runs[0].id)
            .expect("events")
            .len();
        drop(store);
        size = ["bench.db", "bench.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum();
        let _ = std::fs::remove_dir_all(&dir);
    }
    sqlite_times.sort();
    let sqlite = sqlite_times[2];
    println!(
        "fan-out 10000 with the SQLite store: {:.1?} ({:.1} µs/task, {:.0} events/s committed; memory store {:.1} µs/task); store file {:.1} MB for {events} events",
        sqlite,
        sqlite.as_secs_f64() * 1e6 / 10_000.0,
        events as f64 / sqlite.as_secs_f64(),
        memory.as_secs_f64() * 1e6 / 10_000.0,
        size as f64 / 1e6
    );
}

/// Peak memory for each shape, each figure in a process of its own.
fn memory_figures() {
    let exe = std::env::current_exe().expect("own path");
    for shape in ["chain", "fan-out"] {
        let out = std::process::Command::new(&exe)
            .args(["--memory", shape])
            .output()
            .expect("memory run");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// LLM agents answered from a cassette: role prompt, validation, usage, one artifact per
/// task stored and written into a workspace on disk.
fn llm_figures(rt: &tokio::runtime::Runtime, quick: bool) {
    for &n in if quick {
        &[1_000][..]
    } else {
        &[1_000, 10_000][..]
    } {
        let (in_store, _) = llm_replay(rt, n, false);
        let (on_disk, files) = llm_replay(rt, n, true);
        println!(
            "llm replay fan-out {n}, pool of 8, one 200-byte file each: {in_store:.1} µs/task \
             (artifacts in the store only), {on_disk:.1} µs/task with {files} files written to a \
             workspace (mostly the file system's file creation)"
        );
    }
}

/// Makespan: 3 layers of 8 tasks of 50 ms, a pool of 8 — ideal 150 ms.
fn makespan(rt: &tokio::runtime::Runtime) {
    let mut text = String::from(
        "workflow layers {\n agent m { kind = \"mock\", latency = 50ms, count = 8 }\n phase p {\n",
    );
    for layer in 0..3 {
        for i in 0..8 {
            if layer == 0 {
                text.push_str(&format!("  task l{layer}_{i} on m\n"));
            } else {
                let deps: Vec<String> = (0..8).map(|j| format!("l{}_{j}", layer - 1)).collect();
                text.push_str(&format!(
                    "  task l{layer}_{i} on m after {}\n",
                    deps.join(", ")
                ));
            }
        }
    }
    text.push_str(" }\n}\n");
    let mut spans: Vec<Duration> = (0..9).map(|_| run_once(rt, &text)).collect();
    spans.sort();
    println!(
        "makespan 3 layers × 8 tasks × 50 ms, count 8: median {:.1?} (ideal 150 ms), min {:.1?}, max {:.1?}",
        spans[spans.len() / 2],
        spans[0],
        spans[spans.len() - 1]
    );
}

/// Runs `n` coder tasks against a generated cassette; returns µs per task and files written.
fn llm_replay(rt: &tokio::runtime::Runtime, n: usize, workspace: bool) -> (f64, usize) {
    let dir = tempfile_dir();
    let cassette = dir.join("cassette.json");
    let text = llm_fixture(n, &cassette);
    let config = replay_config(&dir, &cassette);
    let (wf, plan) = compile(&text);
    let mut times = Vec::new();
    let mut files = 0;
    for round in 0..3 {
        let work = dir.join(format!("work{round}"));
        std::fs::create_dir_all(&work).expect("workspace");
        let mut options = RunOptions::new(Arc::new(MemoryStore::new()));
        options.config = Arc::new(config.clone());
        options.workspace = workspace.then(|| work.clone());
        let (wf, plan) = (wf.clone(), plan.clone());
        let begun = Instant::now();
        let state = rt
            .block_on(async move { tokio::spawn(run(wf, plan, options)).await })
            .expect("joined")
            .expect("ran");
        times.push(begun.elapsed());
        assert_eq!(state.status(), RunStatus::Completed, "{:?}", state.error);
        assert_eq!(state.usage.calls as usize, n);
        files = std::fs::read_dir(work.join("src")).map_or(0, |d| d.count());
    }
    let _ = std::fs::remove_dir_all(&dir);
    times.sort();
    (times[1].as_secs_f64() * 1e6 / n as f64, files)
}

/// A workflow of `n` coder tasks, and the cassette answering each with one file, saved at
/// `cassette`; returns the workflow's text.
fn llm_fixture(n: usize, cassette: &Path) -> String {
    use conductor::agents::llm::{roles, Cassette, ChatReply, ChatRequest, Exchange, Message};
    use conductor::check::ir::Role;
    let mut text = String::from(
        "workflow llm {\n agent coding { kind = \"llm\", role = \"coder\", count = 8 }\n phase p {\n",
    );
    let mut exchanges = Vec::with_capacity(n);
    let system = roles::system_prompt(Role::Coder);
    for i in 0..n {
        let prompt = format!("Write file number {i}.");
        text.push_str(&format!(
            "  task t{i} on coding {{ prompt = \"{prompt}\" }}\n"
        ));
        let request = ChatRequest {
            task: format!("t{i}"),
            role: "coder".into(),
            model: "bench".into(),
            system: system.clone(),
            messages: vec![Message::user(prompt)],
            temperature: None,
            max_tokens: 4096,
            schema: serde_json::Value::Null,
        };
        let reply = serde_json::json!({
            "files": [{ "path": format!("src/f{i}.txt"), "content": "x".repeat(200) }],
            "summary": "one file",
        });
        exchanges.push(Exchange {
            task: request.task.clone(),
            role: request.role.clone(),
            request_hash: request.hash(),
            request: serde_json::Value::Null,
            reply: ChatReply {
                model: "bench".into(),
                text: reply.to_string(),
                input_tokens: 300,
                output_tokens: 60,
                truncated: false,
            },
        });
    }
    text.push_str(" }\n}\n");
    Cassette {
        version: 1,
        exchanges,
    }
    .save(cassette)
    .expect("cassette");
    text
}

/// A configuration whose default provider replays `cassette`, as the environment sets it.
fn replay_config(dir: &Path, cassette: &Path) -> conductor::config::Config {
    conductor::config::Config::discover(
        None,
        &dir.join("wf.cond"),
        [
            (
                "CONDUCTOR_PROVIDERS_DEFAULT_KIND".to_string(),
                "replay".to_string(),
            ),
            (
                "CONDUCTOR_PROVIDERS_DEFAULT_CASSETTE".to_string(),
                cassette.display().to_string(),
            ),
        ],
    )
    .expect("config")
}

/// A fresh folder under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "conductor-bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
