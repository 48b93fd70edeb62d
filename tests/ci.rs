//! Conductor as a CI system, through the binary: a real Python project's test suite in
//! shards where one test fails, failure classes (a non-zero exit is a verdict, retried only
//! for listed codes), `conductor logs` (live with `--follow`), and an `always` phase that
//! writes the report.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn conductor(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
    c.current_dir(dir)
        .env("CONDUCTOR_STORE", dir.join("store.db"))
        .stdin(Stdio::null());
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Copies `examples/python_ci.cond` and its project into a fresh folder.
fn python_ci() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::copy(
        root.join("python_ci.cond"),
        dir.path().join("python_ci.cond"),
    )
    .unwrap();
    let project = dir.path().join("python_ci");
    std::fs::create_dir_all(project.join("tests")).unwrap();
    for f in ["calc.py", "report.py"] {
        std::fs::copy(root.join("python_ci").join(f), project.join(f)).unwrap();
    }
    for f in [
        "__init__.py",
        "test_add.py",
        "test_divide.py",
        "test_parse.py",
    ] {
        let from = root.join("python_ci/tests").join(f);
        std::fs::copy(from, project.join("tests").join(f)).unwrap();
    }
    let file = dir.path().join("python_ci.cond");
    (dir, file)
}

fn run_id(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .nth(1)
        .expect("the first line names the run")
        .to_string()
}

#[test]
fn a_failing_test_fails_the_run_once_is_named_everywhere_and_the_report_is_written() {
    let (dir, file) = python_ci();
    let out = conductor(dir.path())
        .args(["run", file.to_str().unwrap()])
        .output()
        .unwrap();
    let view = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{view}\n{}", text(&out.stderr));
    let run = run_id(&view);
    // The run view names the failing test, from the tail of what unittest printed.
    assert!(view.contains("FAIL: test_rounds_down"), "{view}");
    assert!(
        view.contains(&format!("conductor logs {run} test_divide")),
        "{view}"
    );

    let show = conductor(dir.path()).args(["show", &run]).output().unwrap();
    let show = text(&show.stdout);
    assert!(show.contains("FAIL: test_rounds_down"), "{show}");

    let json = conductor(dir.path())
        .args(["show", &run, "--json"])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(state["status"], "failed");
    let find = |name: &str| state["task_results"][name].clone();
    // A failed test is the task's verdict: run once, though `retry` allows 3 more.
    assert_eq!(find("test_divide")["attempts"], 1);
    assert_eq!(find("test_divide")["status"], "failed");
    assert_eq!(find("test_add")["status"], "completed");
    assert_eq!(find("test_parse")["status"], "completed");

    let logs = conductor(dir.path())
        .args(["logs", &run, "test_divide"])
        .output()
        .unwrap();
    assert!(logs.status.success(), "{}", text(&logs.stderr));
    // unittest reports on stderr, and `logs` keeps the streams apart.
    let err = text(&logs.stderr);
    assert!(err.contains("FAIL: test_rounds_down"), "{err}");
    assert!(err.contains("AssertionError: 3.5 != 3"), "{err}");
    assert!(err.contains("Ran 2 tests"), "{err}");

    // Nothing went to the dead-letter queue: a verdict is not an error.
    let dlq = conductor(dir.path())
        .args(["dlq", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(text(&dlq.stdout).trim(), "");

    // The always phase ran after the failure and wrote the report.
    // The run's workspace, as its first line names it.
    let workspace = view
        .lines()
        .next()
        .unwrap()
        .rsplit("workspace ")
        .next()
        .unwrap();
    let report = Path::new(workspace).join("report.md");
    let report = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("{}: {e}\n{view}", report.display()));
    assert!(report.starts_with("# CI report: failed"), "{report}");
    assert!(report.contains("- test_divide: failed"), "{report}");
    assert!(report.contains("AssertionError: 3.5 != 3"), "{report}");
    assert!(report.contains("- test_add: completed"), "{report}");
}

#[test]
fn only_listed_exit_codes_are_retried_and_failures_do_not_open_the_breaker() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("codes.cond");
    // `flaky` exits 75 the first time, then 0; `broken` tasks exit 1 every time on a pool
    // whose breaker opens after one error.
    std::fs::write(
        &file,
        r#"workflow codes {
            agent flaky {
                kind = "shell"
                command = ["sh", "-c", "if [ -f seen ]; then echo fine; else touch seen; exit 75; fi"]
                workdir = "."
                backoff = fixed(10ms)
                retry_on_exit = [75]
            }
            agent broken {
                kind = "shell"
                command = ["sh", "-c", "echo 'ImportError: no module named calc' >&2; exit 1"]
                count = 1
                circuit_breaker = breaker(1, 30s)
            }
            phase p {
                task tempfail on flaky
                task one on broken
                task two on broken
                task three on broken { retry_on_exit = [1]  retry = 1  backoff = fixed(10ms) }
                gate { true }
            }
        }"#,
    )
    .unwrap();
    let out = conductor(dir.path())
        .args(["run", "codes.cond", "--json"])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let state = lines.last().unwrap();
    assert_eq!(state["status"], "completed", "{state:#}");
    let task = |name: &str| state["task_results"][name].clone();
    assert_eq!(task("tempfail")["status"], "completed");
    assert_eq!(task("tempfail")["attempts"], 2, "75 is listed: retried");
    for name in ["one", "two"] {
        assert_eq!(task(name)["status"], "failed");
        assert_eq!(task(name)["attempts"], 1, "1 is not listed for {name}");
        assert_eq!(task(name)["error"]["exit_code"], 1);
    }
    assert_eq!(
        task("three")["attempts"],
        2,
        "the task's own list: retried once"
    );
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    for never in ["breaker_changed", "dead_lettered", "escalated"] {
        assert!(!kinds.contains(&never), "{never} in {kinds:?}");
    }
}

