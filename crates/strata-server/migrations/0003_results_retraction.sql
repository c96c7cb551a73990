-- A published look can be retracted (a wrong document, an analysis bug): it
-- stays in the history, marked, and is no longer the latest. Null until then.
ALTER TABLE results ADD COLUMN retracted_at BIGINT;
ALTER TABLE results ADD COLUMN retracted_by TEXT;
ALTER TABLE results ADD COLUMN retract_reason TEXT;
