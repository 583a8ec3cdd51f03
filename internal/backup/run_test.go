package backup

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lifeline/internal/blob"
	"lifeline/internal/capture"
	"lifeline/internal/fault"
)

// watchedSource tells the test what the shipper asks its source.
type watchedSource struct {
	capture.Source
	backlogs atomic.Int64
	acks     atomic.Int64
	read     func(from capture.Cursor, b capture.Batch) // after each Read, if set
}

func (w *watchedSource) Backlog(ctx context.Context, cur capture.Cursor) (int64, time.Time, error) {
	w.backlogs.Add(1)
	return w.Source.Backlog(ctx, cur)
}

func (w *watchedSource) Read(ctx context.Context, cur capture.Cursor, max int) (capture.Batch, error) {
	b, err := w.Source.Read(ctx, cur, max)
	if w.read != nil && err == nil {
		w.read(cur, b)
	}
	return b, err
}

func (w *watchedSource) Ack(ctx context.Context, cur capture.Cursor) error {
	w.acks.Add(1)
	return w.Source.Ack(ctx, cur)
}

// signalWriter closes seen when a log line containing match is written.
type signalWriter struct {
	match string
	seen  chan struct{}
	once  sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.match) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// polled waits until the shipper has asked for the backlog n more times.
func (w *watchedSource) polled(t *testing.T, n int64) {
	t.Helper()
	until := w.backlogs.Load() + n
	eventually(t, "the shipper polls its source", func() bool { return w.backlogs.Load() >= until })
}

// eventually waits until cond holds, and fails the test if that takes
// more than 30 s (so long only on a stalled machine).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
	}
}

// running runs s.Run in the background until the returned stop is called.
func running(s *Shipper, interval time.Duration) (stop func()) {
	run, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(run, interval)
	}()
	return func() { cancel(); <-done }
}

// With an interval of an hour, Run leaves a fresh change pending while it
// polls, and ships it as soon as the change is about an interval old,
// not an interval after its last round: the interval is the RPO target
// for the oldest pending change.
func TestRunShipsWhenTheOldestChangeNearsTheInterval(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.clock = time.Now
	src := &watchedSource{Source: b.src}
	b.ship.Source = src
	defer running(b.ship, time.Hour)()
	src.polled(t, 2) // the first round's status report, then the stream's first poll

	b.src.write("acme", 1)
	src.polled(t, 3)
	if cur, _, _ := b.repo.Cursor(ctx, "tracker"); cur.Pos != 0 {
		t.Fatalf("a change a moment old was shipped at once (cursor %d); the interval is an hour", cur.Pos)
	}
	// The change is now an interval old (its commit time moved back, as
	// the clock would have moved on).
	b.src.mu.Lock()
	b.src.log[0].Time = time.Now().Add(-time.Hour)
	b.src.mu.Unlock()
	eventually(t, "Run ships a change an interval old, without waiting an interval after its last round", func() bool {
		cur, _, _ := b.repo.Cursor(ctx, "tracker")
		return cur.Pos == 1
	})
}

