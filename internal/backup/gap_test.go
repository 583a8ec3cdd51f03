package backup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"lifeline/internal/blob"
	"lifeline/internal/change"
)

// gapRepo ships acme at 1-5 (the snapshot at 2, a segment 3-5), zed at
// 6-8, compacts into a snapshot at 8 and ships zed again at 9-11.
func gapRepo(t *testing.T) *bundle {
	t.Helper()
	b := setup(t)
	b.src.write("acme", 2)
	b.mustShip(t)
	b.src.write("acme", 3)
	b.mustShip(t)
	b.src.write("zed", 3)
	b.mustShip(t)
	if o, err := b.ship.Compact(ctx, 1); err != nil || o == nil || o.Last != 8 {
		t.Fatalf("compacted %+v, %v; want a snapshot at 8", o, err)
	}
	b.src.write("zed", 3)
	b.mustShip(t)
	return b
}

// A segment gone from before the moment: a tenant the first snapshot after
// the moment holds as it was (nothing of it changed in between) rebuilds
// from that snapshot; one that changed in between depends on the gap and
// is refused, naming the missing positions, as blob.ErrNotFound. A moment
// after the newer snapshot does not need the gap at all.
func TestReadingSaysWhichTenantsDependOnAGap(t *testing.T) {
	t.Parallel()
	for _, lost := range []string{"object", "object and catalog row"} {
		t.Run(lost, func(t *testing.T) {
			t.Parallel()
			b := gapRepo(t)
			acme := b.src.stateOf("acme")
			key := segmentKey("tracker", 3, 5)
			if err := os.Remove(filepath.Join(b.dir, "backups", key)); err != nil {
				t.Fatal(err)
			}
			if lost != "object" {
				if _, err := b.repo.State.DB().Exec("DELETE FROM backup_objects WHERE key = ?", key); err != nil {
					t.Fatal(err)
				}
			}
			for _, pos := range []uint64{5, 7} {
				rd, err := b.repo.OpenAt(ctx, "tracker", Upto{Pos: pos})
				if err != nil {
					t.Fatalf("at %d: %v", pos, err)
				}
				if rd.Gap() != "3..5" || rd.Depends("acme") || !rd.Depends("zed") {
					t.Fatalf("at %d: gap %q, acme depends %v, zed depends %v; want 3..5, acme not (the snapshot at 8 holds it as it was), zed yes",
						pos, rd.Gap(), rd.Depends("acme"), rd.Depends("zed"))
				}
				if got := rebuilt(t, b, "acme", Upto{Pos: pos}); !sameState(got, acme) {
					t.Errorf("at %d acme rebuilt %v, want %v", pos, got, acme)
				}
				err = rd.Tenant(ctx, "zed", func(*change.Table, *change.Change) error { return nil })
				if !errors.Is(err, blob.ErrNotFound) || !strings.Contains(err.Error(), "positions 3..5 are missing") {
					t.Errorf("at %d zed: %v; want a refusal naming positions 3..5", pos, err)
				}
			}
			if rd, err := b.repo.OpenAt(ctx, "tracker", Upto{Pos: 11}); err != nil || rd.Gap() != "" || rd.Depends("zed") {
				t.Fatalf("after the newer snapshot: %v", err)
			}
			if got := rebuilt(t, b, "zed", Upto{Pos: 11}); !sameState(got, b.src.stateOf("zed")) {
				t.Errorf("zed rebuilt %v after the newer snapshot", got)
			}
		})
	}
}

// Missing positions that reach past the moment leave no tenant's state
// known: every tenant depends on the gap.
func TestAGapReachingPastTheMomentRefusesEveryTenant(t *testing.T) {
	t.Parallel()
	b := gapRepo(t)
	if err := os.Remove(filepath.Join(b.dir, "backups", segmentKey("tracker", 6, 8))); err != nil {
		t.Fatal(err)
	}
	rd, err := b.repo.OpenAt(ctx, "tracker", Upto{Pos: 7})
	if err != nil {
		t.Fatal(err)
	}
	if rd.Gap() != "6..8" || !rd.Depends("acme") || !rd.Depends("zed") || rd.Cost("acme") < 1 {
		t.Fatalf("gap %q, acme depends %v, zed %v", rd.Gap(), rd.Depends("acme"), rd.Depends("zed"))
	}
}
