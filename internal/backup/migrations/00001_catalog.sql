-- +goose Up
-- The catalog is a cache of what the repository holds: one row per object,
-- from its header and index. The repository itself is the truth;
-- Repo.Rescan rebuilds the catalog from it. Times are unix microseconds.
CREATE TABLE backup_objects (
    key         TEXT PRIMARY KEY,
    product     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    first_pos   BIGINT NOT NULL,
    last_pos    BIGINT NOT NULL,
    source_pos  BIGINT NOT NULL,
    first_time  BIGINT NOT NULL,
    last_time   BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    plain_bytes BIGINT NOT NULL,
    records     BIGINT NOT NULL,
    tenants     BIGINT NOT NULL,
    created     BIGINT NOT NULL
);
CREATE INDEX backup_objects_product ON backup_objects (product, kind, last_pos);

-- What each product's shipper last saw, for `backup status` and alerts.
CREATE TABLE backup_shipper (
    product        TEXT PRIMARY KEY,
    updated        BIGINT NOT NULL,
    backlog        BIGINT NOT NULL,
    oldest_pending BIGINT NOT NULL,
    last_error     TEXT NOT NULL,
    error_since    BIGINT NOT NULL
);

-- +goose Down
DROP TABLE backup_shipper;
DROP TABLE backup_objects;
