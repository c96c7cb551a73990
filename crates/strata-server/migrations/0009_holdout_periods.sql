-- The periods of the global holdout: from its salt or size being set to the
-- next change, each with its latest look (the holdout against everyone
-- else, computed by the scheduled analysis) as a JSON document. A period's
-- final look is kept for good: it is the history of what was shipped.
CREATE TABLE holdout_periods (
    period BIGINT PRIMARY KEY,
    doc TEXT NOT NULL
);
