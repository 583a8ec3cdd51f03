package productdb

import (
	"database/sql"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

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
	_, err := x.db.SwapAll(x.ctx, x.l, []SwapSpec{{OpID: "op_swap", Tenant: "2", Policy: Replace, Tables: rts, Want: want}},
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

// damagedSQLite is a SQLite product whose tenant 2 is damaged and staged
// for op_swap: the tables to swap and the hashes of the rebuilt rows.
func damagedSQLite(t *testing.T) (*env, []RestoreTable, map[string]*TableHash) {
	t.Helper()
	x := setup(t, engines[0])
	rts, imgs := x.images(t, "2")
	x.damage(t)
	return x, rts, x.stage(t, rts, "op_swap", "2", imgs["2"])
}

// A log sync that fails is an error naming the log file, and the work it
// was to make durable is reported failed, not done.
func TestSQLiteFailedLogSyncFailsTheCaller(t *testing.T) {
	t.Parallel()
	x, rts, want := damagedSQLite(t)
	x.db.SetLogSync(failSync)
	wal := x.db.path + "-wal"

	wantCode(t, x.db.SyncLog(), fault.Unavailable, wal, "write-ahead log", x.db.String())
	_, err := x.db.Apply(x.ctx, x.l, Step{OpID: "op_step", Action: Deactivate, Tenant: "3", To: Deactivated})
	wantCode(t, err, fault.Unavailable, wal)
	err = x.db.Unlocked(x.ctx, "4", "op_unlocked", func(*sql.Tx) error { return nil })
	wantCode(t, err, fault.Unavailable, wal)
	sp := SwapSpec{OpID: "op_swap", Tenant: "2", Policy: Replace, Tables: rts, Want: want}
	_, err = x.db.SwapAll(x.ctx, x.l, []SwapSpec{sp}, func(int, SwapResult, error) {
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

// A SQLite swap batch gives the write lock back at its commit and says so
// (Locked): the restore leaves the application's writers their pause
// from then. The checkpoint SQLite would run inside that commit comes
// after it, with the lock free: by the log's sync, the swap's rows are in
// the database file itself, and another connection can take the lock.
func TestSQLiteSwapCheckpointsAfterGivingTheLockBack(t *testing.T) {
	t.Parallel()
	x, rts, want := damagedSQLite(t)
	x.exec(t, "PRAGMA wal_checkpoint(TRUNCATE)") // the file holds the damage
	if x.inFile(t, "SELECT count(*) FROM sites WHERE id = 2 AND name = 'Site 2 ✓'") {
		t.Fatal("tenant 2 is not damaged in the database file")
	}
	var synced time.Time
	var free, inFile bool
	x.db.SetLogSync(func(f *os.File) error {
		synced = time.Now()
		tx, err := x.raw.BeginTx(x.ctx, nil) // the test's DSN begins immediate
		if err == nil {
			_, err = tx.ExecContext(x.ctx, "UPDATE sites SET plan = plan WHERE id = 3")
			free = err == nil
			tx.Rollback()
		}
		inFile = x.inFile(t, "SELECT count(*) FROM sites WHERE id = 2 AND name = 'Site 2 ✓'")
		return f.Sync()
	})
	locked, err := x.db.SwapAll(x.ctx, x.l, []SwapSpec{{OpID: "op_swap", Tenant: "2", Policy: Replace, Tables: rts, Want: want}},
		func(_ int, _ SwapResult, err error) {
			if err != nil {
				t.Error(err)
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	if locked.From.IsZero() || locked.To.Before(locked.From) || synced.Before(locked.To) {
		t.Errorf("held the lock from %v to %v, synced the log at %v: want a span that ends before the sync", locked.From, locked.To, synced)
	}
	if !free {
		t.Error("another connection could not write while the swap synced its log: the lock was still held")
	}
	if !inFile {
		t.Error("the swap's rows were not in the database file by the log's sync: not checkpointed after the commit")
	}
}

// inFile counts, as query does, in a copy of the database file alone: what
// checkpoints have copied there, leaving out the write-ahead log.
func (x *env) inFile(t *testing.T, query string) bool {
	t.Helper()
	data, err := os.ReadFile(x.db.path)
	if err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(copied, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+copied)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(x.ctx, query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// ConnWith changes a connection's settings for its holder and gives it
// back to the pool with every one as it was.
func TestConnWithGivesSettingsBack(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0])
	x.db.db.SetMaxOpenConns(1) // the pool's next connection is the one given back
	pragma := func(q queryer, name string) (v string) {
		t.Helper()
		if err := q.QueryRowContext(x.ctx, "PRAGMA "+name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	sync, ckpt := pragma(x.db.db, "synchronous"), pragma(x.db.db, "wal_autocheckpoint")
	conn, release, err := x.db.ConnWith(x.ctx, Setting{Name: "synchronous", Value: "OFF"}, Setting{Name: "wal_autocheckpoint", Value: "7"})
	if err != nil {
		t.Fatal(err)
	}
	if got := pragma(conn, "synchronous") + "," + pragma(conn, "wal_autocheckpoint"); got != "0,7" {
		t.Errorf("synchronous and wal_autocheckpoint for the holder: %s, want 0,7", got)
	}
	release()
	if got, want := pragma(x.db.db, "synchronous")+","+pragma(x.db.db, "wal_autocheckpoint"), sync+","+ckpt; got != want {
		t.Errorf("given back with synchronous and wal_autocheckpoint %s, want %s as before", got, want)
	}
}
