//! How a worker serves: which pools, which labels it offers, how many attempts at once, the
//! lease it takes on each, and where its workspaces go.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub(crate) struct WorkerOptions {
    /// The pools (agent names) served; empty: every pool.
    pub pools: Vec<String>,
    /// What a pool's `labels` are matched against.
    pub labels: BTreeMap<String, String>,
    /// Attempts run at once.
    pub concurrency: usize,
    /// The lease on each attempt: renewed every third of it; a worker silent for a whole
    /// lease loses its attempts.
    pub lease: Duration,
    /// The most attempts one claim takes.
    pub batch: usize,
    /// How often the queue is polled when no notification comes.
    pub poll: Duration,
    /// Where the runs' workspaces go (`DIR/runs/RUN/work`).
    pub dir: PathBuf,
    /// A file to write each attempt's queue wait and claim→start time to (the benchmark's).
    pub stats: Option<PathBuf>,
}
