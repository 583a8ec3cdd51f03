-- The audit log and the erasure ledger are append-only. The database itself
-- refuses UPDATE and DELETE, so a script with direct access to the state
-- store cannot quietly rewrite history. Trigger syntax differs between
-- engines, hence this file exists once per engine.

-- +goose Up
-- +goose StatementBegin
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'lifeline: audit_log is append-only; UPDATE refused');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'lifeline: audit_log is append-only; DELETE refused');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER erasure_ledger_no_update BEFORE UPDATE ON erasure_ledger
BEGIN
    SELECT RAISE(ABORT, 'lifeline: erasure_ledger is append-only; UPDATE refused');
END;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE TRIGGER erasure_ledger_no_delete BEFORE DELETE ON erasure_ledger
BEGIN
    SELECT RAISE(ABORT, 'lifeline: erasure_ledger is append-only; DELETE refused');
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER erasure_ledger_no_delete;
DROP TRIGGER erasure_ledger_no_update;
DROP TRIGGER audit_log_no_delete;
DROP TRIGGER audit_log_no_update;
