//! The PostgreSQL schema, and how older databases move forward to it. The version is the
//! single row of `conductor_schema`; migrations run in one transaction under an advisory
//! lock, so processes opening a new database at once wait for each other.

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: i64 = 2;

/// Taken (transaction-scoped) while migrating: any constant only Conductor uses.
pub(super) const MIGRATION_LOCK: i64 = 0x636f_6e64_7563_7472;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: what the SQLite store keeps (runs, the log as one row per batch, projections, dead
    // letters, artifacts, the response cache, attempt logs), plus the run lease (owner,
    // epoch, lease_until), the attempt queue, the inbox of results and the workers.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        file TEXT NOT NULL,
        params TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        status TEXT NOT NULL,
        projected_seq BIGINT NOT NULL DEFAULT 0,
        last_seq BIGINT NOT NULL DEFAULT 0,
        owner TEXT,
        epoch BIGINT NOT NULL DEFAULT 0,
        lease_until TIMESTAMPTZ
    );
    CREATE INDEX runs_unfinished ON runs (lease_until) WHERE status IN ('pending', 'in_progress');
    CREATE TABLE event_batches (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        first_seq BIGINT NOT NULL,
        last_seq BIGINT NOT NULL,
        epoch BIGINT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (run_id, first_seq)
    );
    CREATE TABLE dead_letters (
        id TEXT PRIMARY KEY,
        n BIGSERIAL,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task TEXT NOT NULL,
        pool TEXT NOT NULL,
        at BIGINT NOT NULL,
        body TEXT NOT NULL,
        dropped BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX dead_letters_run ON dead_letters (run_id);
    CREATE TABLE response_cache (
        key TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE artifacts (
        hash TEXT PRIMARY KEY,
        size BIGINT NOT NULL,
        content BYTEA NOT NULL
    );
    CREATE TABLE artifact_refs (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        hash TEXT NOT NULL,
        PRIMARY KEY (run_id, hash)
    );
    CREATE INDEX artifact_refs_hash ON artifact_refs (hash);
    CREATE TABLE task_results (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        error TEXT,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (run_id, task)
    );
    CREATE TABLE attempts (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        task TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        agent TEXT NOT NULL,
        duration_ms BIGINT NOT NULL,
        error TEXT,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE agent_states (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        agent TEXT NOT NULL,
        status TEXT NOT NULL,
        current_task TEXT,
        PRIMARY KEY (run_id, agent)
    );
    CREATE TABLE decisions (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        task TEXT NOT NULL,
        decision TEXT NOT NULL,
        decided_by TEXT NOT NULL,
        at BIGINT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE attempt_logs (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        stream TEXT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (run_id, task, attempt, seq)
    );
    CREATE TABLE attempt_queue (
        id BIGSERIAL UNIQUE,
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        task TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        pool TEXT NOT NULL,
        labels JSONB NOT NULL DEFAULT '{}',
        body TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        state TEXT NOT NULL DEFAULT 'ready',
        worker TEXT,
        enqueued_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        claimed_at TIMESTAMPTZ,
        heartbeat_at TIMESTAMPTZ,
        lease_until TIMESTAMPTZ,
        finished_at TIMESTAMPTZ,
        PRIMARY KEY (run_id, task, attempt)
    );
    CREATE INDEX attempt_queue_ready ON attempt_queue (id) WHERE state = 'ready';
    CREATE INDEX attempt_queue_claimed ON attempt_queue (run_id, lease_until) WHERE state = 'claimed';
    CREATE INDEX attempt_queue_worker ON attempt_queue (worker) WHERE state = 'claimed';
    CREATE TABLE attempt_results (
        run_id TEXT NOT NULL,
        task TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        worker TEXT NOT NULL,
        body TEXT NOT NULL,
        taken BOOLEAN NOT NULL DEFAULT FALSE,
        at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (run_id, task, attempt),
        FOREIGN KEY (run_id, task, attempt) REFERENCES attempt_queue (run_id, task, attempt)
            ON DELETE CASCADE
    );
    CREATE INDEX attempt_results_new ON attempt_results (run_id) WHERE NOT taken;
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid BIGINT NOT NULL,
        pools TEXT NOT NULL,
        labels JSONB NOT NULL,
        started_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
    );",
    // 2: what `conductor runs` lists of each run (a `RunSummary` as JSON), so listing reads no
    // log; NULL until the run's status next changes, and then the log is folded as before. Runs
    // are listed (and collected by gc) in the order they were created: an index, not a sort.
    "ALTER TABLE runs ADD COLUMN summary TEXT;
    CREATE INDEX runs_created ON runs (created_at, id);",
];
