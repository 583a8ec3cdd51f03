package restore

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"lifeline/internal/backup"
	"lifeline/internal/backup/format/formattest"
	"lifeline/internal/blob"
	"lifeline/internal/capture"
	"lifeline/internal/change"
	"lifeline/internal/pgtest"
	"lifeline/internal/productdb"
	"lifeline/internal/productdb/productdbtest"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var ctx = context.Background()

// clock is the test's time: the capture stand-in stamps each polled
// transaction with it and advances it, so "the moment" is exact.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) tick() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Second)
	return c.now
}

// dbSource stands in for internal/capture: each Read compares every
// protected table with what it saw last and reports the differences as one
// transaction. It reads values its own way (not through productdb), as
// capture does: SQLite's stored value and class, PostgreSQL's text output.
type dbSource struct {
	mu     sync.Mutex
	raw    *sql.DB
	engine string
	shapes []change.Table
	keyCol map[string]int
	seen   map[string]map[string]change.Change
	log    []change.Change
	clock  *clock
}

func newDBSource(raw *sql.DB, engine string, rts []productdb.RestoreTable, c *clock) *dbSource {
	s := &dbSource{raw: raw, engine: engine, clock: c, keyCol: map[string]int{}}
	s.reshape(rts)
	return s
}

// reshape takes the tables' current shapes, after a schema change.
func (s *dbSource) reshape(rts []productdb.RestoreTable) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shapes = nil
	for _, rt := range rts {
		t := change.Table{Name: rt.Name}
		for i, col := range rt.Columns {
			t.Columns = append(t.Columns, change.Column{Name: col, Type: rt.Types[i]})
			if col == rt.KeyCol {
				t.Tenant = i
			}
		}
		for _, k := range rt.Key {
			t.PrimaryKey = append(t.PrimaryKey, slices.Index(rt.Columns, k))
		}
		s.shapes = append(s.shapes, t)
	}
}

// protectAgain re-runs protect after a schema change, as an operator would,
// and lets the capture stand-in see the new shapes.
func (b *bundle) protectAgain(t *testing.T) {
	t.Helper()
	l, err := tenant.Protect(ctx, b.store, b.db, spec(), "tester")
	if err != nil {
		t.Fatal(err)
	}
	b.layout, b.tenants.Products[0].Layout = l, l
	rts, _, err := b.db.RestoreTables(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	b.src.reshape(rts)
}

func (s *dbSource) scan(ctx context.Context) (map[string]map[string]change.Change, error) {
	out := map[string]map[string]change.Change{}
	for ti := range s.shapes {
		t := &s.shapes[ti]
		sel := make([]string, len(t.Columns))
		for i, c := range t.Columns {
			sel[i] = `+"` + c.Name + `"`
			if s.engine == productdb.Postgres {
				sel[i] = `"` + c.Name + `"`
			}
		}
		m := map[string]change.Change{}
		add := func(row []change.Value) {
			c := change.Change{Table: t.Name, Tenant: tenantText(row[t.Tenant]), Row: row}
			m[keyOf(s.engine, &c, t)] = c
		}
		query := "SELECT " + strings.Join(sel, ", ") + ` FROM "` + t.Name + `"`
		var err error
		if s.engine == productdb.Postgres {
			err = pgTextRows(ctx, s.raw, query, add)
		} else {
			err = sqliteRows(ctx, s.raw, query, add)
		}
		if err != nil {
			return nil, err
		}
		out[t.Name] = m
	}
	return out, nil
}

// pgTextRows reads a query's rows in PostgreSQL's text format, as logical
// decoding sends values: each type's output function, NULL as nil.
func pgTextRows(ctx context.Context, db *sql.DB, query string, fn func([]change.Value)) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		rr := dc.(*stdlib.Conn).Conn().PgConn().ExecParams(ctx, query, nil, nil, nil, nil)
		for rr.NextRow() {
			vals := rr.Values()
			row := make([]change.Value, len(vals))
			for i, v := range vals {
				if v != nil {
					row[i] = change.Value{Kind: change.PG, Bytes: slices.Clone(v)}
				}
			}
			fn(row)
		}
		_, err := rr.Close()
		return err
	})
}