// Run reads and encodes the next segment while one uploads, but uploads
// it only after the one before is recorded. When the first upload outlasts
// the lease and another process takes over, the segment read ahead is
// dropped: never uploaded, nothing acknowledged, and the new holder ships
// every position once.
func TestRunReadsAheadButRecordsInOrderUnderTheFence(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.clock = time.Now
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	b.repo.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	stalling := &stallingStore{Store: b.repo.Blobs}
	b.repo.Blobs = stalling
	src := &watchedSource{Source: b.src}
	a := &Shipper{Repo: b.repo, Product: "tracker", Source: src, MaxBatch: 100, Owner: "host-a:1", LeaseTTL: time.Minute}
	other := &Shipper{Repo: b.repo, Product: "tracker", Source: b.src, MaxBatch: 3, Owner: "host-b:2", LeaseTTL: time.Minute}
	b.src.write("acme", 2)
	if _, err := a.Ship(ctx); err != nil { // the snapshot, positions up to 2
		t.Fatal(err)
	}

	readAhead := make(chan capture.Batch, 1)
	src.read = func(from capture.Cursor, batch capture.Batch) {
		if from.Pos == 8 && len(batch.Changes) > 0 {
			readAhead <- batch
		}
	}
	var otherErr error
	var acksAfterTakeOver int64
	stalling.stall = func() {
		// A's first segment (3-8) is uploading: the next changes are read
		// and encoded meanwhile.
		b.src.write("zed", 2) // 9-10
		select {
		case batch := <-readAhead:
			if batch.End.Pos != 10 {
				t.Errorf("read ahead up to %d, want 10", batch.End.Pos)
			}
		case <-time.After(30 * time.Second):
			t.Error("nothing was read while the first segment uploaded")
		}
		// A's lease runs out mid-upload; B takes over and ships 3-6, 7-10.
		clock.Add(int64(2 * time.Minute))
		_, otherErr = other.Ship(ctx)
		acksAfterTakeOver = src.acks.Load()
	}
	fenced := &signalWriter{match: "lost the shipping lease during an upload", seen: make(chan struct{})}
	a.Log = slog.New(slog.NewTextHandler(fenced, nil))
	// The interval leaves the writes below time to land before the read.
	stop := sync.OnceFunc(running(a, 500*time.Millisecond))
	defer stop()
	src.polled(t, 2) // Run's first round reported; the stream polls
	for i := range 3 {
		b.src.write([]string{"acme", "zed"}[i%2], 2) // 3-8
	}
	select {
	case <-fenced.seen:
	case <-time.After(30 * time.Second):
		t.Fatal("the stalled upload was never fenced")
	}
	stop()
	if otherErr != nil {
		t.Fatalf("the standby's take-over: %v", otherErr)
	}
	if n := src.acks.Load(); n != acksAfterTakeOver {
		t.Errorf("the fenced holder acknowledged %d times after losing the lease", n-acksAfterTakeOver)
	}
	if _, err := b.repo.Blobs.Stat(ctx, segmentKey("tracker", 3, 8)); err != nil {
		t.Fatalf("the stalled upload did not land: %v", err)
	}
	if _, err := b.repo.Blobs.Stat(ctx, segmentKey("tracker", 9, 10)); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("the segment read ahead of a fenced upload was uploaded (%v)", err)
	}
	if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
		t.Fatalf("verify: %v %v", problems, err)
	}
	if cur, _, _ := b.repo.Cursor(ctx, "tracker"); cur.Pos != uint64(len(b.src.log)) {
		t.Fatalf("repository at %d, %d changes committed", cur.Pos, len(b.src.log))
	}
	for _, tenant := range []string{"acme", "zed"} {
		if got, want := rebuilt(t, b, tenant, Upto{}), b.src.stateOf(tenant); !sameState(got, want) {
			t.Errorf("%s rebuilt %v, live %v", tenant, got, want)
		}
	}
}

// heldReads holds every object read until open is closed or the read's
// context ends. While Run streams only maintenance reads objects, so it
// holds a maintenance pass for as long as a test likes.
type heldReads struct {
	blob.Store
	open      chan struct{}
	held      atomic.Int64 // reads held now
	cancelled atomic.Int64 // held reads whose context ended
}

func (h *heldReads) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	h.held.Add(1)
	defer h.held.Add(-1)
	select {
	case <-h.open:
		return h.Store.Get(ctx, key, off, n)
	case <-ctx.Done():
		h.cancelled.Add(1)
		return nil, ctx.Err()
	}
}

// holdMaintenance ships a snapshot and a run of small segments for the
// next maintenance pass to merge, and has every object read held from now
// on.
func holdMaintenance(t *testing.T, b *bundle) *heldReads {
	t.Helper()
	b.src.clock = time.Now
	b.src.write("acme", 1)
	b.mustShip(t)
	for range MergeRun {
		b.src.write("acme", 1)
		b.mustShip(t)
	}
	reads := &heldReads{Store: b.repo.Blobs, open: make(chan struct{})}
	b.repo.Blobs = reads
	b.ship.MaintainEvery = time.Millisecond
	return reads
}

// holdersMaintenance is holdMaintenance with b.ship the lease holder
// host-a:1, on a clock the test moves.
func holdersMaintenance(t *testing.T, b *bundle) (*atomic.Int64, *heldReads) {
	t.Helper()
	clock := new(atomic.Int64)
	clock.Store(time.Now().UnixNano())
	b.repo.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	b.ship.Owner, b.ship.LeaseTTL = "host-a:1", time.Minute
	return clock, holdMaintenance(t, b)
}

