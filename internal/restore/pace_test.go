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
