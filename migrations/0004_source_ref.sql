-- The ref a git run was asked for (branch, tag or commit), kept beside the commit it
-- resolved to, so that a run document shows both.

ALTER TABLE runs ADD COLUMN source_ref TEXT NOT NULL DEFAULT '';
