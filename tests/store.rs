//! The stores: the same conformance tests for memory, SQLite (real files) and PostgreSQL (a
//! real server: `CONDUCTOR_TEST_POSTGRES`, see `support::postgres`) — runs, the log in order,
//! leases and fencing, artifacts, the cache, logs, dead letters, gc, and projection tables that
//! follow the log. Then what only one backend has: SQLite's forward migrations, a schema from
//! a newer Conductor refused by both durable stores.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use conductor::exec::{run, RunOptions};
use conductor::model::{
    Changes, Event, EventKind, LogChunk, LogStream, RunId, RunState, RunStatus, Timestamp,
};
use conductor::store::{
    Batch, MemoryStore, PostgresStore, RunRecord, SqliteStore, Store, WorkBatch,
};
use conductor::{check_source, SourceMap};

use crate::support::postgres;

/// One backend under test, and how to open it again (a second process, as far as the store
/// can tell).
enum Backend {
    Memory(Arc<MemoryStore>),
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Memory(m) => m.clone(),
            Backend::Sqlite(dir) => Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap()),
            Backend::Postgres(url) => Arc::new(PostgresStore::open(url).unwrap()),
        }
    }

    fn durable(&self) -> bool {
        !matches!(self, Backend::Memory(_))
    }

    /// Rows of a projection query, each column as text (`None` for the memory store).
    fn query(&self, sql: &str) -> Option<Vec<String>> {
        match self {
            Backend::Memory(_) => None,
            Backend::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("s.db")).unwrap();
                let mut st = conn.prepare(sql).unwrap();
                let n = st.column_count();
                let rows = st
                    .query_map([], |r| {
                        let cols: Vec<String> = (0..n)
                            .map(|i| {
                                r.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                                    rusqlite::types::Value::Integer(i) => i.to_string(),
                                    rusqlite::types::Value::Text(t) => t,
                                    rusqlite::types::Value::Null => String::new(),
                                    other => format!("{other:?}"),
                                })
                            })
                            .collect::<Result<_, _>>()?;
                        Ok(cols.join("|"))
                    })
                    .unwrap();
                Some(rows.collect::<Result<_, _>>().unwrap())
            }
            Backend::Postgres(url) => Some(
                postgres::psql(url, sql)
                    .lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect(),
            ),
        }
    }
}

/// Memory, SQLite, and PostgreSQL when the tests have a server.
fn backends(test: &str) -> Vec<Backend> {
    let mut out = vec![
        Backend::Memory(Arc::new(MemoryStore::new())),
        Backend::Sqlite(tempfile::tempdir().unwrap()),
    ];
    if let Some(url) = postgres::database(test) {
        out.push(Backend::Postgres(url));
    }
    out
}

fn record(id: &RunId, created_at: u64, status: RunStatus) -> RunRecord {
    RunRecord {
        id: id.clone(),
        workflow: "w".into(),
        file: "w.cond".into(),
        params: Default::default(),
        created_at: Timestamp(created_at),
        status,
    }
}

fn warning(seq: u64, text: &str) -> Event {
    Event {
        seq,
        at: Timestamp(1_700_000_000_000 + seq),
        kind: EventKind::Warning {
            message: text.into(),
        },
    }
}

fn append(store: &dyn Store, run: &RunId, events: &[Event]) -> Result<(), String> {
    let (state, changes) = (RunState::default(), Changes::default());
    let json: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    store
        .append(
            run,
            &Batch {
                events,
                json: &json,
                changes: &changes,
                state: &state,
                work: &WorkBatch::default(),
            },
        )
        .map_err(|e| e.to_string())
}

async fn run_into(store: Arc<dyn Store>, text: &str) -> RunState {
    let mut map = SourceMap::new();
    let wf = check_source(&mut map, "t.cond", Path::new("t.cond"), text)
        .workflow
        .unwrap();
    let plan = conductor::plan::plan(&wf).unwrap();
    let options = RunOptions::new(store.clone());
    let _lease = store.lease(&options.run_id).unwrap();
    run(Arc::new(wf), Arc::new(plan), options).await.unwrap()
}

