-- Every evaluation of a guardrail by the monitor: what it read (the input),
-- what it decided (gates, tests, outcome, action), what was done about it,
-- and, for a breach awaiting approval, the person's review. The document
-- holds the input, so a recorded evaluation can be replayed.
CREATE TABLE guardrail_evaluations (
    id TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    guardrail TEXT NOT NULL,
    at BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    action TEXT NOT NULL,
    taken TEXT,
    review TEXT,
    reviewed_by TEXT,
    reviewed_at BIGINT,
    doc TEXT NOT NULL
);

CREATE INDEX guardrail_evaluations_experiment ON guardrail_evaluations (experiment, at);
CREATE INDEX guardrail_evaluations_at ON guardrail_evaluations (at);
