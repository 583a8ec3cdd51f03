-- Lifeline's own tables. This file is portable: it runs unchanged on SQLite
-- and PostgreSQL, so it uses only TEXT, INTEGER and BIGINT.
--
-- Storage conventions:
--   * Times are BIGINT microseconds since the Unix epoch (UTC). 0 means "not
--     set" (an unfinished operation, a token never revoked). Integers compare
--     and sort the same way on both engines, unlike timestamp types.
--   * Structured values (targets, per-table row counts, audit detail, a
--     product's schema) are compact JSON in TEXT columns. TEXT keeps the bytes
--     exactly as written, which the audit hash chain relies on.
--   * IDs that must be consecutive (audit seq, erasure id) are assigned by
--     Lifeline under the append lock, not by an engine-specific sequence.

-- +goose Up
CREATE TABLE operations (
    id          TEXT PRIMARY KEY,
    action      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    targets     TEXT NOT NULL DEFAULT '[]',
    status      TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'rolled_back')),
    error       TEXT NOT NULL DEFAULT '',
    created     BIGINT NOT NULL,
    finished    BIGINT NOT NULL DEFAULT 0,
    owner       TEXT NOT NULL DEFAULT '',
    lease_until BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX operations_created ON operations (created, id);
CREATE INDEX operations_status ON operations (status, created);

CREATE TABLE operation_steps (
    op_id      TEXT NOT NULL REFERENCES operations (id),
    pos        INTEGER NOT NULL,
    product    TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    app        TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed', 'skipped')),
    row_counts TEXT NOT NULL DEFAULT '{}',
    error      TEXT NOT NULL DEFAULT '',
    finished   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (op_id, product, tenant, app)
);
CREATE INDEX operation_steps_tenant ON operation_steps (tenant, op_id);

-- One row per tenant that a running operation is changing. The primary key
-- is the lock: a second operation cannot insert the same tenant.
CREATE TABLE tenant_locks (
    tenant TEXT PRIMARY KEY,
    op_id  TEXT NOT NULL REFERENCES operations (id),
    since  BIGINT NOT NULL
);
CREATE INDEX tenant_locks_op ON tenant_locks (op_id);

-- Append-only, hash-chained (see audit.go). Update and delete are refused by
-- triggers in the engine-specific migration 00002.
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    op_id     TEXT NOT NULL DEFAULT '',
    detail    TEXT NOT NULL DEFAULT '{}',
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_log_op ON audit_log (op_id, seq);

-- Rows removed for good. Never updated or deleted (triggers in 00002).
CREATE TABLE erasure_ledger (
    id         BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    op_id      TEXT NOT NULL DEFAULT '',
    tenant     TEXT NOT NULL,
    product    TEXT NOT NULL,
    app        TEXT NOT NULL DEFAULT '',
    row_counts TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX erasure_ledger_tenant ON erasure_ledger (tenant, id);

-- Operator credentials. Only the SHA-256 of the secret is kept.
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created     BIGINT NOT NULL,
    revoked     BIGINT NOT NULL DEFAULT 0
);

-- What `lifeline protect` saw of each product database.
CREATE TABLE product_schemas (
    product     TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    schema_json TEXT NOT NULL,
    protected   BIGINT NOT NULL
);

-- +goose Down
DROP TABLE product_schemas;
DROP TABLE api_tokens;
DROP TABLE erasure_ledger;
DROP TABLE audit_log;
DROP TABLE tenant_locks;
DROP TABLE operation_steps;
DROP TABLE operations;
