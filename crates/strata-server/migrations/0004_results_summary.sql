-- The figures of a look that a trend chart needs (decision, worst health
-- status, units, the primary effects), as JSON, so that the history of an
-- experiment's looks is read without loading every document. Null for looks
-- published before it existed.
ALTER TABLE results ADD COLUMN summary TEXT;