#[test]
fn every_store_keeps_runs_and_their_log_in_order() {
    for b in backends("runs_and_log") {
        let store = b.open();
        let name = b.name();
        let (r1, r2) = (RunId::new(), RunId::new());
        let _l1 = store.lease(&r1).unwrap();
        let _l2 = store.lease(&r2).unwrap();
        store
            .create_run(&record(&r2, 2, RunStatus::Pending))
            .unwrap();
        store
            .create_run(&record(&r1, 1, RunStatus::Pending))
            .unwrap();
        let dup = store
            .create_run(&record(&r1, 1, RunStatus::Pending))
            .unwrap_err();
        assert!(
            dup.to_string().contains("already in the store"),
            "{name}: {dup}"
        );
        let ids: Vec<RunId> = store.runs().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, [r1.clone(), r2.clone()], "{name}: oldest first");
        assert!(store.events(&r1).unwrap().is_empty(), "{name}");

        append(&*store, &r1, &[warning(1, "a"), warning(2, "b")]).unwrap();
        append(&*store, &r1, &[warning(3, "c")]).unwrap();
        let gap = append(&*store, &r1, &[warning(5, "e")]).unwrap_err();
        assert!(gap.contains("does not follow event 3"), "{name}: {gap}");
        let again = append(&*store, &r1, &[warning(3, "c")]).unwrap_err();
        assert!(again.contains("does not follow event 3"), "{name}: {again}");
        let seqs = |events: Vec<Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(store.events(&r1).unwrap()), [1, 2, 3], "{name}");
        assert_eq!(seqs(store.events_after(&r1, 1).unwrap()), [2, 3], "{name}");
        assert_eq!(store.events(&r1).unwrap()[2], warning(3, "c"), "{name}");

        // Another handle (another process, for a durable store) reads the same.
        let other = b.open();
        assert_eq!(seqs(other.events(&r1).unwrap()), [1, 2, 3], "{name}");
        let unknown = other.events(&RunId::new()).unwrap_err().to_string();
        assert!(unknown.contains("is not in the store"), "{name}: {unknown}");
    }
}

/// The memory store keeps a batch that came with its JSON lines (`--json`) as those lines, and
/// one without as events: both read back as written, a newline or deep nesting included.
#[test]
fn the_memory_store_reads_back_batches_kept_as_lines_and_as_events() {
    let store = MemoryStore::new();
    let run = RunId::new();
    store
        .create_run(&record(&run, 1, RunStatus::Pending))
        .unwrap();
    // Deeper than serde_json's default limit of 128.
    let deep = (0..200).fold(serde_json::json!("x"), |v, _| serde_json::json!([v]));
    let written = [
        warning(1, "two\nlines"),
        Event {
            seq: 2,
            at: Timestamp(1_700_000_000_002),
            kind: EventKind::RunOutputs {
                outputs: [("deep".to_string(), deep)].into(),
            },
        },
        warning(3, "as events"),
    ];
    append(&store, &run, &written[..2]).unwrap();
    let (state, changes) = (RunState::default(), Changes::default());
    let batch = Batch {
        events: &written[2..],
        json: &[],
        changes: &changes,
        state: &state,
        work: &WorkBatch::default(),
    };
    store.append(&run, &batch).unwrap();
    assert_eq!(store.events(&run).unwrap(), written);
    assert_eq!(store.events_after(&run, 1).unwrap(), written[1..]);
}

#[test]
fn every_durable_store_lets_one_process_drive_a_run() {
    for b in backends("one_driver").into_iter().filter(Backend::durable) {
        let name = b.name();
        let (a, other) = (b.open(), b.open());
        let run = RunId::new();
        let held = a.lease(&run).unwrap();
        a.create_run(&record(&run, 1, RunStatus::Pending)).unwrap();
        let refused = other.lease(&run).err().expect("held").to_string();
        assert!(refused.contains("is being driven by"), "{name}: {refused}");
        drop(held);
        let _taken = other.lease(&run).expect("free once let go");
        append(&*other, &run, &[warning(1, "mine")]).unwrap();
    }
}

