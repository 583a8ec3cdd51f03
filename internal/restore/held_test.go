package restore

import (
	"sync/atomic"
	"testing"

	"lifeline/internal/change"
	"lifeline/internal/productdb"
)

// The rows held in memory for direct swaps share one budget across the
// restore's rebuilds: a tenant whose rows would overdraw it is staged
// instead (take says no, for good, and leaves the budget as it was), and
// what a tenant held goes back when it is staged or swapped.
func TestHeldRowsShareOneBudget(t *testing.T) {
	rt := &productdb.RestoreTable{Name: "docs", Columns: []string{"id", "body"}}
	rows := func(n int) []productdb.Batch {
		b := productdb.Batch{Table: rt, Tenant: "7", Cols: rt.Columns}
		for i := range n {
			b.Rows = append(b.Rows, []change.Value{{Kind: change.Int, Int: int64(i)}, {Kind: change.Text, Bytes: []byte("a page of text")}})
		}
		return []productdb.Batch{b}
	}
	ten := batchBytes(rows(10)[0])
	var budget atomic.Int64
	budget.Store(ten*3/2 + 1) // one tenant of 10 rows fits, two do not
	tenant := func() *directRows {
		return &directRows{ok: true, budget: &budget, rows: map[string]int{}, limit: func(*productdb.RestoreTable) int { return 1000 }}
	}

	a := tenant()
	if !a.take(nil, rows(6)) || !a.take(nil, rows(4)) {
		t.Fatal("the first tenant's 10 rows are within the budget but were refused")
	}
	if got := budget.Load(); got != ten*3/2+1-ten {
		t.Fatalf("budget left %d after holding %d bytes of %d", got, ten, ten*3/2+1)
	}
	b := tenant()
	if b.take(nil, rows(10)) || b.ok {
		t.Fatal("a second tenant of 10 rows overdraws the budget but was held")
	}
	if b.take(nil, rows(1)) {
		t.Fatal("a tenant refused once was held later: its rows so far would be split between memory and staging")
	}
	if got := budget.Load(); got != ten*3/2+1-ten {
		t.Fatalf("a refused take changed the budget: %d left", got)
	}
	a.release()
	if got := budget.Load(); got != ten*3/2+1 || a.ok || a.batches != nil {
		t.Fatalf("after release: budget %d, ok %v, %d batches held", got, a.ok, len(a.batches))
	}
	if c := tenant(); !c.take(nil, rows(10)) {
		t.Fatal("the budget given back was not available to the next tenant")
	}
}
