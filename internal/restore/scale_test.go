package restore

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"lifeline/internal/backup"
	"lifeline/internal/backup/format"
	"lifeline/internal/blob"
	"lifeline/internal/change"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// bigTenant is a SQLite product whose backup holds one tenant ("1") of n
// items, written straight into a snapshot object as a stream (the shipper
// would hold a tenant's rows to sort them; this test is about the
// restore), and nothing of it live but its root row.
type bigTenant struct {
	at       time.Time // the snapshot's moment
	svc      *Service
	raw      *sql.DB
	counting *blob.Counting
	objects  int64
}

const bigDDL = `CREATE TABLE sites (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), n INTEGER, score REAL, label TEXT, data BLOB);
CREATE INDEX items_site ON items (site_id)`

func newBigTenant(t *testing.T, tenants, n, rest, label int) *bigTenant {
	t.Helper()
	dir := t.TempDir()
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "product.db")+"?_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=busy_timeout(20000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	for _, stmt := range strings.Split(bigDDL, ";\n") {
		if _, err := raw.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	for s := 1; s <= tenants; s++ {
		if _, err := raw.Exec(`INSERT INTO sites (id, name) VALUES ($1, $2)`, s, fmt.Sprint("site ", s)); err != nil {
			t.Fatal(err)
		}
	}
	store, err := state.Open(ctx, "sqlite:state.db", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	db, err := productdb.Open(ctx, "sqlite:product.db", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	layout, err := tenant.Protect(ctx, store, db, productdb.Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "sites"}, "tester")
	if err != nil {
		t.Fatal(err)
	}
	files, err := blob.OpenFile(filepath.Join(dir, "backups"))
	if err != nil {
		t.Fatal(err)
	}
	counting := blob.Count(files)
	repo, err := backup.OpenRepo(ctx, &backup.Repo{Blobs: counting, State: store})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Minute).UTC()
	size := writeBigSnapshot(t, files, at, tenants, n, rest, label)
	if _, err := (&backup.Shipper{Repo: repo, Product: "tracker"}).Rescan(ctx); err != nil {
		t.Fatal(err)
	}
	svc, err := OpenService(ctx, &Service{Repo: repo, Tenants: &tenant.Service{Store: store, Owner: tenant.DefaultOwner(),
		Products: []*tenant.Product{{Name: "tracker", DB: db, Layout: layout}}}})
	if err != nil {
		t.Fatal(err)
	}
	counting.Reset()
	return &bigTenant{at: at, svc: svc, raw: raw, counting: counting, objects: size}
}