#[test]
fn a_postgres_scheduler_that_lost_its_lease_writes_nothing_more() {
    let Some(url) = postgres::database("fencing") else {
        return;
    };
    let url = format!("{url}?lease=1s");
    let old: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).unwrap());
    let new: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).unwrap());
    let run = RunId::new();
    let _held = old.lease(&run).unwrap();
    old.create_run(&record(&run, 1, RunStatus::InProgress))
        .unwrap();
    append(&*old, &run, &[warning(1, "old")]).unwrap();
    // The old scheduler stalls past its lease (as if stopped or cut off)...
    postgres::psql(
        &url.replace("?lease=1s", ""),
        &format!("UPDATE runs SET lease_until = now() - interval '1 second' WHERE id = '{run}'"),
    );
    // ...another takes the run over at the next epoch and writes...
    let _taken = new.lease(&run).unwrap();
    append(&*new, &run, &[warning(2, "new")]).unwrap();
    // ...and the old one's next batch is refused, whatever its sequence numbers.
    let refused = append(&*old, &run, &[warning(3, "stale")]).unwrap_err();
    assert!(refused.contains("no longer holds run"), "{refused}");
    let log: Vec<String> = new
        .events(&run)
        .unwrap()
        .iter()
        .map(|e| match &e.kind {
            EventKind::Warning { message } => message.clone(),
            _ => String::new(),
        })
        .collect();
    assert_eq!(log, ["old", "new"]);
    let epochs = postgres::psql(
        &url.replace("?lease=1s", ""),
        &format!("SELECT string_agg(epoch::text, ',' ORDER BY first_seq) FROM event_batches WHERE run_id = '{run}'"),
    );
    assert_eq!(epochs, "1,2", "each batch carries the epoch that wrote it");
}

#[test]
fn every_store_keeps_artifacts_the_cache_and_attempt_logs() {
    for b in backends("side_tables") {
        let store = b.open();
        let name = b.name();
        store.put_artifact("abc", b"one").unwrap();
        store.put_artifact("abc", b"ignored: same address").unwrap();
        assert_eq!(store.artifact("abc").unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(store.artifact("nope").unwrap(), None, "{name}");

        assert_eq!(store.cache_get("k").unwrap(), None, "{name}");
        store.cache_put("k", &serde_json::json!({"v": 1})).unwrap();
        store.cache_put("k", &serde_json::json!({"v": 2})).unwrap();
        assert_eq!(
            store.cache_get("k").unwrap(),
            Some(serde_json::json!({"v": 2})),
            "{name}"
        );

        let run = RunId::new();
        let _l = store.lease(&run).unwrap();
        store
            .create_run(&record(&run, 1, RunStatus::Pending))
            .unwrap();
        let chunk = |seq, stream, data: &str| LogChunk {
            seq,
            stream,
            data: data.as_bytes().to_vec(),
        };
        store
            .append_log(&run, "t", 1, &[chunk(0, LogStream::Stdout, "out")])
            .unwrap();
        store
            .append_log(
                &run,
                "t",
                1,
                &[
                    chunk(1, LogStream::Stderr, "err"),
                    chunk(2, LogStream::Stdout, "more"),
                ],
            )
            .unwrap();
        let logs = store.logs(&run, "t", 1).unwrap();
        assert_eq!(
            logs,
            [
                chunk(0, LogStream::Stdout, "out"),
                chunk(1, LogStream::Stderr, "err"),
                chunk(2, LogStream::Stdout, "more")
            ],
            "{name}"
        );
        assert!(store.logs(&run, "t", 2).unwrap().is_empty(), "{name}");
    }
}

const FLAKY: &str = r#"workflow w {
    agent flaky { kind = "mock", fail_first = 1, count = 2 }
    agent broken { kind = "mock", fail_first = 9, retry = 1, backoff = fixed(10ms) }
    phase p {
        task a on flaky { backoff = fixed(10ms) }
        task b on flaky after a
        task c on broken after b
    }
}"#;

