package productdb

import (
	"database/sql"
	"io/fs"
	"os"
	"syscall"
	"testing"

	"lifeline/internal/fault"
)

// logSyncs watches a SQLite DB's syncs of its write-ahead log. A power cut
// cannot be simulated; what can be seen is that the log is synced, and
// that at that moment the work about to be reported done is already
// committed (visible from the application's connection): a sync made
// before the commit would leave the commit to a later sync, or none.
type logSyncs struct {
	n         int  // syncs so far
	committed bool // whether the work was committed at the latest sync
}

// watchLogSyncs counts x.db's log syncs, asking committed at each one.
func (x *env) watchLogSyncs(t *testing.T, committed func() bool) *logSyncs {
	t.Helper()
	w := &logSyncs{}
	x.db.SetLogSync(func(f *os.File) error {
		if want := x.db.path + "-wal"; f.Name() != want {
			t.Errorf("synced %s, want the write-ahead log %s", f.Name(), want)
		}
		w.n++
		w.committed = committed()
		return f.Sync()
	})
	return w
}

// durable fails unless the log was synced after the commit of what the
// caller reports done.
func (w *logSyncs) durable(t *testing.T, what string) {
	t.Helper()
	switch {
	case w.n == 0:
		t.Errorf("%s: the write-ahead log was not synced", what)
	case !w.committed:
		t.Errorf("%s: the write-ahead log was synced before the commit, not after it", what)
	}
}

// failSync fails as (*os.File).Sync does when the disk fails.
func failSync(f *os.File) error { return &fs.PathError{Op: "sync", Path: f.Name(), Err: syscall.EIO} }

// Lifeline's SQLite commits wait for no disk under the write lock
// (lazyConn) and are made durable by one sync of the log after it: a
// lifecycle step, an unlocked transaction and a restore swap are each
// synced after their commit and before they are reported done.
func TestSQLiteSyncsLogAfterCommitBeforeDone(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0])
	if x.e.Name != "sqlite" {
		t.Fatalf("engines[0] is %s", x.e.Name)
	}
	w := x.watchLogSyncs(t, func() bool {
		return x.count(t, "SELECT count(*) FROM lifeline_applied WHERE op_id = 'op_sync'") == 1
	})
	x.step(t, "op_sync", Deactivate, "3", "", Deactivated)
	w.durable(t, "Apply")

	w = x.watchLogSyncs(t, func() bool {
		return x.count(t, "SELECT count(*) FROM sites WHERE id = 4 AND plan = 'unlocked'") == 1
	})
	if err := x.db.Unlocked(x.ctx, "4", "op_unlocked", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(x.ctx, "UPDATE sites SET plan = 'unlocked' WHERE id = 4")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	w.durable(t, "Unlocked")

	rts, imgs := x.images(t, "2")
	x.damage(t)
	want := x.stage(t, rts, "op_swap", "2", imgs["2"])
	w = x.watchLogSyncs(t, func() bool {
		return x.count(t, "SELECT count(*) FROM sites WHERE id = 2 AND name = 'Site 2 ✓'") == 1
	})
	done := false
	err := x.db.SwapAll(x.ctx, x.l, []SwapSpec{{OpID: "op_swap", Tenant: "2", Policy: Replace, Tables: rts, Want: want}},
		func(_ int, _ SwapResult, err error) {
			if err != nil {
				t.Error(err)
			}
			done = true
			w.durable(t, "SwapAll, when it reports the tenant done")
		})
	if err != nil {
		t.Fatal(err)
	}
	if !done {
		t.Error("SwapAll did not report the tenant")
	}
}

// A log sync that fails is an error naming the log file, and the work it
// was to make durable is reported failed, not done.
func TestSQLiteFailedLogSyncFailsTheCaller(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0])
	rts, imgs := x.images(t, "2")
	x.damage(t)
	want := x.stage(t, rts, "op_swap", "2", imgs["2"])
	x.db.SetLogSync(failSync)
	wal := x.db.path + "-wal"

	wantCode(t, x.db.SyncLog(), fault.Unavailable, wal, "write-ahead log", x.db.String())
	_, err := x.db.Apply(x.ctx, x.l, Step{OpID: "op_step", Action: Deactivate, Tenant: "3", To: Deactivated})
	wantCode(t, err, fault.Unavailable, wal)
	err = x.db.Unlocked(x.ctx, "4", "op_unlocked", func(*sql.Tx) error { return nil })
	wantCode(t, err, fault.Unavailable, wal)
	sp := SwapSpec{OpID: "op_swap", Tenant: "2", Policy: Replace, Tables: rts, Want: want}
	err = x.db.SwapAll(x.ctx, x.l, []SwapSpec{sp}, func(int, SwapResult, error) {
		t.Error("SwapAll reported a tenant whose commit it could not make durable")
	})
	wantCode(t, err, fault.Unavailable, wal)

	// The swap did commit: once the disk is back, running it again finds it
	// applied.
	x.db.SetLogSync((*os.File).Sync)
	res, err := x.db.Swap(x.ctx, x.l, sp)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Already {
		t.Errorf("swap after a failed sync: %+v, want it found already applied", res)
	}
}

// Without a write-ahead log file (every connection closed: SQLite
// checkpointed and removed it) nothing is pending, and SyncLog syncs
// nothing.
func TestSQLiteSyncLogWithoutLog(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0])
	x.db.SetLogSync(func(f *os.File) error {
		t.Errorf("synced %s", f.Name())
		return nil
	})
	x.raw.Close()
	x.db.db.SetMaxIdleConns(0)
	if _, err := os.Stat(x.db.path + "-wal"); !os.IsNotExist(err) {
		t.Fatalf("the write-ahead log is still there once every connection is closed: %v", err)
	}
	if err := x.db.SyncLog(); err != nil {
		t.Fatal(err)
	}
}
