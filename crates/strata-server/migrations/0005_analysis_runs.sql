-- The runs of the scheduled analysis (start, end, experiments, looks
-- published, failures), as JSON documents, so that the list of runs and each
-- experiment's last failed analysis outlive a restart. Only the latest runs
-- are kept.
CREATE TABLE analysis_runs (
    id BIGINT PRIMARY KEY,
    doc TEXT NOT NULL
);