#[tokio::test]
async fn every_store_records_the_same_run_and_its_dead_letters() {
    let mut logs = Vec::new();
    for b in backends("same_run") {
        let name = b.name();
        let store = b.open();
        let state = run_into(store.clone(), FLAKY).await;
        assert_eq!(state.status(), RunStatus::Failed, "{name}");
        // The log, read back through another handle, rebuilds the same state.
        let events = b.open().events(&state.workflow_id).unwrap();
        let rebuilt = RunState::from_events(&events);
        assert_eq!(rebuilt.status(), RunStatus::Failed, "{name}");
        assert_eq!(rebuilt.task("a").unwrap().attempts, 2, "{name}");
        logs.push((
            name,
            events
                .iter()
                .map(|e| {
                    let v = serde_json::to_value(e).unwrap();
                    format!("{} {}", v["event"], v["task"])
                })
                .collect::<Vec<_>>(),
        ));

        let dead = store.dead_letters(Some(&state.workflow_id)).unwrap();
        assert_eq!(dead.len(), 1, "{name}");
        assert_eq!(&*dead[0].task, "c", "{name}");
        assert_eq!(dead[0].attempts.len(), 2, "{name}");
        assert_eq!(store.dead_letters(None).unwrap().len(), 1, "{name}");
        // Counted per run (what the dashboard lists), and a dropped one no longer counts.
        let other = run_into(store.clone(), FLAKY).await.workflow_id;
        let counts = |store: &dyn Store| store.dead_letter_counts().unwrap();
        let mine = (state.workflow_id.clone(), 1);
        assert_eq!(
            counts(&*store),
            HashMap::from([mine.clone(), (other.clone(), 1)]),
            "{name}"
        );
        let theirs = store.dead_letters(Some(&other)).unwrap();
        assert!(store.drop_dead_letter(&theirs[0].id).unwrap(), "{name}");
        assert_eq!(counts(&*store), HashMap::from([mine]), "{name}");
        assert!(store.drop_dead_letter(&dead[0].id).unwrap(), "{name}");
        assert!(
            !store.drop_dead_letter(&dead[0].id).unwrap(),
            "{name}: once"
        );
        assert!(store.dead_letters(None).unwrap().is_empty(), "{name}");
        assert_eq!(
            store.run(&state.workflow_id).unwrap().status,
            RunStatus::Failed,
            "{name}"
        );
    }
    let (first, rest) = logs.split_first().unwrap();
    for (name, log) in rest {
        assert_eq!(
            log, &first.1,
            "{name} recorded a different log than {}",
            first.0
        );
    }
}

#[tokio::test]
async fn every_store_collects_old_finished_runs_and_their_unshared_artifacts() {
    for b in backends("gc") {
        let name = b.name();
        let store = b.open();
        let files = r#"workflow w {
            agent m { kind = "mock", output = { files = [{ path = "a.txt", content = "only mine" }] } }
            phase p { task t on m }
        }"#;
        let state = run_into(store.clone(), files).await;
        assert_eq!(state.status(), RunStatus::Completed, "{name}");
        let hash = state.artifacts[0].sha256.clone();
        assert!(store.artifact(&hash).unwrap().is_some(), "{name}");
        let unfinished = RunId::new();
        let _l = store.lease(&unfinished).unwrap();
        store
            .create_run(&record(&unfinished, 1, RunStatus::Waiting))
            .unwrap();

        assert!(
            store.gc(Timestamp(1)).unwrap().is_empty(),
            "{name}: nothing that old"
        );
        let deleted = store.gc(Timestamp(u64::MAX / 2)).unwrap();
        assert_eq!(deleted, std::slice::from_ref(&state.workflow_id), "{name}");
        assert!(store.run(&state.workflow_id).is_err(), "{name}");
        assert!(
            store.run(&unfinished).is_ok(),
            "{name}: a waiting run is kept"
        );
        if b.durable() {
            assert_eq!(store.artifact(&hash).unwrap(), None, "{name}");
        }
    }
}