// passTakenOver starts a maintenance pass of b.ship, holds it in its first
// object read, and meanwhile lets the lease expire and other take it over
// and ship a new change. The pass's outcome arrives on the channel once
// reads.open is closed.
func passTakenOver(t *testing.T, b *bundle, clock *atomic.Int64, reads *heldReads, other *Shipper) <-chan error {
	t.Helper()
	pass := make(chan error, 1)
	go func() {
		_, _, err := b.ship.Maintain(ctx)
		pass <- err
	}()
	eventually(t, "the pass reads an object", func() bool { return reads.held.Load() > 0 })
	clock.Add(int64(2 * time.Minute))
	b.src.write("zed", 2)
	if _, err := other.Ship(ctx); err != nil {
		t.Fatal(err)
	}
	return pass
}

// recorded waits until the repository holds every change written.
func recorded(t *testing.T, b *bundle, what string) {
	t.Helper()
	want := uint64(len(b.src.log))
	eventually(t, what, func() bool {
		cur, _, err := b.repo.Cursor(ctx, "tracker")
		return err == nil && cur.Pos == want
	})
}

// A maintenance pass that takes long (here: held in its first object read)
// does not hold up shipping: segments are still recorded meanwhile, and no
// second pass starts beside it although one is due every millisecond. When
// Run stops, it cancels the pass and waits for it.
func TestSlowMaintenanceDoesNotHoldUpShipping(t *testing.T) {
	t.Parallel()
	stateStores(t, func(t *testing.T, b *bundle) {
		reads := holdMaintenance(t, b)
		stop := sync.OnceFunc(running(b.ship, 5*time.Millisecond))
		defer stop()
		eventually(t, "a maintenance pass reads an object", func() bool { return reads.held.Load() > 0 })
		for i := range 3 {
			b.src.write([]string{"acme", "zed"}[i%2], 2)
			recorded(t, b, "a segment is recorded while maintenance is held")
		}
		if n := reads.held.Load(); n != 1 {
			t.Fatalf("%d object reads held; want the one pass's first (a second pass started beside it)", n)
		}
		stop()
		if reads.held.Load() != 0 || reads.cancelled.Load() != 1 {
			t.Fatalf("after Run returned: %d reads held, %d cancelled; want the pass cancelled and finished", reads.held.Load(), reads.cancelled.Load())
		}
		close(reads.open)
		if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
			t.Fatalf("verify: %v %v", problems, err)
		}
		for _, tenant := range []string{"acme", "zed"} {
			if got, want := rebuilt(t, b, tenant, Upto{}), b.src.stateOf(tenant); !sameState(got, want) {
				t.Errorf("%s rebuilt %v, live %v", tenant, got, want)
			}
		}
	})
}

// A maintenance pass that read the catalog, then lost the lease, cannot
// commit what it decided even when its process has taken the lease back
// since: the holder in between may have changed the catalog. The lease's
// epoch tells the two holdings apart, where the owner alone does not.
func TestMaintenanceAcrossALeaseLostAndRegainedIsRefused(t *testing.T) {
	t.Parallel()
	stateStores(t, func(t *testing.T, b *bundle) {
		clock, reads := holdersMaintenance(t, b)
		unheld := &Repo{Blobs: reads.Store, State: b.repo.State, Now: b.repo.Now}
		other := &Shipper{Repo: unheld, Product: "tracker", Source: b.src, MaxBatch: 10, Owner: "host-b:2", LeaseTTL: time.Minute}
		// The same process's shipping loop, claiming the lease back.
		again := &Shipper{Repo: unheld, Product: "tracker", Source: b.src, MaxBatch: 10, Owner: b.ship.Owner, LeaseTTL: time.Minute}
		pass := passTakenOver(t, b, clock, reads, other)
		if err := other.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := again.Ship(ctx); err != nil {
			t.Fatal(err)
		}
		if l, err := b.repo.Lease(ctx, "tracker"); err != nil || l.Owner != b.ship.Owner {
			t.Fatalf("the lease is %+v (%v); want it back with %s", l, err, b.ship.Owner)
		}
		close(reads.open)
		if err := <-pass; !errors.Is(err, ErrLeased) || fault.CodeOf(err) != fault.Conflict {
			t.Fatalf("the pass begun before the lease changed hands returned %v; want the lease-lost conflict", err)
		}
		if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
			t.Fatalf("verify: %v %v", problems, err)
		}
	})
}

