//! SQLite's projection tables while a run is going: written on the projector thread after the
//! events they come from, visible to another connection as the run goes, complete when it
//! stops, for each of several runs sharing a store; a projection that cannot be written stops
//! the run with the cause, its log intact, and a resume in the same process completes them.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use conductor::exec::{resume, run, ResumeRequest, RunOptions};
use conductor::model::RunStatus;
use conductor::store::{SqliteStore, Store};
use conductor::{check_source, SourceMap};

/// A chain of `n` mock tasks of 2 ms each: long enough for many projection windows.
fn slow_chain(n: usize) -> String {
    let mut text =
        String::from("workflow w {\n agent m { kind = \"mock\", latency = 2ms }\n phase p {\n");
    text.push_str("  task t0 on m\n");
    for i in 1..n {
        text.push_str(&format!("  task t{i} on m after t{}\n", i - 1));
    }
    text.push_str(" }\n}\n");
    text
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn compile(text: &str) -> (Arc<conductor::Workflow>, Arc<conductor::plan::Plan>) {
    let mut map = SourceMap::new();
    let wf = check_source(&mut map, "t.cond", Path::new("t.cond"), text)
        .workflow
        .unwrap();
    let plan = conductor::plan::plan(&wf).unwrap();
    (Arc::new(wf), Arc::new(plan))
}

async fn start(
    store: Arc<dyn Store>,
    text: &str,
) -> (
    conductor::model::RunId,
    tokio::task::JoinHandle<Result<conductor::model::RunState, conductor::exec::ExecError>>,
) {
    let (wf, plan) = compile(text);
    let options = RunOptions::new(store.clone());
    let id = options.run_id.clone();
    let lease = store.lease(&id).unwrap();
    let handle = tokio::spawn(async move {
        let _lease = lease;
        run(wf, plan, options).await
    });
    (id, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_projection_rows_appear_while_it_runs_and_are_complete_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let n = 200;
    let (id, handle) = start(store.clone(), &slow_chain(n)).await;

    // Another connection, as `sqlite3` or a dashboard would read the tables.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (db, done) = (db.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !done.load(Ordering::Acquire) {
                if db.exists() {
                    let conn = rusqlite::Connection::open(&db).unwrap();
                    let attempts: rusqlite::Result<i64> =
                        conn.query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0));
                    if let Ok(a) = attempts {
                        seen.push(a);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    };
    let state = handle.await.unwrap().unwrap();
    done.store(true, Ordering::Release);
    let seen = watcher.join().unwrap();
    assert_eq!(state.status(), RunStatus::Completed);
    assert!(
        seen.iter().any(|&a| a > 0 && a < n as i64),
        "attempt rows should appear while the run goes (a window is 20 ms, the run ~{} ms); seen: {seen:?}",
        n * 2
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "rows only ever accumulate: {seen:?}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM task_results WHERE status = 'completed'"
        ),
        n as i64
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM attempts"), n as i64);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM agent_states WHERE status = 'RUNNING'"
        ),
        0
    );
    assert_eq!(store.projected_seq(&id).unwrap(), Some(state.last_seq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_that_cannot_be_written_stops_the_run_with_its_cause_and_keeps_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    // A stand-in for a disk that fills up under the projection tables only: the log's table
    // takes rows, `attempts` refuses them.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER full BEFORE INSERT ON attempts
             BEGIN SELECT RAISE(ABORT, 'database or disk is full (test)'); END;",
        )
        .unwrap();
    let (id, handle) = start(store.clone(), &slow_chain(100)).await;
    let err = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the run stops instead of hanging")
        .unwrap()
        .expect_err("the run cannot go on without its projections");
    let message = err.to_string();
    assert!(
        message.contains("projection rows") && message.contains("disk is full (test)"),
        "{message}"
    );
    assert!(message.contains("s.db"), "the store is named: {message}");
    // What was committed is all there and readable.
    let events = store.events(&id).unwrap();
    assert!(events.len() > 3, "{} events", events.len());
    assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    // The projections say how far they got, behind the log: a resume writes the rest.
    let projected = store.projected_seq(&id).unwrap().unwrap();
    assert!(projected < events.last().unwrap().seq, "{projected}");

    // The disk has room again; the run is resumed by the same process, through the same store.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TRIGGER full")
        .unwrap();
    let (wf, plan) = compile(&slow_chain(100));
    let _lease = store.lease(&id).unwrap();
    let state = resume(
        wf,
        plan,
        RunOptions::new(store.clone()),
        events,
        ResumeRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(state.status(), RunStatus::Completed);
    let log = store.events(&id).unwrap();
    let finished_attempts = log
        .iter()
        .filter(|e| matches!(e.kind, conductor::model::EventKind::AttemptFinished { .. }))
        .count();
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM task_results WHERE status = 'completed'"
        ),
        100,
        "every task's row, those written before the failure and after"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM attempts"),
        finished_attempts as i64,
        "an attempt row for every attempt in the log"
    );
    assert_eq!(store.projected_seq(&id).unwrap(), Some(state.last_seq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_sharing_a_store_each_get_complete_projections() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let sizes = [150, 60, 90];
    let mut runs = Vec::new();
    for n in sizes {
        runs.push((n, start(store.clone(), &slow_chain(n)).await));
    }
    for (n, (id, handle)) in runs {
        let state = handle.await.unwrap().unwrap();
        assert_eq!(state.status(), RunStatus::Completed);
        let of_run = |sql: &str| count(&db, &sql.replace("RUN", &id.to_string()));
        assert_eq!(
            of_run(
                "SELECT COUNT(*) FROM task_results WHERE run_id = 'RUN' AND status = 'completed'"
            ),
            n as i64
        );
        assert_eq!(
            of_run("SELECT COUNT(*) FROM attempts WHERE run_id = 'RUN'"),
            n as i64
        );
        assert_eq!(store.projected_seq(&id).unwrap(), Some(state.last_seq));
    }
}

/// Each task's status in the table, by name.
fn statuses(db: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut q = conn
        .prepare("SELECT task, status FROM task_results ORDER BY task")
        .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(t, s)| (t.to_string(), s.to_string()))
        .collect()
}

