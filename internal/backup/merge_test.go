package backup

import (
	"context"
	"fmt"
	"testing"
	"time"

	"lifeline/internal/blob"
	"lifeline/internal/change"
)

// Maintenance merges runs of small segments into one each; a rebuild at
// any position reads the merged segment instead of the small ones and gets
// the same rows; the small ones are pruned; verify accepts the result; a
// merge never spans a schema change.
func TestMergeSmallSegments(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.write("acme", 3)
	b.src.write("zed", 3)
	b.mustShip(t)
	want := map[uint64]map[string]map[int64]string{}
	step := func(i int) {
		switch i % 3 {
		case 0:
			b.src.mutate("acme", change.Update, 1+int64(i%2))
		case 1:
			b.src.write(fmt.Sprint("t", i%5), 2)
		default:
			b.src.mutate("zed", change.Update, 4)
		}
		res := b.mustShip(t)
		want[res.Cursor.Pos] = map[string]map[int64]string{"acme": b.src.stateOf("acme"), "zed": b.src.stateOf("zed"), "t1": b.src.stateOf("t1")}
	}
	for i := 0; i < MergeRun*2+5; i++ {
		step(i)
	}
	before, _ := b.repo.Objects(ctx, "tracker")
	merged, err := b.ship.Merge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(merged) != 2 {
		t.Fatalf("merged into %d segments, want 2 runs of %d", len(merged), MergeRun)
	}
	cur, _, _ := b.repo.Cursor(ctx, "tracker")
	rd, err := b.repo.OpenAt(ctx, "tracker", Upto{Pos: cur.Pos})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(rd.Objects()); n != 1+2+5 {
		t.Fatalf("a rebuild reads %d objects, want the snapshot, 2 merged and 5 small segments", n)
	}
	pruned, err := b.ship.Prune(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pruned) != 2*MergeRun {
		t.Fatalf("pruned %d objects, want the %d the merges hold (of %d)", len(pruned), 2*MergeRun, len(before))
	}
	for pos, tenants := range want {
		for tenant, w := range tenants {
			if got := rebuilt(t, b, tenant, Upto{Pos: pos}); !sameState(got, w) {
				t.Fatalf("%s at position %d after merging = %v, want %v", tenant, pos, got, w)
			}
		}
	}
	if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
		t.Fatalf("verify after merging: %v %v", problems, err)
	}

	// A run is cut where the shape changes.
	for i := 0; i < MergeRun-2; i++ {
		step(i)
	}
	b.src.addColumn()
	changed, _, _ := b.repo.Cursor(ctx, "tracker")
	for i := 0; i < MergeRun; i++ {
		step(i)
	}
	merged, err = b.ship.Merge(ctx)
	if err != nil {
		t.Fatal(err)
	}
	starts := false
	for _, m := range merged {
		if m.First <= changed.Pos && changed.Pos < m.Last {
			t.Fatalf("merged %d..%d across the schema change after %d", m.First, m.Last, changed.Pos)
		}
		starts = starts || m.First == changed.Pos+1
	}
	if !starts {
		t.Fatalf("no merge of the %d segments of the new shape: %v", MergeRun, merged)
	}
}

// cutDelete deletes an object, then cancels the pass deleting it: Run
// stopping a maintenance pass when the lease is lost, or the process
// dying, right after the blob store deleted something.
type cutDelete struct {
	blob.Store
	cut context.CancelFunc
}

func (c *cutDelete) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err // the pass is over
	}
	err := c.Store.Delete(ctx, key)
	c.cut()
	return err
}

// A prune cut short right after its first blob deletion never leaves the
// catalog listing an object the blob store lost: the catalog drops the
// rows before any blob goes. The blobs left behind are superseded uploads
// for the sweep; the repository verifies and rebuilds exactly.
func TestPruneCutShortLeavesNoCataloguedObjectMissing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Now()
	b.repo.Now = func() time.Time { return now }
	b.src.write("acme", 2)
	b.mustShip(t)
	for i := range MergeRun {
		b.src.write([]string{"acme", "zed"}[i%2], 1)
		b.mustShip(t)
	}
	if merged, err := b.ship.Merge(ctx); err != nil || len(merged) != 1 {
		t.Fatalf("merged %v, %v", merged, err)
	}
	pass, cut := context.WithCancel(ctx)
	defer cut()
	store := b.repo.Blobs
	b.repo.Blobs = &cutDelete{Store: store, cut: cut}
	deleted, _ := b.ship.Prune(pass, 0)
	b.repo.Blobs = store
	if len(deleted) == MergeRun {
		t.Fatal("the prune was not cut short")
	}
	if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
		t.Fatalf("verify: %v %v", problems, err)
	}
	for _, tenant := range []string{"acme", "zed"} {
		if got, want := rebuilt(t, b, tenant, Upto{}), b.src.stateOf(tenant); !sameState(got, want) {
			t.Errorf("%s rebuilt %v, live %v", tenant, got, want)
		}
	}
	now = now.Add(SweepGrace + time.Hour)
	swept, err := b.ship.Sweep(ctx)
	if err != nil || len(deleted)+len(swept) != MergeRun {
		t.Fatalf("the sweep deleted %v (%v); the prune had deleted %d of the %d merged segments", swept, err, len(deleted), MergeRun)
	}
}
