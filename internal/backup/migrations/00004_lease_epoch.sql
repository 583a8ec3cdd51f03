-- +goose Up
-- Counts the times the lease changed hands. A process that lost the lease
-- and took it back later holds a new epoch, so a maintenance pass that read
-- the catalog under the old one cannot commit what it decided then
-- (fence.check): another holder may have changed the catalog in between.
ALTER TABLE backup_leases ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE backup_leases DROP COLUMN epoch;
