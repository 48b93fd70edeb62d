//! Workloads, compiling, running.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Workload {
    Chain,
    FanOut,
    /// The fan-out where every task renders `{{ params.p }}` into its input.
    Templated,
    /// The fan-out as one `for_each` task over an upstream list.
    ForEach,
}

impl Workload {
    pub(crate) const ALL: [Workload; 4] = [
        Workload::Chain,
        Workload::FanOut,
        Workload::Templated,
        Workload::ForEach,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Chain => "chain",
            Workload::FanOut => "fan-out",
            Workload::Templated => "templated fan-out",
            Workload::ForEach => "for_each fan-out",
        }
    }

    /// Its spelling in `--peak`.
    pub(crate) fn arg(self) -> &'static str {
        match self {
            Workload::Chain => "chain",
            Workload::FanOut => "fan-out",
            Workload::Templated => "templated",
            Workload::ForEach => "for-each",
        }
    }

    pub(crate) fn parse(arg: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.arg() == arg)
    }

    pub(crate) fn text(self, n: usize) -> String {
        match self {
            Workload::Chain => workflow(Shape::Chain, n, POOL),
            Workload::FanOut => workflow(Shape::FanOut, n, POOL),
            Workload::Templated => templated_fan_out(n, POOL),
            Workload::ForEach => for_each_fan_out(n, POOL),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Memory,
    Sqlite,
}

impl StoreKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite => "SQLite",
        }
    }
}

pub(crate) type Compiled = (Arc<Workflow>, Arc<Plan>);

/// Parse, check and plan, as `conductor run` does before it runs anything (and, like it, then
/// switch the allocator to running: `conductor::compiled`).
pub(crate) fn compile(text: &str) -> Compiled {
    let mut map = SourceMap::new();
    let checked = check_source(&mut map, "bench.cond", Path::new("bench.cond"), text);
    let wf = checked
        .workflow
        .expect("a generated workflow checks without errors");
    let plan = conductor::plan::plan(&wf).expect("a generated workflow plans");
    conductor::compiled();
    (Arc::new(wf), Arc::new(plan))
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

/// Runs a compiled workflow to completion on `store`; returns the time it took and the state.
pub(crate) fn drive(
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
pub(crate) struct RunFigures {
    pub(crate) elapsed: Duration,
    pub(crate) events: usize,
}

pub(crate) fn run_once(
    rt: &tokio::runtime::Runtime,
    compiled: &Compiled,
    kind: StoreKind,
) -> RunFigures {
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

pub(crate) fn sqlite_at(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("bench.db")).expect("a SQLite store opens in a temp dir")
}

/// A fresh folder under the system's temporary directory, deleted when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
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

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
