package format

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lifeline/internal/change"
)

var testKey = bytes.Repeat([]byte{0x42}, 32)

func testTables() []change.Table {
	return []change.Table{
		{
			Name: "issues",
			Columns: []change.Column{
				{Name: "site_id", Type: "TEXT"}, {Name: "id", Type: "INTEGER"}, {Name: "title", Type: "TEXT"},
				{Name: "score", Type: "REAL"}, {Name: "data", Type: "BLOB"}, {Name: "meta", Type: "jsonb"},
			},
			PrimaryKey: []int{0, 1},
			Tenant:     0,
		},
		{
			Name:       "comments",
			Columns:    []change.Column{{Name: "id", Type: "bigint"}, {Name: "site_id", Type: "text"}, {Name: "body", Type: "text"}},
			PrimaryKey: []int{0},
			Tenant:     1,
		},
		{
			Name:    "links", // no primary key
			Columns: []change.Column{{Name: "site_id", Type: "TEXT"}, {Name: "a", Type: "INTEGER"}, {Name: "b", Type: "ANY"}},
			Tenant:  0,
		},
	}
}

// valueZoo holds every value kind at its edges.
func valueZoo() []change.Value {
	f := func(bits uint64) change.Value {
		return change.Value{Kind: change.Float, Float: math.Float64frombits(bits)}
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	return []change.Value{
		{Kind: change.Null},
		{Kind: change.Int, Int: math.MinInt64}, {Kind: change.Int, Int: math.MaxInt64},
		{Kind: change.Int, Int: 0}, {Kind: change.Int, Int: -1},
		f(0), f(1 << 63), // +0, -0
		f(0x7ff8000000000000), f(0x7ff4000000000001), f(0xfff8000000000123), // NaNs with payloads
		f(0x7ff0000000000000), f(0xfff0000000000000), // ±Inf
		f(1), f(0x000fffffffffffff), f(0x8000000000000001), // denormals
		{Kind: change.Float, Float: math.MaxFloat64}, {Kind: change.Float, Float: math.Pi},
		{Kind: change.Text, Bytes: []byte{}}, {Kind: change.Text, Bytes: []byte("héllo ✓ 日本")},
		{Kind: change.Text, Bytes: []byte("\xff\xfe invalid utf-8 \xc3")}, {Kind: change.Text, Bytes: []byte("a\x00b")},
		{Kind: change.Blob, Bytes: []byte{}}, {Kind: change.Blob, Bytes: []byte{0, 0, 0}}, {Kind: change.Blob, Bytes: all},
		{Kind: change.PG, Bytes: []byte("2024-02-29 23:59:59.999999+05:30")}, {Kind: change.PG, Bytes: []byte("{1,NULL,3}")},
		{Kind: change.PG, Bytes: []byte(`{"a": [1, 2.50, null]}`)}, {Kind: change.PG, Bytes: []byte("-123456789012345678901234567890.000000000000001")},
		{Kind: change.PG, Bytes: []byte{}},
	}
}

var baseTime = time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)

// genRow builds a row of table t for tenant with the given id, drawing the
// other values from the zoo and from rng.
func genRow(rng *rand.Rand, t *change.Table, tenant string, id int64) []change.Value {
	zoo := valueZoo()
	row := make([]change.Value, len(t.Columns))
	for i := range row {
		switch {
		case i == t.Tenant:
			row[i] = change.Value{Kind: change.Text, Bytes: []byte(tenant)}
		case len(t.PrimaryKey) > 0 && i == t.PrimaryKey[len(t.PrimaryKey)-1]:
			row[i] = change.Value{Kind: change.Int, Int: id}
		case rng.IntN(3) == 0:
			row[i] = zoo[rng.IntN(len(zoo))]
		case rng.IntN(2) == 0:
			row[i] = change.Value{Kind: change.Text, Bytes: fmt.Appendf(nil, "row %d of %s: %s", id, tenant, strings.Repeat("lorem ipsum ", rng.IntN(8)))}
		default:
			row[i] = change.Value{Kind: change.Int, Int: rng.Int64N(1 << 40)}
		}
	}
	return row
}

// genChanges returns n changes at positions first.. in commit order, in
// transactions of 1-4 changes, over the given number of tenants.
func genChanges(seed uint64, first uint64, n, tenants int) []change.Change {
	rng := rand.New(rand.NewPCG(seed, 1))
	tables := testTables()
	out := make([]change.Change, 0, n)
	tx := uint64(1000)
	left := 0
	for i := range n {
		if left == 0 {
			tx++
			left = 1 + rng.IntN(4)
		}
		left--
		t := &tables[rng.IntN(len(tables))]
		tenant := fmt.Sprintf("site-%03d", rng.IntN(tenants))
		ops := []change.Op{change.Insert, change.Update, change.Delete}
		c := change.Change{
			Pos: first + uint64(i), Tx: tx, TxEnd: left == 0 || i == n-1,
			Time:   baseTime.Add(time.Duration(i) * time.Millisecond).Add(time.Duration(rng.IntN(1000))),
			Tenant: tenant, Table: t.Name, Op: ops[rng.IntN(3)],
			Row: genRow(rng, t, tenant, rng.Int64N(50)),
		}
		out = append(out, c)
	}
	return out
}

