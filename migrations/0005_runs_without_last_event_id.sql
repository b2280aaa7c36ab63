-- runs.last_event_id was written with every event of a run and read by nothing: one
-- UPDATE per event in the writer's transaction. The event log's own ids say the same.

ALTER TABLE runs DROP COLUMN last_event_id;
