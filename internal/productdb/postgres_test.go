package productdb

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"

	"lifeline/internal/fault"
	"lifeline/internal/pgtest"
)

func pgSmallLimits() Spec {
	s := sampleSpec()
	s.Limits = Limits{RowsPerStatement: 5, RowsPerTransaction: 8, TenantsPerStatement: 2}
	return s
}

func TestPostgresGuards(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[1])
	x.l = x.protect(t, pgSmallLimits())

	// Per transaction: 3 + 3 rows pass, the next 3 exceed 8.
	tx, err := x.raw.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, issue := range []int{1002, 1003} {
		if _, err := tx.Exec("DELETE FROM comments WHERE issue_id = $1", issue); err != nil {
			t.Fatalf("delete 3 comments in a transaction: %v", err)
		}
	}
	_, err = tx.Exec("DELETE FROM comments WHERE issue_id = 1004")
	refused(t, err, "in one transaction", "limit 8")
	tx.Rollback()
	// The count is per transaction: a new one starts from zero.
	tx, _ = x.raw.Begin()
	for _, issue := range []int{1002, 1003} {
		if _, err := tx.Exec("DELETE FROM comments WHERE issue_id = $1", issue); err != nil {
			t.Fatalf("new transaction: %v", err)
		}
	}
	tx.Rollback()

	// A cascade is counted with the statement that caused it.
	_, err = x.raw.Exec("DELETE FROM issues WHERE id IN (1002, 1003)")
	refused(t, err, "comments")

	_, err = x.raw.Exec("TRUNCATE comments")
	refused(t, err, "TRUNCATE", "comments")
	_, err = x.raw.Exec("TRUNCATE sites CASCADE")
	refused(t, err, "TRUNCATE")
	if _, err := x.raw.Exec("TRUNCATE plans"); err != nil {
		t.Fatalf("truncate of an unprotected table: %v", err)
	}

	if on, err := x.db.DropGuard(x.ctx); err != nil || !on {
		t.Fatalf("DropGuard = %v, %v (the test server runs as a superuser)", on, err)
	}
	_, err = x.raw.Exec("DROP TABLE insight_links")
	refused(t, err, "DROP", "insight_links")
	_, err = x.raw.Exec("DROP TABLE comments, plans")
	refused(t, err, "comments")
	if _, err := x.raw.Exec("DROP TABLE plans"); err != nil {
		t.Fatalf("drop of an unprotected table: %v", err)
	}
	tx, _ = x.raw.Begin()
	if _, err := tx.Exec("SET LOCAL lifeline.allow_drop = 'insight_links'"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("DROP TABLE insight_links"); err != nil {
		t.Fatalf("deliberate drop: %v", err)
	}
	tx.Rollback()
	if n := x.count(t, "SELECT count(*) FROM comments"); n != 90 {
		t.Fatalf("%d comments after refused statements, want 90", n)
	}
}

// TestPostgresWithoutSuperuser protects as an ordinary database owner: no
// event trigger (DROP is not guarded, and DropGuard says so), everything
// else as usual.
func TestPostgresWithoutSuperuser(t *testing.T) {
	t.Parallel()
	e := engines[1]
	e.NewDB = func(t *testing.T) (string, string, *sql.DB) {
		admin := pgtest.NewDB(t)
		u, err := url.Parse(admin)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 4)
		rand.Read(b)
		role := "owner_" + hex.EncodeToString(b)
		adb, err := sql.Open("pgx", admin)
		if err != nil {
			t.Fatal(err)
		}
		defer adb.Close()
		for _, s := range []string{
			"CREATE ROLE " + role + " LOGIN",
			"ALTER DATABASE " + strings.TrimPrefix(u.Path, "/") + " OWNER TO " + role,
			"ALTER SCHEMA public OWNER TO " + role,
		} {
			if _, err := adb.Exec(s); err != nil {
				t.Fatal(err)
			}
		}
		u.User = url.User(role)
		raw, err := sql.Open("pgx", u.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		return u.String(), "", raw
	}
	x := setup(t, e)
	if on, err := x.db.DropGuard(x.ctx); err != nil || on {
		t.Fatalf("DropGuard = %v, %v for a non-superuser", on, err)
	}
	meta, err := x.db.Meta(x.ctx)
	if err != nil || !strings.HasPrefix(meta["drop_guard"], "off: ") {
		t.Fatalf("meta %v, %v", meta, err)
	}
	t.Logf("drop_guard: %s", meta["drop_guard"])
	_, err = x.raw.Exec("DELETE FROM sites WHERE id = 3")
	refused(t, err, "tenant 3")
	x.remove(t, "3")
	x.step(t, "op_u3", Undelete, "3", "", Deactivated, Deleted)
	x.protect(t, sampleSpec()) // again: idempotent without the event trigger too
}

// TestPostgresUnlockInvisible: an unlock row is only ever seen by the
// transaction that wrote it, and a committed one (written from outside)
// does not unlock anything either.
func TestPostgresUnlockInvisible(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[1])
	a, err := x.raw.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Rollback()
	if _, err := a.Exec("INSERT INTO lifeline_unlock (tenant, op_id, xact) VALUES ('1', 'op_x', txid_current())"); err != nil {
		t.Fatal(err)
	}
	_, err = x.raw.Exec("DELETE FROM sites WHERE id = 1")
	refused(t, err, "tenant 1")
	if _, err := x.raw.Exec("INSERT INTO lifeline_unlock (tenant, op_id, xact) VALUES ('1', 'op_y', 1)"); err != nil {
		t.Fatal(err)
	}
	_, err = x.raw.Exec("DELETE FROM sites WHERE id = 1")
	refused(t, err, "tenant 1")
	x.protect(t, sampleSpec())
	if n := x.count(t, "SELECT count(*) FROM lifeline_unlock"); n != 0 {
		t.Fatalf("protect left %d stale unlock rows", n)
	}
}

// TestPostgresTypeChange: a changed column type with soft-deleted rows in
// the trash is refused by protect; once the trash is purged it is rebuilt.
func TestPostgresTypeChange(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[1])
	x.remove(t, "4")
	x.exec(t, "ALTER TABLE comments ALTER COLUMN body TYPE varchar(200)")
	s, _ := x.db.Inspect(x.ctx)
	l, err := Resolve(sampleSpec(), s)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, x.db.Protect(x.ctx, l), fault.Refused, "comments", "body", "18 soft-deleted rows", "purge")
	x.step(t, "op_p4", Purge, "4", "", Purged, Deleted)
	x.l = x.protect(t, sampleSpec())
	var typ string
	if err := x.raw.QueryRow(`SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'lifeline.trash_comments'::regclass AND attname = 'body'`).Scan(&typ); err != nil || typ != "character varying(200)" {
		t.Fatalf("trash body type %q %v", typ, err)
	}
}
