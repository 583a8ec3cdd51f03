package backup

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeline/internal/blob"
)

// refusingPut is a blob store whose uploads fail after reading the whole
// body; when cancel is set, by cancelling the shipper's context.
type refusingPut struct {
	blob.Store
	cancel context.CancelFunc
}

func (r refusingPut) Put(ctx context.Context, key string, body io.Reader, _ int64, _ time.Time) error {
	io.Copy(io.Discard, body)
	if r.cancel != nil {
		r.cancel()
		return ctx.Err()
	}
	return errors.New("upload refused by the test")
}

// A snapshot's spool is closed, and so its disk space freed, whether the
// snapshot is recorded, its upload fails, or it is cancelled; and for a
// compaction as for the first snapshot. The test looks at the process's
// open files (Linux).
func TestSpoolIsClosedWhateverTheOutcome(t *testing.T) {
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skip("needs /proc/self/fd")
	}
	spoolDir := t.TempDir()
	t.Setenv("TMPDIR", spoolDir)
	check := func(what string) {
		t.Helper()
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, fd := range fds {
			if target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); strings.HasPrefix(target, spoolDir) {
				t.Errorf("%s: a spool is still open: %s", what, target)
			}
		}
		if left, _ := os.ReadDir(spoolDir); len(left) > 0 {
			t.Errorf("%s: temp files left: %v", what, left)
		}
	}

	files, err := blob.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := setupOn(t, "sqlite:state.db", refusingPut{Store: files})
	b.src.write("acme", 3)
	if _, err := b.ship.Ship(ctx); err == nil {
		t.Fatal("Ship recorded a snapshot the store refused")
	}
	check("upload refused")

	cancelled, cancel := context.WithCancel(ctx)
	b = setupOn(t, "sqlite:state.db", refusingPut{Store: files, cancel: cancel})
	b.src.write("acme", 3)
	if _, err := b.ship.Ship(cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ship cancelled during the upload: %v", err)
	}
	check("cancelled")

	b = setup(t)
	b.src.write("acme", 3)
	b.mustShip(t)
	check("recorded")
	for range 3 {
		b.src.write("acme", 1)
		b.mustShip(t)
	}
	if o, err := b.ship.Compact(ctx, 1); err != nil || o == nil {
		t.Fatalf("Compact = %v, %v; want a new snapshot", o, err)
	}
	check("compacted")
}
