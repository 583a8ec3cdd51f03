-- Rate limits shared by every serve process on the state store: one row
-- per bucket (a client address of the public forms), holding the bucket's
-- theoretical arrival time (GCRA) in Unix microseconds. A row whose time
-- has passed is a full bucket and may be deleted.

-- +goose Up
CREATE TABLE status_rate_buckets (
    bucket TEXT PRIMARY KEY,
    tat    BIGINT NOT NULL
);
CREATE INDEX status_rate_buckets_tat ON status_rate_buckets (tat);

-- +goose Down
DROP TABLE status_rate_buckets;
