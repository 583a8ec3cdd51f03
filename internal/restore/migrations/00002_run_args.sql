-- +goose Up
-- The request itself (JSON: tenants, moment, products, policy, flags,
-- actor, reason), so that `lifeline ops resume` can finish an interrupted
-- restore without its command line. Empty for restores recorded before.
ALTER TABLE restore_runs ADD COLUMN args TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE restore_runs DROP COLUMN args;
