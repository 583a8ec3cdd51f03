-- +goose Up
-- The parameters of each in-place restore, so that running the same
-- command again after a crash resumes that restore instead of starting
-- another. request is canonical JSON (tenants, products, moment per
-- product, policy); created is unix microseconds.
CREATE TABLE restore_runs (
    op_id   TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    created BIGINT NOT NULL
);

-- +goose Down
DROP TABLE restore_runs;
