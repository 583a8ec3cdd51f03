-- Targeted notices: the tenants an incident affects, and the private
-- notices each update owes their contacts. Portable SQL; ids made in Go.

-- +goose Up
-- Every tenant an incident affects, from an explicit list or from the
-- restores and plans it is linked to. Rows are only added.
CREATE TABLE status_incident_tenants (
    incident_id TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    source      TEXT NOT NULL,      -- "list", or the link it came from (restore:ID, plan:ID)
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (incident_id, tenant)
);

-- One row per (update, tenant), written in the transaction that publishes
-- the update: the outbox of targeted notices. The delivery side turns each
-- into one job per authorised contact.
CREATE TABLE status_tenant_notices (
    update_id   TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    status      TEXT NOT NULL,      -- pending | queued | uncontactable
    contacts    INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    queued_at   BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (update_id, tenant)
);
CREATE INDEX status_tenant_notices_pending ON status_tenant_notices (status, created_at);

-- +goose Down
DROP TABLE status_tenant_notices;
DROP TABLE status_incident_tenants;
