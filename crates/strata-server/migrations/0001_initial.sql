-- Strata control plane: initial schema. Portable SQL, run unchanged on SQLite and PostgreSQL.

-- The current config version; every change bumps it inside its transaction, which
-- also serialises writers (the row is locked until commit).
CREATE TABLE config_head (
    id BIGINT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO config_head (id, version) VALUES (1, 0);

-- Named counters (the audit log sequence).
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('audit', 0);

-- Every published snapshot, kept for rollback. `body` is exactly what SDKs receive.
CREATE TABLE snapshots (
    version BIGINT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    body TEXT NOT NULL,
    extra TEXT NOT NULL
);

CREATE TABLE experiments (
    key TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    status TEXT NOT NULL,
    layer TEXT,
    owner_team TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,
    doc TEXT NOT NULL
);
CREATE INDEX experiments_status ON experiments (status);
CREATE INDEX experiments_layer ON experiments (layer);

-- Layers, metric definitions, guardrail definitions and the holdout, by kind.
CREATE TABLE definitions (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,
    doc TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);

-- Append-only.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    actor_key TEXT NOT NULL,
    action TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_key TEXT NOT NULL,
    version BIGINT,
    before_doc TEXT,
    after_doc TEXT,
    detail TEXT
);
CREATE INDEX audit_entity ON audit_log (entity_type, entity_key);

-- Bearer tokens, stored as SHA-256 hex of the token.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    team TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0
);
