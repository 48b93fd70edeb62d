//! Compile cost (parse, check, plan) of generated workflows from 1,000 to 100,000 tasks, in two
//! shapes. Run with `cargo bench --bench compile`; prints a table and the growth from 10k to 100k.
//!
//! Target (issue 3): 100,000 tasks in under 1 s, and 10× the tasks at most 12× the time.

use std::path::Path;
use std::time::{Duration, Instant};

use conductor::workloads::{workflow, Shape};
use conductor::SourceMap;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Times {
    parse: Duration,
    check: Duration,
    plan: Duration,
}

fn measure(text: &str) -> Times {
    let file_id = || {
        let mut map = SourceMap::new();
        let id = map.add("bench.cond", "bench.cond", text);
        (map, id)
    };
    let (_map, id) = file_id();
    let t = Instant::now();
    let parsed = conductor::syntax::parse(id, text).expect("parses");
    let parse = t.elapsed();
    drop(parsed);

    let mut map = SourceMap::new();
    let t = Instant::now();
    let checked = conductor::check_source(&mut map, "bench.cond", Path::new("bench.cond"), text);
    let check = t.elapsed();
    let wf = checked.workflow.expect("checks");

    let t = Instant::now();
    let plan = conductor::plan::plan(&wf).expect("plans");
    let plan_time = t.elapsed();
    assert_eq!(plan.task_nodes.len(), wf.tasks.len());
    Times {
        parse,
        check: check.saturating_sub(parse),
        plan: plan_time,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    println!(
        "{:<8} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "shape", "tasks", "bytes", "parse", "check", "plan", "total"
    );
    for shape in [Shape::Chain, Shape::FanOut] {
        let mut totals = Vec::new();
        for &n in sizes {
            let text = workflow(shape, n, 8);
            let runs = if n >= 100_000 { 5 } else { 11 };
            let mut parse = Vec::new();
            let mut check = Vec::new();
            let mut plan = Vec::new();
            let mut total = Vec::new();
            for _ in 0..runs {
                let t = measure(&text);
                total.push(t.parse + t.check + t.plan);
                parse.push(t.parse);
                check.push(t.check);
                plan.push(t.plan);
            }
            let total = median(total);
            totals.push((n, total));
            println!(
                "{:<8} {:>8} {:>10} {:>10.1?} {:>10.1?} {:>10.1?} {:>9.1?}",
                shape.name(),
                n,
                text.len(),
                median(parse),
                median(check),
                median(plan),
                total
            );
        }
        for pair in totals.windows(2) {
            let (n0, t0) = pair[0];
            let (n1, t1) = pair[1];
            println!(
                "  {}: {}× the tasks ({n0} → {n1}) cost {:.1}× the time",
                shape.name(),
                n1 / n0,
                t1.as_secs_f64() / t0.as_secs_f64()
            );
        }
    }
}
