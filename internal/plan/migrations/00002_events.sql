-- +goose Up
-- Plan events for the event webhooks (plans.events): one row per event and
-- URL, written in the transaction that changed the plan, delivered by
-- `lifeline serve` with retries. Times are unix microseconds.
CREATE TABLE plan_events (
    id           TEXT NOT NULL,            -- pev_…, the same on every attempt (webhook-id)
    url          TEXT NOT NULL,
    plan_id      TEXT NOT NULL REFERENCES plans (id),
    event        TEXT NOT NULL,            -- plan.<status>
    body         TEXT NOT NULL,            -- JSON Event
    state        TEXT NOT NULL,            -- pending, sent, failed (given up)
    attempts     BIGINT NOT NULL,
    next_at      BIGINT NOT NULL,          -- due from then
    claimed_by   TEXT NOT NULL,            -- "host:pid" delivering it now
    claim_until  BIGINT NOT NULL,
    last_error   TEXT NOT NULL,
    created      BIGINT NOT NULL,
    PRIMARY KEY (id, url)
);
CREATE INDEX plan_events_due ON plan_events (state, next_at);

-- +goose Down
DROP TABLE plan_events;
