//! Conductor's performance figures, as one Markdown table (one section per group), each
//! target beside its figure. Run with `cargo run --release --features bench --bin
//! conductor-bench` (`-- --quick`: 1k and 10k only, no whole-process comparison;
//! `-- --scaling`: section 6 alone). Progress goes to stderr, the table to stdout.
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

#[path = "../../allocator.rs"]
mod allocator;

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

mod compile;
mod run;
mod scaling;
mod scheduling;
mod table;
mod whole;

use compile::*;
use run::*;
use scaling::*;
use scheduling::*;
use table::*;
use whole::*;

fn main() -> ExitCode {
    allocator::tune();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--peak") {
        return peak_child(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--time") {
        return time_child(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--artifacts") {
        return artifacts_child(&args[i + 1..]);
    }
    if let Some(i) = args.iter().position(|a| a == "--compile") {
        return compile_child(&args[i + 1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    if args.iter().any(|a| a == "--scaling") {
        // Section 6 alone: the growth lines take a minute, the whole table several.
        scaling_section(sizes).print();
        return ExitCode::SUCCESS;
    }
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
