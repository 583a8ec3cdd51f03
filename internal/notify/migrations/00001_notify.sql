-- Delivery records. Portable SQL for SQLite and PostgreSQL.

-- +goose Up
-- One row per message ever attempted: every send is recorded. The row is
-- marked sent just before the message's last byte leaves (see Sender), so a
-- worker that finds it sent after a crash does not send again.
CREATE TABLE notify_deliveries (
    key        TEXT PRIMARY KEY,           -- notice:SUBSCRIBER:UPDATE, or mail:… for confirmation and owner mails
    kind       TEXT NOT NULL,              -- notice | confirm | disabled
    channel    TEXT NOT NULL,              -- email | webhook
    recipient  TEXT NOT NULL,              -- email address or webhook URL
    provider   TEXT NOT NULL,              -- the rate-limit bucket: smtp:HOST:PORT or webhook:HOST
    message_id TEXT NOT NULL,              -- Message-ID or webhook-id, the same on every attempt
    state      TEXT NOT NULL,              -- pending | sent | failed | cancelled
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    sent_at    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX notify_deliveries_state ON notify_deliveries (state, updated_at);

-- Consecutive failed deliveries per webhook subscriber; a success deletes
-- the row. since is when the current run of failures began.
CREATE TABLE notify_endpoints (
    subscriber_id TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    since         BIGINT NOT NULL,
    last_error    TEXT NOT NULL DEFAULT '',
    updated_at    BIGINT NOT NULL
);

-- +goose Down
DROP TABLE notify_endpoints;
DROP TABLE notify_deliveries;
