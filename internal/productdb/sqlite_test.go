package productdb

import (
	"database/sql"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sqliteCLI is the system sqlite3: a SQLite the application might link,
// other than the one Lifeline embeds.
func sqliteCLI(t *testing.T) string {
	for _, p := range []string{"/usr/bin/sqlite3"} {
		if fileExists(p) {
			return p
		}
	}
	p, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Skip("no sqlite3 command-line shell installed")
	}
	return p
}

// TestSQLiteStatementStamp checks the assumptions the SQLite mass-delete
// guard rests on, with the embedded SQLite and with the system one:
// julianday('now') is one value for a whole statement (even one that runs
// for many milliseconds), and total_changes() grows inside a statement only
// by the trigger's own writes and by finished cascade steps.
func TestSQLiteStatementStamp(t *testing.T) {
	t.Parallel()
	script := `
CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT);
CREATE TABLE stamps (id INTEGER, at REAL);
CREATE TRIGGER big_stamp BEFORE DELETE ON big BEGIN INSERT INTO stamps VALUES (OLD.id, julianday('now')); END;
WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 30000) INSERT INTO big SELECT n, hex(randomblob(64)) FROM s;
DELETE FROM big WHERE id <= 20000;
SELECT count(DISTINCT at) FROM stamps WHERE id <= 20000;
`
	check := func(t *testing.T, out string) {
		if strings.TrimSpace(out) != "1" {
			t.Fatalf("julianday('now') took %s values within one 20000-row DELETE, want 1", strings.TrimSpace(out))
		}
	}
	t.Run("embedded", func(t *testing.T) {
		db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "s.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		db.SetMaxOpenConns(1)
		stmts := strings.Split(strings.TrimSpace(script), ";\n")
		for _, s := range stmts[:len(stmts)-1] {
			if _, err := db.Exec(s); err != nil {
				t.Fatal(err)
			}
		}
		var n string
		if err := db.QueryRow(stmts[len(stmts)-1]).Scan(&n); err != nil {
			t.Fatal(err)
		}
		check(t, n)
		// Why the stamp alone is not enough: one-row statements in a tight
		// loop (inside a transaction, so no fsync between them) share a
		// millisecond, hence a stamp.
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for id := 20001; id <= 20200; id++ {
			if _, err := tx.Exec("DELETE FROM big WHERE id = $1", id); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow("SELECT count(DISTINCT at) FROM stamps WHERE id > 20000").Scan(&n); err != nil {
			t.Fatal(err)
		}
		t.Logf("200 one-row DELETE statements in a loop produced %s distinct julianday('now') stamps", n)
	})
	t.Run("system", func(t *testing.T) {
		out, err := exec.Command(sqliteCLI(t), filepath.Join(t.TempDir(), "s.db"), script).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		check(t, string(out))
	})
}

// TestSQLiteCLIGuards runs raw statements through the system sqlite3 shell
// (3.40 here): the installed triggers must work on a SQLite Lifeline did not
// compile, with foreign keys off as the shell starts.
func TestSQLiteCLIGuards(t *testing.T) {
	t.Parallel()
	cli := sqliteCLI(t)
	x := setup(t, engines[0])
	x.l = x.protect(t, Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "sites",
		Apps: map[string][]string{"insight": {"insight_objects", "insight_links"}}, Limits: Limits{RowsPerStatement: 5, TenantsPerStatement: 2}})
	path := filepath.Join(x.base, "product.db")
	run := func(script string) (string, error) {
		out, err := exec.Command(cli, "-bail", path, script).CombinedOutput()
		return string(out), err
	}
	if out, err := run("SELECT sqlite_version();"); err != nil {
		t.Fatal(out)
	} else {
		t.Logf("system sqlite3 %s", strings.TrimSpace(out))
	}
	count := func(q string) int64 { return x.count(t, q) }
	before := count("SELECT count(*) FROM comments")

	out, err := run("DELETE FROM sites WHERE id = 1;")
	if err == nil || !strings.Contains(out, "lifeline: refusing to delete the root row") || !strings.Contains(out, "lifeline tenants delete site:") {
		t.Fatalf("root delete through the shell: err %v, output %q", err, out)
	}
	out, err = run("DELETE FROM sites;")
	if err == nil || !strings.Contains(out, "lifeline") {
		t.Fatalf("delete all sites through the shell: err %v, output %q", err, out)
	}
	out, err = run("UPDATE sites SET id = 99 WHERE id = 2;")
	if err == nil || !strings.Contains(out, "lifeline") {
		t.Fatalf("key update through the shell: err %v, output %q", err, out)
	}
	out, err = run("DELETE FROM comments WHERE site_id = 2;")
	if err == nil || !strings.Contains(out, "more than 5 rows") {
		t.Fatalf("mass delete through the shell: err %v, output %q", err, out)
	}
	out, err = run("DELETE FROM comments WHERE id IN (10013, 20013, 30013);")
	if err == nil || !strings.Contains(out, "more than 2 tenants") {
		t.Fatalf("3-tenant delete through the shell: err %v, output %q", err, out)
	}
	// A cascade counts: 2 issues and their 6 comments is 8 rows.
	out, err = run("PRAGMA foreign_keys = ON; DELETE FROM issues WHERE id IN (1002, 1003);")
	if err == nil || !strings.Contains(out, "more than 5 rows") {
		t.Fatalf("cascading delete through the shell: err %v, output %q", err, out)
	}
	if got := count("SELECT count(*) FROM comments"); got != before {
		t.Fatalf("refused statements changed comments: %d -> %d", before, got)
	}

	// Many small statements in one session, in a tight loop, are allowed:
	// 3 statements of 3 rows, then 20 single-row deletes over 5 tenants.
	// Inside one transaction they run within a few milliseconds, so many
	// share a julianday('now') stamp: the guard must still tell them apart.
	var script strings.Builder
	script.WriteString("PRAGMA foreign_keys = ON;\nBEGIN;\n")
	for _, issue := range []int{1004, 2004, 3004} {
		fmt.Fprintf(&script, "DELETE FROM comments WHERE issue_id = %d;\n", issue)
	}
	for s := 1; s <= 5; s++ {
		for _, i := range []int{1, 2, 3, 5} {
			fmt.Fprintf(&script, "DELETE FROM comments WHERE id = %d;\n", s*10000+i*10+3)
		}
	}
	script.WriteString("COMMIT;\n")
	if out, err := run(script.String()); err != nil {
		t.Fatalf("small statements through the shell: %v %s", err, out)
	}
	if got := count("SELECT count(*) FROM comments"); got != before-9-20 {
		t.Fatalf("comments %d, want %d", got, before-29)
	}

	// Lifeline's own steps still work, and the shell sees the result.
	x.remove(t, "5")
	if out, err := run("SELECT state FROM lifeline_tenant_state WHERE tenant = '5';"); err != nil || strings.TrimSpace(out) != "deleted" {
		t.Fatalf("state through the shell: %v %q", err, out)
	}
}

