-- What the server adds: log offsets and truncation, idempotent submission, retries,
-- git sources, log retention, and the outbox cursors and dead letters.

ALTER TABLE step_logs ADD COLUMN byte_offset INTEGER NOT NULL DEFAULT 0;

-- Bytes dropped from the middle of a step's output to keep its size limit.
ALTER TABLE steps ADD COLUMN truncated_bytes INTEGER NOT NULL DEFAULT 0;

ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
ALTER TABLE runs ADD COLUMN retry_of TEXT;
ALTER TABLE runs ADD COLUMN source_commit TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN logs_pruned INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX runs_by_idempotency_key ON runs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_by_pipeline ON runs (pipeline, id);

-- In-process subscribers of the event log: the last event each one handled.
CREATE TABLE subscriptions (
    name          TEXT PRIMARY KEY,
    last_event_id INTEGER NOT NULL
);

-- Events a subscriber still failed to handle after its retries.
CREATE TABLE dead_letters (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT    NOT NULL,
    event_id     INTEGER NOT NULL,
    error        TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    failed_at    INTEGER NOT NULL,
    replayed_at  INTEGER
);
