-- Analysis results published for experiments (the documents `strata analyze`
-- writes), kept as a history: one row per publication.
CREATE TABLE results (
    seq BIGINT PRIMARY KEY,
    experiment TEXT NOT NULL,
    owner_team TEXT NOT NULL,
    as_of BIGINT NOT NULL,
    published_at BIGINT NOT NULL,
    published_by TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX results_experiment ON results (experiment, as_of);
INSERT INTO counters (name, value) VALUES ('results', 0);
