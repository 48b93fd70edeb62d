//! Kill -9 at many points of real `conductor run` processes, then `conductor resume`: every run
//! ends COMPLETED, every task's result is present exactly once, and no task is executed again
//! after its COMPLETED result was stored (mock agents log each execution to a file).
//!
//! What the crash test guarantees, by a task's `effect`: an `idempotent` (or `external`) task
//! never runs without its dispatch committed first. A `pure` task (the default) may start
//! before its dispatch is committed — its dispatch joins a group commit of a few milliseconds,
//! which is what makes long chains cheap — so a kill can leave an execution with no dispatch in
//! the log; the task then runs again on resume, which a pure task allows. For every task, no
//! completion is recorded twice and nothing runs again once its completion is recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WORKFLOW: &str = r#"workflow crashy {
    agent fast { kind = "mock", latency = 10ms, count = 3, log = "mock.log" }
    agent slow { kind = "mock", latency = 30ms, count = 2, log = "mock.log" }
    agent flaky { kind = "mock", latency = 15ms, fail_first = 1, retry = 2, backoff = fixed(10ms), log = "mock.log" }
    phase build {
        task fetch on fast
        task compile_a on slow after fetch { effect = "idempotent" }
        task compile_b on slow after fetch { effect = "idempotent" }
        task compile_c on fast after fetch
        task link on flaky after compile_a, compile_b, compile_c
    }
    phase test {
        task unit on fast
        task integration on slow { effect = "idempotent" }
        task lint on fast
        task report on flaky after unit, integration, lint
    }
    phase ship {
        task package on fast
        task publish on slow after package { effect = "idempotent" }
    }
}"#;

fn conductor(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
    c.current_dir(dir)
        .env("CONDUCTOR_STORE", dir.join("store.db"))
        .stdin(Stdio::null());
    c
}

/// Starts a command with `--json` and returns it once its first event line names the run.
fn start(mut cmd: Command) -> (Child, String, std::thread::JoinHandle<()>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(t) = tx.take() {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let _ = t.send(v["run_id"].as_str().unwrap_or("").to_string());
            }
        }
    });
    let run_id = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    (child, run_id, reader)
}

/// Starts a command with `--json` and kills it (SIGKILL) as soon as `stop` says so, given
/// the event lines printed so far. Events are printed after they are committed, so the kill
/// point is a point in the run's own progress, not in wall-clock time: the coverage does not
/// depend on the machine's speed. Returns the lines read.
fn run_until(
    mut cmd: Command,
    stop: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        lines.push(serde_json::from_str(&line).unwrap_or_default());
        if stop(&lines) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(rx);
    let _ = reader.join();
    lines
}

fn events(dir: &Path, run: &str) -> Vec<serde_json::Value> {
    let out = conductor(dir).args(["events", run]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn kill_nine_at_any_moment_loses_nothing_and_repeats_nothing() {
    // How far each killed run had got: the number of events before the first resume.
    let mut progress_at_kill = BTreeSet::new();
    let mut resumed_runs = 0;
    for i in 0..28usize {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("crashy.cond"), WORKFLOW).unwrap();
        // Kill points spread over the run's ~50 events, a different one each time.
        let kill_at = 1 + i * 44 / 27;
        let mut cmd = conductor(dir.path());
        cmd.args(["run", "crashy.cond", "--json"]);
        let lines = run_until(cmd, |lines| lines.len() >= kill_at);
        let run = lines
            .first()
            .and_then(|l| l["run_id"].as_str())
            .unwrap_or_default()
            .to_string();
        assert!(!run.is_empty(), "run {i} printed no run id");
        // Every third run is killed again while resuming, a few events after it resumed.
        if i % 3 == 0 {
            let mut cmd = conductor(dir.path());
            cmd.args(["resume", &run, "--json"]);
            let after = 1 + i % 7;
            run_until(cmd, |lines| {
                lines
                    .iter()
                    .position(|l| l["event"] == "run_resumed")
                    .is_some_and(|at| lines.len() > at + after)
            });
        }
        let mut finished = false;
        for _ in 0..3 {
            let out = conductor(dir.path())
                .args(["resume", &run])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            if out.status.success() {
                finished = true;
                break;
            }
            assert!(
                stdout.contains("COMPLETED") || out.status.code() != Some(2),
                "{stdout}"
            );
        }
        assert!(
            finished,
            "run {i} (killed after event {kill_at}) did not complete after resuming"
        );

        let log = events(dir.path(), &run);
        let last = log.last().unwrap();
        assert_eq!(last["event"], "run_finished");
        assert_eq!(last["status"], "completed", "run {i}");
        if let Some(at) = log.iter().position(|e| e["event"] == "run_resumed") {
            resumed_runs += 1;
            progress_at_kill.insert(at);
        }

        // Every task completed exactly once, and was not dispatched after completing.
        let mut completed: BTreeMap<String, usize> = BTreeMap::new();
        let mut dispatched_after: Vec<String> = Vec::new();
        let mut dispatched: BTreeSet<(String, u64)> = BTreeSet::new();
        for e in &log {
            let task = e["task"].as_str().unwrap_or("").to_string();
            match e["event"].as_str() {
                Some("task_finished") if e["status"] == "completed" => {
                    *completed.entry(task).or_default() += 1;
                }
                Some("task_dispatched") => {
                    if completed.contains_key(&task) {
                        dispatched_after.push(task.clone());
                    }
                    dispatched.insert((task, e["attempt"].as_u64().unwrap()));
                }
                _ => {}
            }
        }
        assert_eq!(completed.len(), 11, "run {i}: {completed:?}");
        assert!(
            completed.values().all(|n| *n == 1),
            "run {i}: {completed:?}"
        );
        assert!(
            dispatched_after.is_empty(),
            "run {i}: ran again after completing: {dispatched_after:?}"
        );
        // Every real execution of an idempotent task (from the mock's own log) was a
        // recorded dispatch; pure tasks may have run in the commit window before theirs.
        let idempotent = ["compile_a", "compile_b", "integration", "publish"];
        let mock_log = std::fs::read_to_string(dir.path().join("mock.log")).unwrap_or_default();
        assert!(
            !mock_log.is_empty(),
            "run {i}: the mocks logged no execution"
        );
        for line in mock_log.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let key = (parts[1].to_string(), parts[2].parse::<u64>().unwrap());
            if !idempotent.contains(&parts[1]) {
                continue;
            }
            assert!(
                dispatched.contains(&key),
                "run {i}: execution {line:?} has no dispatch event"
            );
        }
    }
    // The kills really landed mid-run, at many different points.
    assert!(
        resumed_runs >= 20,
        "only {resumed_runs} of 24 runs were killed before finishing"
    );
    assert!(
        progress_at_kill.len() >= 8,
        "kill points too alike: {progress_at_kill:?}"
    );
    eprintln!("killed after these numbers of committed events: {progress_at_kill:?}");
}

