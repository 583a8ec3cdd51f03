package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/blob"
	"lifeline/internal/capture"
	"lifeline/internal/change"
	"lifeline/internal/fault"
)

// Two shippers of one product, in different processes as far as the lease
// knows: only the holder ships; the other takes over when the holder
// releases, when its lease expires, or at once when its process is gone,
// and continues the repository exactly where the holder left it.
func TestOneShipperHoldsTheLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := time.Now()
	b.repo.Now = func() time.Time { return now }
	a := &Shipper{Repo: b.repo, Product: "tracker", Source: b.src, MaxBatch: 10, Owner: "host-a:1", LeaseTTL: time.Minute}
	other := &Shipper{Repo: b.repo, Product: "tracker", Source: b.src, MaxBatch: 10, Owner: "host-b:2", LeaseTTL: time.Minute}
	b.src.write("acme", 3)
	if _, err := a.Ship(ctx); err != nil {
		t.Fatal(err)
	}
	standby := func(what string) {
		t.Helper()
		b.src.write("acme", 2)
		before, _, _ := b.repo.Cursor(ctx, "tracker")
		_, err := other.Ship(ctx)
		if !errors.Is(err, ErrLeased) || fault.CodeOf(err) != fault.Conflict {
			t.Fatalf("%s: the standby's round returned %v; want a conflict naming the holder", what, err)
		}
		if after, _, _ := b.repo.Cursor(ctx, "tracker"); after != before {
			t.Fatalf("%s: the standby shipped (%v -> %v) while another process held the lease", what, before, after)
		}
	}
	standby("while the holder is live")
	if st, _ := b.repo.Status(ctx, "tracker", 0); st.Shipper != "host-a:1" {
		t.Errorf("status names shipper %q, want host-a:1", st.Shipper)
	}

	// The holder releases (serve stopping): the standby takes over at once.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Ship(ctx); err != nil {
		t.Fatalf("after release: %v", err)
	}
	// The old holder is now the standby, even though it shipped before.
	if _, err := a.Ship(ctx); !errors.Is(err, ErrLeased) {
		t.Fatalf("the former holder shipped while the lease was taken: %v", err)
	}

	// The holder stops renewing (a dead process on another host): its lease
	// expires and the standby takes over.
	now = now.Add(2 * time.Minute)
	b.src.write("zed", 4)
	if _, err := a.Ship(ctx); err != nil {
		t.Fatalf("after the lease expired: %v", err)
	}

	// A holder on this host whose process is gone (kill -9) is taken over
	// without waiting for its lease.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	gone := &Shipper{Repo: b.repo, Product: "tracker", Source: b.src, MaxBatch: 10, Owner: fmt.Sprintf("%s:%d", host, dead.Process.Pid), LeaseTTL: time.Minute}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := gone.Ship(ctx); err != nil {
		t.Fatal(err)
	}
	b.src.write("zed", 1)
	if _, err := a.Ship(ctx); err != nil {
		t.Fatalf("the lease of a process that is gone was not taken over: %v", err)
	}

	// Nothing lost, nothing shipped twice.
	if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
		t.Fatalf("verify: %v %v", problems, err)
	}
	if cur, _, _ := b.repo.Cursor(ctx, "tracker"); cur.Pos != uint64(len(b.src.log)) {
		t.Fatalf("repository at %d, %d changes committed", cur.Pos, len(b.src.log))
	}
}

// Run maintains the repository while it holds the lease: the small
// segments shipped so far get merged.
func TestRunMaintainsWhileHoldingTheLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.write("acme", 1)
	b.mustShip(t)
	for i := 0; i < MergeRun; i++ {
		b.src.write("acme", 1)
		b.mustShip(t)
	}
	run, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.ship.MaintainEvery = time.Millisecond
		b.ship.Run(run, 5*time.Millisecond)
	}()
	defer func() { stop(); <-done }()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		objs, err := b.repo.Objects(ctx, "tracker")
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if o.Kind == format.Segment && o.Last-o.First+1 == MergeRun {
				return
			}
		}
	}
	t.Fatal("Run never merged the small segments")
}

// stallingStore runs stall (once) inside the first Put of a segment, before
// the object lands: an upload that outlasts its lease.
type stallingStore struct {
	blob.Store
	stall func()
}

