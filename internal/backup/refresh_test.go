package backup

import (
	"context"
	"testing"

	"lifeline/internal/backup/format"
)

// refreshingSource asks for a fresh snapshot (as protect does after a
// table was rebuilt); before answering it commits more changes, as writers
// racing with the round would.
type refreshingSource struct {
	*fakeSource
	why   string
	racer func()
}

func (r *refreshingSource) SnapshotWanted(context.Context) (string, error) {
	if f := r.racer; f != nil {
		r.racer = nil
		f()
	}
	return r.why, nil
}

func (r *refreshingSource) SnapshotTaken(_ context.Context, why string) error {
	if r.why == why {
		r.why = ""
	}
	return nil
}

// A fresh snapshot taken while changes were still arriving lies past the
// catalog's end: those changes are shipped as segments first, so the
// chain has no gap, and the request is withdrawn once it is recorded.
func TestFreshSnapshotShipsTheChangesBeforeIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	src := &refreshingSource{fakeSource: b.src}
	b.ship.Source = src
	b.src.write("acme", 2)
	b.mustShip(t)
	b.src.write("zed", 3)
	src.why = "protect found docs rebuilt"
	src.racer = func() { b.src.write("acme", 4) }
	res := b.mustShip(t)
	if res.Snapshot == nil || res.Snapshot.Last != 9 || res.Changes != 7 || src.why != "" {
		t.Fatalf("shipped %+v, request %q; want positions 3-9 as segments, then a fresh snapshot at 9, and the request withdrawn", res, src.why)
	}
	objs, err := b.repo.Objects(ctx, "tracker")
	if err != nil {
		t.Fatal(err)
	}
	var snaps []uint64
	for _, o := range objs {
		if o.Kind == format.Snapshot {
			snaps = append(snaps, o.Last)
		}
	}
	if len(snaps) != 2 || snaps[1] != 9 {
		t.Fatalf("snapshots at %v; want the first and the fresh one at 9", snaps)
	}
	b.src.write("zed", 1)
	if again := b.mustShip(t); again.Snapshot != nil || again.Changes != 1 {
		t.Fatalf("the next round shipped %+v; want the one new change and no snapshot", again)
	}
	if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
		t.Fatalf("verify: %v %v", problems, err)
	}
	for _, tenant := range []string{"acme", "zed"} {
		if got, want := rebuilt(t, b, tenant, Upto{}), b.src.stateOf(tenant); !sameState(got, want) {
			t.Errorf("%s rebuilt %v, live %v", tenant, got, want)
		}
	}
}
