-- The append-only event log and the projections built from it.
-- Projections (runs, jobs, steps) are written in the same transaction as the event
-- that changes them, so they can always be rebuilt by replaying `events`.

CREATE TABLE events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    run_id         TEXT    NOT NULL,
    job_id         TEXT,
    step_id        TEXT,
    worker_id      TEXT,
    correlation_id TEXT    NOT NULL,
    tenant_id      TEXT    NOT NULL,
    ts             INTEGER NOT NULL,   -- milliseconds since the Unix epoch
    body           TEXT    NOT NULL    -- the whole event as JSON
);
CREATE INDEX events_by_run ON events (run_id, id);

CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    number        INTEGER NOT NULL,
    pipeline      TEXT    NOT NULL,
    tenant_id     TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    reason        TEXT    NOT NULL DEFAULT '',
    source        TEXT    NOT NULL,
    executor      TEXT    NOT NULL,
    trigger       TEXT    NOT NULL,
    pipeline_yaml TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    last_event_id INTEGER NOT NULL
);
CREATE UNIQUE INDEX runs_by_number ON runs (tenant_id, pipeline, number);
CREATE INDEX runs_by_state ON runs (state, id);

CREATE TABLE jobs (
    run_id        TEXT    NOT NULL,
    job_id        TEXT    NOT NULL,
    position      INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    reason        TEXT    NOT NULL DEFAULT '',
    message       TEXT    NOT NULL DEFAULT '',
    image         TEXT    NOT NULL,
    needs         TEXT    NOT NULL,   -- JSON list of job ids
    allow_failure INTEGER NOT NULL,
    node          TEXT    NOT NULL DEFAULT '',
    worker        TEXT    NOT NULL DEFAULT '',
    started_at    INTEGER,
    finished_at   INTEGER,
    PRIMARY KEY (run_id, job_id)
);

CREATE TABLE steps (
    run_id      TEXT    NOT NULL,
    job_id      TEXT    NOT NULL,
    step        INTEGER NOT NULL,     -- 1-based index within the job
    name        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    exit_code   INTEGER,
    reason      TEXT    NOT NULL DEFAULT '',
    message     TEXT    NOT NULL DEFAULT '',
    allowed     INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER,
    finished_at INTEGER,
    log_size    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, job_id, step)
);

-- Step output, byte-exact, as numbered chunks in arrival order.
CREATE TABLE step_logs (
    run_id TEXT    NOT NULL,
    job_id TEXT    NOT NULL,
    step   INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    data   BLOB    NOT NULL,
    PRIMARY KEY (run_id, job_id, step, seq)
) WITHOUT ROWID;
