package main

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lifeline/internal/pgtest"
)

const pgProduct = `
CREATE TABLE sites (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE projects (id bigint PRIMARY KEY, site_id bigint NOT NULL REFERENCES sites(id), name text NOT NULL);
CREATE TABLE issues (id bigint PRIMARY KEY, site_id bigint NOT NULL REFERENCES sites(id), project_id bigint NOT NULL REFERENCES projects(id),
  title text, estimate double precision, tags text[], meta jsonb, created timestamptz, cost numeric(20,6), attachment bytea);
CREATE TABLE insight_objects (id bigint PRIMARY KEY, site_id bigint NOT NULL REFERENCES sites(id), data jsonb);
`

// The whole CLI on PostgreSQL: product database and state store both.
func TestLifecycleOnPostgres(t *testing.T) {
	t.Parallel()
	productURL, stateURL := pgtest.NewDB(t), pgtest.NewDB(t)
	db, err := sql.Open("pgx", productURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(pgProduct); err != nil {
		t.Fatal(err)
	}
	for s := 1; s <= 20; s++ {
		if _, err := db.Exec(`INSERT INTO sites VALUES ($1, $2)`, s, fmt.Sprintf("Site %d", s)); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`INSERT INTO projects VALUES ($1, $1, 'p')`, s); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			if _, err := db.Exec(`INSERT INTO issues VALUES ($1, $2, $2, 'bug ✓', 0.1, '{a,b}', '{"k": [1, 2.5]}', now(), 12345678901234.123456, '\x00ff00')`, s*100+i, s); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.Exec(`INSERT INTO insight_objects VALUES ($1, $1, '{"serial": "x"}')`, s); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`state: %s
guard: {max_rows_per_statement: 50, max_tenants_per_statement: 3}
products:
  - name: tracker
    database: %s
    tenant_column: site_id
    tenants_table: sites
    apps: {insight: [insight_objects]}
`, stateURL, productURL)
	if err := os.WriteFile(filepath.Join(dir, "lifeline.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, config: filepath.Join(dir, "lifeline.yaml")}
	c.must("protect")
	c.must("protect") // idempotent

	// Raw SQL with full credentials is refused by the database itself.
	for _, stmt := range []string{
		"DELETE FROM sites WHERE id = 7",
		"DELETE FROM issues WHERE site_id IN (1,2,3,4,5)",
		"TRUNCATE issues",
	} {
		_, err := db.Exec(stmt)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "lifeline") {
			t.Errorf("%s: got %v; want a refusal naming Lifeline", stmt, err)
		}
	}
	if _, err := db.Exec("DELETE FROM issues WHERE id = 101"); err != nil {
		t.Errorf("an ordinary application delete was refused: %v", err)
	}

	c.refused([]string{"tenants", "delete", "site:7", "--reason", "x"}, "deactivate it first")
	dump := func() string {
		var s string
		if err := db.QueryRow("SELECT string_agg(i::text, '|' ORDER BY id) FROM issues i WHERE site_id = 7").Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := dump()
	c.must("tenants", "deactivate", "site:7")
	c.must("tenants", "delete", "site:7", "--reason", "closed")
	var live int
	if err := db.QueryRow("SELECT count(*) FROM issues WHERE site_id = 7").Scan(&live); err != nil || live != 0 {
		t.Fatalf("after delete, %d live issues (%v)", live, err)
	}
	c.must("tenants", "undelete", "site:7")
	if got := dump(); got != before {
		t.Errorf("undeleted rows differ:\n got %s\nwant %s", got, before)
	}
	c.must("tenants", "deactivate", "app:8/tracker/insight")
	c.must("tenants", "delete", "app:8/tracker/insight", "--reason", "retire insight")
	if err := db.QueryRow("SELECT count(*) FROM issues WHERE site_id = 8").Scan(&live); err != nil || live != 5 {
		t.Errorf("an app delete touched the site's issues: %d left (%v)", live, err)
	}
	c.must("audit", "verify")
}