func sqliteRows(ctx context.Context, db *sql.DB, query string, fn func([]change.Value)) error {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	for rows.Next() {
		raw := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range raw {
			ptrs[i] = &raw[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		row := make([]change.Value, len(raw))
		for i, v := range raw {
			row[i] = toValue(productdb.SQLite, v)
		}
		fn(row)
	}
	return rows.Err()
}

func toValue(engine string, v any) change.Value {
	switch x := v.(type) {
	case nil:
		return change.Value{}
	case int64:
		return change.Value{Kind: change.Int, Int: x}
	case float64:
		return change.Value{Kind: change.Float, Float: x}
	case string:
		if engine == productdb.Postgres {
			return change.Value{Kind: change.PG, Bytes: []byte(x)}
		}
		return change.Value{Kind: change.Text, Bytes: []byte(x)}
	case []byte:
		if engine == productdb.Postgres {
			return change.Value{Kind: change.PG, Bytes: slices.Clone(x)}
		}
		return change.Value{Kind: change.Blob, Bytes: append([]byte{}, x...)}
	}
	panic(fmt.Sprintf("unexpected value %T", v))
}

func tenantText(v change.Value) string {
	if v.Kind == change.Int {
		return strconv.FormatInt(v.Int, 10)
	}
	return string(v.Bytes)
}

func keyOf(engine string, c *change.Change, t *change.Table) string {
	var b []byte
	for _, i := range t.PrimaryKey {
		b = productdb.AppendValue(engine, b, c.Row[i])
	}
	return string(b)
}

func sameRow(a, b []change.Value) bool {
	return slices.EqualFunc(a, b, func(x, y change.Value) bool { return x.Equal(y) })
}

// poll records what changed since the last poll as one transaction.
func (s *dbSource) poll(ctx context.Context) error {
	now, err := s.scan(ctx)
	if err != nil {
		return err
	}
	var tx []change.Change
	for _, t := range s.shapes {
		old, cur := s.seen[t.Name], now[t.Name]
		keys := make([]string, 0, len(old)+len(cur))
		for k := range old {
			keys = append(keys, k)
		}
		for k := range cur {
			if _, ok := old[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			o, had := old[k]
			n, has := cur[k]
			switch {
			case has && !had:
				n.Op = change.Insert
				tx = append(tx, n)
			case has && !sameRow(o.Row, n.Row):
				n.Op = change.Update
				tx = append(tx, n)
			case had && !has:
				o.Op = change.Delete
				tx = append(tx, o)
			}
		}
	}
	s.seen = now
	if len(tx) == 0 {
		return nil
	}
	at := s.clock.tick()
	id := uint64(len(s.log) + 1)
	for i := range tx {
		tx[i].Pos, tx[i].Tx, tx[i].Time, tx[i].TxEnd = uint64(len(s.log)+1), id, at, i == len(tx)-1
		s.log = append(s.log, tx[i])
	}
	return nil
}

func (s *dbSource) Read(ctx context.Context, cur capture.Cursor, _ int) (capture.Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.poll(ctx); err != nil {
		return capture.Batch{}, err
	}
	if int(cur.Pos) >= len(s.log) {
		return capture.Batch{}, nil
	}
	out := slices.Clone(s.log[cur.Pos:])
	end := out[len(out)-1].Pos
	return capture.Batch{Changes: out, Tables: s.shapes, End: capture.Cursor{Pos: end, Src: end}}, nil
}

func (s *dbSource) Ack(context.Context, capture.Cursor) error { return nil }

func (s *dbSource) Snapshot(ctx context.Context) (capture.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all, err := s.scan(ctx)
	if err != nil {
		return nil, err
	}
	s.seen = all
	var rows []change.Change
	pos := uint64(len(s.log))
	for _, m := range all {
		for _, c := range m {
			c.Op, c.Pos = change.Snapshot, pos
			rows = append(rows, c)
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Tenant < rows[j].Tenant })
	return &snap{cur: capture.Cursor{Pos: pos, Src: pos}, tables: s.shapes, rows: rows}, nil
}

func (s *dbSource) Backlog(context.Context, capture.Cursor) (int64, time.Time, error) {
	return 0, time.Time{}, nil
}
func (s *dbSource) Close() error { return nil }

type snap struct {
	cur    capture.Cursor
	tables []change.Table
	rows   []change.Change
}

func (s *snap) Cursor() capture.Cursor { return s.cur }
func (s *snap) Tables() []change.Table { return s.tables }
func (s *snap) Rows(_ context.Context, fn func(*change.Change) error) error {
	for i := range s.rows {
		if err := fn(&s.rows[i]); err != nil {
			return err
		}
	}
	return nil
}
func (s *snap) Close() error { return nil }

// engine is one product database engine under test; ddl holds each
// engine's product schema (PostgreSQL's has more column types).
type engine = productdbtest.Engine

const sqliteDDL = `
CREATE TABLE sites (id INTEGER PRIMARY KEY, name TEXT NOT NULL, plan TEXT, created_at DATETIME);
CREATE TABLE folders (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), parent_id INTEGER REFERENCES folders(id), name TEXT NOT NULL);
CREATE TABLE docs (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
	big INTEGER, score REAL, title TEXT, body TEXT, data BLOB, meta TEXT, at DATETIME, amount NUMERIC, anything);
CREATE TABLE comments (site_id INTEGER NOT NULL, doc_id INTEGER NOT NULL REFERENCES docs(id) ON DELETE CASCADE, n INTEGER NOT NULL, reply_to INTEGER, body TEXT,
	PRIMARY KEY (site_id, doc_id, n));
CREATE TABLE insight (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), label TEXT);
CREATE INDEX folders_site ON folders (site_id);
CREATE INDEX docs_site ON docs (site_id);
CREATE INDEX insight_site ON insight (site_id)`

const pgDDL = `
CREATE TABLE sites (id bigint PRIMARY KEY, name text NOT NULL, plan text, created_at timestamptz);
CREATE TABLE folders (id bigint PRIMARY KEY, site_id bigint NOT NULL REFERENCES sites(id), parent_id bigint REFERENCES folders(id), name text NOT NULL);
CREATE TABLE docs (id bigint PRIMARY KEY, site_id bigint NOT NULL REFERENCES sites(id), folder_id bigint NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
	big bigint, score double precision, title text, body text, data bytea, meta jsonb, at timestamptz, amount numeric(30,10),
	tags text[], flag boolean, u uuid, span interval, raw json, small real);
CREATE TABLE comments (site_id bigint NOT NULL, doc_id bigint NOT NULL REFERENCES docs(id) ON DELETE CASCADE, n int NOT NULL, reply_to int, body text,
	PRIMARY KEY (site_id, doc_id, n));
CREATE TABLE insight (id bigint PRIMARY KEY, site_id bigint NOT NULL REFERENCES sites(id), label text);
CREATE INDEX folders_site ON folders (site_id);
CREATE INDEX docs_site ON docs (site_id);
CREATE INDEX insight_site ON insight (site_id)`

var ddl = map[string]string{"sqlite": sqliteDDL, "postgres": pgDDL}

// each runs fn against every engine in parallel subtests.
func each(t *testing.T, fn func(t *testing.T, e engine)) { productdbtest.Each(t, fn) }

// bundle is a protected product with a backup repository fed by dbSource,
// and a restore service.
type bundle struct {
	e        engine
	dsn      string
	base     string
	raw      *sql.DB
	db       *productdb.DB
	layout   *productdb.Layout
	store    *state.Store
	tenants  *tenant.Service
	repo     *backup.Repo
	counting *blob.Counting
	blobDir  string
	src      *dbSource
	ship     *backup.Shipper
	clock    *clock
	svc      *Service
	real     bool // internal/capture, the real clock
}

func spec() productdb.Spec {
	return productdb.Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "sites",
		Apps: map[string][]string{"insight": {"insight"}}}
}

// setup builds the product with tenants 1..n, protects it, takes the first
// snapshot and returns everything a test needs. Changes are captured by
// dbSource, on the test's clock.
func setup(t *testing.T, e engine, n int) *bundle { return setupWith(t, e, n, false) }

// setupCapture is setup with internal/capture's real source, on the real
// clock.
func setupCapture(t *testing.T, e engine, n int) *bundle { return setupWith(t, e, n, true) }

func setupWith(t *testing.T, e engine, n int, real bool) *bundle {
	t.Helper()
	dsn, base, raw := e.NewDB(t)
	b := &bundle{e: e, dsn: dsn, base: base, raw: raw, real: real, clock: &clock{now: time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)}}
	now := b.clock.Now
	if real {
		now = time.Now
	}
	for _, stmt := range strings.Split(ddl[e.Name], ";\n") {
		if _, err := b.raw.Exec(stmt); err != nil {
			t.Fatalf("%v\n%s", err, stmt)
		}
	}
	b.seed(t, 1, n)
	dir := t.TempDir()
	store, err := state.Open(ctx, "sqlite:state.db", dir, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	b.store = store
	db, err := productdb.Open(ctx, dsn, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b.db = db
	if b.layout, err = tenant.Protect(ctx, store, db, spec(), "tester"); err != nil {
		t.Fatal(err)
	}
	b.blobDir = filepath.Join(dir, "backups")
	files, err := blob.OpenFile(b.blobDir)
	if err != nil {
		t.Fatal(err)
	}
	b.counting = blob.Count(files)
	if b.repo, err = backup.OpenRepo(ctx, &backup.Repo{Blobs: b.counting, State: store, Now: now}); err != nil {
		t.Fatal(err)
	}
	rts, _, err := db.RestoreTables(ctx, b.layout)
	if err != nil {
		t.Fatal(err)
	}
	b.src = newDBSource(b.raw, db.Engine(), rts, b.clock)
	var src capture.Source = b.src
	if real {
		if src, err = capture.Open(ctx, db, b.layout, capture.Options{Idle: 50 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
	}
	b.ship = &backup.Shipper{Repo: b.repo, Product: "tracker", Source: src}
	b.tenants = &tenant.Service{Store: store, Products: []*tenant.Product{{Name: "tracker", DB: db, Layout: b.layout}},
		Owner: tenant.DefaultOwner(), Retention: time.Hour, Now: now}
	if b.svc, err = OpenService(ctx, &Service{Tenants: b.tenants, Repo: b.repo, Workers: 3, ChunkRows: 7}); err != nil {
		t.Fatal(err)
	}
	b.shipNow(t)
	return b
}

// open is a plain connection to the product, as an application has.
func (b *bundle) open(t *testing.T) *sql.DB {
	t.Helper()
	var raw *sql.DB
	var err error
	if b.e.Name == "postgres" {
		raw, err = sql.Open("pgx", b.dsn)
	} else {
		raw, err = sql.Open("sqlite", "file:"+filepath.Join(b.base, "product.db")+"?_pragma=foreign_keys(1)&_pragma=busy_timeout(20000)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

// shipNow ships everything the product changed, as of the next tick, and
// returns that moment.
func (b *bundle) shipNow(t *testing.T) time.Time {
	t.Helper()
	if _, err := b.ship.Ship(ctx); err != nil {
		t.Fatal(err)
	}
	if b.real {
		// A moment strictly between what was shipped and what comes next;
		// shipping again (nothing is waiting) records that the repository
		// is complete past it.
		time.Sleep(10 * time.Millisecond)
		m := time.Now()
		time.Sleep(10 * time.Millisecond)
		if _, err := b.ship.Ship(ctx); err != nil {
			t.Fatal(err)
		}
		return m
	}
	return b.clock.Now()
}

func (b *bundle) exec(t *testing.T, script string) {
	t.Helper()
	for _, stmt := range strings.Split(script, ";\n") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := b.raw.Exec(stmt); err != nil {
			t.Fatalf("%v\n%s", err, stmt)
		}
	}
}

// seed writes tenants from..to: a site, a chain of three folders (each
// the parent of the next), four docs with every column type's edge
// values, two comments each, and an insight row.
func (b *bundle) seed(t *testing.T, from, to int) {
	t.Helper()
	tx, err := b.raw.Begin()
	if err != nil {
		t.Fatal(err)
	}
	ex := func(q string, args ...any) {
		if _, err := tx.Exec(q, args...); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	pg := b.e.Name == "postgres"
	for s := from; s <= to; s++ {
		ex(`INSERT INTO sites (id, name, plan, created_at) VALUES ($1, $2, $3, $4)`, s, fmt.Sprintf("Site %d ✓ 漢字", s), nullIf(s%3 == 0, "pro"), "2026-03-01 10:00:00+00")
		for f := 1; f <= 3; f++ {
			var parent any
			if f > 1 {
				parent = s*10 + f - 1
			}
			ex(`INSERT INTO folders (id, site_id, parent_id, name) VALUES ($1, $2, $3, $4)`, s*10+f, s, parent, fmt.Sprintf("folder %d", f))
		}
		for d := 1; d <= 4; d++ {
			id := s*100 + d
			args := []any{id, s, s*10 + 1 + d%3, bigOf(d), scoreOf(pg, d), titleOf(d), bodyOf(d), dataOf(d), `{"k": [1, 2.5, "x"], "n": null}`,
				"2026-03-0" + strconv.Itoa(d) + " 12:34:56.789+00", "12345678901234.123456"}
			if pg {
				args = append(args, `{a,"b c",NULL}`, d%2 == 0, fmt.Sprintf("00000000-0000-0000-0000-%012d", id), "1 day 02:03:04.5", `{"b": 1,  "a": 2}`, float32(0.1))
				ex(`INSERT INTO docs VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`, args...)
			} else {
				args = append(args, anythingOf(d))
				ex(`INSERT INTO docs VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`, args...)
			}
			for n := 1; n <= 2; n++ {
				var reply any
				if n == 2 {
					reply = 1
				}
				ex(`INSERT INTO comments (site_id, doc_id, n, reply_to, body) VALUES ($1, $2, $3, $4, $5)`, s, id, n, reply, fmt.Sprintf("comment %d on %d", n, id))
			}
		}
		ex(`INSERT INTO insight (id, site_id, label) VALUES ($1, $2, $3)`, s, s, "insight of "+strconv.Itoa(s))
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func nullIf(null bool, v any) any {
	if null {
		return nil
	}
	return v
}

func bigOf(d int) any {
	return []any{int64(math.MaxInt64), int64(math.MinInt64), int64(0), nil}[d-1]
}

func scoreOf(pg bool, d int) any {
	if pg {
		return []any{"0.1", "1e308", "5e-324", "-Infinity"}[d-1]
	}
	return []any{0.1, 1e308, 5e-324, -1.5}[d-1]
}

func titleOf(d int) any {
	return []any{"", nil, "ünïcödé ✓ 🚀", "it's \"quoted\"\ttab\nnewline\\"}[d-1]
}
func bodyOf(d int) any { return strings.Repeat("body ", d*7) }
func dataOf(d int) any {
	return []any{[]byte{}, nil, []byte{0, 1, 2, 255}, []byte("\\x00 not hex")}[d-1]
}
func anythingOf(d int) any { return []any{int64(42), "42", []byte("42"), 4.2}[d-1] }

// dump renders every row of tenants' rows (every tenant's, without any)
// in every table exactly: the reference the restore is compared with.
func (b *bundle) dump(t *testing.T, tenants ...int) map[string][]string {
	t.Helper()
	return dumpDB(t, b.raw, b.e.Name, tenants...)
}

func dumpDB(t *testing.T, raw *sql.DB, engine string, tenants ...int) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, table := range []string{"sites", "folders", "docs", "comments", "insight"} {
		col := "site_id"
		if table == "sites" {
			col = "id"
		}
		where := ""
		if len(tenants) > 0 {
			where = col + " IN (" + strings.Join(keys(tenants...), ",") + ")"
		}
		out[table] = productdbtest.Dump(t, raw, engine, table, where)
	}
	return out
}

func sameDump(t *testing.T, what string, want, got map[string][]string) {
	t.Helper()
	productdbtest.SameDump(t, what, want, got)
}

// others lists the tenants 1..n not in skip.
func others(n int, skip ...[]int) []int {
	var out []int
	for i := 1; i <= n; i++ {
		in := false
		for _, s := range skip {
			in = in || slices.Contains(s, i)
		}
		if !in {
			out = append(out, i)
		}
	}
	return out
}

func keys(ids ...int) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = strconv.Itoa(id)
	}
	return out
}

// softDelete deactivates then deletes target, as an operator would.
func (b *bundle) softDelete(t *testing.T, target string) {
	t.Helper()
	for _, a := range []productdb.Action{productdb.Deactivate, productdb.Delete} {
		if _, err := b.tenants.Run(ctx, tenantReq(a, target)); err != nil {
			t.Fatal(err)
		}
	}
}

func tenantReq(a productdb.Action, target string) tenant.Request {
	return tenant.Request{Action: a, Target: target, Actor: "tester", Reason: "test"}
}

// corruptTenant flips a byte in the middle of tenant's first block in the
// newest object that holds it: the object still opens, its tenant does not.
func (b *bundle) corruptTenant(t *testing.T, objs []backup.Object, tenant string) {
	t.Helper()
	for i := len(objs) - 1; i >= 0; i-- {
		if formattest.CorruptTenant(t, filepath.Join(b.blobDir, objs[i].Key), tenant) {
			return
		}
	}
	t.Fatalf("no object holds tenant %s", tenant)
}

func removeFile(dir, key string) error { return os.Remove(filepath.Join(dir, key)) }

// staged counts the rows left in the staging tables.
func (b *bundle) staged(t *testing.T) int {
	t.Helper()
	total := 0
	for _, table := range []string{"sites", "folders", "docs", "comments", "insight"} {
		name := `"lifeline_stage_` + table + `"`
		if b.e.Name == "postgres" {
			name = `lifeline."stage_` + table + `"`
		}
		var n int
		if err := b.raw.QueryRow("SELECT count(*) FROM " + name).Scan(&n); err == nil {
			total += n
		}
	}
	return total
}

// openTarget is a plain connection to an --into database.
func openTarget(t *testing.T, engine, dsn, base string) *sql.DB {
	t.Helper()
	driver := "pgx"
	if engine == "sqlite" {
		driver, dsn = "sqlite", "file:"+filepath.Join(base, strings.TrimPrefix(dsn, "sqlite:"))
	}
	raw, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}
