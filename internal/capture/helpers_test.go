package capture

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lifeline/internal/change"
	"lifeline/internal/pgtest"
	"lifeline/internal/productdb"
	"lifeline/internal/productdb/productdbtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// engine and engines are the two real engines of every suite here.
type engine = productdbtest.Engine

var engines = productdbtest.Engines

// each runs fn against every engine, in parallel subtests.
func each(t *testing.T, fn func(t *testing.T, e engine)) { productdbtest.Each(t, fn) }

// env is a protected product with a Source.
type env struct {
	e       engine
	ctx     context.Context
	db      *productdb.DB
	raw     *sql.DB
	l       *productdb.Layout
	dsn     string
	base    string
	product string
	src     Source
}

// The sample product: text tenant keys, a composite key, a blob column.
const sampleDDL = `
CREATE TABLE sites (id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE items (site_id TEXT NOT NULL REFERENCES sites(id), id {int} NOT NULL, title TEXT, n {int}, tag TEXT, PRIMARY KEY (site_id, id));
CREATE TABLE notes (id {int} PRIMARY KEY, site_id TEXT NOT NULL, body TEXT, data {blob}, tag TEXT);
CREATE INDEX items_site ON items (site_id);
CREATE INDEX notes_site ON notes (site_id)
`

var productSeq atomic.Int64

