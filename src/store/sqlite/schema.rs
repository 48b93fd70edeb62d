//! The schema, and how older stores move forward to it.

/// The schema version this build writes. Each migration moves the schema one version forward.
pub(super) const SCHEMA_VERSION: i64 = 8;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: runs, the event log, and the indexes derived from it.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        file TEXT NOT NULL,
        params TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        status TEXT NOT NULL
    );
    CREATE TABLE events (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task TEXT NOT NULL,
        pool TEXT NOT NULL,
        at INTEGER NOT NULL,
        body TEXT NOT NULL,
        dropped INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX dead_letters_run ON dead_letters(run_id);
    CREATE TABLE response_cache (
        key TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE artifacts (
        hash TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        content BLOB NOT NULL
    );",
    // 2: queryable projections of the log, kept in the same transaction as the events:
    // each task's latest result, every attempt, each agent instance, every decision.
    "CREATE TABLE task_results (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (run_id, task)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        task TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        agent TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        error TEXT,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE agent_states (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        agent TEXT NOT NULL,
        status TEXT NOT NULL,
        current_task TEXT,
        PRIMARY KEY (run_id, agent)
    ) WITHOUT ROWID;
    CREATE TABLE decisions (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        task TEXT NOT NULL,
        decision TEXT NOT NULL,
        decided_by TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;",
    // 3: the log as one row per committed batch (a turn's events, written once as a JSON
    // array), and an index of the artifacts each run wrote (for gc).
    "CREATE TABLE event_batches (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (run_id, first_seq)
    ) WITHOUT ROWID;
    INSERT INTO event_batches (run_id, first_seq, last_seq, body)
        SELECT run_id, seq, seq, '[' || body || ']' FROM events;
    CREATE TABLE artifact_refs (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        hash TEXT NOT NULL,
        PRIMARY KEY (run_id, hash)
    ) WITHOUT ROWID;
    CREATE INDEX artifact_refs_hash ON artifact_refs(hash);
    INSERT OR IGNORE INTO artifact_refs (run_id, hash)
        SELECT events.run_id, json_extract(a.value, '$.sha256')
        FROM events, json_each(events.body, '$.artifacts') AS a
        WHERE events.kind = 'attempt_finished';
    DROP TABLE events;",
    // 4: projections are written in bulk; this is the event they are written up to.
    "ALTER TABLE runs ADD COLUMN projected_seq INTEGER NOT NULL DEFAULT 0;
    UPDATE runs SET projected_seq = COALESCE(
        (SELECT MAX(last_seq) FROM event_batches WHERE event_batches.run_id = runs.id), 0);",
    // 5: what attempts' programs printed, beside the events (the head and tail of each
    // stream, in order).
    "CREATE TABLE attempt_logs (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        stream TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (run_id, task, attempt, seq)
    ) WITHOUT ROWID;",
    // 6: what `conductor runs` lists of each run (a `RunSummary` as JSON), so listing reads no
    // log; NULL until the run's status next changes, and then the log is folded as before. Runs
    // are listed (and collected by gc) in the order they were created: an index, not a sort.
    "ALTER TABLE runs ADD COLUMN summary TEXT;
    CREATE INDEX runs_created ON runs(created_at, id);",
    // 7: the log and the programs' output in tables with rowids, their keys in indexes. In a
    // table WITHOUT ROWID the whole row is the b-tree's key, and interior pages keep copies of
    // keys: a batch's body (kilobytes) spilled to overflow pages that every insert read back
    // to compare against (a 20k-task fan-out read 150 pages of bodies ~25 times each). Here the
    // index holds the short key and the body sits once in the table, appended by rowid.
    "CREATE TABLE event_batches_7 (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    INSERT INTO event_batches_7 (run_id, first_seq, last_seq, body)
        SELECT run_id, first_seq, last_seq, body FROM event_batches ORDER BY run_id, first_seq;
    DROP TABLE event_batches;
    ALTER TABLE event_batches_7 RENAME TO event_batches;
    CREATE UNIQUE INDEX event_batches_seq ON event_batches(run_id, first_seq);
    CREATE TABLE attempt_logs_7 (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        stream TEXT NOT NULL,
        data BLOB NOT NULL
    );
    INSERT INTO attempt_logs_7 (run_id, task, attempt, seq, stream, data)
        SELECT run_id, task, attempt, seq, stream, data FROM attempt_logs
        ORDER BY run_id, task, attempt, seq;
    DROP TABLE attempt_logs;
    ALTER TABLE attempt_logs_7 RENAME TO attempt_logs;
    CREATE UNIQUE INDEX attempt_logs_seq ON attempt_logs(run_id, task, attempt, seq);",
    // 8: a batch body of 4 KiB or more is written LZ4-compressed, as a BLOB (`body.rs`). No
    // row changes (text bodies stay readable); the version tells an older conductor, which
    // would read such a body as damaged, that the store is newer than it is.
    "",
];
