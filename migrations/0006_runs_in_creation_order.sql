-- Lists of runs were sorted by id, and an id chosen by the client (a UUID, a name)
-- does not sort by time. seq is the id of the run's RunRequested event: the order in
-- which the server accepted its runs. Runs from before this migration take the id of
-- their first event.

ALTER TABLE runs ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE runs SET seq = COALESCE((SELECT MIN(e.id) FROM events e WHERE e.run_id = runs.id), 0);
DROP INDEX runs_by_state;
CREATE INDEX runs_by_seq ON runs (seq);
CREATE INDEX runs_by_state ON runs (state, seq);
DROP INDEX runs_by_pipeline;
CREATE INDEX runs_by_pipeline ON runs (pipeline, seq);
