-- The contacts a targeted notice did not go to, and why (an address that
-- bounced): a JSON list of sentences, for the incident's delivery report.

-- +goose Up
ALTER TABLE status_tenant_notices ADD COLUMN skipped TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE status_tenant_notices DROP COLUMN skipped;
