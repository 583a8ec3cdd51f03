package restore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"lifeline/internal/productdb"
)

// SQLite swap batches are sized by the time they hold the write lock
// (productdb.Locked), not by the whole call: the wait for the lock, and
// the checkpoint and sync after the commit, happen while the
// application's writers can write. Batches that hold the lock 2 ms per
// tenant, with a 20 ms budget, take 10 tenants after the first, however
// long each call takes.
func TestPacedBatchesAreSizedByTheLockHeld(t *testing.T) {
	s := &Service{TxBudget: 20 * time.Millisecond, Pause: time.Microsecond}
	steps := make([]*step, 31)
	for i := range steps {
		steps[i] = &step{}
	}
	var sizes []int
	s.applyPaced(context.Background(), steps, func(b []*step) productdb.Locked {
		sizes = append(sizes, len(b))
		time.Sleep(5 * time.Millisecond) // waiting for the lock, syncing: not held
		to := time.Now()
		return productdb.Locked{From: to.Add(-time.Duration(len(b)) * 2 * time.Millisecond), To: to}
	})
	if got := fmt.Sprint(sizes); got != "[1 10 10 10]" {
		t.Errorf("batches of %s tenants, want [1 10 10 10]", got)
	}
}

// After a transaction that overran its budget the lock stays free long
// enough for every writer asleep in SQLite's busy handler to try again
// within the pause: the handler's gap at the time such a writer has
// waited, plus slack. Within the budget the configured pause stands (the
// default one covers the default budget).
func TestPauseCoversTheBusyHandlersNextTry(t *testing.T) {
	s := &Service{}
	for _, tc := range []struct{ held, want time.Duration }{
		{2 * time.Millisecond, 8 * time.Millisecond},   // tries at 1, 3, 8 ms: gap 5 + 2 < the 8 ms default
		{7 * time.Millisecond, 8 * time.Millisecond},   // the same gap
		{12 * time.Millisecond, 12 * time.Millisecond}, // waiting 8-18 ms: gap 10
		{40 * time.Millisecond, 22 * time.Millisecond}, // waiting 33-53 ms: gap 20
		{time.Second, 102 * time.Millisecond},          // past 228 ms: 100 ms at a time
	} {
		if got := s.pauseAfter(tc.held); got != tc.want {
			t.Errorf("pause after holding the lock %v: %v, want %v", tc.held, got, tc.want)
		}
	}
	if got := (&Service{Pause: 50 * time.Millisecond}).pauseAfter(12 * time.Millisecond); got != 50*time.Millisecond {
		t.Errorf("a configured pause longer than the gap gives %v, want it (50ms)", got)
	}
	fast := &Service{TxBudget: 20 * time.Millisecond, Pause: 10 * time.Millisecond}
	if got := fast.pauseAfter(19 * time.Millisecond); got != 10*time.Millisecond {
		t.Errorf("within a configured 20ms budget the pause is %v, want the configured 10ms", got)
	}
	if got := fast.pauseAfter(25 * time.Millisecond); got != 17*time.Millisecond {
		t.Errorf("after overrunning a 20ms budget to 25ms the pause is %v, want 17ms (the 18-33 ms gap)", got)
	}
}