func (s *stallingStore) Put(ctx context.Context, key string, r io.Reader, size int64, retain time.Time) error {
	if f := s.stall; f != nil && strings.Contains(key, "/segments/") {
		s.stall = nil
		f()
	}
	return s.Store.Put(ctx, key, r, size, retain)
}

// ackCounter counts a shipper's acknowledgements.
type ackCounter struct {
	capture.Source
	acks int
}

func (a *ackCounter) Ack(ctx context.Context, cur capture.Cursor) error {
	a.acks++
	return a.Source.Ack(ctx, cur)
}

// A holder whose upload outlasts its lease while another process takes
// over: the new holder ships the same positions cut differently; the old
// one's object lands afterwards, but the fence keeps it out of the catalog
// and it acknowledges nothing. Verify finds no overlap, and every tenant
// rebuilds equal to the live rows.
func TestStalledUploadIsFencedAfterTakeOver(t *testing.T) {
	t.Parallel()
	b, _, stale, other := superseded(t)
	b.src.write("acme", 1)
	if _, err := other.Ship(ctx); err != nil {
		t.Fatal(err)
	}
	n, problems, err := b.repo.Verify(ctx, "tracker")
	if err != nil || len(problems) != 0 {
		t.Fatalf("verify: %v %v", problems, err)
	}
	objs, err := b.repo.Objects(ctx, "tracker")
	if err != nil {
		t.Fatal(err)
	}
	if n != len(objs)+1 {
		t.Errorf("verify checked %d objects; want the %d catalogued and the superseded one", n, len(objs))
	}
	for _, o := range objs {
		if o.Key == stale {
			t.Fatalf("the superseded upload %s is in the catalog", stale)
		}
	}
	for _, tenant := range []string{"acme", "zed"} {
		if got, want := rebuilt(t, b, tenant, Upto{}), b.src.stateOf(tenant); !sameState(got, want) {
			t.Errorf("%s rebuilt %v, live %v", tenant, got, want)
		}
	}
}

// superseded sets up a repository on a clock the test moves (*now), with
// a superseded upload (stallPastTheLease).
func superseded(t *testing.T) (b *bundle, now *time.Time, stale string, other *Shipper) {
	t.Helper()
	b = setup(t)
	now = new(time.Time)
	*now = time.Now()
	b.repo.Now = func() time.Time { return *now }
	stale, other = stallPastTheLease(t, b, now)
	return b, now, stale, other
}

// stallPastTheLease has a holder's segment upload outlast its lease while
// another shipper takes over and ships the same positions cut elsewhere
// (the clock is *now). It checks that the stalled holder records and
// acknowledges nothing, and returns its superseded object's key and the
// new holder.
func stallPastTheLease(t *testing.T, b *bundle, now *time.Time) (stale string, other *Shipper) {
	t.Helper()
	stalling := &stallingStore{Store: b.repo.Blobs}
	b.repo.Blobs = stalling
	aSrc, bSrc := &ackCounter{Source: b.src}, &ackCounter{Source: b.src}
	a := &Shipper{Repo: b.repo, Product: "tracker", Source: aSrc, MaxBatch: 100, Owner: "host-a:1", LeaseTTL: time.Minute}
	other = &Shipper{Repo: b.repo, Product: "tracker", Source: bSrc, MaxBatch: 3, Owner: "host-b:2", LeaseTTL: time.Minute}
	b.src.write("acme", 2)
	if _, err := a.Ship(ctx); err != nil { // the snapshot
		t.Fatal(err)
	}
	for i := range 3 {
		b.src.write([]string{"acme", "zed"}[i%2], 2) // positions 3-8, one segment of A's
	}
	acksBefore := aSrc.acks
	var otherErr error
	stalling.stall = func() {
		// A's lease runs out mid-upload; the standby takes over and ships
		// the same positions and two more cut elsewhere (3-6, 7-10), so
		// A's object would overlap them.
		*now = now.Add(2 * time.Minute)
		b.src.write("zed", 2)
		_, otherErr = other.Ship(ctx)
	}
	_, err := a.Ship(ctx)
	if otherErr != nil {
		t.Fatalf("the standby's take-over: %v", otherErr)
	}
	if !errors.Is(err, ErrLeased) || fault.CodeOf(err) != fault.Conflict {
		t.Fatalf("the stalled holder's round returned %v; want the lease lost", err)
	}
	if aSrc.acks != acksBefore {
		t.Errorf("the stalled holder acknowledged %d times after losing the lease", aSrc.acks-acksBefore)
	}
	stale = segmentKey("tracker", 3, 8)
	if _, err := b.repo.Blobs.Stat(ctx, stale); err != nil {
		t.Fatalf("the stalled upload %s did not land: %v", stale, err)
	}
	if _, err := a.Ship(ctx); !errors.Is(err, ErrLeased) {
		t.Fatalf("the former holder shipped again: %v", err)
	}
	return stale, other
}