#[tokio::test]
async fn projection_tables_follow_the_log() {
    for b in backends("projections").into_iter().filter(Backend::durable) {
        let name = b.name();
        let store = b.open();
        let state = run_into(
            store.clone(),
            r#"workflow w {
                agent flaky { kind = "mock", fail_first = 1, count = 2 }
                phase p { task a on flaky { backoff = fixed(10ms) }  task b on flaky }
            }"#,
        )
        .await;
        assert_eq!(state.status(), RunStatus::Completed, "{name}");
        assert_eq!(
            b.query("SELECT task, status, attempts FROM task_results ORDER BY task"),
            Some(vec![
                "a|completed|2".to_string(),
                "b|completed|2".to_string()
            ]),
            "{name}"
        );
        assert_eq!(
            b.query("SELECT COUNT(*) FROM attempts"),
            Some(vec!["4".to_string()]),
            "{name}"
        );
        assert_eq!(
            b.query("SELECT COUNT(*) FROM agent_states WHERE status = 'RUNNING'"),
            Some(vec!["0".to_string()]),
            "{name}"
        );
        assert_eq!(
            store.projected_seq(&state.workflow_id).unwrap(),
            Some(state.last_seq),
            "{name}"
        );
    }
}

/// Enough tasks and attempts that the rows go in groups and a remainder, some with an error
/// and some without: every row says what the state says.
#[tokio::test]
async fn projection_tables_hold_every_row_of_a_wide_run() {
    for b in backends("projections_wide")
        .into_iter()
        .filter(Backend::durable)
    {
        let name = b.name();
        let flaky: Vec<String> = (0..70).map(|i| format!("t{i:02}")).collect();
        let mut text = String::from(
            r#"workflow w {
                agent flaky { kind = "mock", fail_first = 1, count = 8, backoff = fixed(1ms),
                    circuit_breaker = breaker(1000, 1s) }
                agent bad { kind = "mock", fail_first = 9, error = "fatal", count = 3 }
                phase p {"#,
        );
        for t in &flaky {
            text.push_str(&format!(" task {t} on flaky"));
        }
        // After every `t`, so that their failure stops nothing that was still to run.
        let all = flaky.join(", ");
        for b in ["b0", "b1", "b2"] {
            text.push_str(&format!(" task {b} on bad after {all}"));
        }
        text.push_str(" } }");
        let state = run_into(b.open(), &text).await;
        let mut tasks: Vec<String> = state
            .tasks
            .iter()
            .map(|t| {
                let error = t
                    .error
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                format!("{}|{}|{}|{error}", t.task, t.status.as_str(), t.attempts)
            })
            .collect();
        tasks.sort();
        assert_eq!(tasks.len(), 73, "{name}");
        assert_eq!(
            b.query(
                "SELECT task, status, attempts, COALESCE(error, '') FROM task_results ORDER BY task"
            ),
            Some(tasks),
            "{name}"
        );
        assert!(
            state.tasks.iter().any(|t| t.error.is_some()),
            "{name}: some task rows carry an error"
        );
        let mut attempts = Vec::new();
        for t in &flaky {
            attempts.push(format!("{t}|1|1"));
            attempts.push(format!("{t}|2|0"));
        }
        assert_eq!(
            b.query(
                "SELECT task, attempt, CASE WHEN error IS NULL THEN 0 ELSE 1 END
                 FROM attempts WHERE task LIKE 't%' ORDER BY task, attempt"
            ),
            Some(attempts),
            "{name}"
        );
        assert_eq!(
            b.query("SELECT task, attempt, CASE WHEN agent LIKE 'bad%' THEN 1 ELSE 0 END FROM attempts WHERE task LIKE 'b%' AND error IS NOT NULL ORDER BY task"),
            b.query("SELECT task, 1, 1 FROM task_results WHERE task LIKE 'b%' AND status = 'failed' ORDER BY task"),
            "{name}: a failed task's one attempt failed, on its agent"
        );
    }
}

/// Pass 1 completes everything; pass 2 stops in its first phase, waiting for a decision on
/// `x`, with `c` (after `x`) not run again yet.
const WAITS_IN_PASS_2: &str = r#"workflow w {
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
}"#;

