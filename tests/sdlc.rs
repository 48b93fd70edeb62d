//! The README's main job, end to end: `conductor run examples/sdlc.cond` with the committed
//! cassette. The roles' answers are replayed; everything else is real — python3 runs the tests
//! the tester wrote against the code the coder wrote, deploy.sh starts the service on
//! 127.0.0.1, the probes reach it over HTTP, monitoring's verdict loops the run back once, and
//! stop.sh stops the service. Needs `python3` (`.ci/run` installs it when missing).

use std::path::{Path, PathBuf};
use std::process::Command;

use conductor::model::{Event, EventKind};
use conductor::store::{SqliteStore, Store};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn conductor(store: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_conductor"))
        .current_dir(repo())
        .arg("--store")
        .arg(store)
        .args(args)
        // The run must use examples/conductor.toml, whatever the environment says.
        .env_remove("CONDUCTOR_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Outputs of a task's successful attempts, in order.
fn outputs(events: &[Event], task: &str) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AttemptFinished {
                task: t,
                output: Some(o),
                ..
            } if &**t == task => Some(o.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_sdlc_example_writes_tests_deploys_monitors_and_loops_once_for_real() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("conductor.db");
    let (ok, stdout, stderr) = conductor(&store_path, &["run", "examples/sdlc.cond"]);
    assert!(ok, "the run failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("loop 1: back to phase development"),
        "{stdout}"
    );
    assert!(
        stdout.contains("COMPLETED: 13 completed, 0 failed, 0 skipped, 1 loop"),
        "{stdout}"
    );
    assert!(stdout.contains("llm: 14 calls"), "{stdout}");
    // Within its budget of 60 calls; replayed from the cassette, so free.
    assert!(stdout.contains(", no cost (replayed)"), "{stdout}");

    let store = SqliteStore::open(&store_path).unwrap();
    let run = store.runs().unwrap().pop().unwrap().id;
    let events = store.events(&run).unwrap();

    // The tests the tester wrote really ran, twice (once per pass), and passed.
    let tests = outputs(&events, "run_tests");
    assert_eq!(tests.len(), 2);
    for t in &tests {
        assert_eq!(t["exit_code"], 0);
        let stderr = t["stderr"].as_str().unwrap();
        assert!(
            stderr.contains("Ran 4 tests") && stderr.contains("OK"),
            "{stderr}"
        );
    }

    // The deployed service answered the probes: degraded on the first pass (APP_VERSION is
    // not set), ok with a version once the coder fixed it from monitoring's feedback.
    let health = outputs(&events, "health");
    assert_eq!(health.len(), 2);
    assert_eq!(health[0]["status"], "degraded");
    assert_eq!(health[1]["status"], "ok");
    assert_eq!(health[1]["version"], "1.0.0");
    let deploys = outputs(&events, "deploy");
    let url = deploys[1]["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let feedback: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FeedbackDecided { severity, .. } => Some(severity.as_str().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(feedback, ["error", "ok"]);

    // The files are on disk in the run's workspace, in their final versions...
    let work = dir.path().join("runs").join(&*run.0).join("work");
    let app = std::fs::read_to_string(work.join("app.py")).unwrap();
    assert!(
        app.contains("DEFAULT_VERSION"),
        "the fixed app.py is in the workspace"
    );
    for f in [
        "test_app.py",
        "fixtures/items.json",
        "service.env",
        "deploy.sh",
        "stop.sh",
    ] {
        assert!(work.join(f).is_file(), "{f} is missing from the workspace");
    }
    // ...and stop.sh stopped the service.
    assert!(!work.join("service.pid").exists());
    // (The signal is sent when stop.sh returns; the process may take a moment to exit.)
    let port = url.rsplit(':').next().unwrap();
    let closed = (0..50).any(|_| {
        let refused = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err();
        if !refused {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        refused
    });
    assert!(closed, "the service still listens on {port} after 5 s");

    // `conductor artifacts` lists every version and exports the latest.
    let (ok, listing, _) = conductor(&store_path, &["artifacts", &run.0, "--all"]);
    assert!(ok);
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("app.py")).count(),
        2,
        "{listing}"
    );
    assert!(listing.contains("(replaced later)"));
    let out = dir.path().join("export");
    let (ok, said, _) = conductor(
        &store_path,
        &["artifacts", &run.0, "--out", out.to_str().unwrap()],
    );
    assert!(ok, "{said}");
    assert!(said.contains("wrote 6 files"), "{said}");
    assert_eq!(std::fs::read_to_string(out.join("app.py")).unwrap(), app);

    // `gc` deletes the finished run, its workspace, and the artifacts no other run wrote.
    let hash = conductor::model::RunState::from_events(&events).artifacts[0]
        .sha256
        .clone();
    assert!(store.artifact(&hash).unwrap().is_some());
    drop(store);
    let (ok, said, err) = conductor(&store_path, &["gc", "--older-than", "0s"]);
    assert!(ok, "{said}{err}");
    assert!(said.contains("deleted 1 finished run"), "{said}");
    assert!(!work.exists(), "the workspace is removed with its run");
    let store = SqliteStore::open(&store_path).unwrap();
    assert!(store.artifact(&hash).unwrap().is_none());
}