// Only the lease holder adopts what an interrupted upload left unrecorded:
// a rescan by another process is refused and records nothing, since its
// adoption could continue the catalog beside the holder's own record of
// the same positions.
func TestRescanAdoptsOnlyUnderTheLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	holder := &Shipper{Repo: b.repo, Product: "tracker", Source: b.src, MaxBatch: 10, Owner: "host-a:1", LeaseTTL: time.Minute}
	other := &Shipper{Repo: b.repo, Product: "tracker", Source: b.src, MaxBatch: 10, Owner: "host-b:2", LeaseTTL: time.Minute}
	b.src.write("acme", 2)
	if _, err := holder.Ship(ctx); err != nil {
		t.Fatal(err)
	}
	// An upload of positions 3-4 whose recording a crash cut short.
	b.src.write("acme", 2)
	var buf bytes.Buffer
	h := format.Header{Product: "tracker", First: 3, Last: 4, Source: 4, Tables: []change.Table{docs}, Created: time.Now()}
	if _, err := format.WriteSegment(&buf, h, b.src.log[2:4], b.repo.options()); err != nil {
		t.Fatal(err)
	}
	key := segmentKey("tracker", 3, 4)
	if err := b.repo.Blobs.Put(ctx, key, &buf, int64(buf.Len()), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Rescan(ctx); !errors.Is(err, ErrLeased) || fault.CodeOf(err) != fault.Conflict {
		t.Fatalf("a rescan by a process without the lease returned %v; want the conflict naming the holder", err)
	}
	if cur, _, _ := b.repo.Cursor(ctx, "tracker"); cur.Pos != 2 {
		t.Fatalf("the catalog reaches position %d after the refused rescan; want 2", cur.Pos)
	}
	if _, err := holder.Rescan(ctx); err != nil {
		t.Fatal(err)
	}
	if cur, _, _ := b.repo.Cursor(ctx, "tracker"); cur.Pos != 4 {
		t.Fatalf("the holder's rescan left the catalog at position %d; want %s adopted (4)", cur.Pos, key)
	}
}

// While a holder uploads, a rescan elsewhere (`backup list`) adopts a former
// holder's object for the same positions, cut elsewhere: the holder's
// object is then the superseded one. It records and acknowledges nothing,
// and the next round continues from the catalog.
func TestUploadOverlappingAnAdoptedObjectIsLeftOut(t *testing.T) {
	t.Parallel()
	b := setup(t)
	stalling := &stallingStore{Store: b.repo.Blobs}
	b.repo.Blobs = stalling
	src := &ackCounter{Source: b.src}
	s := &Shipper{Repo: b.repo, Product: "tracker", Source: src, MaxBatch: 100}
	b.src.write("acme", 2)
	if _, err := s.Ship(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		b.src.write([]string{"acme", "zed"}[i%2], 2) // positions 3-8
	}
	stalling.stall = func() {
		var buf bytes.Buffer
		h := format.Header{Product: "tracker", First: 3, Last: 6, Source: 6, Tables: []change.Table{docs}, Created: time.Now()}
		if _, err := format.WriteSegment(&buf, h, b.src.log[2:6], b.repo.options()); err != nil {
			t.Error(err)
			return
		}
		if err := stalling.Store.Put(ctx, segmentKey("tracker", 3, 6), &buf, int64(buf.Len()), time.Time{}); err != nil {
			t.Error(err)
		}
		if _, err := b.repo.rescan(ctx, "tracker", nil); err != nil {
			t.Error(err)
		}
	}
	acks := src.acks
	if _, err := s.Ship(ctx); !errors.Is(err, errCatalogMoved) {
		t.Fatalf("the round whose positions were adopted meanwhile returned %v", err)
	}
	if src.acks != acks {
		t.Error("the shipper acknowledged an object it did not record")
	}
	res, err := s.Ship(ctx)
	if err != nil || res.Cursor.Pos != 8 || res.Changes != 2 {
		t.Fatalf("the next round shipped %+v, %v; want positions 7-8 after the adopted 3-6", res, err)
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