// setup creates the sample product with nSites tenants, protects it and
// opens its Source. Product names are unique: PostgreSQL slots are
// cluster-wide.
func setup(t *testing.T, e engine, nSites int) *env {
	t.Helper()
	dsn, base, raw := e.NewDB(t)
	x := &env{e: e, ctx: context.Background(), raw: raw, dsn: dsn, base: base,
		product: fmt.Sprintf("p%d_%s", productSeq.Add(1), e.Name)}
	x.exec(t, sampleDDL)
	for i := range nSites {
		x.exec(t, "INSERT INTO sites (id, name) VALUES ($1, $2)", siteKey(i), fmt.Sprintf("Site %d ✓", i))
	}
	db, err := productdb.Open(x.ctx, dsn, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	x.db = db
	x.protect(t)
	x.src = x.open(t)
	return x
}

func siteKey(i int) string { return fmt.Sprintf("s%03d", i) }

func (x *env) spec() productdb.Spec {
	return productdb.Spec{Product: x.product, TenantColumn: "site_id", TenantsTable: "sites",
		Limits: productdb.Limits{RowsPerStatement: 100000, RowsPerTransaction: 1000000, TenantsPerStatement: 1000}}
}

func (x *env) protect(t *testing.T) {
	t.Helper()
	s, err := x.db.Inspect(x.ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, err := productdb.Resolve(x.spec(), s)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.db.Protect(x.ctx, l); err != nil {
		t.Fatal(err)
	}
	x.l = l
}

func (x *env) open(t *testing.T) Source {
	t.Helper()
	src, err := Open(x.ctx, x.db, x.l, Options{Idle: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// exec runs ;-separated statements (type placeholders filled).
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

// model is the protected tables rebuilt from a snapshot and changes, by
// primary key.
type model struct {
	tables map[string]*change.Table
	rows   map[string]map[string][]change.Value
}

func newModel() *model {
	return &model{tables: map[string]*change.Table{}, rows: map[string]map[string][]change.Value{}}
}

func keyOf(t *change.Table, row []change.Value) string {
	var b strings.Builder
	for _, i := range t.PrimaryKey {
		fmt.Fprintf(&b, "%d|%q|%d|%x;", row[i].Kind, row[i].Bytes, row[i].Int, math.Float64bits(row[i].Float))
	}
	return b.String()
}

func (m *model) shapes(ts []change.Table) {
	for i := range ts {
		t := ts[i]
		m.tables[t.Name] = &t
	}
}

// batch applies a batch's changes under its shapes.
func (m *model) batch(t *testing.T, b Batch) {
	t.Helper()
	m.shapes(b.Tables)
	for i := range b.Changes {
		m.apply(t, &b.Changes[i])
	}
}

func (m *model) apply(t *testing.T, c *change.Change) {
	t.Helper()
	tab := m.tables[c.Table]
	if tab == nil {
		t.Fatalf("change at %d names table %q without a shape", c.Pos, c.Table)
	}
	if len(c.Row) != len(tab.Columns) {
		t.Fatalf("change at %d: %d values for %d columns of %s", c.Pos, len(c.Row), len(tab.Columns), c.Table)
	}
	if got := string(c.Row[tab.Tenant].Bytes); c.Tenant != got && c.Row[tab.Tenant].Kind != change.Int {
		t.Fatalf("change at %d: tenant %q but the row says %q", c.Pos, c.Tenant, got)
	}
	rows := m.rows[c.Table]
	if rows == nil {
		rows = map[string][]change.Value{}
		m.rows[c.Table] = rows
	}
	k := keyOf(tab, c.Row)
	switch c.Op {
	case change.Insert, change.Update, change.Snapshot:
		rows[k] = slices.Clone(c.Row)
	case change.Delete:
		if _, ok := rows[k]; !ok {
			t.Fatalf("change at %d deletes %s %s, which the replay does not have", c.Pos, c.Table, k)
		}
		delete(rows, k)
	default:
		t.Fatalf("change at %d: op %v", c.Pos, c.Op)
	}
}

// rowsText renders a table's rows (a row missing a column of the shape, as
// under an older shape, is padded with NULL) sorted, for comparison.
func rowsText(tab *change.Table, rows map[string][]change.Value) []string {
	var out []string
	for _, r := range rows {
		var b strings.Builder
		for i := range tab.Columns {
			v := change.Value{}
			if i < len(r) {
				v = r[i]
			}
			fmt.Fprintf(&b, "%d:%q:%d:%x|", v.Kind, v.Bytes, v.Int, math.Float64bits(v.Float))
		}
		out = append(out, b.String())
	}
	sort.Strings(out)
	return out
}

// live reads table t as it is now, with the snapshot's own query and value
// conversion, but outside any slot.
func (x *env) live(t *testing.T, tab *change.Table) map[string][]change.Value {
	t.Helper()
	conn, err := x.raw.Conn(x.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(x.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	st := &stream{t: tab, conv: sqliteValue}
	if x.e.Name == "postgres" {
		st.conv = pgValue
		for k, v := range pgTextSettings {
			if _, err := tx.Exec("SET LOCAL " + k + " = '" + v + "'"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Exec("DECLARE live NO SCROLL CURSOR FOR " + pgSnapshotQuery(tab)); err != nil {
			t.Fatal(err)
		}
		st.src = &cursorChunker{conn: conn, name: "live", w: len(tab.Columns) + 1}
	} else {
		rows, err := tx.Query(sqliteSnapshotQuery(tab))
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		st.src = &rowsChunker{rows: rows, w: len(tab.Columns) + 1}
	}
	out := map[string][]change.Value{}
	for {
		ok, err := st.next(x.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out[keyOf(tab, st.row)] = slices.Clone(st.row)
	}
}

// same fails the test unless the model equals the live database.
func (x *env) same(t *testing.T, m *model) {
	t.Helper()
	for _, name := range x.l.Tables {
		tab := m.tables[name]
		if tab == nil {
			t.Fatalf("no shape for %s", name)
		}
		want := rowsText(tab, x.live(t, tab))
		got := rowsText(tab, m.rows[name])
		if !slices.Equal(want, got) {
			var missing, extra []string
			for _, w := range want {
				if !slices.Contains(got, w) {
					missing = append(missing, w)
				}
			}
			for _, g := range got {
				if !slices.Contains(want, g) {
					extra = append(extra, g)
				}
			}
			t.Fatalf("table %s: replay has %d rows, database %d\nmissing from replay: %q\nnot in database: %q", name, len(got), len(want), missing, extra)
		}
	}
}

// snapshot reads a full snapshot into a new model, checking its order.
func (x *env) snapshot(t *testing.T, src Source) (*model, Cursor) {
	t.Helper()
	snap, err := src.Snapshot(x.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	m := newModel()
	m.shapes(snap.Tables())
	var prevTenant, prevTable string
	err = snap.Rows(x.ctx, func(c *change.Change) error {
		if c.Op != change.Snapshot || c.Pos != snap.Cursor().Pos {
			return fmt.Errorf("snapshot row op %v pos %d", c.Op, c.Pos)
		}
		if c.Tenant < prevTenant || c.Tenant == prevTenant && c.Table < prevTable {
			return fmt.Errorf("snapshot order: (%q, %s) after (%q, %s)", c.Tenant, c.Table, prevTenant, prevTable)
		}
		prevTenant, prevTable = c.Tenant, c.Table
		m.apply(t, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, snap.Cursor()
}

// drain reads until a Read comes back empty, applying everything and
// checking that each change carries its row's tenant key (when that is
// text, as in the sample product).
func (x *env) drain(t *testing.T, src Source, m *model, cur Cursor) Cursor {
	t.Helper()
	for {
		b, err := src.Read(x.ctx, cur, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Changes) == 0 {
			return cur
		}
		checkBatch(t, cur, b)
		m.shapes(b.Tables)
		for i := range b.Changes {
			c := &b.Changes[i]
			if v := c.Row[m.tables[c.Table].Tenant]; v.Kind == change.Text && c.Tenant != string(v.Bytes) {
				t.Fatalf("change %d of %s carries tenant %q, its row %q", c.Pos, c.Table, c.Tenant, v.Bytes)
			}
			m.apply(t, c)
		}
		cur = b.End
	}
}

// checkBatch checks positions and the end cursor.
func checkBatch(t *testing.T, cur Cursor, b Batch) {
	t.Helper()
	for i, c := range b.Changes {
		if c.Pos != cur.Pos+uint64(i)+1 {
			t.Fatalf("change %d of a batch after %d has position %d", i, cur.Pos, c.Pos)
		}
		if c.Tenant == "" {
			t.Fatalf("change at %d has no tenant", c.Pos)
		}
	}
	if last := b.Changes[len(b.Changes)-1]; b.End.Pos != last.Pos || b.End.Src <= cur.Src {
		t.Fatalf("batch end %+v after %+v, last position %d", b.End, cur, last.Pos)
	}
	names := map[string]bool{}
	for _, tab := range b.Tables {
		if names[tab.Name] {
			t.Fatalf("batch has two shapes of %s", tab.Name)
		}
		names[tab.Name] = true
	}
}

func isDrift(err error) bool { return errors.Is(err, ErrDrift) }

func openRaw(driver, dsn string) (*sql.DB, error) { return sql.Open(driver, dsn) }

func lsnText(lsn uint64) string { return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn)) }
