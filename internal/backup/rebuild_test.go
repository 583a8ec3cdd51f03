package backup

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"lifeline/internal/blob"
	"lifeline/internal/change"
	"lifeline/internal/fault"
)

// mutate commits one transaction that updates or deletes rows of tenant.
func (f *fakeSource) mutate(tenant string, op change.Op, ids ...int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tx := uint64(len(f.log) + 1)
	for i, id := range ids {
		key := fmt.Sprint(tenant, "/", id)
		row := f.rows[key]
		if op == change.Delete {
			delete(f.rows, key)
		} else {
			row = f.widen([]change.Value{row[0], row[1], {Kind: change.Text, Bytes: f.text(fmt.Sprint("edited at ", len(f.log)+1))}})
			f.rows[key] = row
		}
		f.log = append(f.log, change.Change{Pos: uint64(len(f.log) + 1), Tx: tx, TxEnd: i == len(ids)-1, Time: f.clock(),
			Tenant: tenant, Table: "docs", Op: op, Row: row})
	}
}

// stateOf copies the fake's live rows of tenant: the reference a rebuild
// must equal.
func (f *fakeSource) stateOf(tenant string) map[int64]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int64]string{}
	for _, r := range f.rows {
		if string(r[1].Bytes) == tenant {
			out[r[0].Int] = string(r[2].Bytes)
		}
	}
	return out
}

func rebuilt(t *testing.T, b *bundle, tenant string, upto Upto) map[int64]string {
	t.Helper()
	rd, err := b.repo.OpenAt(ctx, "tracker", upto)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]string{}
	err = rd.Tenant(ctx, tenant, func(_ *change.Table, c *change.Change) error {
		out[c.Row[0].Int] = string(c.Row[2].Bytes)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameState compares two states of a tenant (row id to row text).
var sameState = maps.Equal[map[int64]string, map[int64]string]

// Rebuilding a tenant at any shipped position gives exactly the rows it had
// then, through snapshots, segments and a compaction.
func TestRebuildAtEveryMoment(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.write("acme", 4) // ids 1-4
	b.src.write("zed", 2)  // ids 5-6
	b.mustShip(t)
	want := map[uint64]map[int64]string{}
	steps := []func(){
		func() { b.src.mutate("acme", change.Update, 1, 2) },
		func() { b.src.write("acme", 3) },
		func() { b.src.mutate("acme", change.Delete, 3) },
		func() { b.src.mutate("zed", change.Delete, 5) },
		func() { b.src.mutate("acme", change.Update, 1) },
	}
	for i, step := range steps {
		step()
		res := b.mustShip(t)
		want[res.Cursor.Pos] = b.src.stateOf("acme")
		if i == 2 {
			if o, err := b.ship.Compact(ctx, 1); err != nil || o == nil {
				t.Fatalf("compaction: %v %v", o, err)
			}
		}
	}
	for pos, w := range want {
		if got := rebuilt(t, b, "acme", Upto{Pos: pos}); !sameState(got, w) {
			t.Errorf("acme at position %d = %v, want %v", pos, got, w)
		}
	}
	if got := rebuilt(t, b, "zed", Upto{Pos: 6}); len(got) != 2 {
		t.Errorf("zed at the first snapshot = %v", got)
	}
	// The same by time: the commit time of position 8.
	if got := rebuilt(t, b, "acme", Upto{Time: b.src.log[7].Time}); !sameState(got, want[8]) {
		t.Errorf("acme by time = %v, want %v", got, want[8])
	}
	_, err := b.repo.OpenAt(ctx, "tracker", Upto{Pos: 999})
	if fault.CodeOf(err) != fault.Refused {
		t.Errorf("a position after the newest change: %v", err)
	}
	_, err = b.repo.OpenAt(ctx, "tracker", Upto{Pos: 3})
	if fault.CodeOf(err) != fault.Refused {
		t.Errorf("a position before the first snapshot: %v", err)
	}
}

// Rebuilding 1% of the tenants reads a small share of the repository.
func TestRebuildReadsOnlyItsTenants(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.body = 300
	for i := 0; i < 200; i++ {
		b.src.write(fmt.Sprintf("t%03d", i), 40)
	}
	b.mustShip(t)
	for i := 0; i < 200; i++ {
		b.src.mutate(fmt.Sprintf("t%03d", i), change.Update, int64(i*40+1), int64(i*40+2), int64(i*40+3), int64(i*40+4))
	}
	b.ship.MaxBatch = 1000
	b.mustShip(t)
	counting := blob.Count(b.faulty)
	b.repo.Blobs = counting
	var total int64
	objs, _ := b.repo.Objects(ctx, "tracker")
	for _, o := range objs {
		total += o.Size
	}
	rd, err := b.repo.OpenAt(ctx, "tracker", Upto{Pos: 8800})
	if err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"t007", "t123"} {
		if err := rd.Tenant(ctx, tenant, func(*change.Table, *change.Change) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	share := float64(counting.BytesRead()) / float64(total)
	t.Logf("read %d of %d bytes (%.1f%%) for 1%% of tenants", counting.BytesRead(), total, share*100)
	if share > 0.05 {
		t.Errorf("rebuilding 1%% of tenants read %.1f%% of the repository", share*100)
	}
}

func TestPruneKeepsTheWindowAndPins(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Date(2026, 4, 5, 8, 0, 0, 0, time.UTC)
	b.repo.Now = func() time.Time { return now }
	b.src.clock = func() time.Time { return now }
	b.src.write("acme", 2)
	b.mustShip(t) // snapshot A
	b.src.write("acme", 2)
	b.mustShip(t) // segment 1
	now = now.Add(24 * time.Hour)
	if _, err := b.ship.Compact(ctx, 1); err != nil { // snapshot B
		t.Fatal(err)
	}
	b.src.write("acme", 2)
	b.mustShip(t) // segment 2
	objs, _ := b.repo.Objects(ctx, "tracker")
	if len(objs) != 4 {
		t.Fatalf("objects: %v", objs)
	}
	if err := b.repo.Pin(ctx, "restore-1", []string{objs[0].Key}, now.Add(100*time.Hour)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(48 * time.Hour)
	deleted, err := b.ship.Prune(ctx, 36*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Snapshot B is the base of the window; A is pinned, segment 1 is not.
	if len(deleted) != 1 || deleted[0] != objs[1].Key {
		t.Fatalf("pruned %v; want only the first segment (%s)", deleted, objs[1].Key)
	}
	if err := b.repo.Unpin(ctx, "restore-1"); err != nil {
		t.Fatal(err)
	}
	if deleted, _ := b.ship.Prune(ctx, 36*time.Hour); len(deleted) != 1 || deleted[0] != objs[0].Key {
		t.Fatalf("after unpin pruned %v; want the old snapshot", deleted)
	}
	if got := rebuilt(t, b, "acme", Upto{Pos: 6}); len(got) != 6 {
		t.Errorf("after pruning, the newest state has %d rows, want 6", len(got))
	}
}