// genSnapshot returns sorted snapshot rows at position p.
func genSnapshot(seed uint64, p uint64, n, tenants int) []change.Change {
	rng := rand.New(rand.NewPCG(seed, 2))
	tables := testTables()
	out := make([]change.Change, 0, n)
	for range n {
		t := &tables[rng.IntN(len(tables))]
		tenant := fmt.Sprintf("site-%03d", rng.IntN(tenants))
		out = append(out, change.Change{
			Pos: rng.Uint64N(p + 1), Tx: rng.Uint64N(1 << 30), TxEnd: rng.IntN(2) == 0,
			Time:   baseTime.Add(-time.Duration(rng.IntN(1e6)) * time.Second),
			Tenant: tenant, Table: t.Name, Op: change.Snapshot,
			Row: genRow(rng, t, tenant, rng.Int64N(1<<20)),
		})
	}
	sortObject(Snapshot, out)
	// One image per primary key.
	return slices.CompactFunc(out, func(a, b change.Change) bool {
		t := tableOf(a.Table)
		if a.Tenant != b.Tenant || len(t.PrimaryKey) == 0 {
			return false
		}
		_, same := compareRows(&a, t, &b, tableOf(b.Table))
		return same
	})
}

func tableOf(name string) *change.Table {
	for _, t := range testTables() {
		if t.Name == name {
			return &t
		}
	}
	panic(name)
}

func sortObject(_ Kind, cs []change.Change) {
	slices.SortStableFunc(cs, func(a, b change.Change) int {
		if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
			return c
		}
		c, _ := compareRows(&a, tableOf(a.Table), &b, tableOf(b.Table))
		return c
	})
}

func segHeader(first, last uint64) Header {
	return Header{Product: "tracker", First: first, Last: last, Source: 1<<40 + last, Tables: testTables(), Created: baseTime.Add(time.Hour)}
}

func writeSegment(t testing.TB, cs []change.Change, opt Options) ([]byte, Summary) {
	t.Helper()
	var buf bytes.Buffer
	first, last := cs[0].Pos, cs[0].Pos
	for _, c := range cs {
		first, last = min(first, c.Pos), max(last, c.Pos)
	}
	sum, err := WriteSegment(&buf, segHeader(first, last), cs, opt)
	if err != nil {
		t.Fatalf("WriteSegment: %v", err)
	}
	if sum.Size != int64(buf.Len()) {
		t.Fatalf("summary size %d, wrote %d", sum.Size, buf.Len())
	}
	return buf.Bytes(), sum
}

func writeSnapshot(t testing.TB, p uint64, rows []change.Change, opt Options) ([]byte, Summary) {
	t.Helper()
	var buf bytes.Buffer
	h := Header{Product: "tracker", First: p, Last: p, FirstTime: baseTime, LastTime: baseTime, Tables: testTables(), Created: baseTime}
	w, err := NewSnapshotWriter(&buf, h, opt)
	if err != nil {
		t.Fatalf("NewSnapshotWriter: %v", err)
	}
	for i := range rows {
		if err := w.Add(&rows[i]); err != nil {
			t.Fatalf("Add row %d: %v", i, err)
		}
	}
	sum, err := w.Close()
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	if sum.Size != int64(buf.Len()) {
		t.Fatalf("summary size %d, wrote %d", sum.Size, buf.Len())
	}
	return buf.Bytes(), sum
}

// countingReader counts the bytes and calls of ranged reads.
type countingReader struct {
	r            RangeReader
	bytes, calls atomic.Int64
}

func (c *countingReader) ReadRange(ctx context.Context, off, n int64) ([]byte, error) {
	c.bytes.Add(n)
	c.calls.Add(1)
	return c.r.ReadRange(ctx, off, n)
}

func memReader(b []byte) RangeReader { return ReaderAt(bytes.NewReader(b)) }

func readAll(t testing.TB, obj []byte, key []byte) (Header, []change.Change) {
	t.Helper()
	rd, err := Open(context.Background(), memReader(obj), int64(len(obj)), key)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var out []change.Change
	for c, err := range rd.All(context.Background()) {
		if err != nil {
			t.Fatalf("All: %v", err)
		}
		out = append(out, c)
	}
	return rd.Header(), out
}

func sameChange(a, b *change.Change) string {
	switch {
	case a.Pos != b.Pos, a.Tx != b.Tx, a.TxEnd != b.TxEnd, a.Op != b.Op:
		return fmt.Sprintf("pos/tx/op: %d %d %v %v vs %d %d %v %v", a.Pos, a.Tx, a.TxEnd, a.Op, b.Pos, b.Tx, b.TxEnd, b.Op)
	case !a.Time.Equal(b.Time):
		return fmt.Sprintf("time %v vs %v", a.Time, b.Time)
	case a.Tenant != b.Tenant, a.Table != b.Table:
		return fmt.Sprintf("tenant/table %q/%q vs %q/%q", a.Tenant, a.Table, b.Tenant, b.Table)
	case len(a.Row) != len(b.Row):
		return fmt.Sprintf("row length %d vs %d", len(a.Row), len(b.Row))
	}
	for i := range a.Row {
		if !a.Row[i].Equal(b.Row[i]) {
			return fmt.Sprintf("value %d: %#v vs %#v", i, a.Row[i], b.Row[i])
		}
	}
	return ""
}
