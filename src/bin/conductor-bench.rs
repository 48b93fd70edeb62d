//! Conductor's performance figures, as one Markdown table (one section per group), each
//! target beside its figure. Run with `cargo run --release --features bench --bin
//! conductor-bench` (`-- --quick`: 1k and 10k only, no whole-process comparison). Progress
//! goes to stderr, the table to stdout.
//!
//! The executor runs as the `conductor` binary runs it: a multi-threaded tokio runtime, the
//! run spawned on it, the same allocator, no test-only tokio features. Every figure is a median
//! of several runs (the machine this was written on is a noisy 2-core VM).
//!
//! 1. scheduling cost per task, chain and fan-out, memory and SQLite stores;
//! 2. the templated fan-out (every task renders `{{ params.p }}`) against the plain one;
//! 3. compile time, and peak memory measured in fresh processes: this binary runs itself again
//!    with `--peak WORKLOAD N STAGE` and reads its own `VmHWM`;
//! 4. events per second committed to SQLite;
//! 5. the `conductor` binary as a whole process against `benches/asyncio_walk.py`;
//! 6. operations that must stay linear (diagnostics, artifacts, following a log, runs, gc).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor::exec::{run, Observer, RunOptions};
use conductor::model::{Changes, Event, RunId, RunState, RunStatus, Timestamp};
use conductor::plan::Plan;
use conductor::report::JsonLines;
use conductor::store::{Batch, MemoryStore, RunRecord, SqliteStore, Store};
use conductor::workloads::{for_each_fan_out, templated_fan_out, unknown_agents, workflow, Shape};
use conductor::{check_source, SourceMap, Workflow};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Instances of the mock pool every generated workflow runs on.
const POOL: u32 = 64;
/// Tasks of the whole-process comparison.
const WHOLE_N: usize = 20_000;
/// Runs of each side of the whole-process comparison.
const WHOLE_RUNS: usize = 9;
/// The events `events_after` reads back at the end of a log.
const TAIL: u64 = 100;
/// The largest ratio between per-item times at the largest and smallest sizes that still
/// counts as linear (a quadratic operation grows 100× from 1k to 100k).
const LINEAR_GROWTH: f64 = 2.0;

// ---------------------------------------------------------------------------------------------
// Workloads, compiling, running

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Chain,
    FanOut,
    /// The fan-out where every task renders `{{ params.p }}` into its input.
    Templated,
    /// The fan-out as one `for_each` task over an upstream list.
    ForEach,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::Chain,
        Workload::FanOut,
        Workload::Templated,
        Workload::ForEach,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::Chain => "chain",
            Workload::FanOut => "fan-out",
            Workload::Templated => "templated fan-out",
            Workload::ForEach => "for_each fan-out",
        }
    }

    /// Its spelling in `--peak`.
    fn arg(self) -> &'static str {
        match self {
            Workload::Chain => "chain",
            Workload::FanOut => "fan-out",
            Workload::Templated => "templated",
            Workload::ForEach => "for-each",
        }
    }

    fn parse(arg: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.arg() == arg)
    }

    fn text(self, n: usize) -> String {
        match self {
            Workload::Chain => workflow(Shape::Chain, n, POOL),
            Workload::FanOut => workflow(Shape::FanOut, n, POOL),
            Workload::Templated => templated_fan_out(n, POOL),
            Workload::ForEach => for_each_fan_out(n, POOL),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    Memory,
    Sqlite,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite => "SQLite",
        }
    }
}

type Compiled = (Arc<Workflow>, Arc<Plan>);

/// Parse, check and plan, as `conductor run` does before it runs anything.
fn compile(text: &str) -> Compiled {
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, "bench.cond", Path::new("bench.cond"), text);
    let wf = checked
        .workflow
        .expect("a generated workflow checks without errors");
    let plan = conductor::plan::plan(&wf).expect("a generated workflow plans");
    (Arc::new(wf), Arc::new(plan))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

/// Runs a compiled workflow to completion on `store`; returns the time it took and the state.
fn drive(
    rt: &tokio::runtime::Runtime,
    compiled: &Compiled,
    store: Arc<dyn Store>,
    observers: Vec<Box<dyn Observer>>,
) -> (Duration, RunState) {
    let (wf, plan) = (compiled.0.clone(), compiled.1.clone());
    let n = wf.tasks.len();
    let mut options = RunOptions::new(store);
    options.observers = observers;
    let begun = Instant::now();
    let state = rt
        .block_on(async move { tokio::spawn(run(wf, plan, options)).await })
        .expect("the run's task is joined")
        .expect("the run starts");
    let elapsed = begun.elapsed();
    assert_eq!(state.status(), RunStatus::Completed, "{:?}", state.error);
    assert!(state.tasks.len() >= n, "every task has a result");
    (elapsed, state)
}