#[test]
fn logs_follow_prints_a_running_tasks_output_as_it_comes_and_ends_with_it() {
    let dir = tempfile::tempdir().unwrap();
    // The task prints a line, then waits until the test has seen that line through
    // `logs --follow` (it creates `go`), then prints another and fails.
    std::fs::write(
        dir.path().join("slow.cond"),
        r#"workflow slow {
            agent sh {
                kind = "shell"
                command = ["sh", "-c", "echo line one; echo warming up >&2; while [ ! -f go ]; do sleep 0.05; done; echo line two; exit 3"]
                workdir = "."
            }
            phase p { task build on sh { timeout = 30s } }
        }"#,
    )
    .unwrap();
    let mut run = conductor(dir.path())
        .args(["run", "slow.cond", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut events = BufReader::new(run.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&events.next().unwrap().unwrap()).unwrap();
    let id = first["run_id"].as_str().unwrap().to_string();

    let mut follow = conductor(dir.path())
        .args(["logs", &id, "build", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(follow.stdout.take().unwrap()).lines();
    let line = out.next().unwrap().unwrap();
    assert_eq!(line, "line one");
    // Seen live: only now may the task go on.
    std::fs::write(dir.path().join("go"), "").unwrap();
    let rest: Vec<String> = out.map_while(Result::ok).collect();
    assert_eq!(rest, ["line two"]);
    let status = follow.wait().unwrap();
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("warming up"), "{err}");

    for _ in events.by_ref() {}
    assert_eq!(run.wait().unwrap().code(), Some(1));
    // After the run, the same output, attempt by number.
    let again = conductor(dir.path())
        .args(["logs", &id, "build", "--attempt", "1"])
        .output()
        .unwrap();
    assert_eq!(text(&again.stdout), "line one\nline two\n");
    let none = conductor(dir.path())
        .args(["logs", &id, "build", "--attempt", "2"])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(text(&none.stderr).contains("there is no attempt 2"));
    let typo = conductor(dir.path())
        .args(["logs", &id, "buld"])
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(2));
    assert!(
        text(&typo.stderr).contains("did you mean `build`?"),
        "{}",
        text(&typo.stderr)
    );
}