#[tokio::test]
async fn projections_restart_a_phase_entered_again_and_show_escalated_tasks_waiting() {
    for b in backends("projections_again")
        .into_iter()
        .filter(Backend::durable)
    {
        let name = b.name();
        let state = run_into(b.open(), WAITS_IN_PASS_2).await;
        assert_eq!(state.status(), RunStatus::Waiting, "{name}");
        let table = b
            .query("SELECT task, status FROM task_results ORDER BY task")
            .unwrap();
        let from_state: Vec<String> = ["a", "c", "x"]
            .iter()
            .map(|t| format!("{t}|{}", state.task(t).unwrap().status.as_str()))
            .collect();
        assert_eq!(table, from_state, "{name}");
        assert_eq!(
            from_state,
            ["a|completed", "c|pending", "x|pending"],
            "{name}"
        );
    }
}

#[tokio::test]
async fn projections_of_a_cancelled_run_show_no_running_instance_and_retries_pending() {
    for b in backends("projections_cancelled")
        .into_iter()
        .filter(Backend::durable)
    {
        let name = b.name();
        let store = b.open();
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
        let options = RunOptions::new(store.clone());
        let _lease = store.lease(&options.run_id).unwrap();
        let cancel = options.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            cancel.cancel();
        });
        let state = run(Arc::new(wf), Arc::new(plan), options).await.unwrap();
        assert_eq!(state.status(), RunStatus::Cancelled, "{name}");
        let status = |task: &str| {
            b.query(&format!(
                "SELECT status FROM task_results WHERE task = '{task}'"
            ))
            .unwrap()
            .join("")
        };
        assert_eq!(status("f"), "pending", "{name}: waiting out its backoff");
        assert_eq!(status("s"), "cancelled", "{name}");
        assert_eq!(
            b.query("SELECT COUNT(*) FROM agent_states WHERE status = 'RUNNING'"),
            Some(vec!["0".to_string()]),
            "{name}: the run is over"
        );
    }
}

/// `conductor runs` lists a stopped run from the summary its store kept, not from its log: the
/// summary counts the run's last event and says what the folded log says — a completed run
/// with a fan-out, a failed one, one waiting for a decision in its second feedback pass. A
/// summary the log has gone past is not used, and the listing folds that log instead.
#[tokio::test]
async fn every_store_lists_stopped_runs_from_summaries_that_match_their_logs() {
    let workflows = [
        (
            RunStatus::Completed,
            r#"workflow w {
                agent m { kind = "mock", count = 3 }
                phase p {
                    task a on m
                    task many on m after a { for_each = "{{ range(12) | list }}" }
                }
                phase q { task z on m }
            }"#,
        ),
        (
            RunStatus::Failed,
            r#"workflow w {
                agent ok { kind = "mock" }
                agent bad { kind = "mock", fail_first = 9, retry = 0 }
                phase build { task a on ok  task b on bad after a  gate { success_rate >= 0.9 } }
                phase ship { task c on ok }
            }"#,
        ),
        (RunStatus::Waiting, WAITS_IN_PASS_2),
    ];
    for b in backends("listing") {
        let name = b.name();
        let store = b.open();
        let mut ids = Vec::new();
        for (status, text) in workflows {
            let state = run_into(store.clone(), text).await;
            assert_eq!(state.status(), status, "{name}");
            ids.push(state.workflow_id);
        }
        // Another process's view of the store, as `conductor runs` has.
        let store = b.open();
        let listing = store.listing().unwrap();
        assert_eq!(listing.len(), ids.len(), "{name}");
        let folded = |id: &RunId| RunState::from_events(&store.events(id).unwrap()).summary();
        for ((id, (status, _)), (record, summary)) in ids.iter().zip(workflows).zip(&listing) {
            assert_eq!(&record.id, id, "{name}: oldest first");
            let kept = summary
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: {status:?} run {id} has no summary"));
            assert_eq!(kept, &folded(id), "{name}: {status:?} run {id}");
            assert_eq!(kept.status, Some(status), "{name}");
        }
        let fan_out = listing[0].1.clone().unwrap();
        assert_eq!(
            (fan_out.completed, fan_out.tasks, fan_out.phase.as_deref()),
            (14, 14, Some("q")),
            "{name}: a, z and the 12 instances of `many`"
        );
        let waiting = listing[2].1.clone().unwrap();
        assert_eq!(waiting.feedback_loop_count, 1, "{name}");

        // The log goes on past the failed run's summary (as an older build would write it).
        let behind = listing[1].1.clone().unwrap();
        let lease = store.lease(&ids[1]).unwrap();
        append(&*store, &ids[1], &[warning(behind.seq + 1, "later")]).unwrap();
        let listing = store.listing().unwrap();
        drop(lease);
        assert_eq!(
            listing[1].1, None,
            "{name}: a summary behind the log is not used"
        );
        assert!(listing[0].1.is_some() && listing[2].1.is_some(), "{name}");
        let listed = conductor::store::list_runs(&*store, |_| true, |e| panic!("{e}")).unwrap();
        assert_eq!(
            listed[1].1,
            folded(&ids[1]),
            "{name}: the log is folded instead"
        );
        assert_eq!(listed[1].1.seq, behind.seq + 1, "{name}");
        let only_failed =
            conductor::store::list_runs(&*store, |r| r.id == ids[1], |e| panic!("{e}")).unwrap();
        assert_eq!(only_failed.len(), 1, "{name}");
    }
}

