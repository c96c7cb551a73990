-- Sticky assignments kept for remote evaluation (assignment spec, section
-- 9): per unit (attribute and id) and experiment, the variant assigned once.
-- Clients without a local SDK get the same stickiness as SDK users.
CREATE TABLE sticky_assignments (
    unit_attr TEXT NOT NULL,
    unit_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    variant TEXT NOT NULL,
    assigned_at BIGINT NOT NULL,
    PRIMARY KEY (unit_attr, unit_id, experiment)
);

CREATE INDEX sticky_assignments_experiment ON sticky_assignments (experiment);
