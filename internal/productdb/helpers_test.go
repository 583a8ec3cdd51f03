package productdb

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lifeline/internal/fault/faulttest"
	"lifeline/internal/pgtest"
	"lifeline/internal/productdb/productdbtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// engine and engines are the two real engines of every suite here.
type engine = productdbtest.Engine

var engines = productdbtest.Engines

// each runs fn against every engine, in parallel subtests.
func each(t *testing.T, fn func(t *testing.T, e engine)) { productdbtest.Each(t, fn) }

// env is a protected sample product.
type env struct {
	e    engine
	ctx  context.Context
	db   *DB
	raw  *sql.DB
	l    *Layout
	dsn  string
	base string
	ops  int
}

const sampleDDL = `
CREATE TABLE sites (id {id}, name TEXT NOT NULL, plan TEXT);
CREATE TABLE projects (id {id}, site_id {int} NOT NULL REFERENCES sites(id), name TEXT NOT NULL);
CREATE TABLE issues (id {id}, site_id {int} NOT NULL REFERENCES sites(id), project_id {int} NOT NULL REFERENCES projects(id), title TEXT NOT NULL);
CREATE TABLE comments (id {id}, site_id {int} NOT NULL, issue_id {int} NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
	parent_id {int} REFERENCES comments(id), body TEXT);
CREATE TABLE attachments (id {id}, site_id {int} NOT NULL, issue_id {int} REFERENCES issues(id), data {blob});
CREATE TABLE insight_objects (id {id}, site_id {int} NOT NULL, label TEXT);
CREATE TABLE insight_links (id {id}, site_id {int} NOT NULL, object_id {int} NOT NULL REFERENCES insight_objects(id),
	issue_id {int} REFERENCES issues(id));
CREATE TABLE plans (code TEXT PRIMARY KEY, price {int});
CREATE INDEX projects_site ON projects (site_id);
CREATE INDEX issues_site ON issues (site_id);
CREATE INDEX issues_project ON issues (project_id);
CREATE INDEX comments_site ON comments (site_id);
CREATE INDEX comments_issue ON comments (issue_id);
CREATE INDEX comments_parent ON comments (parent_id);
CREATE INDEX attachments_site ON attachments (site_id);
CREATE INDEX attachments_issue ON attachments (issue_id);
CREATE INDEX insight_objects_site ON insight_objects (site_id);
CREATE INDEX insight_links_site ON insight_links (site_id);
CREATE INDEX insight_links_object ON insight_links (object_id);
CREATE INDEX insight_links_issue ON insight_links (issue_id);
`

func sampleSpec() Spec {
	return Spec{
		Product:      "tracker",
		TenantColumn: "site_id",
		TenantsTable: "sites",
		Apps:         map[string][]string{"insight": {"insight_objects", "insight_links"}},
		Limits:       Limits{RowsPerStatement: 50, RowsPerTransaction: 200, TenantsPerStatement: 3},
	}
}

// setup builds the sample product with tenants 1..5, opens and protects it.
func setup(t *testing.T, e engine) *env {
	t.Helper()
	dsn, base, raw := e.NewDB(t)
	x := &env{e: e, ctx: context.Background(), raw: raw, dsn: dsn, base: base}
	x.exec(t, sampleDDL)
	x.seed(t, 1, 2, 3, 4, 5)
	db, err := Open(x.ctx, dsn, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	x.db = db
	x.l = x.protect(t, sampleSpec())
	return x
}

// exec runs ;-separated DDL/DML (with the type placeholders filled).
func (x *env) exec(t *testing.T, script string, args ...any) {
	t.Helper()
	for _, stmt := range strings.Split(x.e.Types.Replace(script), ";\n") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := x.raw.ExecContext(x.ctx, stmt, args...); err != nil {
			t.Fatalf("%v\n%s", err, stmt)
		}
	}
}

