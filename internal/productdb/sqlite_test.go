package productdb

import (
	"context"
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

// sqliteVia runs one statement on the SQLite product of x the way an
// application would: through the embedded driver, or through the system
// sqlite3 shell (a C library Lifeline did not compile).
func sqliteVia(t *testing.T, x *env, shell bool) func(stmt string) error {
	if !shell {
		return func(stmt string) error { _, err := x.raw.Exec(stmt); return err }
	}
	cli, path := sqliteCLI(t), filepath.Join(x.base, "product.db")
	return func(stmt string) error {
		out, err := exec.Command(cli, "-bail", path, stmt).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
}

// TestSQLiteGuardTenantKeys: the SQLite guard keeps the statement's tenants
// as a list in one text value, so keys that contain the list's separator,
// contain each other, or are empty must still count as distinct tenants.
// Rows are deleted in id order, so "a,b" comes before "a" and "b".
func TestSQLiteGuardTenantKeys(t *testing.T) {
	t.Parallel()
	for _, shell := range []bool{false, true} {
		t.Run(map[bool]string{false: "embedded", true: "shell"}[shell], func(t *testing.T) {
			t.Parallel()
			dsn, base, raw := engines[0].NewDB(t)
			x := &env{e: engines[0], ctx: context.Background(), raw: raw, dsn: dsn, base: base}
			x.exec(t, `CREATE TABLE sites (id TEXT PRIMARY KEY);
CREATE TABLE items (id INTEGER PRIMARY KEY, site_id TEXT NOT NULL REFERENCES sites(id))`)
			keys := []string{"a,b", "a", "b", "11", "1", "", "x y"}
			for i, k := range keys {
				x.exec(t, "INSERT INTO sites (id) VALUES ($1)", k)
				for j := range 2 {
					x.exec(t, "INSERT INTO items (id, site_id) VALUES ($1, $2)", 10*i+j, k)
				}
			}
			db, err := Open(x.ctx, dsn, base)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			x.db = db
			x.l = x.protect(t, Spec{Product: "keys", TenantColumn: "site_id", TenantsTable: "sites", Limits: Limits{RowsPerStatement: 4, TenantsPerStatement: 2}})
			run := sqliteVia(t, x, shell)

			for _, in := range []string{`'a,b', 'a', 'b'`, `'11', '1', ''`, `'a', '', 'x y'`} {
				err := run("DELETE FROM items WHERE site_id IN (" + in + ") AND id % 10 = 0")
				refused(t, err, "more than 2 tenants")
			}
			// The fifth row is past both limits (the third tenant): the rows limit
			// is named, as it always was.
			refused(t, run("DELETE FROM items WHERE site_id IN ('a,b', 'a', 'b')"), "more than 4 rows")
			if n := x.count(t, "SELECT count(*) FROM items"); n != int64(2*len(keys)) {
				t.Fatalf("refused statements left %d items, want %d", n, 2*len(keys))
			}
			for _, in := range []string{`'a,b', 'a'`, `'11', '1'`, `'', 'x y'`} {
				if err := run("DELETE FROM items WHERE site_id IN (" + in + ")"); err != nil {
					t.Fatalf("4 rows of the 2 tenants %s: %v", in, err)
				}
			}
			if n := x.count(t, "SELECT count(*) FROM items"); n != 2 {
				t.Fatalf("%d items left, want the 2 of tenant b", n)
			}
		})
	}
}

// makeLegacyGuards turns the mass-delete guards of x into what versions
// before the tenant list installed: the counter row with mark and pending,
// the statement's tenants in a table of their own, a six-statement trigger
// per table, and capture delete triggers that move only mark.
func (x *env) makeLegacyGuards(t *testing.T) {
	t.Helper()
	rows, err := x.raw.Query(`SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'lifeline\_cap\_d\_%' ESCAPE '\'`)
	if err != nil {
		t.Fatal(err)
	}
	capture := map[string]string{}
	for rows.Next() {
		var name, sql string
		if err := rows.Scan(&name, &sql); err != nil {
			t.Fatal(err)
		}
		capture[name] = sql
	}
	rows.Close()
	for name, sql := range capture {
		legacy := strings.Replace(sql, sqliteGuardNeutral, "UPDATE lifeline_guard SET mark = mark + 2 WHERE id = 1;", 1)
		if legacy == sql {
			t.Fatalf("capture trigger %s does not look as expected:\n%s", name, sql)
		}
		x.exec(t, "DROP TRIGGER "+qi(name))
		if _, err := x.raw.Exec(legacy); err != nil {
			t.Fatal(err)
		}
	}
	fresh := "(stamp IS NOT julianday('now') OR total_changes() - mark < 0 OR total_changes() - mark >= pending)"
	x.exec(t, `DROP TABLE lifeline_guard;
CREATE TABLE lifeline_guard (id INTEGER PRIMARY KEY CHECK (id = 1), stamp REAL, mark INTEGER NOT NULL DEFAULT 0,
	pending INTEGER NOT NULL DEFAULT 0, nrows INTEGER NOT NULL DEFAULT 0, fresh INTEGER NOT NULL DEFAULT 0);
INSERT INTO lifeline_guard (id) VALUES (1);
CREATE TABLE lifeline_guard_tenants (tenant TEXT NOT NULL PRIMARY KEY)`)
	for _, table := range x.l.Tables {
		if table == x.l.TenantsTable {
			continue
		}
		x.exec(t, `DROP TRIGGER "lifeline_guard_`+table+`"`)
		legacy := `CREATE TRIGGER "lifeline_guard_` + table + `" BEFORE DELETE ON "` + table + `" FOR EACH ROW WHEN ` + sqliteNotUnlocked(x.l.TenantColumn) + `
BEGIN
  UPDATE lifeline_guard SET fresh = ` + fresh + `, nrows = CASE WHEN ` + fresh + ` THEN 1 ELSE nrows + 1 END,
    pending = CASE WHEN ` + fresh + ` THEN 1 ELSE pending - (total_changes() - mark) + 1 END, stamp = julianday('now') WHERE id = 1;
  DELETE FROM lifeline_guard_tenants WHERE (SELECT fresh FROM lifeline_guard WHERE id = 1);
  INSERT OR IGNORE INTO lifeline_guard_tenants (tenant) VALUES (coalesce(CAST(OLD.site_id AS TEXT), ''));
  SELECT RAISE(ABORT, 'lifeline: refusing to delete more than ` + fmt.Sprint(x.l.Limits.RowsPerStatement) + ` rows (legacy)')
    WHERE (SELECT nrows FROM lifeline_guard WHERE id = 1) > ` + fmt.Sprint(x.l.Limits.RowsPerStatement) + `;
  SELECT RAISE(ABORT, 'lifeline: refusing to delete rows of more than ` + fmt.Sprint(x.l.Limits.TenantsPerStatement) + ` tenants (legacy)')
    WHERE (SELECT count(*) FROM lifeline_guard_tenants) > ` + fmt.Sprint(x.l.Limits.TenantsPerStatement) + `;
  UPDATE lifeline_guard SET mark = total_changes() + 1 WHERE id = 1;
END`
		if _, err := x.raw.Exec(legacy); err != nil {
			t.Fatalf("%v\n%s", err, legacy)
		}
	}
}

// TestSQLiteLegacyGuards: a product protected by an earlier version keeps
// its guards (and Lifeline's steps get past them) until protect runs again,
// which replaces them and their tables; after that, the guards hold through
// the embedded SQLite and the shell.
func TestSQLiteLegacyGuards(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0])
	spec := sampleSpec()
	spec.Limits = Limits{RowsPerStatement: 5, TenantsPerStatement: 2}
	x.l = x.protect(t, spec)
	x.makeLegacyGuards(t)
	refused(t, sqliteVia(t, x, false)("DELETE FROM comments WHERE site_id = 2"), "more than 5 rows (legacy)")
	if err := sqliteVia(t, x, false)("DELETE FROM comments WHERE id IN (10013, 20013)"); err != nil {
		t.Fatalf("the legacy guard refused 2 rows of 2 tenants: %v", err)
	}
	if n := x.count(t, "SELECT count(*) FROM lifeline_guard_tenants"); n != 2 {
		t.Fatalf("the legacy guard's tenant table has %d rows, want 2 (is the fixture what earlier versions installed?)", n)
	}
	x.remove(t, "5") // Lifeline's own steps get past the legacy guards

	x.l = x.protect(t, spec)
	if n := x.count(t, `SELECT count(*) FROM sqlite_master WHERE name = 'lifeline_guard_tenants' OR sql LIKE '%lifeline_guard_tenants%' OR sql LIKE '%(legacy)%'`); n != 0 {
		t.Fatalf("%d objects of the legacy guards are left after protect", n)
	}
	var cols string
	if err := x.raw.QueryRow("SELECT group_concat(name, ' ') FROM pragma_table_info('lifeline_guard')").Scan(&cols); err != nil || cols != "id stamp mark upto fresh k nrows ntenants tenants" {
		t.Fatalf("lifeline_guard columns %q, %v", cols, err)
	}
	for _, shell := range []bool{false, true} {
		run := sqliteVia(t, x, shell)
		refused(t, run("DELETE FROM comments WHERE site_id = 2"), "more than 5 rows", "max_rows_per_statement")
		refused(t, run("DELETE FROM comments WHERE id IN (20023, 30023, 40023)"), "more than 2 tenants", "max_tenants_per_statement")
	}
	before := x.count(t, "SELECT count(*) FROM comments")
	for _, shell := range []bool{false, true} {
		run := sqliteVia(t, x, shell)
		s := map[bool]int{false: 1, true: 3}[shell]
		for _, stmt := range []string{
			fmt.Sprintf("DELETE FROM comments WHERE issue_id = %d", s*1000+5),
			fmt.Sprintf("DELETE FROM comments WHERE id IN (%d, %d)", s*10000+43, (s+1)*10000+43),
		} {
			if err := run(stmt); err != nil {
				t.Fatalf("%s after protect: %v", stmt, err)
			}
		}
	}
	if n := x.count(t, "SELECT count(*) FROM comments"); n != before-10 {
		t.Fatalf("%d comments left, want %d", n, before-10)
	}
}
