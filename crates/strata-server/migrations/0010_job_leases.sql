-- Leases of the jobs that run on one node at a time (the scheduled analysis
-- and the guardrail monitor): the node holding a lease renews it before it
-- expires; another node takes it over once it has.
CREATE TABLE job_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