// writeBigSnapshot streams a snapshot of tenants 1..tenants to a file and
// stores it: tenant 1 has n items, the others rest. Labels are hex text
// (compressing about as well as real text does).
func writeBigSnapshot(t *testing.T, store blob.Store, at time.Time, tenants, n, rest, label int) int64 {
	t.Helper()
	sites := change.Table{Name: "sites", Columns: []change.Column{{Name: "id", Type: "INTEGER"}, {Name: "name", Type: "TEXT"}}, PrimaryKey: []int{0}, Tenant: 0}
	items := change.Table{Name: "items", Columns: []change.Column{{Name: "id", Type: "INTEGER"}, {Name: "site_id", Type: "INTEGER"},
		{Name: "n", Type: "INTEGER"}, {Name: "score", Type: "REAL"}, {Name: "label", Type: "TEXT"}, {Name: "data", Type: "BLOB"}}, PrimaryKey: []int{0}, Tenant: 1}
	f, err := os.CreateTemp(t.TempDir(), "snap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := format.NewSnapshotWriter(f, format.Header{Product: "tracker", Tables: []change.Table{items, sites}, FirstTime: at, LastTime: at, Created: at}, format.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	id := int64(0)
	// Tenant keys sort as text: "1" < "10" < "2".
	keys := make([]string, tenants)
	for i := range keys {
		keys[i] = strconv.Itoa(i + 1)
	}
	sortStrings(keys)
	for _, k := range keys {
		s, _ := strconv.ParseInt(k, 10, 64)
		count := rest
		if s == 1 {
			count = n
		}
		for i := 0; i < count; i++ {
			id++
			lbl := strconv.AppendInt(nil, id, 36)
			for len(lbl) < label {
				lbl = strconv.AppendUint(lbl, rng.Uint64(), 16)
			}
			c := change.Change{Op: change.Snapshot, Tenant: k, Table: "items", Row: []change.Value{{Kind: change.Int, Int: s*100_000_000 + int64(i)},
				{Kind: change.Int, Int: s}, {Kind: change.Int, Int: id * 7919 % 1_000_003}, {Kind: change.Float, Float: float64(id) / 7},
				{Kind: change.Text, Bytes: lbl}, {Kind: change.Blob, Bytes: lbl[:8]}}}
			if err := w.Add(&c); err != nil {
				t.Fatal(err)
			}
		}
		c := change.Change{Op: change.Snapshot, Tenant: k, Table: "sites", Row: []change.Value{{Kind: change.Int, Int: s}, {Kind: change.Text, Bytes: []byte("site " + k)}}}
		if err := w.Add(&c); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, "tracker/snapshots/00000000000000000000.snap", f, sum.Size, time.Time{}); err != nil {
		t.Fatal(err)
	}
	return sum.Size
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// peakHeap runs fn and returns by how much the heap grew at most while it
// ran, over what was live before (sampled every millisecond, the GC kept
// tight so garbage does not hide what is held).
func peakHeap(fn func()) (growth uint64) {
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(256 << 20))
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	base := sample[0].Value.Uint64()
	var peak atomic.Uint64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	fn()
	close(done)
	<-stopped
	return peak.Load() - min(base, peak.Load())
}

// A tenant of a million rows (60,000 fatter ones with -short) is restored
// with bounded memory: the rebuild streams block by block, staging goes in
// chunks, and nothing holds the tenant's rows. Holding them would take
// several times the bound.
func TestHugeTenantRestoresInBoundedMemory(t *testing.T) {
	// Labels fat enough that holding the rows would break the bound in the
	// short run too.
	n, label := 1_000_000, 120
	if testing.Short() {
		n, label = 60_000, 400
	}
	b := newBigTenant(t, 3, n, 10, label)
	var rep *Report
	var err error
	peak := peakHeap(func() {
		rep, err = b.svc.Run(ctx, Request{Tenants: []string{"1"}, To: b.at, Actor: "tester"})
	})
	if err != nil {
		t.Fatalf("%v\n%+v", err, rep)
	}
	var got int
	if err := b.raw.QueryRow(`SELECT count(*) FROM items WHERE site_id = 1`).Scan(&got); err != nil || got != n {
		t.Fatalf("%d items restored, want %d (%v)", got, n, err)
	}
	p := rep.Tenants[0].Products[0]
	if p.Hash != "verified" || p.Rows != int64(n)+1 {
		t.Errorf("report: %+v", p)
	}
	const bound = 32 << 20
	t.Logf("restored %d rows in %.1fs (%.0f rows/s); heap grew at most %.1f MiB (bound %d MiB; holding the rows would take over %.0f MiB)",
		n, rep.Seconds, float64(n)/rep.Seconds, float64(peak)/(1<<20), bound>>20, float64(n)*float64(200+label)/(1<<20))
	if peak > bound {
		t.Errorf("peak live heap %d bytes restoring %d rows; bound %d", peak, n, bound)
	}
}

// Property 3: restoring 1% of the tenants reads about 1% of the repository
// (a counting blob store sees every byte read).
func TestRestoringOnePercentReadsAboutOnePercent(t *testing.T) {
	t.Parallel()
	b := newBigTenant(t, 200, 40, 40, 200)
	rep, err := b.svc.Run(ctx, Request{Tenants: []string{"7", "123"}, To: b.at, Actor: "tester"})
	if err != nil {
		t.Fatalf("%v\n%+v", err, rep)
	}
	share := float64(b.counting.BytesRead()) / float64(b.objects)
	t.Logf("restoring 2 of 200 tenants read %d of %d bytes (%.2f%%); the report planned %d", b.counting.BytesRead(), b.objects, share*100, rep.Bytes)
	if share > 0.03 {
		t.Errorf("restoring 1%% of the tenants read %.1f%% of the repository", share*100)
	}
	if rep.Bytes <= 0 || rep.Bytes > b.counting.BytesRead() {
		t.Errorf("the report says %d bytes of tenant data, %d were read in all", rep.Bytes, b.counting.BytesRead())
	}
}
