//! Sections 1, 2, 4: scheduling cost, the templated fan-out, events per second.

use super::*;

/// The median figures of one workload on one store at one size.
pub(crate) struct Cell {
    pub(crate) workload: Workload,
    pub(crate) store: StoreKind,
    pub(crate) per_task_us: f64,
    pub(crate) events_per_s: f64,
}

/// The figures of every workload on `kind` at size `n`. The workloads' runs alternate (one
/// run of each, round after round), so the ratios between them (sections 2 and 2b) compare
/// runs seconds apart: on a shared machine whose speed drifts over minutes, measuring one
/// workload after another made a 1.0× ratio read anywhere from 0.7× to 1.7×.
/// Rounds of section 1 at size `n`: a 1k run takes milliseconds, where one scheduler hiccup
/// of the machine moves a median of 3 by half; at 100k three rounds take a minute.
fn rounds(n: usize) -> usize {
    match n {
        0..=1_000 => 15,
        1_001..=10_000 => 7,
        _ => reps(n),
    }
}

fn measure_size(rt: &tokio::runtime::Runtime, kind: StoreKind, n: usize) -> Vec<Cell> {
    eprintln!("scheduling: {} on {}", size_label(n), kind.name());
    let compiled: Vec<_> = Workload::ALL.iter().map(|w| compile(&w.text(n))).collect();
    if n < 100_000 {
        // Discarded: the first run of a size pays for the runtime's threads and the
        // allocator's first pages.
        for c in &compiled {
            run_once(rt, c, kind);
        }
    }
    let mut runs: Vec<Vec<RunFigures>> = compiled.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds(n) {
        for (c, figures) in compiled.iter().zip(&mut runs) {
            figures.push(run_once(rt, c, kind));
        }
    }
    Workload::ALL
        .iter()
        .zip(runs)
        .map(|(&w, runs)| Cell {
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
        })
        .collect()
}

pub(crate) fn measure_cells(rt: &tokio::runtime::Runtime, sizes: &[usize]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for kind in [StoreKind::Memory, StoreKind::Sqlite] {
        for &n in sizes {
            cells.extend(measure_size(rt, kind, n));
        }
    }
    cells
}

/// The figures of one workload on one store, by size.
pub(crate) fn series(cells: &[Cell], w: Workload, kind: StoreKind) -> Vec<&Cell> {
    cells
        .iter()
        .filter(|c| c.workload == w && c.store == kind)
        .collect()
}

/// Issue 5's target: ≤ 3 µs per task at the largest size on the memory store, flat (±50%)
/// from the smallest size.
pub(crate) fn scheduling_section(cells: &[Cell], sizes: &[usize]) -> Section {
    let mut s = Section::new(
        "1. Scheduling cost per task (µs)",
        "Zero-latency mock agents, pool of 64, in process through `conductor::exec::run` on a \
         multi-threaded tokio runtime; median of 15 / 7 / 3 runs at 1k / 10k / 100k after \
         one discarded warm-up run (none at 100k). At each size and store the four workloads \
         run in turn, round after round, so sections 2 and 2b compare runs seconds apart. \
         SQLite: a fresh file in a temp dir per run.",
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

pub(crate) fn templated_section(cells: &[Cell], sizes: &[usize]) -> Section {
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
pub(crate) fn for_each_section(cells: &[Cell], sizes: &[usize]) -> Section {
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

pub(crate) fn events_section(cells: &[Cell], sizes: &[usize]) -> Section {
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
pub(crate) fn makespan_section(rt: &tokio::runtime::Runtime) -> Section {
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
