package backup_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"lifeline/internal/backup"
)

// TestSnapshotMemoryIsBounded snapshots a real SQLite product of 384 MiB
// of incompressible rows, 1 MiB per tenant, and samples the Go heap while
// Ship builds and uploads it: the snapshot goes through a temp file, so
// the heap holds one tenant's rows, the source's read-ahead and the
// writer's buffers (about 40 MiB whatever the product's size), never the
// object. Built in memory, the heap grew by over 1 GiB. The resident memory
// is sampled too: SQLite sorting a table in memory grew it by 600 MiB. The
// temp file is gone afterwards.
func TestSnapshotMemoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and snapshots a 384 MiB product")
	}
	ctx := context.Background()
	dir, spoolDir := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", spoolDir)
	const tenants, rowsPer, rowSize = 384, 128, 8 << 10
	const data = tenants * rowsPer * rowSize
	// The heap is let grow a fifth past what is live (not double), so its
	// peak measures what the snapshot holds, not when the GC ran.
	defer debug.SetGCPercent(debug.SetGCPercent(20))

	gen, err := sql.Open("sqlite", filepath.Join(dir, "product.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	for _, q := range []string{
		`CREATE TABLE sites (id INTEGER PRIMARY KEY, name TEXT NOT NULL)`,
		`CREATE TABLE docs (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), body BLOB NOT NULL)`,
		`CREATE INDEX docs_site ON docs (site_id)`,
		`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 384)
			INSERT INTO sites (id, name) SELECT i, 'site ' || i FROM n`,
		`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 128)
			INSERT INTO docs (site_id, body) SELECT sites.id, randomblob(8192) FROM sites, n`,
	} {
		if _, err := gen.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	gen.Close()
	repo, src := protectedSQLite(t, dir, "big")

	runtime.GC()
	baseHeap, baseRSS := heapObjects(), resident()
	var peakHeap, peakRSS atomic.Uint64
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peakHeap.Store(max(peakHeap.Load(), heapObjects()))
			peakRSS.Store(max(peakRSS.Load(), resident()))
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	res, err := (&backup.Shipper{Repo: repo, Product: "big", Source: src}).Ship(ctx)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot == nil || res.Snapshot.Size < data {
		t.Fatalf("snapshot %+v: want one of at least %d bytes (the rows are incompressible)", res.Snapshot, data)
	}
	heap, rss := int64(peakHeap.Load())-int64(baseHeap), int64(peakRSS.Load())-int64(baseRSS)
	t.Logf("snapshot of %d MiB: the heap grew by at most %d MiB, the resident memory by %d MiB", res.Snapshot.Size>>20, heap>>20, rss>>20)
	if heap > data/4 {
		t.Errorf("the heap grew by %d MiB while shipping a %d MiB snapshot: want under a quarter of it", heap>>20, data>>20)
	}
	// SQLite's memory (its sorter, with temp files in memory) is outside
	// the Go heap.
	if rss > data/4 {
		t.Errorf("the resident memory grew by %d MiB while shipping a %d MiB snapshot: want under a quarter of it", rss>>20, data>>20)
	}
	if left, _ := os.ReadDir(spoolDir); len(left) > 0 {
		t.Errorf("temp files left after the snapshot: %v", left)
	}
}

// resident is the process's resident memory (Linux; 0 elsewhere).
func resident() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, pages uint64
	fmt.Sscan(string(b), &size, &pages)
	return pages * uint64(os.Getpagesize())
}

// heapObjects is the memory the heap's objects occupy, live or not yet
// swept, read without stopping the world.
func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
