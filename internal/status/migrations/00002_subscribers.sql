-- Subscribers and the notices owed to them. Portable SQL; ids made in Go.

-- +goose Up
CREATE TABLE status_subscribers (
    id              TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,              -- email | webhook
    address         TEXT NOT NULL,              -- the email address, or the webhook URL
    owner_email     TEXT NOT NULL DEFAULT '',   -- confirms a webhook, and is told if it is disabled
    components      TEXT NOT NULL DEFAULT '[]', -- JSON list of component ids; [] means all
    lang            TEXT NOT NULL DEFAULT 'en',
    secret          TEXT NOT NULL DEFAULT '',   -- webhook signing secret (whsec_…)
    confirm_hash    TEXT NOT NULL DEFAULT '',   -- sha256 of the pending confirmation token
    confirm_sent_at BIGINT NOT NULL DEFAULT 0,
    confirmed_at    BIGINT NOT NULL DEFAULT 0,
    disabled_at     BIGINT NOT NULL DEFAULT 0,
    disabled_reason TEXT NOT NULL DEFAULT '',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (channel, address)
);

-- One row per (subscriber, update): written in the transaction that
-- publishes the update, so a notice is owed exactly once whatever crashes.
CREATE TABLE status_notices (
    subscriber_id TEXT NOT NULL,
    update_id     TEXT NOT NULL,
    incident_id   TEXT NOT NULL,
    status        TEXT NOT NULL,               -- pending | sent | failed
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    sent_at       BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (subscriber_id, update_id)
);
CREATE INDEX status_notices_pending ON status_notices (status, created_at);

-- Keys this installation signs links with, made on first use.
CREATE TABLE status_keys (
    name       TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE status_keys;
DROP TABLE status_notices;
DROP TABLE status_subscribers;
