//! Many machines, stood in for by many processes on this one: a run started with
//! `--store postgres://…` whose shell tasks are executed by separate `conductor worker`
//! processes (each with its own workspace), against the real PostgreSQL the tests use.
//!
//! What each test checks comes from the run's log (`conductor events`) and from the tasks'
//! own side-effect log (each execution appends a line): every task completes exactly once in
//! the log, a worker killed or paused past its lease loses its attempt (`AGENT_LOST`, run
//! again), a paused worker's late result is never recorded, and a killed scheduler is taken
//! over without running again what workers were still doing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::postgres;

/// A fan-out of `n` shell tasks on a pool placed on workers (`PLACEMENT`). Each execution
/// logs `start TASK ATTEMPT DIR` and `done TASK ATTEMPT` to `side.log` (absolute path); the
/// task named by `SLOW` sleeps `SLOW_SECS` on its first attempt.
fn workflow(n: usize, placement: &str, log: &Path, slow: &str, slow_secs: f64) -> String {
    let items: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    format!(
        r#"workflow dist {{
    max_parallel = 32
    agent sh {{
        kind = "shell"
        count = 8
        placement = "{placement}"
        retry = 2
        backoff = fixed(10ms)
        command = ["sh", "-c", "echo start $CONDUCTOR_TASK $CONDUCTOR_ATTEMPT $PWD >> {log}; if [ \"$CONDUCTOR_TASK\" = '{slow}' ] && [ $CONDUCTOR_ATTEMPT = 1 ]; then sleep {slow_secs}; fi; echo done $CONDUCTOR_TASK $CONDUCTOR_ATTEMPT >> {log}; echo item {{{{ item.i }}}}"]
    }}
    phase p {{
        task t on sh {{
            matrix = {{ i = [{items}] }}
        }}
    }}
}}"#,
        log = log.display(),
        items = items.join(", "),
    )
}

struct Setup {
    dir: tempfile::TempDir,
    /// The store, with short run leases so that a takeover comes quickly.
    store: String,
}

