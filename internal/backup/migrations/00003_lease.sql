-- +goose Up
-- One shipper per product across every process sharing the state store:
-- the holder ("host:pid", as operation and plan leases) renews its lease
-- every round; another process takes it over when it expires or when its
-- holder's process on this host is gone. Times are unix microseconds.
CREATE TABLE backup_leases (
    product     TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);

-- +goose Down
DROP TABLE backup_leases;
