-- Migration 2 of the vault (a Go migration in store.go runs the file of its
-- engine). History is never rewritten. The only rows that may go are an erased
-- person's (erasure is the one legal reason to forget), and only once the
-- erasure is recorded in the erased table.

CREATE FUNCTION history_guard() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.contact_id <> '' AND EXISTS (SELECT 1 FROM erased WHERE contact_id = OLD.contact_id) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'lifeline: the contacts history is append-only; only an erasure (lifeline contacts erase) removes a person''s entries';
END
$$;
CREATE TRIGGER history_append_only BEFORE UPDATE OR DELETE ON history
    FOR EACH ROW EXECUTE FUNCTION history_guard();
CREATE TRIGGER history_no_truncate BEFORE TRUNCATE ON history
    FOR EACH STATEMENT EXECUTE FUNCTION history_guard();
