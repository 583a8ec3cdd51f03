package format

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"lifeline/internal/change"
)

// Realistic rows: an issue tracker's issues table, with text that repeats
// the way real text does (a vocabulary, not random bytes), JSON and arrays.

var benchTable = change.Table{
	Name: "issues",
	Columns: []change.Column{
		{Name: "site_id", Type: "text"}, {Name: "id", Type: "bigint"}, {Name: "title", Type: "text"},
		{Name: "body", Type: "text"}, {Name: "status", Type: "text"}, {Name: "created_at", Type: "timestamptz"},
		{Name: "score", Type: "double precision"}, {Name: "labels", Type: "text[]"}, {Name: "fields", Type: "jsonb"},
		{Name: "assignee", Type: "bigint"},
	},
	PrimaryKey: []int{0, 1},
	Tenant:     0,
}

var words = strings.Fields(`the a issue page login fails when user clicks save button after editing
profile settings error timeout server returns 500 expected behaviour actual steps to reproduce open
dashboard select project filter by status sort by date export csv attachment upload image broken
link mobile layout overlaps header footer slow query database index missing customer reports`)

func benchRow(rng *rand.Rand, tenant string, id int64) []change.Value {
	sentence := func(n int) []byte {
		var b []byte
		for i := range n {
			if i > 0 {
				b = append(b, ' ')
			}
			b = append(b, words[rng.IntN(len(words))]...)
		}
		return b
	}
	statuses := []string{"open", "in progress", "closed", "wontfix"}
	return []change.Value{
		{Kind: change.Text, Bytes: []byte(tenant)},
		{Kind: change.Int, Int: id},
		{Kind: change.Text, Bytes: sentence(4 + rng.IntN(8))},
		{Kind: change.Text, Bytes: sentence(20 + rng.IntN(80))},
		{Kind: change.Text, Bytes: []byte(statuses[rng.IntN(len(statuses))])},
		{Kind: change.PG, Bytes: []byte(baseTime.Add(-time.Duration(rng.IntN(1e8)) * time.Second).Format("2006-01-02 15:04:05.999999-07"))},
		{Kind: change.Float, Float: rng.Float64() * 100},
		{Kind: change.PG, Bytes: fmt.Appendf(nil, "{%s,%s}", words[rng.IntN(len(words))], words[rng.IntN(len(words))])},
		{Kind: change.PG, Bytes: fmt.Appendf(nil, `{"priority": %d, "estimate": %d, "component": %q}`, rng.IntN(5), rng.IntN(40), words[rng.IntN(len(words))])},
		{Kind: change.Int, Int: rng.Int64N(1000)},
	}
}

func benchChanges(n, tenants int) []change.Change {
	rng := rand.New(rand.NewPCG(1, 2))
	cs := make([]change.Change, n)
	for i := range cs {
		tenant := fmt.Sprintf("site-%05d", rng.IntN(tenants))
		ops := []change.Op{change.Insert, change.Update, change.Update, change.Delete}
		cs[i] = change.Change{
			Pos: uint64(i + 1), Tx: uint64(i + 1), TxEnd: true, Time: baseTime.Add(time.Duration(i) * time.Millisecond),
			Tenant: tenant, Table: "issues", Op: ops[rng.IntN(len(ops))], Row: benchRow(rng, tenant, rng.Int64N(1e6)),
		}
	}
	return cs
}

func benchHeader(n int) Header {
	return Header{Product: "tracker", First: 1, Last: uint64(n), Tables: []change.Table{benchTable}, Created: baseTime}
}

// rawSize is the size of the values themselves, a neutral baseline for the
// compression ratio (a CSV dump would be about this size).
func rawSize(cs []change.Change) int64 {
	var n int64
	for _, c := range cs {
		for _, v := range c.Row {
			switch v.Kind {
			case change.Int, change.Float:
				n += 8
			default:
				n += int64(len(v.Bytes))
			}
		}
	}
	return n
}

func BenchmarkWriteSegment(b *testing.B) {
	for _, enc := range []bool{false, true} {
		b.Run(fmt.Sprintf("encrypted=%v", enc), func(b *testing.B) {
			const n = 20000
			cs := benchChanges(n, 200)
			var opt Options
			if enc {
				opt = Options{Key: testKey, KeyID: "k"}
			}
			raw := rawSize(cs)
			b.SetBytes(raw)
			var sum Summary
			for b.Loop() {
				var err error
				if sum, err = WriteSegment(io.Discard, benchHeader(n), cs, opt); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(raw)/float64(sum.Size), "raw/stored")
			b.ReportMetric(float64(sum.PlainBytes)/float64(sum.StoredBytes), "plain/stored")
		})
	}
}

func BenchmarkReadSegment(b *testing.B) {
	for _, enc := range []bool{false, true} {
		b.Run(fmt.Sprintf("encrypted=%v", enc), func(b *testing.B) {
			const n = 20000
			cs := benchChanges(n, 200)
			var opt Options
			var key []byte
			if enc {
				opt, key = Options{Key: testKey, KeyID: "k"}, testKey
			}
			var buf bytes.Buffer
			if _, err := WriteSegment(&buf, benchHeader(n), cs, opt); err != nil {
				b.Fatal(err)
			}
			obj := buf.Bytes()
			b.SetBytes(rawSize(cs))
			ctx := context.Background()
			for b.Loop() {
				rd, err := Open(ctx, memReader(obj), int64(len(obj)), key)
				if err != nil {
					b.Fatal(err)
				}
				k := 0
				for _, err := range rd.All(ctx) {
					if err != nil {
						b.Fatal(err)
					}
					k++
				}
				if k != n {
					b.Fatal(k)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

func BenchmarkWriteSnapshot(b *testing.B) {
	const n = 50000
	rng := rand.New(rand.NewPCG(3, 4))
	rows := make([]change.Change, n)
	for i := range rows {
		tenant := fmt.Sprintf("site-%05d", i/500)
		rows[i] = change.Change{Pos: uint64(i), Time: baseTime, Tenant: tenant, Table: "issues", Op: change.Snapshot,
			Row: benchRow(rng, tenant, int64(i))}
	}
	h := Header{Product: "tracker", First: n, Last: n, Tables: []change.Table{benchTable}}
	raw := rawSize(rows)
	b.SetBytes(raw)
	var sum Summary
	for b.Loop() {
		w, err := NewSnapshotWriter(io.Discard, h, Options{})
		if err != nil {
			b.Fatal(err)
		}
		for i := range rows {
			if err := w.Add(&rows[i]); err != nil {
				b.Fatal(err)
			}
		}
		if sum, err = w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(raw)/float64(sum.Size), "raw/stored")
}

// BenchmarkOpen is the fixed cost of reading any part of an object.
func BenchmarkOpen(b *testing.B) {
	cs := benchChanges(2000, 100)
	var buf bytes.Buffer
	if _, err := WriteSegment(&buf, benchHeader(len(cs)), cs, Options{}); err != nil {
		b.Fatal(err)
	}
	obj := buf.Bytes()
	for b.Loop() {
		if _, err := Open(context.Background(), memReader(obj), int64(len(obj)), nil); err != nil {
			b.Fatal(err)
		}
	}
}
