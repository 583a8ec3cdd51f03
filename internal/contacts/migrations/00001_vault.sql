-- The contacts vault's tables. Portable: this file runs unchanged on SQLite
-- and PostgreSQL (where the vault uses its own schema, lifeline_contacts).
--
-- Conventions, as in the state store: times are BIGINT microseconds since
-- the Unix epoch, 0 meaning "not set"; structured values are compact JSON in
-- TEXT; sequence numbers are assigned by Lifeline inside the vault's write
-- lock, not by an engine-specific sequence.

-- +goose Up
CREATE TABLE vault_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE accounts (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL DEFAULT '',
    source     TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version    BIGINT NOT NULL
);

-- Every tenant the vault has heard of, with the account that owns it and
-- its last known lifecycle state per product ({"tracker":"purged"}).
CREATE TABLE tenants (
    tenant_key TEXT PRIMARY KEY,
    account_id TEXT NOT NULL DEFAULT '',
    name       TEXT NOT NULL DEFAULT '',
    states     TEXT NOT NULL DEFAULT '{}',
    states_at  BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX tenants_account ON tenants (account_id);

-- One row per person. email_key is the address with a lower-cased local
-- part: spellings that differ only in case are one person.
CREATE TABLE contacts (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL,
    email_key      TEXT NOT NULL UNIQUE,
    domain         TEXT NOT NULL,
    name           TEXT NOT NULL DEFAULT '',
    phone          TEXT NOT NULL DEFAULT '',
    language       TEXT NOT NULL DEFAULT '',
    source         TEXT NOT NULL DEFAULT '',
    verified_at    BIGINT NOT NULL DEFAULT 0,
    verify_sent_at BIGINT NOT NULL DEFAULT 0,
    bounced_at     BIGINT NOT NULL DEFAULT 0,
    bounce_reason  TEXT NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    version        BIGINT NOT NULL
);
CREATE INDEX contacts_domain ON contacts (domain);

-- Every spelling of an address ever seen, so a merge is recorded once.
CREATE TABLE aliases (
    email      TEXT PRIMARY KEY,
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    source     TEXT NOT NULL,
    at         BIGINT NOT NULL
);
CREATE INDEX aliases_contact ON aliases (contact_id);

-- Who may speak for what: a contact, a tenant or account, a role, and the
-- source that says so. removed_at > 0: the source stopped listing it.
CREATE TABLE links (
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    scope      TEXT NOT NULL CHECK (scope IN ('tenant', 'account')),
    scope_key  TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'technical', 'billing', 'security')),
    source     TEXT NOT NULL,
    added_at   BIGINT NOT NULL,
    removed_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (contact_id, scope, scope_key, role, source)
);
CREATE INDEX links_scope ON links (scope, scope_key);
CREATE INDEX links_source ON links (source, removed_at);

-- Append-only: the engine-specific migration 00002 refuses updates, and
-- deletes of anything but an erased person's rows.
CREATE TABLE history (
    seq        BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    source     TEXT NOT NULL,
    action     TEXT NOT NULL,
    contact_id TEXT NOT NULL DEFAULT '',
    account_id TEXT NOT NULL DEFAULT '',
    tenant     TEXT NOT NULL DEFAULT '',
    version    BIGINT NOT NULL DEFAULT 0,
    detail     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX history_contact ON history (contact_id, seq);

-- Erased people, by ErasureHash: they are kept out of syncs and imports.
CREATE TABLE erased (
    hash       TEXT PRIMARY KEY,
    contact_id TEXT NOT NULL DEFAULT '',
    ledger_id  BIGINT NOT NULL DEFAULT 0,
    at         BIGINT NOT NULL
);
