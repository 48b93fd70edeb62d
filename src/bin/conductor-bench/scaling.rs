//! Section 6: operations that must stay linear.

use super::*;

/// Rendering the text diagnostics of N tasks on an unknown agent: µs per diagnostic.
pub(crate) fn render_us(n: usize) -> f64 {
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

/// Listing the artifacts of a run of N `attempt_finished` events with one file each, as
/// `conductor artifacts` does: the run's log read back from a SQLite store (its JSON parsed)
/// and folded into the run's state. µs per artifact.
///
/// Timing the fold alone, over events already parsed in memory, measured the cache instead of
/// the algorithm: at 1k the events stay in L2 across repetitions, at 100k (tens of MB) they are
/// read from memory, so a linear fold showed 2–4× "growth".
pub(crate) fn artifacts_us(n: usize) -> f64 {
    let dir = TempDir::new();
    let store = sqlite_at(&dir);
    let run = record(RunStatus::Completed);
    store.create_run(&run).expect("a run is created");
    let at = Timestamp::now().to_string();
    let (state, changes) = (RunState::default(), Changes::default());
    let mut next = 0;
    while next < n {
        let last = (next + 64).min(n);
        let events: Vec<Event> = (next..last)
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
        append(&store, &run.id, &events, &changes, &state);
        next = last;
    }
    let times = (0..reps(n).max(3))
        .map(|_| {
            let begun = Instant::now();
            let events = store.events(&run.id).expect("the log reads back");
            let artifacts = RunState::from_events(&events).artifacts;
            let t = begun.elapsed();
            assert_eq!(artifacts.len(), n);
            t.as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    median(times)
}

/// `--artifacts N [R]`: the artifact-listing cell R times (default 5), µs per artifact, one
/// line each; for profiling that scaling line (`perf record`).
pub(crate) fn artifacts_child(args: &[String]) -> ExitCode {
    let n = args.first().and_then(|a| a.parse::<usize>().ok());
    let repeat = args.get(1).map_or(Some(5), |a| a.parse::<usize>().ok());
    let (Some(n), Some(repeat)) = (n, repeat) else {
        eprintln!("usage: conductor-bench --artifacts N [R]");
        return ExitCode::from(2);
    };
    for _ in 0..repeat {
        println!("{:.3}", artifacts_us(n));
    }
    ExitCode::SUCCESS
}

/// Appends `events` to `run` as one batch, with the state and changes given.
fn append(store: &SqliteStore, run: &RunId, events: &[Event], changes: &Changes, state: &RunState) {
    let batch = Batch {
        events,
        json: &[],
        changes,
        state,
        work: &Default::default(),
    };
    store.append(run, &batch).expect("a batch appends");
}

/// An event read from its form in the log (so fields the log may omit need not be spelled).
pub(crate) fn log_event(json: serde_json::Value) -> Event {
    serde_json::from_value(json).expect("a generated event reads as the log's JSON")
}

pub(crate) fn record(status: RunStatus) -> RunRecord {
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
pub(crate) fn fill_log(store: &SqliteStore, run: &RunId, n: u64) {
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
        append(store, run, &events, &changes, &state);
        next = last + 1;
    }
}

/// Following a run of N events on SQLite: µs to read the last [`TAIL`], median of 21 reads.
pub(crate) fn follow_us(n: usize) -> f64 {
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

/// The log of a finished run of a small workflow (five mock tasks), as the executor writes
/// it.
fn small_run_log() -> Vec<Event> {
    let compiled = compile(
        "workflow small {\n agent m { kind = \"mock\" }\n phase p {\n  task a on m\n  \
         task b on m after a\n  task c on m after a\n  task d on m after b, c\n  \
         task e on m after d\n }\n}\n",
    );
    let store = Arc::new(MemoryStore::new());
    let (_, state) = drive(&runtime(), &compiled, store.clone(), Vec::new());
    store
        .events(&state.workflow_id)
        .expect("the run's log reads back")
}

/// Listing runs as `conductor runs` does (`store::list_runs`: each run's summary as the store
/// kept it, beside a log of a finished run) and `Store::gc`, on a SQLite store of N finished
/// runs: µs per run, each a median over 3 fresh stores.
pub(crate) fn runs_and_gc_us(n: usize) -> (f64, f64) {
    let log = small_run_log();
    let state = RunState::from_events(&log);
    let changes = Changes {
        run: true,
        ..Changes::default()
    };
    let (mut list, mut gc) = (Vec::new(), Vec::new());
    for _ in 0..reps(n) {
        let dir = TempDir::new();
        let store = sqlite_at(&dir);
        for _ in 0..n {
            let run = record(RunStatus::Completed);
            store.create_run(&run).expect("a run is created");
            append(&store, &run.id, &log, &changes, &state);
        }
        let begun = Instant::now();
        let runs = conductor::store::list_runs(&store, |_| true, |e| panic!("{e}"))
            .expect("runs are listed");
        list.push(begun.elapsed().as_secs_f64() * 1e6 / n as f64);
        assert_eq!(runs.len(), n);
        assert!(runs
            .iter()
            .all(|(_, s)| s.completed == 5 && s.status == Some(RunStatus::Completed)));
        let before = Timestamp(Timestamp::now().0 + 1);
        let begun = Instant::now();
        let deleted = store.gc(before).expect("gc runs");
        gc.push(begun.elapsed().as_secs_f64() * 1e6 / n as f64);
        assert_eq!(deleted.len(), n);
    }
    (median(list), median(gc))
}

pub(crate) fn scaling_row(s: &mut Section, what: &str, unit: &str, values: &[f64]) {
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

pub(crate) fn scaling_section(sizes: &[usize]) -> Section {
    let mut s = Section::new(
        "6. Scaling: time per item (µs)",
        "Growth is the figure at the largest size ÷ the one at the smallest: 1× is linear \
         (flat per item), a quadratic operation would show 100× from 1k to 100k. Medians of 3; \
         following a log: median of 21 reads.",
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
        "list a run's artifacts (`conductor artifacts`: read the log, fold), SQLite",
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
        "list N finished runs (`conductor runs`), SQLite",
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