/// A task's PENDING row is held back for up to a second (a newer row usually replaces it:
/// writing both made a zero-latency run's projections twice the work), then written; a run
/// that stops writes the ones it still holds, so its table lists every task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_rows_are_written_within_their_hold_and_with_the_batch_that_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let text = r#"workflow w {
        agent first { kind = "mock", latency = 1200ms }
        agent second { kind = "mock", latency = 1500ms }
        agent m { kind = "mock" }
        phase p { task a on first  task b on second after a  task c on m after b } }"#;
    let (id, handle) = start(store.clone(), text).await;
    // While `b` runs (1.2 s to 2.7 s), `c` has been PENDING for longer than the hold.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        statuses(&db),
        pairs(&[("a", "completed"), ("b", "in_progress"), ("c", "pending")])
    );
    let state = handle.await.unwrap().unwrap();
    assert_eq!(state.status(), RunStatus::Completed);
    assert_eq!(
        statuses(&db),
        pairs(&[("a", "completed"), ("b", "completed"), ("c", "completed")])
    );
    drop(store);

    // A run that stops waiting for a decision, its later tasks never started.
    let db = dir.path().join("waiting.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let text = r#"workflow w { on_escalation = "ask"
        agent m { kind = "mock", fail_first = 1, error = "fatal" }
        agent ok { kind = "mock" }
        phase p { task a on m  task b on ok after a  task c on ok after b } }"#;
    let (id2, handle) = start(store.clone(), text).await;
    let state = handle.await.unwrap().unwrap();
    assert_eq!(state.status(), RunStatus::Waiting);
    // The task it waits on is PENDING with the escalated error (as in the run's state).
    assert_eq!(
        statuses(&db),
        pairs(&[("a", "pending"), ("b", "pending"), ("c", "pending")])
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM task_results WHERE task = 'a' AND error IS NOT NULL"
        ),
        1
    );
    assert_ne!(id, id2);
}