impl Setup {
    fn new(test: &str) -> Option<Setup> {
        let db = postgres::database(test)?;
        Some(Setup {
            dir: tempfile::tempdir().unwrap(),
            store: format!("{db}?lease=1s"),
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn side_log(&self) -> PathBuf {
        self.path().join("side.log")
    }

    fn write(&self, n: usize, slow: &str, slow_secs: f64) {
        let text = workflow(n, "workers", &self.side_log(), slow, slow_secs);
        std::fs::write(self.path().join("dist.cond"), text).unwrap();
    }

    fn conductor(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
        c.current_dir(self.path())
            .env("CONDUCTOR_STORE", &self.store)
            .env("CONDUCTOR_LOG", "info")
            .stdin(Stdio::null());
        c
    }

    /// A worker process with a one-second lease on each attempt and its own workspace; its
    /// messages go to `NAME.log`.
    fn worker(&self, name: &str) -> Proc {
        self.worker_with_lease(name, "1s")
    }

    fn worker_with_lease(&self, name: &str, lease: &str) -> Proc {
        let log = std::fs::File::create(self.path().join(format!("{name}.log"))).unwrap();
        let child = self
            .conductor()
            .args([
                "worker",
                "--lease",
                lease,
                "--poll",
                "100ms",
                "--concurrency",
                "4",
            ])
            .arg("--dir")
            .arg(self.path().join(name))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Proc(child)
    }

    fn worker_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn events(&self, run: &str) -> Vec<Value> {
        let out = self.conductor().args(["events", run]).output().unwrap();
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

    fn status(&self, run: &str) -> String {
        let out = self.conductor().args(["runs", "--json"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["id"] == run)
            .map(|v| v["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    /// Waits until `cond` holds on the side log's lines.
    fn wait_side(&self, what: &str, cond: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lines: Vec<String> = std::fs::read_to_string(self.side_log())
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect();
            if cond(&lines) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A child process killed (SIGKILL) when dropped, so that a failing test leaves none behind.
struct Proc(Child);

impl Proc {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.0.id());
    }

    fn kill9(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits for the process to exit (it must within a minute) and returns its exit code.
    fn wait(mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not exit",
                self.0.id()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `conductor run dist.cond --json`, its run id read from its first event line; the rest of
/// its lines are sent on the returned channel.
fn start_run(s: &Setup) -> (Proc, String, std::sync::mpsc::Receiver<Value>) {
    let mut child = s
        .conductor()
        .args(["run", "dist.cond", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let run = first["run_id"].as_str().unwrap_or_default().to_string();
    assert!(!run.is_empty(), "the run printed no run id: {first}");
    (Proc(child), run, rx)
}

fn of_kind<'a>(events: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter(move |e| e["event"] == kind)
}

/// Each task's completions in the log.
fn completions(events: &[Value]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for e in of_kind(events, "task_finished").filter(|e| e["status"] == "completed") {
        *n.entry(e["task"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    n
}

/// Every instance `t[1]`…`t[n]` completed exactly once, and the fan-out task itself.
fn assert_each_completed_once(events: &[Value], n: usize) {
    let done = completions(events);
    for i in 1..=n {
        let name = format!("t[{i}]");
        assert_eq!(done.get(&name), Some(&1), "{name} completions: {done:?}");
    }
    assert_eq!(done.len(), n + 1, "{done:?}");
}

/// The lines of the side log that start with `word`, as (task, attempt).
fn side(s: &Setup, word: &str) -> Vec<(String, u32)> {
    std::fs::read_to_string(s.side_log())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(word)).then(|| {
                let task = w.next().unwrap_or_default().to_string();
                (task, w.next().and_then(|a| a.parse().ok()).unwrap_or(0))
            })
        })
        .collect()
}

/// Task outputs by name, from the log.
fn outputs(events: &[Value]) -> BTreeMap<String, Value> {
    of_kind(events, "attempt_finished")
        .filter(|e| e["error"].is_null())
        .map(|e| {
            let mut out = e["output"].clone();
            assert!(!out.is_null(), "{e}");
            // Durations differ between two runs; what the program said does not.
            if let Some(o) = out.as_object_mut() {
                o.retain(|k, _| k == "stdout" || k == "exit_code" || k == "results");
            }
            (e["task"].as_str().unwrap_or_default().to_string(), out)
        })
        .collect()
}

#[test]
fn workers_run_a_fan_out_with_the_same_results_as_sqlite() {
    let Some(s) = Setup::new("workers_same_as_sqlite") else {
        return;
    };
    let n = 12;
    s.write(n, "none", 0.0);
    let (w1, w2) = (s.worker("w1"), s.worker("w2"));
    let out = s
        .conductor()
        .args(["run", "dist.cond", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let run = first["run_id"].as_str().unwrap().to_string();
    assert_eq!(s.status(&run), "completed");
    let events = s.events(&run);
    assert_each_completed_once(&events, n);
    // Every execution happened in a worker's own workspace, none in the scheduler's.
    let log = std::fs::read_to_string(s.side_log()).unwrap();
    let starts: Vec<&str> = log.lines().filter(|l| l.starts_with("start")).collect();
    assert_eq!(starts.len(), n, "{log}");
    let w1_dir = s.path().join("w1").display().to_string();
    let w2_dir = s.path().join("w2").display().to_string();
    for l in &starts {
        assert!(
            l.contains(&w1_dir) || l.contains(&w2_dir),
            "not run by a worker: {l}"
        );
    }
    drop((w1, w2));

    // The same workflow with its pool local, on SQLite: the same tasks, the same outputs.
    let local = tempfile::tempdir().unwrap();
    let text = workflow(n, "local", &local.path().join("side.log"), "none", 0.0);
    std::fs::write(local.path().join("dist.cond"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_conductor"))
        .current_dir(local.path())
        .env("CONDUCTOR_STORE", local.path().join("store.db"))
        .args(["run", "dist.cond", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let sqlite: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e.get("event").is_some())
        .collect();
    assert_eq!(outputs(&sqlite), outputs(&events));
    let kinds = |ev: &[Value]| {
        let mut k: Vec<String> = ev.iter().map(|e| e["event"].to_string()).collect();
        k.sort();
        k
    };
    assert_eq!(kinds(&sqlite), kinds(&events));
}

#[test]
fn a_worker_killed_mid_attempt_loses_it_and_the_attempt_runs_again_elsewhere() {
    let Some(s) = Setup::new("worker_killed") else {
        return;
    };
    let n = 4;
    s.write(n, "t[2]", 5.0);
    let w1 = s.worker("w1");
    let (run_proc, run, lines) = start_run(&s);
    // Killed once the others' results are in the log, while t[2] runs.
    let mut finished = 0;
    while finished < n - 1 {
        let v = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the other tasks finish");
        finished += (v["event"] == "attempt_finished") as usize;
    }
    s.wait_side("t[2] to start", |l| {
        l.iter().any(|l| l.starts_with("start t[2] 1"))
    });
    w1.kill9();
    let _w2 = s.worker("w2");
    assert_eq!(run_proc.wait(), Some(0), "the run completes");
    let events = s.events(&run);
    assert_each_completed_once(&events, n);
    let lost: Vec<&Value> = of_kind(&events, "attempt_finished")
        .filter(|e| e["error"]["code"] == "AGENT_LOST")
        .collect();
    assert_eq!(lost.len(), 1, "one attempt lost: {lost:?}");
    assert_eq!(lost[0]["task"], "t[2]");
    assert_eq!(lost[0]["error"]["retryable"], true);
    let done = of_kind(&events, "attempt_finished")
        .find(|e| e["task"] == "t[2]" && e["error"].is_null())
        .unwrap();
    assert_eq!(done["attempt"], 2, "{done}");
    assert!(
        side(&s, "start").contains(&("t[2]".into(), 2)),
        "attempt 2 ran"
    );
}

#[test]
fn a_paused_worker_past_its_lease_is_refused_and_the_task_runs_once_more() {
    let Some(s) = Setup::new("worker_paused") else {
        return;
    };
    let n = 3;
    s.write(n, "t[1]", 1.5);
    let w1 = s.worker("w1");
    let (run_proc, run, _lines) = start_run(&s);
    s.wait_side("t[1] to start", |l| {
        l.iter().any(|l| l.starts_with("start t[1] 1"))
    });
    w1.signal("STOP");
    let _w2 = s.worker("w2");
    // The paused worker's program finishes meanwhile; the worker cannot report it.
    s.wait_side("t[1] attempt 1 to finish", |l| {
        l.iter().any(|l| l == "done t[1] 1")
    });
    assert_eq!(run_proc.wait(), Some(0), "the run completes without w1");
    w1.signal("CONT");
    // w1 wakes up with a result whose claim is gone: it is refused (or the attempt is
    // stopped at w1's next heartbeat), never recorded.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(s.worker_log("w1").contains("was refused")
        || s.worker_log("w1").contains("no longer holds it"))
    {
        assert!(
            Instant::now() < deadline,
            "w1 said nothing about its stale attempt: {}",
            s.worker_log("w1")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = s.events(&run);
    assert_each_completed_once(&events, n);
    let t1: Vec<&Value> = events.iter().filter(|e| e["task"] == "t[1]").collect();
    let lost = t1
        .iter()
        .filter(|e| e["event"] == "attempt_finished" && e["error"]["code"] == "AGENT_LOST")
        .count();
    assert_eq!(lost, 1, "{t1:?}");
    let done = t1
        .iter()
        .find(|e| e["event"] == "attempt_finished" && e["error"].is_null())
        .unwrap();
    assert_eq!(done["attempt"], 2, "the retry's result, not w1's: {done}");
    let dispatched = t1
        .iter()
        .filter(|e| e["event"] == "task_dispatched")
        .count();
    assert_eq!(dispatched, 2, "retried once: {t1:?}");
}

#[test]
fn a_killed_scheduler_is_taken_over_by_one_of_two_schedulers_and_nothing_runs_twice() {
    let Some(s) = Setup::new("scheduler_killed") else {
        return;
    };
    let n = 10;
    write_slow(&s, n);
    let (_w1, _w2) = (s.worker("w1"), s.worker("w2"));
    let (run_proc, run, lines) = start_run(&s);
    // Killed once attempts are on the workers, and before the run could have finished.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dispatched = 0;
    while dispatched < 4 {
        let v = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the run dispatches");
        dispatched += (v["event"] == "task_dispatched") as usize;
    }
    s.wait_side("an attempt to start", |l| !l.is_empty());
    run_proc.kill9();
    let started_before = side(&s, "start").len();
    // Two schedulers race for the orphaned run once its lease runs out.
    let sched = |name: &str| {
        let log = std::fs::File::create(s.path().join(format!("{name}.log"))).unwrap();
        Proc(
            s.conductor()
                .args(["scheduler", "--poll", "200ms"])
                .stdout(log)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let (s1, s2) = (sched("s1"), sched("s2"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.status(&run) != "completed" {
        assert!(
            Instant::now() < deadline,
            "the run was not taken over: {}",
            s.status(&run)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop((s1, s2));
    let events = s.events(&run);
    assert_each_completed_once(&events, n);
    assert_eq!(
        of_kind(&events, "run_resumed").count(),
        1,
        "exactly one scheduler took the run over"
    );
    // Attempts the workers had started were adopted, not run again: each task's program ran
    // once, and every execution has its dispatch in the log.
    let starts = side(&s, "start");
    assert_eq!(
        starts.len(),
        n,
        "{started_before} had started at the kill: {starts:?}"
    );
    for (task, attempt) in &starts {
        assert!(
            of_kind(&events, "task_dispatched")
                .any(|e| e["task"] == task.as_str() && e["attempt"] == *attempt),
            "{task} attempt {attempt} ran without a committed dispatch"
        );
    }
}

/// The workflow of the takeover tests: every task takes a while, so that some are on workers
/// when the scheduler dies.
fn write_slow(s: &Setup, n: usize) {
    let text = workflow(n, "workers", &s.side_log(), "none", 0.0)
        .replace("echo done", "sleep 0.4; echo done");
    std::fs::write(s.path().join("dist.cond"), text).unwrap();
}

/// Reads the run's event lines until `k` dispatches were printed.
fn until_dispatched(lines: &std::sync::mpsc::Receiver<Value>, k: usize) {
    let mut dispatched = 0;
    while dispatched < k {
        let v = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the run dispatches");
        dispatched += (v["event"] == "task_dispatched") as usize;
    }
}

/// Each program ran once, with a committed dispatch.
fn assert_each_ran_once(s: &Setup, events: &[Value], n: usize) {
    let starts = side(s, "start");
    assert_eq!(starts.len(), n, "{starts:?}");
    for (task, attempt) in &starts {
        assert!(
            of_kind(events, "task_dispatched")
                .any(|e| e["task"] == task.as_str() && e["attempt"] == *attempt),
            "{task} attempt {attempt} ran without a committed dispatch"
        );
    }
}

#[test]
fn conductor_resume_takes_over_a_killed_scheduler_once_its_lease_runs_out() {
    let Some(s) = Setup::new("resume_takes_over") else {
        return;
    };
    let n = 8;
    write_slow(&s, n);
    let (_w1, _w2) = (s.worker("w1"), s.worker("w2"));
    let (run_proc, run, lines) = start_run(&s);
    until_dispatched(&lines, 4);
    s.wait_side("an attempt to start", |l| !l.is_empty());
    run_proc.kill9();
    // At once, the dead scheduler's lease still holds: refused, with who holds it and why.
    let out = s.conductor().args(["resume", &run]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is being driven by scheduler") && err.contains("once the lease expires"),
        "{err}"
    );
    // Once it runs out (a second here), `resume` drives the run to its end.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = s.conductor().args(["resume", &run]).output().unwrap();
        if out.status.code() == Some(0) {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is being driven by"), "{err}");
        assert!(Instant::now() < deadline, "never taken over: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(s.status(&run), "completed");
    let events = s.events(&run);
    assert_each_completed_once(&events, n);
    assert_eq!(of_kind(&events, "run_resumed").count(), 1);
    assert_each_ran_once(&s, &events, n);
}

/// A PostgreSQL cluster of the test's own, to restart (`.ci/postgres.sh start|stop`).
struct OwnCluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnCluster {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/postgres.sh")
    }

    fn start(dir: &Path, port: u16) -> String {
        let out = Command::new("bash")
            .arg(Self::script())
            .args(["start", &dir.display().to_string(), &port.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn stop(&self) {
        let ok = Command::new("bash")
            .arg(Self::script())
            .args(["stop", &self.dir.path().display().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Self::script())
            .args(["stop", &self.dir.path().display().to_string()])
            .status();
    }
}

#[test]
fn a_postgres_restart_in_the_middle_of_a_run_is_waited_out() {
    // Uses a cluster of its own, but runs only where the Postgres tests run.
    if postgres::database("pg_restart").is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cluster = OwnCluster {
        dir: tempfile::Builder::new()
            .prefix("conductor-pg-restart")
            .tempdir_in("/tmp")
            .unwrap(),
        port,
    };
    let url = OwnCluster::start(cluster.dir.path(), cluster.port);
    let s = Setup {
        dir: tempfile::tempdir().unwrap(),
        store: url,
    };
    let n = 8;
    write_slow(&s, n);
    let (_w1, _w2) = (
        s.worker_with_lease("w1", "10s"),
        s.worker_with_lease("w2", "10s"),
    );
    let (run_proc, run, lines) = start_run(&s);
    until_dispatched(&lines, 2);
    cluster.stop();
    std::thread::sleep(Duration::from_millis(1500));
    OwnCluster::start(cluster.dir.path(), cluster.port);
    assert_eq!(
        run_proc.wait(),
        Some(0),
        "the run completes after the restart"
    );
    let events = s.events(&run);
    assert_each_completed_once(&events, n);
    assert_eq!(
        of_kind(&events, "run_resumed").count(),
        0,
        "never taken over"
    );
    assert_each_ran_once(&s, &events, n);
}