#[test]
fn resuming_a_completed_run_says_so_and_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("crashy.cond"), WORKFLOW).unwrap();
    let out = conductor(dir.path())
        .args(["run", "crashy.cond", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let run = first["run_id"].as_str().unwrap().to_string();
    let before = events(dir.path(), &run).len();
    let out = conductor(dir.path())
        .args(["resume", &run])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already completed"));
    assert_eq!(
        events(dir.path(), &run).len(),
        before,
        "nothing was appended"
    );
}

#[test]
fn two_processes_cannot_drive_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let slow = r#"workflow s { agent m { kind = "mock", latency = 2s } phase p { task a on m } }"#;
    std::fs::write(dir.path().join("s.cond"), slow).unwrap();
    let mut cmd = conductor(dir.path());
    cmd.args(["run", "s.cond", "--json"]);
    let (mut child, run, reader) = start(cmd);
    let out = conductor(dir.path())
        .args(["resume", &run])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is being driven by another process"),
        "{stderr}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
}

#[test]
fn a_damaged_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("store.db"),
        b"this is not sqlite at all, just text",
    )
    .unwrap();
    let out = conductor(dir.path()).arg("runs").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a Conductor store, or it is damaged"),
        "{stderr}"
    );
    // A truncated real store.
    std::fs::write(dir.path().join("crashy.cond"), WORKFLOW).unwrap();
    let db = dir.path().join("real.db");
    let out = conductor(dir.path())
        .args(["run", "crashy.cond", "--store"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let bytes = std::fs::read(&db).unwrap();
    std::fs::write(&db, &bytes[..bytes.len() / 3]).unwrap();
    // Without its write-ahead log: on a busy machine the run's last pages may still be there
    // rather than in the file, and SQLite would read them back whole (seen in the full suite).
    for side in ["real.db-wal", "real.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(side));
    }
    let out = conductor(dir.path())
        .args(["show", "r", "--store"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn why_explains_a_dead_lettered_task_and_a_skipped_one() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"workflow w {
        param deploy = false
        agent broken { kind = "mock", fail_first = 9, retry = 1, backoff = fixed(10ms) }
        agent ok { kind = "mock" }
        phase p {
            task a on broken
            task b on ok after a
            task c on ok { when { params.deploy } }
            gate { true }
        }
    }"#;
    std::fs::write(dir.path().join("w.cond"), text).unwrap();
    let out = conductor(dir.path())
        .args(["run", "w.cond", "--json"])
        .output()
        .unwrap();
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let run = first["run_id"].as_str().unwrap().to_string();
    let why = |task: &str| {
        let out = conductor(dir.path())
            .args(["why", &run, task])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let a = why("a");
    assert!(a.contains("retry 2 scheduled after 10ms of backoff"), "{a}");
    assert!(a.contains("dead-lettered as"), "{a}");
    assert!(a.contains("2 attempts failed"), "{a}");
    let b = why("b");
    assert!(
        b.contains("skipped (upstream_failed): its dependency `a` failed"),
        "{b}"
    );
    let c = why("c");
    assert!(
        c.contains("skipped (when_false): its `when` rule at w.cond:8:"),
        "{c}"
    );
    assert!(c.contains("\"deploy\":false"), "{c}");
    let out = conductor(dir.path())
        .args(["why", &run, "bb"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `b`?"));
}

#[test]
fn dlq_retry_reruns_the_task_and_continues_the_run_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"workflow gf {
        agent flaky { kind = "mock", fail_first = 1, retry = 0 }
        agent ok { kind = "mock" }
        phase p { task a on flaky  task b on ok after a  gate { success_rate >= 1.0 } }
        phase q { task c on ok }
    }"#;
    std::fs::write(dir.path().join("gf.cond"), text).unwrap();
    let out = conductor(dir.path())
        .args(["run", "gf.cond"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the gate fails the first run");
    let out = conductor(dir.path())
        .args(["dlq", "list", "--json"])
        .output()
        .unwrap();
    let entry: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let id = entry["id"].as_str().unwrap().to_string();
    assert_eq!(entry["task"], "a");
    let out = conductor(dir.path())
        .args(["dlq", "retry", &id])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("COMPLETED: 3 completed"), "{stdout}");
    assert!(
        stdout.contains(&format!("decided by conductor dlq retry {id}")),
        "{stdout}"
    );
    let out = conductor(dir.path())
        .args(["dlq", "list", "--json"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the entry is handled"
    );
    let run = entry["run_id"].as_str().unwrap();
    let log = events(dir.path(), run);
    assert_eq!(log.last().unwrap()["status"], "completed");
}

#[test]
fn resuming_with_a_changed_workflow_file_is_refused_not_garbled() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("crashy.cond"), WORKFLOW).unwrap();
    let mut cmd = conductor(dir.path());
    cmd.args(["run", "crashy.cond", "--json"]);
    let lines = run_until(cmd, |lines| lines.len() >= 5);
    let run = lines[0]["run_id"].as_str().unwrap().to_string();
    std::fs::write(
        dir.path().join("crashy.cond"),
        WORKFLOW
            .replace("        task lint on fast\n", "")
            .replace(", lint", ""),
    )
    .unwrap();
    let out = conductor(dir.path())
        .args(["resume", &run])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no longer has the tasks"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn shell_tasks_start_in_the_runs_workspace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("w.cond"),
        r#"workflow w { agent sh { kind = "shell", command = ["pwd"] } phase p { task where on sh } }"#,
    )
    .unwrap();
    let out = conductor(dir.path())
        .args(["run", "w.cond", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let run = lines[0]["run_id"].as_str().unwrap();
    let state = lines.last().unwrap();
    let pwd = state["task_results"]["where"]["output"]["stdout"]
        .as_str()
        .unwrap()
        .trim();
    let expected = dir.path().join("runs").join(run).join("work");
    assert_eq!(
        std::fs::canonicalize(pwd).unwrap(),
        std::fs::canonicalize(&expected).unwrap()
    );
}

#[test]
fn resume_after_ctrl_c_with_an_external_task_keeps_the_order_and_does_not_crash() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"workflow w {
        agent slow { kind = "mock", latency = 1s }
        agent fast { kind = "mock" }
        phase p { task up on slow { effect = "external" }  task next on fast after up }
        phase q { task last on fast }
    }"#;
    std::fs::write(dir.path().join("w.cond"), text).unwrap();
    let mut cmd = conductor(dir.path());
    cmd.args(["run", "w.cond", "--json"]);
    let (child, run, reader) = start(cmd);
    std::thread::sleep(Duration::from_millis(400));
    // Ctrl-C: the run ends CANCELLED with `up` cancelled in flight.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut child = child;
    let _ = child.wait();
    let _ = reader.join();
    let out = conductor(dir.path())
        .args(["resume", &run])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "an external task waits for a decision"
    );
    let out = conductor(dir.path())
        .args(["resume", &run, "--decide", "up=retry"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = events(dir.path(), &run);
    let order: Vec<&str> = log
        .iter()
        .filter(|e| e["event"] == "task_finished" && e["status"] == "completed")
        .map(|e| e["task"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["up", "next", "last"]);
}

#[test]
fn a_store_that_cannot_be_written_is_not_called_damaged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("crashy.cond"), WORKFLOW).unwrap();
    let out = conductor(dir.path())
        .args(["run", "crashy.cond"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // SQLite cannot create its write-ahead log beside the file (a folder holds its name): the
    // same failure as a read-only folder, without needing privileges to make one.
    let wal = dir.path().join("store.db-wal");
    let _ = std::fs::remove_file(&wal);
    std::fs::create_dir(&wal).unwrap();
    let out = conductor(dir.path()).arg("runs").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be opened for writing"), "{stderr}");
    assert!(!stderr.contains("damaged"), "{stderr}");
    // The store itself is intact: once the folder is gone, every run is there.
    std::fs::remove_dir(&wal).unwrap();
    let out = conductor(dir.path()).arg("runs").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("crashy"));
}