/// One run: its time, and how many events its log holds.
struct RunFigures {
    elapsed: Duration,
    events: usize,
}

fn run_once(rt: &tokio::runtime::Runtime, compiled: &Compiled, kind: StoreKind) -> RunFigures {
    match kind {
        StoreKind::Memory => {
            let (elapsed, state) = drive(rt, compiled, Arc::new(MemoryStore::new()), Vec::new());
            RunFigures {
                elapsed,
                events: state.last_seq as usize,
            }
        }
        StoreKind::Sqlite => {
            let dir = TempDir::new();
            let store = Arc::new(sqlite_at(&dir));
            let (elapsed, state) = drive(rt, compiled, store.clone(), Vec::new());
            let events = store
                .events(&state.workflow_id)
                .expect("the run's log reads back")
                .len();
            RunFigures { elapsed, events }
        }
    }
}

fn sqlite_at(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("bench.db")).expect("a SQLite store opens in a temp dir")
}

/// A fresh folder under the system's temporary directory, deleted when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "conductor-bench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a folder can be made in the temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Figures and the table

fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "a median of no values");
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs of a cell: 3, or 1 at 100,000.
fn reps(n: usize) -> usize {
    if n >= 100_000 {
        1
    } else {
        3
    }
}

fn size_label(n: usize) -> String {
    if n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn micros(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn verdict(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "met".into(),
        Some(false) => "**not met**".into(),
        None => "—".into(),
    }
}

/// Whether a per-item figure stays linear: largest size / smallest size ≤ [`LINEAR_GROWTH`].
fn growth(values: &[f64]) -> Option<f64> {
    match (values.first(), values.last()) {
        (Some(&a), Some(&b)) if values.len() > 1 && a > 0.0 => Some(b / a),
        _ => None,
    }
}

/// One group of figures: a Markdown heading, a note and a table.
struct Section {
    title: String,
    note: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Section {
    fn new(title: &str, note: &str, header: Vec<String>) -> Section {
        Section {
            title: title.into(),
            note: note.into(),
            header,
            rows: Vec::new(),
        }
    }

    fn print(&self) {
        println!("## {}\n", self.title);
        if !self.note.is_empty() {
            println!("{}\n", self.note);
        }
        if self.header.is_empty() {
            return;
        }
        println!("| {} |", self.header.join(" | "));
        println!("|{}", "---|".repeat(self.header.len()));
        for row in &self.rows {
            println!("| {} |", row.join(" | "));
        }
        println!();
    }
}

/// A header: the leading columns, one per size, then the trailing ones.
fn header(lead: &[&str], sizes: &[usize], tail: &[&str]) -> Vec<String> {
    let mut h: Vec<String> = lead.iter().map(|s| s.to_string()).collect();
    h.extend(sizes.iter().map(|&n| size_label(n)));
    h.extend(tail.iter().map(|s| s.to_string()));
    h
}

/// A row: the leading cells, the figures, then the trailing cells.
fn row(lead: &[&str], figures: Vec<String>, tail: &[String]) -> Vec<String> {
    let mut r: Vec<String> = lead.iter().map(|s| s.to_string()).collect();
    r.extend(figures);
    r.extend(tail.iter().cloned());
    r
}

// ---------------------------------------------------------------------------------------------
// 1, 2, 4: scheduling cost, the templated fan-out, events per second

/// The median figures of one workload on one store at one size.
struct Cell {
    workload: Workload,
    store: StoreKind,
    per_task_us: f64,
    events_per_s: f64,
}

fn measure_cell(rt: &tokio::runtime::Runtime, w: Workload, kind: StoreKind, n: usize) -> Cell {
    eprintln!(
        "scheduling: {} {} on {}",
        w.name(),
        size_label(n),
        kind.name()
    );
    let compiled = compile(&w.text(n));
    if n < 100_000 {
        // Discarded: the first run of a size pays for the runtime's threads and the
        // allocator's first pages.
        run_once(rt, &compiled, kind);
    }
    let runs: Vec<RunFigures> = (0..reps(n))
        .map(|_| run_once(rt, &compiled, kind))
        .collect();
    Cell {
        workload: w,
        store: kind,
        per_task_us: median(
            runs.iter()
                .map(|r| r.elapsed.as_secs_f64() * 1e6 / n as f64)
                .collect(),
        ),
        events_per_s: median(
            runs.iter()
                .map(|r| r.events as f64 / r.elapsed.as_secs_f64())
                .collect(),
        ),
    }
}

fn measure_cells(rt: &tokio::runtime::Runtime, sizes: &[usize]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for w in Workload::ALL {
        for kind in [StoreKind::Memory, StoreKind::Sqlite] {
            for &n in sizes {
                cells.push(measure_cell(rt, w, kind, n));
            }
        }
    }
    cells
}

/// The figures of one workload on one store, by size.
fn series(cells: &[Cell], w: Workload, kind: StoreKind) -> Vec<&Cell> {
    cells
        .iter()
        .filter(|c| c.workload == w && c.store == kind)
        .collect()
}

/// Issue 5's target: ≤ 3 µs per task at the largest size on the memory store, flat (±50%)
/// from the smallest size.
fn scheduling_section(cells: &[Cell], sizes: &[usize]) -> Section {
    let mut s = Section::new(
        "1. Scheduling cost per task (µs)",
        "Zero-latency mock agents, pool of 64, in process through `conductor::exec::run` on a \
         multi-threaded tokio runtime; median of 3 runs (1 at 100k) after one discarded warm-up \
         run (none at 100k). SQLite: a fresh file in a temp dir per run.",
        header(&["workload", "store"], sizes, &["target", "status"]),
    );
    for w in [Workload::Chain, Workload::FanOut] {
        for kind in [StoreKind::Memory, StoreKind::Sqlite] {
            let values: Vec<f64> = series(cells, w, kind)
                .iter()
                .map(|c| c.per_task_us)
                .collect();
            let figures = values.iter().map(|&v| micros(v)).collect();
            let tail = if kind == StoreKind::Memory {
                let last = values.last().copied().unwrap_or(f64::MAX);
                let flat = growth(&values).is_none_or(|g| (0.5..=1.5).contains(&g));
                [
                    format!(
                        "≤ 3 µs at {}, flat ±50%",
                        size_label(sizes[sizes.len() - 1])
                    ),
                    verdict(Some(last <= 3.0 && flat)),
                ]
            } else {
                ["—".into(), verdict(None)]
            };
            s.rows.push(row(&[w.name(), kind.name()], figures, &tail));
        }
    }
    s
}

fn templated_section(cells: &[Cell], sizes: &[usize]) -> Section {
    let mut s = Section::new(
        "2. Templated fan-out",
        "The fan-out where the workflow declares `param p = \"x\"` and every task has \
         `{ input = { v = \"{{ params.p }}\" } }`; same runs as section 1.",
        header(&["figure", "store"], sizes, &["target", "status"]),
    );
    for kind in [StoreKind::Memory, StoreKind::Sqlite] {
        let templated = series(cells, Workload::Templated, kind);
        let plain = series(cells, Workload::FanOut, kind);
        let figures = templated.iter().map(|c| micros(c.per_task_us)).collect();
        s.rows.push(row(
            &["µs per task", kind.name()],
            figures,
            &["—".into(), verdict(None)],
        ));
        let ratios: Vec<f64> = templated
            .iter()
            .zip(&plain)
            .map(|(t, p)| t.per_task_us / p.per_task_us)
            .collect();
        let ok = ratios.iter().all(|&r| r <= 1.5);
        s.rows.push(row(
            &["÷ plain fan-out", kind.name()],
            ratios.iter().map(|r| format!("{r:.2}×")).collect(),
            &["≤ 1.5× at every size".into(), verdict(Some(ok))],
        ));
    }
    s
}

/// Issue 16: an instance of a `for_each` costs what a declared task costs.
fn for_each_section(cells: &[Cell], sizes: &[usize]) -> Section {
    let mut s = Section::new(
        "2b. for_each fan-out",
        "The fan-out written as one task with `for_each` over an upstream list of n − 2 numbers \
         (expanded at run time, recorded as one event); same runs as section 1.",
        header(&["figure", "store"], sizes, &["target", "status"]),
    );
    for kind in [StoreKind::Memory, StoreKind::Sqlite] {
        let each = series(cells, Workload::ForEach, kind);
        let plain = series(cells, Workload::FanOut, kind);
        s.rows.push(row(
            &["µs per instance", kind.name()],
            each.iter().map(|c| micros(c.per_task_us)).collect(),
            &["—".into(), verdict(None)],
        ));
        let ratios: Vec<f64> = each
            .iter()
            .zip(&plain)
            .map(|(e, p)| e.per_task_us / p.per_task_us)
            .collect();
        let ok = ratios.iter().all(|&r| r <= 1.5);
        s.rows.push(row(
            &["÷ declared fan-out", kind.name()],
            ratios.iter().map(|r| format!("{r:.2}×")).collect(),
            &["≤ 1.5× at every size".into(), verdict(Some(ok))],
        ));
    }
    s
}

fn events_section(cells: &[Cell], sizes: &[usize]) -> Section {
    let mut s = Section::new(
        "4. Events appended to SQLite per second",
        "Events in the run's log (read back after the run) ÷ the run's time, from the SQLite \
         runs of section 1.",
        header(&["workload"], sizes, &["target", "status"]),
    );
    for w in Workload::ALL {
        let figures = series(cells, w, StoreKind::Sqlite)
            .iter()
            .map(|c| thousands(c.events_per_s))
            .collect();
        s.rows
            .push(row(&[w.name()], figures, &["—".into(), verdict(None)]));
    }
    s
}

/// Makespan: 3 layers of 8 tasks of 50 ms on a pool of 8 — ideal 150 ms (issue 5: within 8 ms).
fn makespan_section(rt: &tokio::runtime::Runtime) -> Section {
    eprintln!("makespan");
    let mut text = String::from(
        "workflow layers {\n agent m { kind = \"mock\", latency = 50ms, count = 8 }\n phase p {\n",
    );
    for layer in 0..3 {
        for i in 0..8 {
            text.push_str(&format!("  task l{layer}_{i} on m"));
            if layer > 0 {
                let deps: Vec<String> = (0..8).map(|j| format!("l{}_{j}", layer - 1)).collect();
                text.push_str(&format!(" after {}", deps.join(", ")));
            }
            text.push('\n');
        }
    }
    text.push_str(" }\n}\n");
    let compiled = compile(&text);
    let spans: Vec<f64> = (0..9)
        .map(|_| {
            run_once(rt, &compiled, StoreKind::Memory)
                .elapsed
                .as_secs_f64()
                * 1e3
        })
        .collect();
    let ms = median(spans);
    let mut s = Section::new(
        "1b. Makespan",
        "3 layers × 8 tasks × 50 ms on a pool of 8, memory store; median of 9 runs.",
        vec![
            "figure".into(),
            "ms".into(),
            "target".into(),
            "status".into(),
        ],
    );
    s.rows.push(vec![
        "makespan".into(),
        format!("{ms:.1}"),
        "≤ 158 ms (ideal 150)".into(),
        verdict(Some(ms <= 158.0)),
    ]);
    s
}

// ---------------------------------------------------------------------------------------------
// 3: compile time and peak memory

/// `--peak WORKLOAD N STAGE` (the child): generates the workflow (`text`), and compiles it
/// (`compile`), and runs it on the memory store with `--json` lines written to a sink (`run`);
/// prints the process's peak resident memory in kB.
fn peak_child(args: &[String]) -> ExitCode {
    let workload = args.first().and_then(|a| Workload::parse(a));
    let n = args.get(1).and_then(|a| a.parse::<usize>().ok());
    let (Some(w), Some(n), Some(stage)) = (workload, n, args.get(2)) else {
        eprintln!("usage: conductor-bench --peak chain|fan-out|templated N text|compile|run");
        return ExitCode::from(2);
    };
    let text = w.text(n);
    std::hint::black_box(&text);
    match stage.as_str() {
        "text" => {}
        "compile" => {
            std::hint::black_box(compile(&text));
        }
        "run" => {
            let rt = runtime();
            let compiled = compile(&text);
            let json: Box<dyn Observer> = Box::new(JsonLines::new(std::io::sink()));
            drive(&rt, &compiled, Arc::new(MemoryStore::new()), vec![json]);
        }
        other => {
            eprintln!("unknown stage `{other}`: text, compile or run");
            return ExitCode::from(2);
        }
    }
    match peak_kb() {
        Some(kb) => {
            println!("{kb}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("no VmHWM in /proc/self/status");
            ExitCode::FAILURE
        }
    }
}

/// The process's peak resident set (`VmHWM`), in kB.
fn peak_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The median peak (kB) of 3 fresh processes running `stage`.
fn child_peak_kb(w: Workload, n: usize, stage: &str) -> f64 {
    let exe = std::env::current_exe().expect("the bench binary knows its own path");
    let runs = (0..3)
        .map(|_| {
            let out = Command::new(&exe)
                .args(["--peak", w.arg(), &n.to_string(), stage])
                .output()
                .expect("the bench binary starts again as a child");
            assert!(
                out.status.success(),
                "--peak {} {n} {stage} failed: {}",
                w.arg(),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .expect("the child prints its VmHWM in kB")
        })
        .collect();
    median(runs)
}

/// Compile time in µs per task: median of 5 after a warm-up (parse + check + plan, not the
/// drop).
fn compile_us(w: Workload, n: usize) -> f64 {
    let text = w.text(n);
    let timed = || {
        let begun = Instant::now();
        let compiled = compile(&text);
        let t = begun.elapsed();
        drop(compiled);
        t.as_secs_f64() * 1e6 / n as f64
    };
    if n < 100_000 {
        // Discarded, as in section 1: the first compile of a size faults in fresh pages.
        timed();
    }
    median((0..5).map(|_| timed()).collect())
}

/// Issue 3's target: 100,000 tasks compile in under 1 s (10 µs per task) and 10× the tasks
/// cost at most 12× the time.
fn compile_rows(s: &mut Section, w: Workload, sizes: &[usize]) {
    eprintln!("compile: {}", w.name());
    let us: Vec<f64> = sizes.iter().map(|&n| compile_us(w, n)).collect();
    let steps_ok = us.windows(2).all(|p| p[1] / p[0] <= 1.2);
    let last_ok = us.last().is_some_and(|&v| v <= 10.0);
    s.rows.push(row(
        &[w.name(), "parse + check + plan, µs/task"],
        us.iter().map(|&v| micros(v)).collect(),
        &[
            "≤ 10 µs (100k < 1 s), 10× tasks ≤ 12× time".into(),
            verdict(Some(steps_ok && last_ok)),
        ],
    ));
    let bytes: Vec<String> = sizes
        .iter()
        .map(|&n| {
            let compiled = child_peak_kb(w, n, "compile");
            let text = child_peak_kb(w, n, "text");
            thousands((compiled - text) * 1024.0 / n as f64)
        })
        .collect();
    s.rows.push(row(
        &[w.name(), "peak bytes/task"],
        bytes,
        &["—".into(), verdict(None)],
    ));
}

/// The peak of a run of the largest size on the memory store with `--json` lines to a sink.
fn run_peak_row(s: &mut Section, w: Workload, sizes: &[usize]) {
    let n = sizes[sizes.len() - 1];
    eprintln!("peak of a run: {} {}", w.name(), size_label(n));
    let kb = child_peak_kb(w, n, "run");
    let base = child_peak_kb(w, n, "text");
    let mib = kb / 1024.0;
    let mut figures = vec!["—".to_string(); sizes.len() - 1];
    figures.push(format!(
        "{mib:.0} MiB ({} B/task)",
        thousands((kb - base) * 1024.0 / n as f64)
    ));
    let ok = (n >= 100_000).then_some(mib < 200.0);
    s.rows.push(row(
        &[w.name(), "run, memory store + JSON lines: peak"],
        figures,
        &["< 200 MiB at 100k".into(), verdict(ok)],
    ));
}

fn compile_section(sizes: &[usize]) -> Section {
    let mut s = Section::new(
        "3. Compile cost and peak memory",
        "Time: in process, median of 5 (after a discarded warm-up below 100k). Peak \
         bytes/task: this binary re-run as a fresh process (`--peak W N compile`), its `VmHWM` \
         minus that of the same process generating the text only, ÷ N; median of 3 processes \
         each. The run's peak is the whole process's `VmHWM`.",
        header(&["workload", "figure"], sizes, &["target", "status"]),
    );
    for w in Workload::ALL {
        compile_rows(&mut s, w, sizes);
    }
    for w in [Workload::Chain, Workload::FanOut] {
        run_peak_row(&mut s, w, sizes);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// 5: the whole process against Python's asyncio

/// What the whole-process comparison runs, in its own temp dir.
struct Procs {
    conductor: PathBuf,
    script: PathBuf,
    dir: TempDir,
}

impl Procs {
    /// `conductor [--store memory] run SHAPE.cond --json`, from a fresh `.conductor`.
    fn conductor(&self, shape: Shape, memory: bool) -> Result<f64, String> {
        let store = self.dir.path().join(".conductor");
        if store.exists() {
            std::fs::remove_dir_all(&store).map_err(|e| format!("removing {store:?}: {e}"))?;
        }
        let mut cmd = Command::new(&self.conductor);
        if memory {
            cmd.args(["--store", "memory"]);
        }
        cmd.args(["run", &format!("{}.cond", shape.name()), "--json"])
            .current_dir(self.dir.path())
            .env_remove("CONDUCTOR_STORE")
            .env_remove("CONDUCTOR_CONFIG");
        time_command(&mut cmd)
    }

    fn python(&self, shape: Shape) -> Result<f64, String> {
        let mut cmd = Command::new("python3");
        cmd.arg(&self.script)
            .args([shape.name(), &WHOLE_N.to_string()])
            .env_remove("PYTHONUNBUFFERED");
        time_command(&mut cmd)
    }
}

/// Runs a command with its output to /dev/null; its wall time in ms.
fn time_command(cmd: &mut Command) -> Result<f64, String> {
    let begun = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let ms = begun.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{:?} {}: {}",
            cmd.get_program(),
            out.status,
            stderr.trim()
        ));
    }
    Ok(ms)
}

/// Why the comparison cannot run here, if it cannot.
fn procs() -> Result<Procs, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no path to this binary: {e}"))?;
    let conductor = exe.with_file_name("conductor");
    if !conductor.is_file() {
        return Err(format!(
            "skipped: no `conductor` binary at {}; build it with `cargo build --release`",
            conductor.display()
        ));
    }
    let python = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !python.is_ok_and(|s| s.success()) {
        return Err("skipped: `python3` is not on PATH".into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/asyncio_walk.py");
    if !script.is_file() {
        return Err(format!("skipped: no {}", script.display()));
    }
    let dir = TempDir::new();
    for shape in [Shape::FanOut, Shape::Chain] {
        let file = dir.path().join(format!("{}.cond", shape.name()));
        std::fs::write(&file, workflow(shape, WHOLE_N, POOL))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    Ok(Procs {
        conductor,
        script,
        dir,
    })
}

/// Medians (ms) of conductor on SQLite, Python, and — when asked — conductor on memory, run
/// in turn so the machine's drift affects them alike.
fn alternate(p: &Procs, shape: Shape, with_memory: bool) -> Result<(f64, f64, f64), String> {
    let (mut sqlite, mut python, mut memory) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..WHOLE_RUNS {
        eprintln!("whole process: {} round {}", shape.name(), round + 1);
        sqlite.push(p.conductor(shape, false)?);
        python.push(p.python(shape)?);
        if with_memory {
            memory.push(p.conductor(shape, true)?);
        }
    }
    let memory = if with_memory { median(memory) } else { 0.0 };
    Ok((median(sqlite), median(python), memory))
}

fn whole_process_section() -> Section {
    let title = "5. Whole process, 20k tasks: `conductor run FILE --json` vs Python asyncio";
    let note = format!(
        "`conductor run FILE --json > /dev/null` on the default store `.conductor/conductor.db` \
         (deleted before every run) against `python3 benches/asyncio_walk.py SHAPE {WHOLE_N}` \
         (PYTHONUNBUFFERED removed); run in turn, median of {WHOLE_RUNS} each."
    );
    let p = match procs() {
        Ok(p) => p,
        Err(why) => return Section::new(title, &format!("{note}\n\n{why}"), Vec::new()),
    };
    let head = [
        "workload",
        "conductor (ms)",
        "python (ms)",
        "ratio",
        "target",
        "status",
    ];
    let mut s = Section::new(title, &note, head.iter().map(|h| h.to_string()).collect());
    match whole_process_rows(&p) {
        Ok(rows) => s.rows = rows,
        Err(e) => s.note = format!("{note}\n\nfailed: {e}"),
    }
    s
}

fn whole_process_rows(p: &Procs) -> Result<Vec<Vec<String>>, String> {
    let (fan_c, fan_py, _) = alternate(p, Shape::FanOut, false)?;
    let (chain_c, chain_py, chain_mem) = alternate(p, Shape::Chain, true)?;
    let line = |name: &str, c: f64, py: f64, target: f64| {
        vec![
            name.to_string(),
            format!("{c:.0}"),
            format!("{py:.0}"),
            format!("{:.2}× (python/conductor)", py / c),
            format!("≥ {target}×"),
            verdict(Some(py / c >= target)),
        ]
    };
    let store_ratio = chain_c / chain_mem;
    Ok(vec![
        line("fan-out, SQLite", fan_c, fan_py, 2.5),
        line("chain, SQLite", chain_c, chain_py, 1.5),
        vec![
            "chain, `--store memory`".into(),
            format!("{chain_mem:.0}"),
            format!("{chain_py:.0}"),
            format!("{:.2}× (python/conductor)", chain_py / chain_mem),
            "—".into(),
            verdict(None),
        ],
        vec![
            "chain: SQLite ÷ memory".into(),
            format!("{chain_c:.0} / {chain_mem:.0}"),
            "—".into(),
            format!("{store_ratio:.2}×"),
            "≤ 1.5×".into(),
            verdict(Some(store_ratio <= 1.5)),
        ],
    ])
}

// ---------------------------------------------------------------------------------------------
// 6: operations that must stay linear

/// Rendering the text diagnostics of N tasks on an unknown agent: µs per diagnostic.
fn render_us(n: usize) -> f64 {
    let text = unknown_agents(n);
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, "bench.cond", Path::new("bench.cond"), &text);
    let count = checked.diags.len();
    assert!(count >= n, "one diagnostic per task: {count} for {n} tasks");
    let times = (0..reps(n))
        .map(|_| {
            let begun = Instant::now();
            let out = conductor::diag::render(&map, &checked.diags, false);
            let t = begun.elapsed();
            std::hint::black_box(out);
            t.as_secs_f64() * 1e6 / count as f64
        })
        .collect();
    median(times)
}

/// Listing the artifacts of N `attempt_finished` events with one file each: µs per artifact.
fn artifacts_us(n: usize) -> f64 {
    let at = Timestamp::now().to_string();
    let events: Vec<Event> = (0..n)
        .map(|i| {
            log_event(serde_json::json!({
                "seq": i + 1,
                "at": at,
                "event": "attempt_finished",
                "task": format!("t{i}"),
                "agent": "m-01",
                "attempt": 1,
                "duration_ms": 0,
                "artifacts": [{
                    "path": format!("src/f{i}.txt"),
                    "sha256": format!("{i:064x}"),
                    "size": 200,
                }],
            }))
        })
        .collect();
    let times = (0..reps(n).max(3))
        .map(|_| {
            let begun = Instant::now();
            let artifacts = RunState::from_events(&events).artifacts;
            let t = begun.elapsed();
            assert_eq!(artifacts.len(), n);
            t.as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    median(times)
}

/// An event read from its form in the log (so fields the log may omit need not be spelled).
fn log_event(json: serde_json::Value) -> Event {
    serde_json::from_value(json).expect("a generated event reads as the log's JSON")
}

fn record(status: RunStatus) -> RunRecord {
    RunRecord {
        id: RunId::new(),
        workflow: "bench".into(),
        file: "bench.cond".into(),
        params: Default::default(),
        created_at: Timestamp::now(),
        status,
    }
}

/// Appends a run of `n` `task_dispatched` events to `store`, 64 to a batch.
fn fill_log(store: &SqliteStore, run: &RunId, n: u64) {
    let (state, changes) = (RunState::default(), Changes::default());
    let at = Timestamp::now().to_string();
    let mut next = 1;
    while next <= n {
        let last = (next + 63).min(n);
        let events: Vec<Event> = (next..=last)
            .map(|seq| {
                log_event(serde_json::json!({
                    "seq": seq,
                    "at": at,
                    "event": "task_dispatched",
                    "task": format!("t{seq}"),
                    "agent": "m-01",
                    "attempt": 1,
                }))
            })
            .collect();
        let batch = Batch {
            events: &events,
            json: &[],
            changes: &changes,
            state: &state,
            work: &Default::default(),
        };
        store.append(run, &batch).expect("a batch appends");
        next = last + 1;
    }
}

/// Following a run of N events on SQLite: µs to read the last [`TAIL`], median of 21 reads.
fn follow_us(n: usize) -> f64 {
    let dir = TempDir::new();
    let store = sqlite_at(&dir);
    let run = record(RunStatus::InProgress);
    store.create_run(&run).expect("a run is created");
    let n = n as u64;
    fill_log(&store, &run.id, n);
    let times = (0..21)
        .map(|_| {
            let begun = Instant::now();
            let events = store
                .events_after(&run.id, n - TAIL)
                .expect("the log reads back");
            let t = begun.elapsed();
            assert_eq!(events.len() as u64, TAIL);
            t.as_secs_f64() * 1e6
        })
        .collect();
    median(times)
}

/// `Store::runs` and `Store::gc` on a SQLite store of N finished runs: µs per run, each a
/// median over fresh stores (3, 1 at 100k).
fn runs_and_gc_us(n: usize) -> (f64, f64) {
    let (mut list, mut gc) = (Vec::new(), Vec::new());
    for _ in 0..reps(n) {
        let dir = TempDir::new();
        let store = sqlite_at(&dir);
        for _ in 0..n {
            store
                .create_run(&record(RunStatus::Completed))
                .expect("a run is created");
        }
        let begun = Instant::now();
        let runs = store.runs().expect("runs are listed");
        list.push(begun.elapsed().as_secs_f64() * 1e6 / n as f64);
        assert_eq!(runs.len(), n);
        let before = Timestamp(Timestamp::now().0 + 1);
        let begun = Instant::now();
        let deleted = store.gc(before).expect("gc runs");
        gc.push(begun.elapsed().as_secs_f64() * 1e6 / n as f64);
        assert_eq!(deleted.len(), n);
    }
    (median(list), median(gc))
}

fn scaling_row(s: &mut Section, what: &str, unit: &str, values: &[f64]) {
    let g = growth(values);
    s.rows.push(row(
        &[what, unit],
        values.iter().map(|&v| micros(v)).collect(),
        &[
            g.map_or("—".into(), |g| format!("{g:.2}×")),
            format!("≤ {LINEAR_GROWTH}× (linear)"),
            verdict(g.map(|g| g <= LINEAR_GROWTH)),
        ],
    ));
}

fn scaling_section(sizes: &[usize]) -> Section {
    let mut s = Section::new(
        "6. Scaling: time per item (µs)",
        "Growth is the figure at the largest size ÷ the one at the smallest: 1× is linear \
         (flat per item), a quadratic operation would show 100× from 1k to 100k. Medians of 3 \
         (1 at 100k); following a log: median of 21 reads.",
        header(
            &["operation", "unit"],
            sizes,
            &["growth", "target", "status"],
        ),
    );
    eprintln!("scaling: diagnostics");
    let render: Vec<f64> = sizes.iter().map(|&n| render_us(n)).collect();
    scaling_row(
        &mut s,
        "render N text diagnostics (`diag::render`)",
        "per diagnostic",
        &render,
    );
    eprintln!("scaling: artifacts");
    let artifacts: Vec<f64> = sizes.iter().map(|&n| artifacts_us(n)).collect();
    scaling_row(
        &mut s,
        "list artifacts (`RunState::from_events`)",
        "per artifact",
        &artifacts,
    );
    eprintln!("scaling: following a log");
    let follow: Vec<f64> = sizes.iter().map(|&n| follow_us(n)).collect();
    let unit = format!("per read of the last {TAIL}");
    scaling_row(
        &mut s,
        "follow a log of N events (`events_after`), SQLite",
        &unit,
        &follow,
    );
    eprintln!("scaling: runs and gc");
    let (runs, gc): (Vec<f64>, Vec<f64>) = sizes.iter().map(|&n| runs_and_gc_us(n)).unzip();
    scaling_row(
        &mut s,
        "list N runs (`Store::runs`), SQLite",
        "per run",
        &runs,
    );
    scaling_row(
        &mut s,
        "gc N finished runs (`Store::gc`), SQLite",
        "per run",
        &gc,
    );
    s
}

// ---------------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--peak") {
        return peak_child(&args[i + 1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let rt = runtime();
    let cells = measure_cells(&rt, sizes);
    let mut sections = vec![
        scheduling_section(&cells, sizes),
        makespan_section(&rt),
        templated_section(&cells, sizes),
        for_each_section(&cells, sizes),
        compile_section(sizes),
        events_section(&cells, sizes),
    ];
    if quick {
        sections.push(Section::new(
            "5. Whole process",
            "skipped with `--quick`",
            Vec::new(),
        ));
    } else {
        sections.push(whole_process_section());
    }
    sections.push(scaling_section(sizes));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# Conductor performance ({} run, {cpus} CPUs)\n",
        if quick { "`--quick`" } else { "full" }
    );
    for s in &sections {
        s.print();
    }
    ExitCode::SUCCESS
}