#[test]
fn a_version_1_sqlite_store_is_migrated_forward_and_keeps_its_runs() {
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
    assert_eq!(version, 8, "migrated forward to the current schema");
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

/// Schema 6 kept the log (`event_batches`) and the programs' output (`attempt_logs`) in tables
/// WITHOUT ROWID; schema 7 moves them to rowid tables keyed by unique indexes. A store written
/// in the old layout keeps every batch and chunk, reads them back the same, refuses a
/// duplicate key as before, and takes new runs.
#[tokio::test]
async fn a_version_6_sqlite_store_moves_its_log_to_rowid_tables_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let state = run_into(store.clone(), FLAKY).await;
    let run = state.workflow_id.clone();
    let chunks: Vec<LogChunk> = (0..3)
        .map(|seq| LogChunk {
            seq,
            stream: LogStream::Stdout,
            data: vec![b'x'; 3000 * (seq as usize + 1)],
        })
        .collect();
    store.append_log(&run, "a", 1, &chunks).unwrap();
    let events = store.events(&run).unwrap();
    assert!(events.len() > 10, "the run logged its events");
    drop(store);
    // Back to schema 6's layout, as a store written by the previous Conductor has it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE eb (run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, body TEXT NOT NULL,
            PRIMARY KEY (run_id, first_seq)) WITHOUT ROWID;
         INSERT INTO eb SELECT run_id, first_seq, last_seq, body FROM event_batches;
         DROP TABLE event_batches;
         ALTER TABLE eb RENAME TO event_batches;
         CREATE TABLE al (run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            task TEXT NOT NULL, attempt INTEGER NOT NULL, seq INTEGER NOT NULL,
            stream TEXT NOT NULL, data BLOB NOT NULL,
            PRIMARY KEY (run_id, task, attempt, seq)) WITHOUT ROWID;
         INSERT INTO al SELECT run_id, task, attempt, seq, stream, data FROM attempt_logs;
         DROP TABLE attempt_logs;
         ALTER TABLE al RENAME TO attempt_logs;
         PRAGMA user_version = 6;
         COMMIT;",
    )
    .unwrap();
    let layout = |conn: &rusqlite::Connection, table: &str| -> String {
        conn.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert!(layout(&conn, "event_batches").contains("WITHOUT ROWID"));
    drop(conn);

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    assert_eq!(
        store.events(&run).unwrap(),
        events,
        "the log reads back the same"
    );
    assert_eq!(store.logs(&run, "a", 1).unwrap(), chunks);
    let after: Vec<u64> = store
        .events_after(&run, 5)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(after, (6..=events.len() as u64).collect::<Vec<_>>());
    let listed = conductor::store::list_runs(&*store, |_| true, |e| panic!("{e}")).unwrap();
    assert_eq!(listed.len(), 1);
    // The store goes on: a second run is appended and read back.
    let second = run_into(store.clone(), FLAKY).await;
    assert_eq!(
        RunState::from_events(&store.events(&second.workflow_id).unwrap()).status(),
        second.status()
    );
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 8);
    for table in ["event_batches", "attempt_logs"] {
        assert!(!layout(&conn, table).contains("WITHOUT ROWID"), "{table}");
    }
    let twice = conn.execute(
        "INSERT INTO event_batches (run_id, first_seq, last_seq, body)
         SELECT run_id, first_seq, last_seq, body FROM event_batches LIMIT 1",
        [],
    );
    assert!(
        twice.is_err_and(|e| e.to_string().contains("UNIQUE")),
        "a batch's key is still unique"
    );
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT body FROM event_batches WHERE run_id = 'r' AND first_seq > 3",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(
        plan.contains("event_batches_seq"),
        "read by the index: {plan}"
    );
}

