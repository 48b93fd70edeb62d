//! Soak: random workflows (valid and mutated), random template and rule bodies, random agent
//! outputs (deep, huge, binary, control characters) and random signals, through the real
//! binary. The invariant of every case: each command exits with a code Conductor chose (never
//! a panic, 101, or an abort, 134, or a signal other than the SIGKILL the test sent) within its
//! time, and afterwards `runs`, `show` and `events` read the store.
//!
//! The seed is printed; `CONDUCTOR_SOAK_SEED=N` replays a failure, `CONDUCTOR_SOAK_CASES=N`
//! runs more cases than the default (which keeps CI under a minute on 2 cores).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::cli::wait_at_most;

/// Cases CI runs; more by hand with `CONDUCTOR_SOAK_CASES`.
const DEFAULT_CASES: u64 = 24;
/// No new case starts after this much time, so a slow machine stays bounded too.
const TIME_BUDGET: Duration = Duration::from_secs(75);
/// The longest any one command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(40);

/// splitmix64: small, seedable, good enough to pick cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn binary() -> PathBuf {
    std::env::var_os("CONDUCTOR_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_conductor")))
}

fn conductor(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(binary());
    c.current_dir(dir)
        .args(args)
        .env("CONDUCTOR_STORE", dir.join("store.db"))
        .env_remove("CONDUCTOR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

struct Done {
    status: ExitStatus,
    out: String,
}

/// Waits for `child` at most [`COMMAND_LIMIT`]; a hang is killed and reported.
fn wait(child: Child, what: &str, case: &str) -> Done {
    let out = wait_at_most(child, COMMAND_LIMIT, &format!("{case}: `{what}` (hung)"));
    Done {
        status: out.status,
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// An exit Conductor chose: 0–3 (exit codes of operations.md §8) or 130 (interrupted).
fn assert_chosen(done: &Done, what: &str, case: &str) {
    use std::os::unix::process::ExitStatusExt;
    let ok = matches!(done.status.code(), Some(0..=3 | 130));
    assert!(
        ok,
        "{case}: `{what}` ended {:?} (signal {:?})\n{}",
        done.status,
        done.status.signal(),
        tail(&done.out)
    );
    assert!(
        !done.out.contains("panicked at"),
        "{case}: `{what}` panicked\n{}",
        tail(&done.out)
    );
}

fn tail(text: &str) -> String {
    let start = text.len().saturating_sub(3000);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[start..].to_string()
}

/// What `out.py KIND N` prints: the shell agent's random outputs.
const OUT_PY: &str = r#"import os, sys
kind, n = sys.argv[1], int(sys.argv[2])
w = sys.stdout.buffer
if kind == "deep":
    w.write(b"[" * n + b"1" + b"]" * n)
elif kind == "deepmap":
    w.write(b'{"a":' * n + b"1" + b"}" * n)
elif kind == "huge":
    w.write(b'{"summary": "' + b"x" * n + b'"}')
elif kind == "binary":
    w.write(os.urandom(n))
elif kind == "controls":
    w.write(("\x1b[2J\x1b[H\r\n\x00\u202e\x07 fake row\n" * (n % 50 + 1)).encode())
elif kind == "files":
    paths = ["ok.txt", "../escape.txt", "/abs.txt", "a/b/c.txt", "bad\nname", "x" * 300, "dir/"]
    files = [{"path": paths[(n + i) % len(paths)], "content": "c" * (n % 1000)} for i in range(3)]
    import json
    w.write(json.dumps({"files": files, "summary": "s"}).encode())
elif kind == "badutf8":
    w.write(b'{"a": "\xff\xfe"}')
elif kind == "fail":
    sys.stderr.buffer.write(b"\x1b[31merror\x00\n" * 3)
    sys.exit(n % 255 + 1)
elif kind == "slow":
    import time
    time.sleep(5)
else:
    w.write(b"{}")
"#;

const OUTPUT_KINDS: &[&str] = &[
    "deep", "deepmap", "huge", "binary", "controls", "files", "badutf8", "fail", "slow", "plain",
];

/// A template body, random: values, filters, loops, growth, deep chains, broken syntax.
fn template(rng: &mut Rng, upstream: Option<&str>) -> String {
    let mut out = String::new();
    for _ in 0..=rng.below(3) {
        // Mostly pieces that check, so that most cases run; a quarter hostile ones.
        let choice = if rng.chance(25) {
            rng.below(11)
        } else {
            *rng.pick(&[0, 1, 2, 3, 4, 7, 8, 10])
        };
        let piece = match choice {
            0 => "text".to_string(),
            1 => "{{ params.p }}".to_string(),
            2 => "{{ params.p | upper }}".to_string(),
            3 => format!(
                "{{% for i in range({}) %}}x{{% endfor %}}",
                rng.pick(&[3, 1000, 300_000])
            ),
            4 => format!("{{{{ 'ab' * {} }}}}", rng.pick(&[2, 100_000, 100_000_000])),
            5 => format!("{{{{ {}1 }}}}", "-".repeat(*rng.pick(&[3, 60, 70, 5000]))),
            6 => rng
                .pick(&["{{ ", "{% if %}", "}}", "{{ nope.x.y }}", "{% endfor %}"])
                .to_string(),
            7 => "{{ loop_count }}-{{ attempt }}".to_string(),
            8 => match upstream {
                Some(t) => format!("{{{{ tasks.{t}.output }}}}"),
                None => "{{ tasks }}".to_string(),
            },
            9 => {
                let depth = *rng.pick(&[3, 60, 70, 3000]);
                format!("{{{{ {}1{} }}}}", "(".repeat(depth), ")".repeat(depth))
            }
            _ => "{{ params.p | length }}".to_string(),
        };
        out.push_str(&piece);
    }
    out
}

/// A rule body, random: valid, throwing, endless, slow, deep, or not rhai at all.
fn rule(rng: &mut Rng, gate: bool) -> String {
    let choice = if rng.chance(25) {
        rng.below(11)
    } else {
        *rng.pick(&[0, 1, 2, 3, 4, 5, 6, 9, 10])
    };
    match choice {
        0 => "true".to_string(),
        1 => "false".to_string(),
        2 => "params.p == \"x\"".to_string(),
        3 => "loop_count < 2".to_string(),
        4 => "throw \"boom\\n  ✓ fake\"".to_string(),
        5 => "let n = 0; loop { n += 1; } n > 0".to_string(),
        6 => "let a = []; for i in 0..10000 { a.push(i); } let n = 0; for i in 0..100000 { let b = a; n += b.len(); } n > 0".to_string(),
        7 => {
            let depth = *rng.pick(&[3, 60, 70, 3000]);
            format!("{}true{}", "(".repeat(depth), ")".repeat(depth))
        }
        8 => rng.pick(&["(((", "1 +", "}", "let = 3", "open_file(\"x\")"]).to_string(),
        9 if gate => "fail(\"no\\nrun r1 COMPLETED\")".to_string(),
        9 => "tasks.len() >= 0".to_string(),
        _ if gate => "success_rate >= 0.5".to_string(),
        _ => "params.p.len() > 0".to_string(),
    }
}

/// A script function body, random.
fn script(rng: &mut Rng) -> String {
    match rng.below(7) {
        0 => "#{ x: 1, summary: ctx.task }".to_string(),
        1 => format!(
            "let a = []; for i in 0..{} {{ a = [a]; }} #{{ x: a }}",
            rng.pick(&[10, 100, 6000])
        ),
        2 => "let s = \"x\"; loop { s += s; } #{ s: s }".to_string(),
        3 => "throw \"script\\u001b[2J failed\"".to_string(),
        4 => "loop { } #{}".to_string(),
        5 => "let a = []; for i in 0..10000 { a.push(i); } let n = 0; for i in 0..100000 { let b = a; n += b.len(); } #{ n: n }".to_string(),
        _ => "42".to_string(),
    }
}

/// A valid-looking workflow: phases of mock, shell and script tasks with random bodies.
fn workflow(rng: &mut Rng) -> (String, String) {
    let module = format!("fn f(ctx) {{ {} }}\n", script(rng));
    let mut w = String::from("workflow soak {\n    use \"lib.rhai\"\n    param p = \"x\"\n");
    let _ = writeln!(
        w,
        "    on_escalation = \"{}\"",
        rng.pick(&["skip", "abort", "ask"])
    );
    if rng.chance(30) {
        let _ = writeln!(w, "    max_feedback_loops = 2\n    feedback {{ if loop_count < 1 {{ warning(\"again\") }} else {{ ok() }} }}");
    }
    let _ = writeln!(
        w,
        "    agent sc {{ kind = \"script\", function = \"f\", timeout = 2s, retry = 0 }}"
    );
    let mut tasks: Vec<String> = Vec::new();
    let phases = 1 + rng.below(2);
    let mut agents = String::new();
    let mut body = String::new();
    for p in 0..phases {
        let _ = writeln!(body, "    phase ph{p} {{");
        let first = tasks.len();
        for _ in 0..=rng.below(4) {
            let n = tasks.len();
            let name = format!("t{n}");
            // `after` names an earlier task of the same phase.
            let after = (n > first && rng.chance(50))
                .then(|| tasks[first + rng.below((n - first) as u64) as usize].clone());
            let agent = match rng.below(3) {
                0 => {
                    let t = template(rng, after.as_deref()).replace('"', "'");
                    let _ = writeln!(
                        agents,
                        "    agent m{n} {{ kind = \"mock\", output = {{ summary = \"{t}\" }}, fail_rate = {}, retry = 1, backoff = fixed(10ms) }}",
                        rng.pick(&["0.0", "0.5"])
                    );
                    format!("m{n}")
                }
                1 => {
                    let kind = rng.pick(OUTPUT_KINDS);
                    let size = match *kind {
                        "deep" | "deepmap" => rng.pick(&[5, 100, 130, 3000]).to_owned(),
                        "huge" => rng.pick(&[10, 100_000, 3_000_000]).to_owned(),
                        _ => rng.below(5000),
                    };
                    let _ = writeln!(
                        agents,
                        "    agent s{n} {{ kind = \"shell\", command = [\"python3\", \"OUT_PY\", \"{kind}\", \"{size}\"], timeout = 1s, retry = 0 }}"
                    );
                    format!("s{n}")
                }
                _ => "sc".to_string(),
            };
            let after_text = after.map(|a| format!(" after {a}")).unwrap_or_default();
            let when = if rng.chance(30) {
                format!(" {{ when {{ {} }} }}", rule(rng, false))
            } else {
                String::new()
            };
            let _ = writeln!(body, "        task {name} on {agent}{after_text}{when}");
            tasks.push(name);
        }
        if rng.chance(50) {
            let _ = writeln!(body, "        gate {{ {} }}", rule(rng, true));
        }
        body.push_str("    }\n");
    }
    w.push_str(&agents);
    w.push_str(&body);
    w.push_str("}\n");
    (w, module)
}

/// The text with a few random edits: deleted, duplicated or inserted spans, a cut end.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    const JUNK: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b"\\",
        b"=",
        b",",
        b"\n",
        b"\0",
        b"\xff",
        b"\xe2\x80\xae",
        b"{{",
        b"}}",
        b"task",
        b"after",
        b"phase",
        b"999999999999999999999",
        b"-",
        b"#",
    ];
    for _ in 0..=rng.below(3) {
        let len = bytes.len().max(1) as u64;
        let at = rng.below(len) as usize;
        match rng.below(4) {
            0 => {
                let end = (at + rng.below(40) as usize).min(bytes.len());
                bytes.drain(at..end);
            }
            1 => {
                let end = (at + rng.below(200) as usize).min(bytes.len());
                let span = bytes[at..end].to_vec();
                bytes.splice(at..at, span);
            }
            2 => {
                let junk = rng.pick(JUNK).to_vec();
                bytes.splice(at.min(bytes.len())..at.min(bytes.len()), junk);
            }
            _ => bytes.truncate(at),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Run ids in the store, from `runs --json`; `None` when `runs` could not read it.
fn runs(dir: &Path, case: &str) -> Vec<String> {
    let done = wait(
        conductor(dir, &["runs", "--json"]).spawn().unwrap(),
        "runs",
        case,
    );
    if !dir.join("store.db").exists() {
        return Vec::new();
    }
    assert_eq!(
        done.status.code(),
        Some(0),
        "{case}: `runs` cannot read the store\n{}",
        tail(&done.out)
    );
    done.out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

/// One case in its own folder: check and run a workflow (maybe mutated, maybe signalled and
/// resumed), then read everything back.
fn case(rng: &mut Rng, root: &Path, n: u64, label: &str) -> String {
    let dir = root.join(format!("case{n}"));
    let work = dir.join("wf");
    std::fs::create_dir_all(&work).unwrap();
    let (mut text, module) = workflow(rng);
    if std::env::var_os("CONDUCTOR_SOAK_SHOW").is_some() {
        eprintln!("{label}:\n{text}");
    }
    if rng.chance(25) {
        text = mutate(rng, &text);
    }
    let out_py = root.join("out.py");
    let text = text.replace("OUT_PY", &out_py.display().to_string());
    std::fs::write(work.join("soak.cond"), &text).unwrap();
    std::fs::write(work.join("lib.rhai"), module).unwrap();
    let case = format!("{label} (workflow:\n{text})");
    let mut summary = String::new();
    for args in [
        &["check", "wf/soak.cond"][..],
        &["graph", "wf/soak.cond"][..],
    ] {
        let done = wait(conductor(&dir, args).spawn().unwrap(), args[0], &case);
        assert_chosen(&done, args[0], &case);
        let _ = write!(summary, "{} {:?}, ", args[0], done.status.code());
    }
    // The param, random too: deep JSON, controls, large.
    let param = match rng.below(5) {
        0 => format!("p={}1{}", "[".repeat(200), "]".repeat(200)),
        1 => "p=\u{1b}[2J\r\nfake\u{202e}".to_string(),
        2 => format!("p={}", "y".repeat(100_000)),
        _ => "p=x".to_string(),
    };
    let child = conductor(&dir, &["run", "wf/soak.cond", "--param", &param])
        .spawn()
        .unwrap();
    let signal = rng.chance(35).then(|| {
        use nix::sys::signal::Signal;
        *rng.pick(&[
            Signal::SIGKILL,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ])
    });
    if let Some(signal) = signal {
        std::thread::sleep(Duration::from_millis(50 + rng.below(700)));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
    }
    let done = wait(child, "run", &case);
    let _ = write!(summary, "run {:?} (signal {signal:?})", done.status.code());
    let killed = signal == Some(nix::sys::signal::Signal::SIGKILL);
    if !(killed && done.status.code().is_none()) {
        assert_chosen(&done, "run", &case);
    }
    let ids = runs(&dir, &case);
    if signal.is_some() {
        for id in &ids {
            let done = wait(
                conductor(&dir, &["resume", id]).spawn().unwrap(),
                "resume",
                &case,
            );
            assert_chosen(&done, "resume", &case);
        }
    }
    for id in runs(&dir, &case) {
        for cmd in ["show", "events", "why"] {
            let args: Vec<&str> = match cmd {
                "why" => vec!["why", &id, "t0"],
                _ => vec![cmd, &id],
            };
            let done = wait(conductor(&dir, &args).spawn().unwrap(), cmd, &case);
            assert_chosen(&done, cmd, &case);
            if cmd == "show" {
                assert_eq!(
                    done.status.code(),
                    Some(0),
                    "{case}: `show {id}`\n{}",
                    tail(&done.out)
                );
            }
        }
    }
    let dlq = wait(
        conductor(&dir, &["dlq", "list"]).spawn().unwrap(),
        "dlq list",
        &case,
    );
    assert_chosen(&dlq, "dlq list", &case);
    summary
}

#[test]
fn random_workflows_outputs_and_signals_end_cleanly_and_leave_a_readable_store() {
    let seed = std::env::var("CONDUCTOR_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let cases: u64 = std::env::var("CONDUCTOR_SOAK_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    eprintln!("soak: seed {seed} ({cases} cases; replay with CONDUCTOR_SOAK_SEED={seed})");
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("out.py"), OUT_PY).unwrap();
    let start = Instant::now();
    let mut rng = Rng(seed);
    let mut ran = 0;
    for n in 0..cases {
        if start.elapsed() > TIME_BUDGET && std::env::var_os("CONDUCTOR_SOAK_CASES").is_none() {
            break;
        }
        // Each case draws from its own generator, so a failing case replays alone.
        let case_seed = rng.next();
        let label = format!("soak seed {seed}, case {n} (case seed {case_seed})");
        let summary = case(&mut Rng(case_seed), root.path(), n, &label);
        if std::env::var_os("CONDUCTOR_SOAK_SHOW").is_some() {
            eprintln!("{label}: {summary}");
        }
        ran += 1;
    }
    eprintln!("soak: {ran} cases in {:?}", start.elapsed());
    assert!(
        ran >= cases.min(4),
        "only {ran} cases ran in the time budget"
    );
}
