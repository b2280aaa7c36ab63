-- What multi-node scheduling adds: why a pending job waits, and its attempt number
-- (a job retried after its node was lost starts again as attempt 2, 3, ...).

ALTER TABLE jobs ADD COLUMN wait_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN wait_message TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
