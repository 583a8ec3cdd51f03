-- +goose Up
-- Objects a running restore or drill needs: retention never deletes them.
-- Times are unix microseconds.
CREATE TABLE backup_pins (
    key    TEXT NOT NULL,
    holder TEXT NOT NULL,
    until  BIGINT NOT NULL,
    PRIMARY KEY (key, holder)
);

-- +goose Down
DROP TABLE backup_pins;
