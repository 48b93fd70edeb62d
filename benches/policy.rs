//! Rule evaluation cost with compiled ASTs. Run with `cargo bench --bench policy`.
//!
//! Target (issue 4): warm evaluation of a typical inline gate and of `phase_gate(0.8)` with a
//! 20-task context under 5 µs median. Also shown: the result cache's hit path, the cost of
//! building a context from JSON, and how long an endless loop runs before the operation limit
//! stops it.

use std::path::Path;
use std::time::{Duration, Instant};

use conductor::policy::{PolicyHost, RuleCache, RuleContext, RuleKind};
use conductor::{check_source, SourceMap};
use serde_json::json;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn context_json(n: usize) -> serde_json::Value {
    let tasks: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            let name = if i == 0 {
                "review".to_string()
            } else {
                format!("task_{i}")
            };
            (
                name,
                json!({ "status": "completed", "output": { "approved": true, "score": 90 },
                        "error": null, "attempts": 1, "duration_ms": 1200, "agent": "coding-01" }),
            )
        })
        .collect();
    json!({ "phase": "development", "total": n, "completed": n - 2, "failed": 2, "skipped": 0,
            "success_rate": (n - 2) as f64 / n as f64, "tasks": tasks,
            "params": { "spec": "x" }, "loop_count": 0 })
}

fn median_ns(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_nanos() as f64
}

/// Median per-call time over batches of `batch` calls.
fn bench(name: &str, batch: u32, mut f: impl FnMut()) {
    for _ in 0..batch {
        f();
    }
    let samples: Vec<Duration> = (0..51)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed() / batch
        })
        .collect();
    println!("{name:<52} {:>9.2} µs", median_ns(samples) / 1000.0);
}

fn main() {
    let text = r#"workflow bench {
        use "policies/standard.rhai"
        agent a { kind = "mock" }
        phase p {
            task review on a
            gate { success_rate >= 0.8 && tasks.review.output.approved }
        }
        phase q {
            task t on a
            gate phase_gate(0.8)
        }
        phase r {
            task u on a
            gate { let n = 0; loop { n += 1; } }
        }
    }"#;
    let mut map = SourceMap::new();
    let wf = check_source(&mut map, "bench.cond", Path::new("bench.cond"), text)
        .workflow
        .expect("bench workflow checks");
    let inline = wf.phases[0].gate.clone().unwrap().compiled;
    let named = wf.phases[1].gate.clone().unwrap().compiled;
    let endless = wf.phases[2].gate.clone().unwrap().compiled;
    let host = PolicyHost::get();
    let json = context_json(20);
    let ctx = RuleContext::from_json(RuleKind::Gate, &json);

    println!("{:<52} {:>12}", "case (20-task context)", "median");
    bench("inline gate, warm", 2000, || {
        std::hint::black_box(host.evaluate(&inline, &ctx));
    });
    bench("phase_gate(0.8), warm", 2000, || {
        std::hint::black_box(host.evaluate(&named, &ctx));
    });
    let mut cache = RuleCache::default();
    bench("inline gate, cache hit", 2000, || {
        std::hint::black_box(host.evaluate_cached(&mut cache, &inline, &ctx));
    });
    bench(
        "build the context from JSON (cold path's extra)",
        500,
        || {
            std::hint::black_box(RuleContext::from_json(RuleKind::Gate, &json));
        },
    );
    bench("inline gate, cold: build context + evaluate", 500, || {
        let ctx = RuleContext::from_json(RuleKind::Gate, &json);
        std::hint::black_box(host.evaluate(&inline, &ctx));
    });
    let t = Instant::now();
    let e = host.evaluate(&endless, &ctx);
    assert!(e.error.is_some_and(|e| e.limit));
    println!(
        "{:<52} {:>9.2} ms",
        "endless loop stopped by the operation limit",
        t.elapsed().as_secs_f64() * 1000.0
    );
}
