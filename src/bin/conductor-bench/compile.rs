//! Section 3: compile time and peak memory.

use super::*;

/// `--peak WORKLOAD N STAGE` (the child): generates the workflow (`text`), and compiles it
/// (`compile`), and runs it on the memory store with `--json` lines written to a sink (`run`);
/// prints the process's peak resident memory in kB.
pub(crate) fn peak_child(args: &[String]) -> ExitCode {
    let workload = args.first().and_then(|a| Workload::parse(a));
    let n = args.get(1).and_then(|a| a.parse::<usize>().ok());
    let (Some(w), Some(n), Some(stage)) = (workload, n, args.get(2)) else {
        eprintln!(
            "usage: conductor-bench --peak chain|fan-out|templated N text|parse|check|compile|run"
        );
        return ExitCode::from(2);
    };
    let text = w.text(n);
    std::hint::black_box(&text);
    match stage.as_str() {
        "text" => {}
        // The stages of compiling, for finding where its memory goes: the syntax tree alone,
        // then checked (the tree is dropped at the end of the check), then planned.
        "parse" => {
            std::hint::black_box(
                conductor::syntax::parse(conductor::source::FileId(0), &text).ok(),
            );
        }
        "check" => {
            let mut map = SourceMap::new();
            let checked = check_source(&mut map, "bench.cond", Path::new("bench.cond"), &text);
            std::hint::black_box(checked.workflow);
        }
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
            eprintln!("unknown stage `{other}`: text, parse, check, compile or run");
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

/// `--time W N memory|sqlite [R]`: runs one workload R times (default 5) in this process and
/// prints each run's µs per task; for profiling one cell of the table (`perf record`).
pub(crate) fn time_child(args: &[String]) -> ExitCode {
    let workload = args.first().and_then(|a| Workload::parse(a));
    let n = args.get(1).and_then(|a| a.parse::<usize>().ok());
    let kind = match args.get(2).map(String::as_str) {
        Some("memory") => Some(StoreKind::Memory),
        Some("sqlite") => Some(StoreKind::Sqlite),
        _ => None,
    };
    let repeat = args.get(3).map_or(Some(5), |a| a.parse::<usize>().ok());
    let (Some(w), Some(n), Some(kind), Some(repeat)) = (workload, n, kind, repeat) else {
        eprintln!(
            "usage: conductor-bench --time chain|fan-out|templated|for-each N memory|sqlite [R]"
        );
        return ExitCode::from(2);
    };
    let rt = runtime();
    let compiled = compile(&w.text(n));
    for _ in 0..repeat {
        let figures = run_once(&rt, &compiled, kind);
        println!("{:.2}", figures.elapsed.as_secs_f64() * 1e6 / n as f64);
    }
    ExitCode::SUCCESS
}

/// The process's peak resident set (`VmHWM`), in kB.
pub(crate) fn peak_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The median peak (kB) of 3 fresh processes running `stage`.
pub(crate) fn child_peak_kb(w: Workload, n: usize, stage: &str) -> f64 {
    let runs = (0..3)
        .map(|_| {
            child(&["--peak", w.arg(), &n.to_string(), stage])
                .trim()
                .parse::<f64>()
                .expect("the child prints its VmHWM in kB")
        })
        .collect();
    median(runs)
}

/// What this binary, run again with `args`, prints; it must succeed.
fn child(args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("the bench binary knows its own path");
    let out = Command::new(&exe)
        .args(args)
        .output()
        .expect("the bench binary starts again as a child");
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--compile W N [R]`: compiles one workload R times (default 5) in this process and prints
/// each compile's µs per task; for comparing builds and profiling one cell of section 3.
pub(crate) fn compile_child(args: &[String]) -> ExitCode {
    let workload = args.first().and_then(|a| Workload::parse(a));
    let n = args.get(1).and_then(|a| a.parse::<usize>().ok());
    let repeat = args.get(2).map_or(Some(5), |a| a.parse::<usize>().ok());
    let (Some(w), Some(n), Some(repeat)) = (workload, n, repeat) else {
        eprintln!("usage: conductor-bench --compile chain|fan-out|templated N [R]");
        return ExitCode::from(2);
    };
    let text = w.text(n);
    for _ in 0..repeat {
        println!("{:.2}", compile_once_us(&text, n));
    }
    ExitCode::SUCCESS
}

/// One compile of `text` (of `n` tasks) in µs per task (parse + check + plan, not the drop).
fn compile_once_us(text: &str, n: usize) -> f64 {
    let begun = Instant::now();
    let compiled = compile(text);
    let t = begun.elapsed();
    drop(compiled);
    t.as_secs_f64() * 1e6 / n as f64
}

/// Compile time in µs per task at each of `sizes`: five rounds, each running every size in a
/// fresh process (`--compile W N R`, this binary again) that discards its first compile (it
/// faults in the process's first pages) and times three; the median of a size's 15 figures.
/// Below 1 µs a task a 1k compile takes half a millisecond, and this machine's speed drifts by
/// a third from one second to the next: measured one size after another (in this process,
/// after section 1's runs had shaped the heap, or in one child per size), the 1k → 10k step
/// read anywhere from 0.8× to 2.1× a task between full runs. Sizes in turn, round after round,
/// compare like with like.
pub(crate) fn compile_series(w: Workload, sizes: &[usize]) -> Vec<f64> {
    let mut times: Vec<Vec<f64>> = sizes.iter().map(|_| Vec::new()).collect();
    for _ in 0..5 {
        for (&n, times) in sizes.iter().zip(&mut times) {
            let (warm_up, timed) = (1, 3);
            let out = child(&[
                "--compile",
                w.arg(),
                &n.to_string(),
                &(warm_up + timed).to_string(),
            ]);
            let before = times.len();
            times.extend(out.lines().skip(warm_up).map(|l| {
                l.trim()
                    .parse::<f64>()
                    .expect("the child prints µs per task")
            }));
            assert_eq!(
                times.len() - before,
                timed,
                "--compile {} {n} printed every compile",
                w.arg()
            );
        }
    }
    times.into_iter().map(median).collect()
}

/// Issue 3's target: 100,000 tasks compile in under 1 s (10 µs per task) and 10× the tasks
/// cost at most 12× the time.
pub(crate) fn compile_rows(s: &mut Section, w: Workload, sizes: &[usize]) {
    eprintln!("compile: {}", w.name());
    let us = compile_series(w, sizes);
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
pub(crate) fn run_peak_row(s: &mut Section, w: Workload, sizes: &[usize]) {
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

pub(crate) fn compile_section(sizes: &[usize]) -> Section {
    let mut s = Section::new(
        "3. Compile cost and peak memory",
        "Time: this binary re-run as a fresh process (`--compile W N R`), every size in turn, \
         five rounds; median of 15 compiles (3 a process, after a discarded warm-up). Peak \
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