/// Schema 8 keeps a long batch compressed. A 300-task fan-out's large turns are BLOBs a small
/// part of their JSON, short batches stay text, every event reads back as the run wrote it,
/// and a damaged body is an error naming the run and the batch, not a panic or an allocation
/// of what the damaged length claims.
#[tokio::test]
async fn long_batches_are_stored_compressed_read_back_whole_and_damage_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let text = conductor::workloads::workflow(conductor::workloads::Shape::FanOut, 300, 16);
    let state = run_into(store.clone(), &text).await;
    let run = state.workflow_id.clone();
    let events = store.events(&run).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    let again = RunState::from_events(&events);
    assert_eq!(again.status(), RunStatus::Completed);
    assert_eq!(again.status(), state.status());
    let json_len: usize = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap().len() + 1)
        .sum();
    // A small run's batches are short.
    let small = run_into(store.clone(), FLAKY).await.workflow_id;
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let kinds = |conn: &rusqlite::Connection| -> HashMap<String, (i64, i64)> {
        let mut stmt = conn
            .prepare(
                "SELECT typeof(body), COUNT(*), SUM(length(body)) FROM event_batches GROUP BY 1",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let stored = kinds(&conn);
    let (blobs, blob_bytes) = stored["blob"];
    assert!(blobs >= 1, "{stored:?}");
    assert!(
        stored.contains_key("text"),
        "short batches stay text: {stored:?}"
    );
    let total = blob_bytes;
    assert!(
        (total as usize) * 3 < json_len,
        "{json_len} bytes of events stored in {total} ({blobs} BLOBs)"
    );
    // A text body reads as JSON in SQL, as before.
    let first_kind: String = conn
        .query_row(
            "SELECT json_extract(body, '$[0].event') FROM event_batches
             WHERE run_id = ?1 ORDER BY first_seq LIMIT 1",
            [&*small.0],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(first_kind, "run_started");

    // The length says 4 GiB; the block holds a few bytes.
    let damaged: i64 = conn
        .query_row(
            "UPDATE event_batches SET body = X'01FFFFFFFF1122334455'
             WHERE rowid = (SELECT MAX(rowid) FROM event_batches WHERE typeof(body) = 'blob')
             RETURNING first_seq",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(conn);
    let err = SqliteStore::open(&path)
        .unwrap()
        .events(&run)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&*run.0), "{err}");
    assert!(
        err.contains(&format!("batch from event {damaged}")),
        "{err}"
    );
    assert!(err.contains("claims 4294967295 bytes"), "{err}");
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
    if let Some(url) = postgres::database("newer_schema") {
        drop(PostgresStore::open(&url).unwrap());
        postgres::psql(&url, "UPDATE conductor_schema SET version = 99");
        let err = PostgresStore::open(&url)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("was written by a newer Conductor (schema 99"),
            "{err}"
        );
    }
}

#[test]
fn an_unreachable_postgres_is_reported_with_its_address_and_no_password() {
    let err = PostgresStore::open("postgres://me:hunter2@127.0.0.1:9/db?patience=300ms")
        .err()
        .expect("nothing listens on port 9")
        .to_string();
    assert!(err.contains("PostgreSQL stayed unreachable"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
