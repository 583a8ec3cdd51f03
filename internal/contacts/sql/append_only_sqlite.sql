-- Migration 2 of the vault (a Go migration in store.go runs the file of its
-- engine). History is never rewritten. The only rows that may go are an erased
-- person's (erasure is the one legal reason to forget), and only once the
-- erasure is recorded in the erased table.

CREATE TRIGGER history_no_update BEFORE UPDATE ON history
BEGIN
    SELECT RAISE(ABORT, 'lifeline: the contacts history is append-only');
END;
CREATE TRIGGER history_no_delete BEFORE DELETE ON history
WHEN OLD.contact_id = '' OR NOT EXISTS (SELECT 1 FROM erased WHERE contact_id = OLD.contact_id)
BEGIN
    SELECT RAISE(ABORT, 'lifeline: the contacts history is append-only; only an erasure (lifeline contacts erase) removes a person''s entries');
END;