// A maintenance pass stops when its shipper finds the lease lost: another
// process took over and maintains the product now.
func TestMaintenanceStopsWhenTheLeaseIsLost(t *testing.T) {
	t.Parallel()
	stateStores(t, func(t *testing.T, b *bundle) {
		clock, reads := holdersMaintenance(t, b)
		other := &Shipper{Repo: b.repo, Product: "tracker", Source: b.src, MaxBatch: 10, Owner: "host-b:2", LeaseTTL: time.Minute}
		defer running(b.ship, 5*time.Millisecond)()
		eventually(t, "a maintenance pass reads an object", func() bool { return reads.held.Load() > 0 })
		// The lease expires (the holder stalled, say) and another process
		// takes over; the holder finds out when it next records.
		clock.Add(int64(2 * time.Minute))
		if _, err := other.Ship(ctx); err != nil {
			t.Fatal(err)
		}
		b.src.write("zed", 1)
		eventually(t, "the former holder cancels its maintenance pass", func() bool { return reads.cancelled.Load() == 1 })
		if n := reads.held.Load(); n != 0 {
			t.Fatalf("%d object reads held after the lease was lost: the former holder still maintains", n)
		}
		// The new holder ships the change the former one was fenced on.
		close(reads.open)
		if res, err := other.Ship(ctx); err != nil || res.Cursor.Pos != uint64(len(b.src.log)) {
			t.Fatalf("the new holder shipped up to %d (%v); %d changes committed", res.Cursor.Pos, err, len(b.src.log))
		}
		if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
			t.Fatalf("verify: %v %v", problems, err)
		}
	})
}

// A maintenance pass whose lease is taken over while it runs (its process
// stalled past the lease) changes nothing from then on: its merge is not
// recorded, and neither are a prune or a compaction it tries after; each
// stops with the conflict an upload gets, and no object is deleted. The
// new holder ships and maintains on; the repository verifies and every
// tenant rebuilds equal to the live rows.
func TestMaintenanceAfterTheLeaseIsLostIsRefused(t *testing.T) {
	t.Parallel()
	stateStores(t, func(t *testing.T, b *bundle) {
		clock, reads := holdersMaintenance(t, b)
		// The new holder reads the same store and catalog, unheld.
		newRepo := &Repo{Blobs: reads.Store, State: b.repo.State, Now: b.repo.Now}
		other := &Shipper{Repo: newRepo, Product: "tracker", Source: b.src, MaxBatch: 10, Owner: "host-b:2", LeaseTTL: time.Minute}
		before, err := b.repo.Objects(ctx, "tracker")
		if err != nil {
			t.Fatal(err)
		}
		refused := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, ErrLeased) || fault.CodeOf(err) != fault.Conflict {
				t.Fatalf("%s after the lease was taken over returned %v; want the lease-lost conflict", what, err)
			}
		}

		pass := passTakenOver(t, b, clock, reads, other)
		close(reads.open)
		refused("the pass", <-pass)
		after, err := b.repo.Objects(ctx, "tracker")
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before)+1 || !slices.Equal(keys(after[:len(before)]), keys(before)) {
			t.Fatalf("the catalog went from %v to %v; want only the new holder's segment added", keys(before), keys(after))
		}

		// The new holder merges; the former one can neither prune what the
		// merge holds nor record a compaction.
		if merged, err := other.Merge(ctx); err != nil || len(merged) != 1 {
			t.Fatalf("the new holder merged %v, %v", merged, err)
		}
		_, err = b.ship.Prune(ctx, 0)
		refused("a prune", err)
		_, err = b.ship.Compact(ctx, 1)
		refused("a compaction", err)
		for _, o := range after {
			if _, err := b.repo.Blobs.Stat(ctx, o.Key); err != nil {
				t.Fatalf("%s is gone: %v", o.Key, err)
			}
		}
		if objs, _ := b.repo.Objects(ctx, "tracker"); len(objs) != len(after)+1 {
			t.Fatalf("the catalog holds %v; want %v and the new holder's merge", keys(objs), keys(after))
		}

		if _, pruned, err := other.Maintain(ctx); err != nil || len(pruned) != MergeRun {
			t.Fatalf("the new holder's pass pruned %v, %v; want the %d merged segments", pruned, err, MergeRun)
		}
		if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
			t.Fatalf("verify: %v %v", problems, err)
		}
		for _, tenant := range []string{"acme", "zed"} {
			if got, want := rebuilt(t, b, tenant, Upto{}), b.src.stateOf(tenant); !sameState(got, want) {
				t.Errorf("%s rebuilt %v, live %v", tenant, got, want)
			}
		}
	})
}

func keys(objs []Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}