// TestSQLiteEmbeddedCascadeCount is the cascade case through the embedded
// SQLite, with foreign keys on as Lifeline opens it.
func TestSQLiteEmbeddedCascadeCount(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0])
	x.l = x.protect(t, Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "sites",
		Apps: map[string][]string{"insight": {"insight_objects", "insight_links"}}, Limits: Limits{RowsPerStatement: 5, TenantsPerStatement: 2}})
	_, err := x.db.SQL().Exec("DELETE FROM issues WHERE id IN (1002, 1003)")
	refused(t, err, "more than 5 rows")
	if _, err := x.db.SQL().Exec("DELETE FROM issues WHERE id = 1002"); err != nil {
		t.Fatalf("1 issue and 3 comments: %v", err)
	}
	if _, err := x.db.SQL().Exec("DELETE FROM issues WHERE id = 1003"); err != nil {
		t.Fatalf("the next 1 issue and 3 comments: %v", err)
	}
}

// TestSQLiteTightLoop: one-row deletes in a transaction, back to back (so
// they share julianday('now') stamps), with limits of 2 rows and 1 tenant
// per statement, through the embedded SQLite; then one statement over.
func TestSQLiteTightLoop(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0])
	x.l = x.protect(t, Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "sites",
		Apps: map[string][]string{"insight": {"insight_objects", "insight_links"}}, Limits: Limits{RowsPerStatement: 2, TenantsPerStatement: 1}})
	tx, err := x.raw.Begin()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for s := 1; s <= 5; s++ {
		for i := 1; i <= 6; i++ {
			for _, c := range []int{3, 2} {
				if _, err := tx.Exec("DELETE FROM comments WHERE id = $1", s*10000+i*10+c); err != nil {
					t.Fatalf("one-row delete number %d: %v", n+1, err)
				}
				n++
			}
		}
		// Two-row statements too, alternating tenants.
		if _, err := tx.Exec("DELETE FROM attachments WHERE site_id = $1 AND id <> $2", s, s*1000+1); err != nil {
			t.Fatalf("two-row delete of tenant %d: %v", s, err)
		}
	}
	_, err = tx.Exec("DELETE FROM comments WHERE site_id = 1")
	refused(t, err, "more than 2 rows")
	_, err = tx.Exec("DELETE FROM comments WHERE id IN (20011, 30011)")
	refused(t, err, "more than 1 tenants")
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := x.count(t, "SELECT count(*) FROM comments"); got != 90-int64(n) {
		t.Fatalf("%d comments left, want %d", got, 90-n)
	}
}
