-- +goose Up
-- When retention removed the restore's trash (unix microseconds; 0: not
-- yet): from then on it cannot be undone, only restored over.
ALTER TABLE restore_runs ADD COLUMN trash_expired BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE restore_runs DROP COLUMN trash_expired;