func (x *env) seed(t *testing.T, sites ...int) {
	t.Helper()
	tx, err := x.raw.Begin()
	if err != nil {
		t.Fatal(err)
	}
	ex := func(q string, args ...any) {
		if _, err := tx.Exec(q, args...); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	for _, s := range sites {
		ex(`INSERT INTO sites (id, name, plan) VALUES ($1, $2, $3)`, s, fmt.Sprintf("Site %d ✓", s), "free")
		for p := 1; p <= 2; p++ {
			ex(`INSERT INTO projects (id, site_id, name) VALUES ($1, $2, $3)`, s*1000+p, s, fmt.Sprintf("P%d", p))
		}
		for i := 1; i <= 6; i++ {
			ex(`INSERT INTO issues (id, site_id, project_id, title) VALUES ($1, $2, $3, $4)`, s*1000+i, s, s*1000+1+i%2, fmt.Sprintf("Issue %d of %d", i, s))
			for c := 1; c <= 3; c++ {
				var parent any
				if c > 1 {
					parent = s*10000 + i*10 + 1
				}
				ex(`INSERT INTO comments (id, site_id, issue_id, parent_id, body) VALUES ($1, $2, $3, $4, $5)`,
					s*10000+i*10+c, s, s*1000+i, parent, fmt.Sprintf("comment %d", c))
			}
		}
		ex(`INSERT INTO attachments (id, site_id, issue_id, data) VALUES ($1, $2, $3, $4)`, s*1000+1, s, s*1000+1, []byte{0, byte(s), 0, 255})
		ex(`INSERT INTO attachments (id, site_id, issue_id, data) VALUES ($1, $2, $3, $4)`, s*1000+2, s, s*1000+1, []byte{})
		ex(`INSERT INTO attachments (id, site_id, issue_id, data) VALUES ($1, $2, $3, NULL)`, s*1000+3, s, s*1000+1)
		for o := 1; o <= 2; o++ {
			ex(`INSERT INTO insight_objects (id, site_id, label) VALUES ($1, $2, $3)`, s*1000+o, s, fmt.Sprintf("obj %d", o))
			ex(`INSERT INTO insight_links (id, site_id, object_id, issue_id) VALUES ($1, $2, $3, $4)`, s*1000+o, s, s*1000+o, s*1000+1)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func (x *env) protect(t *testing.T, spec Spec) *Layout {
	t.Helper()
	s, err := x.db.Inspect(x.ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Resolve(spec, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.db.Protect(x.ctx, l); err != nil {
		t.Fatal(err)
	}
	return l
}

// step applies a lifecycle step and fails the test on error.
func (x *env) step(t *testing.T, op string, a Action, tenant, app string, to State, from ...State) Result {
	t.Helper()
	r, err := x.db.Apply(x.ctx, x.l, Step{OpID: op, Action: a, Tenant: tenant, App: app, From: from, To: to})
	if err != nil {
		t.Fatalf("%s %s%s: %v", a, tenant, app, err)
	}
	return r
}

// remove runs deactivate then delete of a whole tenant, with new op IDs.
func (x *env) remove(t *testing.T, tenant string) Result {
	t.Helper()
	x.ops++
	x.step(t, fmt.Sprintf("op_deact_%s_%d", tenant, x.ops), Deactivate, tenant, "", Deactivated, Active)
	return x.step(t, fmt.Sprintf("op_del_%s_%d", tenant, x.ops), Delete, tenant, "", Deleted, Deactivated)
}

func (x *env) count(t *testing.T, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := x.raw.QueryRowContext(x.ctx, q, args...).Scan(&n); err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	return n
}

// dump renders every row of table matching where exactly (see
// productdbtest.Dump).
func (x *env) dump(t *testing.T, table, where string) []string {
	t.Helper()
	return productdbtest.Dump(t, x.raw, x.e.Name, table, where)
}

// dumpAll dumps every sample table for rows matching where.
func (x *env) dumpAll(t *testing.T, where string) map[string][]string {
	out := map[string][]string{}
	for _, table := range x.l.Tables {
		w := where
		if table == "sites" {
			w = strings.ReplaceAll(where, "site_id", "id")
		}
		out[table] = x.dump(t, table, w)
	}
	return out
}

func sameDump(t *testing.T, what string, want, got map[string][]string) {
	t.Helper()
	productdbtest.SameDump(t, what, want, got)
}

// wantCode fails unless err has code and mentions every word.
var wantCode = faulttest.WantCode

// refused checks that a raw statement failed with Lifeline's guard.
func refused(t *testing.T, err error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("raw statement was not refused")
	}
	if !strings.Contains(err.Error(), "lifeline") {
		t.Fatalf("refused, but not by Lifeline: %v", err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("guard error %q does not mention %q", err, w)
		}
	}
}

// freshConn is a new plain connection with the driver's defaults (on SQLite
// that means foreign keys off), as a script would open it.
func (x *env) freshConn(t *testing.T) *sql.DB {
	t.Helper()
	dsn := x.dsn
	driver := "pgx"
	if x.e.Name == "sqlite" {
		driver, dsn = "sqlite", filepath.Join(x.base, strings.TrimPrefix(x.dsn, "sqlite:"))
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
