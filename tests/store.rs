//! The SQLite store on real files: forward migrations, a newer schema refused, the projection
//! tables kept in step with the log, and group commit of a run's events.

use std::path::Path;
use std::sync::Arc;

use conductor::exec::{run, RunOptions};
use conductor::model::RunStatus;
use conductor::store::{SqliteStore, Store};
use conductor::{check_source, SourceMap};

async fn run_into(store: Arc<SqliteStore>, text: &str) -> conductor::model::RunState {
    let mut map = SourceMap::new();
    let wf = check_source(&mut map, "t.cond", Path::new("t.cond"), text)
        .workflow
        .unwrap();
    let plan = conductor::plan::plan(&wf).unwrap();
    run(Arc::new(wf), Arc::new(plan), RunOptions::new(store))
        .await
        .unwrap()
}

#[test]
fn a_version_1_store_is_migrated_forward_and_keeps_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, workflow TEXT NOT NULL, file TEXT NOT NULL,
                params TEXT NOT NULL, created_at INTEGER NOT NULL, status TEXT NOT NULL);
             CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,
                kind TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
             CREATE TABLE dead_letters (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, task TEXT NOT NULL,
                pool TEXT NOT NULL, at INTEGER NOT NULL, body TEXT NOT NULL, dropped INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE response_cache (key TEXT PRIMARY KEY, body TEXT NOT NULL, created_at INTEGER NOT NULL);
             CREATE TABLE artifacts (hash TEXT PRIMARY KEY, size INTEGER NOT NULL, content BLOB NOT NULL);
             INSERT INTO runs VALUES ('rold', 'w', 'w.cond', '{}', 1, 'completed');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.runs().unwrap()[0].id.0.as_ref(), "rold");
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5, "migrated forward to the current schema");
    for table in ["task_results", "attempts", "agent_states", "decisions"] {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "{table} was created by the migration");
    }
}

#[test]
fn a_store_from_a_newer_conductor_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99;")
        .unwrap();
    let err = SqliteStore::open(&path).err().expect("refused").to_string();
    assert!(
        err.contains("was written by a newer Conductor (schema 99"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn projection_tables_follow_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let state = run_into(
        store.clone(),
        r#"workflow w {
            agent flaky { kind = "mock", fail_first = 1, count = 2 }
            phase p { task a on flaky { backoff = fixed(1s) }  task b on flaky }
        }"#,
    )
    .await;
    assert_eq!(state.status(), RunStatus::Completed);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let results: Vec<(String, String, i64)> = conn
        .prepare("SELECT task, status, attempts FROM task_results ORDER BY task")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        results,
        [
            ("a".to_string(), "completed".to_string(), 2),
            ("b".to_string(), "completed".to_string(), 2)
        ]
    );
    let attempts: i64 = conn
        .query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(attempts, 4);
    let running: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM agent_states WHERE status = 'RUNNING'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 0);
    // The log itself, read back through the store, rebuilds the same state.
    let events = store.events(&state.workflow_id).unwrap();
    let rebuilt = conductor::model::RunState::from_events(&events);
    assert_eq!(rebuilt.status(), RunStatus::Completed);
    assert_eq!(rebuilt.task("a").unwrap().attempts, 2);
}

#[tokio::test]
async fn projections_restart_a_phase_entered_again_and_show_escalated_tasks_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    // Pass 1 completes everything; pass 2 stops in its first phase, waiting for a decision on
    // `x`, with `c` (after `x`) not run again yet.
    let state = run_into(
        store.clone(),
        r#"workflow w {
            on_escalation = "ask"
            max_feedback_loops = 1
            agent m { kind = "mock" }
            agent bad { kind = "mock", fail_first = 1, error = "fatal" }
            phase p {
                task a on m
                task x on bad after a { when { loop_count == 1 } }
                task c on m after x
                gate { true }
            }
            feedback to p { if loop_count == 0 { error("once more") } else { ok() } }
        }"#,
    )
    .await;
    assert_eq!(state.status(), RunStatus::Waiting);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let table: Vec<(String, String)> = conn
        .prepare("SELECT task, status FROM task_results ORDER BY task")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let from_state: Vec<(String, String)> = ["a", "c", "x"]
        .iter()
        .map(|t| {
            (
                t.to_string(),
                state.task(t).unwrap().status.as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(table, from_state);
    assert_eq!(
        from_state,
        [
            ("a".to_string(), "completed".to_string()),
            ("c".to_string(), "pending".to_string()),
            ("x".to_string(), "pending".to_string())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn projections_of_a_cancelled_run_show_no_running_instance_and_retries_pending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let mut map = SourceMap::new();
    let wf = check_source(
        &mut map,
        "t.cond",
        Path::new("t.cond"),
        r#"workflow w {
            agent flaky { kind = "mock", fail_first = 1, backoff = fixed(10s) }
            agent slow { kind = "mock", latency = 5s }
            phase p { task f on flaky  task s on slow }
        }"#,
    )
    .workflow
    .unwrap();
    let plan = conductor::plan::plan(&wf).unwrap();
    let options = RunOptions::new(store);
    let cancel = options.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        cancel.cancel();
    });
    let state = run(Arc::new(wf), Arc::new(plan), options).await.unwrap();
    assert_eq!(state.status(), RunStatus::Cancelled);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let status = |task: &str| -> String {
        conn.query_row(
            "SELECT status FROM task_results WHERE task = ?1",
            [task],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(status("f"), state.task("f").unwrap().status.as_str());
    assert_eq!(status("f"), "pending", "waiting out its backoff");
    assert_eq!(status("s"), "cancelled");
    let running: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM agent_states WHERE status = 'RUNNING'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 0, "the run is over");
}
