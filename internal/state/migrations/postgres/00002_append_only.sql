-- The audit log and the erasure ledger are append-only. The database itself
-- refuses UPDATE, DELETE and TRUNCATE, so a script with direct access to the
-- state store cannot quietly rewrite history. Trigger syntax differs between
-- engines, hence this file exists once per engine.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION lifeline_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'lifeline: % is append-only; % refused', TG_TABLE_NAME, TG_OP;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION lifeline_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION lifeline_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION lifeline_append_only();
CREATE TRIGGER erasure_ledger_no_update BEFORE UPDATE ON erasure_ledger
    FOR EACH ROW EXECUTE FUNCTION lifeline_append_only();
CREATE TRIGGER erasure_ledger_no_delete BEFORE DELETE ON erasure_ledger
    FOR EACH ROW EXECUTE FUNCTION lifeline_append_only();
CREATE TRIGGER erasure_ledger_no_truncate BEFORE TRUNCATE ON erasure_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION lifeline_append_only();

-- +goose Down
DROP TRIGGER erasure_ledger_no_truncate ON erasure_ledger;
DROP TRIGGER erasure_ledger_no_delete ON erasure_ledger;
DROP TRIGGER erasure_ledger_no_update ON erasure_ledger;
DROP TRIGGER audit_log_no_truncate ON audit_log;
DROP TRIGGER audit_log_no_delete ON audit_log;
DROP TRIGGER audit_log_no_update ON audit_log;
DROP FUNCTION lifeline_append_only();
