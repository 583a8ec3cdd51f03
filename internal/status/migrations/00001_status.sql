-- Status page tables. Portable SQL for SQLite and PostgreSQL: ids are made
-- in Go, times are microseconds since the epoch (0 = none), structured parts
-- of an update are JSON in TEXT.

-- +goose Up
CREATE TABLE status_groups (
    id         TEXT PRIMARY KEY,
    name_en    TEXT NOT NULL UNIQUE,
    name_zh    TEXT NOT NULL DEFAULT '',
    position   INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE status_components (
    id             TEXT PRIMARY KEY,
    name_en        TEXT NOT NULL UNIQUE,
    name_zh        TEXT NOT NULL DEFAULT '',
    description_en TEXT NOT NULL DEFAULT '',
    description_zh TEXT NOT NULL DEFAULT '',
    group_id       TEXT NOT NULL DEFAULT '',
    position       INTEGER NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- Incidents and scheduled maintenances share one table (kind).
CREATE TABLE status_incidents (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    name_en         TEXT NOT NULL DEFAULT '',
    name_zh         TEXT NOT NULL DEFAULT '',
    impact          TEXT NOT NULL,
    status          TEXT NOT NULL,
    links           TEXT NOT NULL DEFAULT '[]',
    scheduled_for   BIGINT NOT NULL DEFAULT 0,
    scheduled_until BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    resolved_at     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX status_incidents_recent ON status_incidents (resolved_at, created_at);

CREATE TABLE status_updates (
    id          TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL REFERENCES status_incidents (id),
    status      TEXT NOT NULL,
    body        TEXT NOT NULL,
    author      TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);
CREATE INDEX status_updates_incident ON status_updates (incident_id, created_at);

-- One row per component whose status an update set.
CREATE TABLE status_component_changes (
    update_id    TEXT NOT NULL REFERENCES status_updates (id),
    incident_id  TEXT NOT NULL,
    component_id TEXT NOT NULL,
    status       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (update_id, component_id)
);
CREATE INDEX status_component_changes_incident ON status_component_changes (incident_id);

CREATE TABLE status_templates (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A counter bumped by every write, so a serving process notices changes made
-- by the CLI or by another process with one cheap read.
CREATE TABLE status_revision (
    id  INTEGER PRIMARY KEY,
    rev BIGINT NOT NULL
);
INSERT INTO status_revision (id, rev) VALUES (1, 0);

-- +goose Down
DROP TABLE status_revision;
DROP TABLE status_templates;
DROP TABLE status_component_changes;
DROP TABLE status_updates;
DROP TABLE status_incidents;
DROP TABLE status_components;
DROP TABLE status_groups;
