package backup

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"lifeline/internal/change"
)

// rowsByName rebuilds every tenant at upto and renders each row by column
// name, under the shape it is handed over with: a row captured before a
// column was added shows without it.
func rowsByName(t *testing.T, rd *Reading) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, tenant := range rd.Tenants() {
		err := rd.Tenant(ctx, tenant, func(tb *change.Table, c *change.Change) error {
			var cols []string
			for i, col := range tb.Columns {
				cols = append(cols, fmt.Sprintf("%s=%d:%q", col.Name, c.Row[i].Kind, c.Row[i].Bytes))
			}
			out[fmt.Sprint(tenant, "/", c.Row[tb.PrimaryKey[0]].Int)] = strings.Join(cols, " ")
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// After a column is added, maintenance writes a snapshot of the new schema
// version at once (below the usual segment count); a restore after the
// change reads only that snapshot and the segments after it, and gets the
// same rows as from the whole history.
func TestSnapshotAtASchemaChange(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.write("acme", 4) // ids 1-4
	b.src.write("zed", 2)  // ids 5-6
	b.mustShip(t)
	b.src.mutate("acme", change.Update, 1, 2)
	b.mustShip(t)
	b.src.write("zed", 1) // id 7
	b.mustShip(t)
	if o, err := b.ship.Compact(ctx, CompactAfter); err != nil || o != nil {
		t.Fatalf("compacted %v, %v with 2 segments of one shape", o, err)
	}

	b.src.addColumn()
	b.src.mutate("acme", change.Update, 3) // now with tags
	b.src.write("acme", 1)                 // id 8, with tags
	b.mustShip(t)
	before, _, _ := b.repo.Cursor(ctx, "tracker")
	whole, err := b.repo.OpenAt(ctx, "tracker", Upto{Pos: before.Pos})
	if err != nil {
		t.Fatal(err)
	}
	want := rowsByName(t, whole)

	o, err := b.ship.Compact(ctx, CompactAfter)
	if err != nil || o == nil {
		t.Fatalf("no snapshot after the schema change: %v", err)
	}
	if o.Last != before.Pos {
		t.Fatalf("snapshot at %d, want %d", o.Last, before.Pos)
	}
	b.src.mutate("zed", change.Update, 5)
	b.mustShip(t)
	cur, _, _ := b.repo.Cursor(ctx, "tracker")
	rd, err := b.repo.OpenAt(ctx, "tracker", Upto{Pos: cur.Pos})
	if err != nil {
		t.Fatal(err)
	}
	if objs := rd.Objects(); len(objs) != 2 || objs[0].Key != o.Key || objs[1].First != before.Pos+1 {
		t.Fatalf("a restore after the change reads %v; want the new snapshot and one segment", objs)
	}
	if cols := rd.readers[0].Header().Tables[0].Columns; len(cols) != 4 || cols[3].Name != "tags" {
		t.Fatalf("the new snapshot's shape is %v, want the new schema version", cols)
	}
	at, err := b.repo.OpenAt(ctx, "tracker", Upto{Pos: before.Pos})
	if err != nil {
		t.Fatal(err)
	}
	if len(at.Objects()) != 1 {
		t.Fatalf("rebuilding at the snapshot reads %d objects", len(at.Objects()))
	}
	if got := rowsByName(t, at); !maps.Equal(got, want) {
		t.Fatalf("rows from the new snapshot differ from the whole history:\n got %v\nwant %v", got, want)
	}
	if !strings.Contains(want["acme/1"], "body=") || strings.Contains(want["acme/1"], "tags=") || !strings.Contains(want["acme/8"], "tags=") {
		t.Fatalf("the test's rows do not span the change: %v", want)
	}
	for _, tenant := range []string{"acme", "zed"} {
		if got := rebuilt(t, b, tenant, Upto{Pos: cur.Pos}); !sameState(got, b.src.stateOf(tenant)) {
			t.Errorf("%s after the change: %v, live %v", tenant, got, b.src.stateOf(tenant))
		}
	}
	if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
		t.Fatalf("verify: %v %v", problems, err)
	}
	// Compacting again carries the Absent columns over unchanged.
	for i := 0; i < 3; i++ {
		b.src.mutate("acme", change.Update, 4)
		b.mustShip(t)
	}
	again, err := b.ship.Compact(ctx, 2)
	if err != nil || again == nil {
		t.Fatalf("second compaction: %v %v", again, err)
	}
	rd, err = b.repo.OpenAt(ctx, "tracker", Upto{Pos: again.Last})
	if err != nil {
		t.Fatal(err)
	}
	if got := rowsByName(t, rd); got["acme/1"] != want["acme/1"] || got["acme/8"] != want["acme/8"] {
		t.Fatalf("after a second compaction acme/1 = %s, acme/8 = %s; want %s, %s", got["acme/1"], got["acme/8"], want["acme/1"], want["acme/8"])
	}
}
