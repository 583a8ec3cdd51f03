package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeline/internal/blob"
	"lifeline/internal/capture"
	"lifeline/internal/change"
	"lifeline/internal/state"
)

var ctx = context.Background()

// fakeSource is an in-memory capture source for fast unit tests of the
// shipper; the real sources are tested against real databases in capture.
type fakeSource struct {
	mu      sync.Mutex
	rows    map[string][]change.Value // tenant/key -> row, the live table
	log     []change.Change           // committed changes, Pos = index+1
	acked   capture.Cursor
	base    uint64 // positions <= base are in the snapshot
	failing error
	// clock stamps each change's commit time; by default it ticks one
	// second per change from the time the source was made.
	clock func() time.Time
	body  int // extra bytes per row body
	// shape is the table's current shape: docs, or docs with a column
	// added (addColumn).
	shape change.Table
	// afterRead, when set, runs after every Read: an application that
	// commits between any two reads.
	afterRead func()
	// duringSnapshot, when set, runs as a snapshot's rows are read: a
	// snapshot that takes long.
	duringSnapshot func()
}

var docs = change.Table{Name: "docs", Columns: []change.Column{{Name: "id", Type: "INTEGER"}, {Name: "site", Type: "TEXT"}, {Name: "body", Type: "TEXT"}},
	PrimaryKey: []int{0}, Tenant: 1}

func newFakeSource() *fakeSource {
	start := time.Now().UTC().Truncate(time.Second)
	ticks := 0
	return &fakeSource{rows: map[string][]change.Value{}, shape: docs, clock: func() time.Time {
		ticks++
		return start.Add(time.Duration(ticks) * time.Second)
	}}
}

// text makes a row body of about f.body extra bytes that compress about as
// well as real text does (hex digits of a hash chain: about 2x).
func (f *fakeSource) text(s string) []byte {
	out := []byte(s)
	sum := sha256.Sum256(out)
	for len(out) < len(s)+f.body {
		out = append(out, hex.EncodeToString(sum[:])...)
		sum = sha256.Sum256(sum[:])
	}
	return out
}

// write commits one transaction of n inserts for tenant.
func (f *fakeSource) write(tenant string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	tx := uint64(len(f.log) + 1)
	for i := 0; i < n; i++ {
		id := int64(len(f.rows) + 1)
		row := f.widen([]change.Value{{Kind: change.Int, Int: id}, {Kind: change.Text, Bytes: []byte(tenant)}, {Kind: change.Text, Bytes: f.text(fmt.Sprint("body ", id))}})
		f.rows[fmt.Sprint(tenant, "/", id)] = row
		f.log = append(f.log, change.Change{Pos: uint64(len(f.log) + 1), Tx: tx, TxEnd: i == n-1, Time: f.clock(),
			Tenant: tenant, Table: "docs", Op: change.Insert, Row: row})
	}
}

// addColumn adds the column tags to the table, as a migration would: rows
// written from now on carry it; rows already there are not rewritten.
func (f *fakeSource) addColumn() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shape.Columns = append(slices.Clone(docs.Columns), change.Column{Name: "tags", Type: "TEXT"})
}

// widen gives a row written now the current shape's width.
func (f *fakeSource) widen(row []change.Value) []change.Value {
	if len(f.shape.Columns) > len(row) {
		row = append(row, change.Value{Kind: change.Text, Bytes: fmt.Appendf(nil, "tag %d", len(f.log))})
	}
	return row
}

func (f *fakeSource) Read(_ context.Context, cur capture.Cursor, max int) (capture.Batch, error) {
	if f.afterRead != nil {
		defer f.afterRead()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing != nil {
		return capture.Batch{}, f.failing
	}
	var out []change.Change
	for i := int(cur.Pos); i < len(f.log); i++ {
		out = append(out, f.log[i])
		if len(out) >= max && f.log[i].TxEnd {
			break
		}
	}
	if len(out) == 0 {
		return capture.Batch{}, nil
	}
	end := out[len(out)-1].Pos
	return capture.Batch{Changes: out, Tables: []change.Table{f.shape}, End: capture.Cursor{Pos: end, Src: end}}, nil
}

func (f *fakeSource) Ack(_ context.Context, cur capture.Cursor) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acked = cur
	return nil
}

func (f *fakeSource) Snapshot(context.Context) (capture.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.base = uint64(len(f.log))
	var rows []change.Change
	for _, r := range f.rows {
		rows = append(rows, change.Change{Pos: f.base, Tenant: string(r[1].Bytes), Table: "docs", Op: change.Snapshot, Row: r})
	}
	// Deliberately unsorted within tenants' groups: the shipper sorts.
	return &fakeSnap{cur: capture.Cursor{Pos: f.base, Src: f.base}, rows: groupByTenant(rows), shape: f.shape, during: f.duringSnapshot}, nil
}

func groupByTenant(rows []change.Change) []change.Change {
	byT := map[string][]change.Change{}
	var names []string
	for _, r := range rows {
		if byT[r.Tenant] == nil {
			names = append(names, r.Tenant)
		}
		byT[r.Tenant] = append(byT[r.Tenant], r)
	}
	sortStrings(names)
	var out []change.Change
	for _, n := range names {
		out = append(out, byT[n]...)
	}
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func (f *fakeSource) Backlog(_ context.Context, cur capture.Cursor) (int64, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := int64(len(f.log)) - int64(cur.Pos)
	if n <= 0 {
		return 0, time.Time{}, nil
	}
	return n, f.log[cur.Pos].Time, nil
}

func (f *fakeSource) Close() error { return nil }

type fakeSnap struct {
	cur    capture.Cursor
	rows   []change.Change
	shape  change.Table
	during func()
}

func (s *fakeSnap) Cursor() capture.Cursor { return s.cur }
func (s *fakeSnap) Tables() []change.Table { return []change.Table{s.shape} }
func (s *fakeSnap) Rows(_ context.Context, fn func(*change.Change) error) error {
	if s.during != nil {
		s.during()
	}
	for i := range s.rows {
		if err := fn(&s.rows[i]); err != nil {
			return err
		}
	}
	return nil
}
func (s *fakeSnap) Close() error { return nil }

type bundle struct {
	dir    string
	repo   *Repo
	faulty *blob.Faulty
	src    *fakeSource
	ship   *Shipper
}

func setup(t *testing.T) *bundle {
	t.Helper()
	return setupOn(t, "sqlite:state.db", nil)
}

// setupOn is setup with the state store at dsn and the repository in
// blobs (nil: a folder).
func setupOn(t *testing.T, dsn string, blobs blob.Store) *bundle {
	t.Helper()
	dir := t.TempDir()
	store, err := state.Open(ctx, dsn, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if blobs == nil {
		if blobs, err = blob.OpenFile(filepath.Join(dir, "backups")); err != nil {
			t.Fatal(err)
		}
	}
	faulty := blob.NewFaulty(blobs)
	repo, err := OpenRepo(ctx, &Repo{Blobs: faulty, State: store})
	if err != nil {
		t.Fatal(err)
	}
	src := newFakeSource()
	return &bundle{dir: dir, repo: repo, faulty: faulty, src: src, ship: &Shipper{Repo: repo, Product: "tracker", Source: src, MaxBatch: 10}}
}

func (b *bundle) mustShip(t *testing.T) Shipped {
	t.Helper()
	res, err := b.ship.Ship(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestShipSnapshotThenSegmentsAndVerify(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.write("acme", 5)
	b.src.write("zed", 3)
	res := b.mustShip(t)
	if res.Snapshot == nil || res.Snapshot.Records != 8 || res.Snapshot.Last != 8 || res.Changes != 0 {
		t.Fatalf("first ship = %+v; want a snapshot of 8 rows at position 8 and no segment", res)
	}
	for i := 0; i < 7; i++ {
		b.src.write(fmt.Sprint("t", i), 4)
	}
	res = b.mustShip(t)
	if res.Changes != 28 || res.Segments != 3 || res.Cursor.Pos != 36 {
		t.Fatalf("second ship = %+v; want 28 changes in 3 whole-transaction segments up to 36", res)
	}
	if b.src.acked.Pos != 36 {
		t.Errorf("acked %d, want 36", b.src.acked.Pos)
	}
	if again := b.mustShip(t); again.Changes != 0 {
		t.Errorf("nothing pending, yet shipped %+v", again)
	}
	n, problems, err := b.repo.Verify(ctx, "tracker")
	if err != nil || len(problems) != 0 || n != 4 {
		t.Fatalf("verify: %d objects, %v, %v", n, problems, err)
	}
	st, err := b.repo.Status(ctx, "tracker", 100)
	if err != nil {
		t.Fatal(err)
	}
	if st.LastPos != 36 || st.Snapshots != 1 || st.Segments != 3 || st.Red || st.Ratio <= 0 {
		t.Errorf("status = %+v", st)
	}
}

// Ship (`backup run`) ships what was pending when it began and returns, even
// while the application never stops writing, when no read comes back empty.
func TestShipReturnsUnderSteadyWrites(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.write("acme", 2)
	b.mustShip(t) // the first snapshot
	for i := range 5 {
		b.src.write(fmt.Sprint("t", i), 1)
	}
	reads := 0
	b.src.afterRead = func() {
		if reads++; reads < 1000 {
			b.src.write("busy", 1)
		}
	}
	res := b.mustShip(t)
	if reads >= 1000 {
		t.Fatalf("Ship read %d times under steady writes: it waited for a read that finds nothing", reads)
	}
	if res.Cursor.Pos < 7 {
		t.Fatalf("Ship stopped at %d, before the 5 changes pending when it began (up to 7)", res.Cursor.Pos)
	}
}

// A snapshot that takes longer than the lease lasts keeps the lease: a
// standby process must not take it over and ship the same positions.
func TestSnapshotKeepsTheLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.write("acme", 2)
	ttl := 300 * time.Millisecond
	b.ship.LeaseTTL = ttl
	standby := &Shipper{Repo: b.repo, Product: "tracker", Source: b.src, Owner: "standby", LeaseTTL: ttl}
	var standbyErr error
	b.src.duringSnapshot = func() {
		b.src.duringSnapshot = nil
		time.Sleep(4 * ttl)
		_, standbyErr = standby.Ship(ctx)
	}
	res := b.mustShip(t)
	if res.Snapshot == nil {
		t.Fatalf("the first Ship took no snapshot: %+v", res)
	}
	if !errors.Is(standbyErr, ErrLeased) {
		t.Fatalf("a standby shipping while the first snapshot was built (longer than the lease lasts) got %v; want ErrLeased, the lease kept by the builder", standbyErr)
	}
}

// A crash after an upload and before the catalog recorded it: the restarted
// shipper finds the object and continues after it, with no duplicate.
func TestShipperAdoptsAnUploadTheCatalogMissed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.write("acme", 2)
	b.mustShip(t)
	b.src.write("acme", 3)
	b.mustShip(t)
	if _, err := b.repo.State.DB().Exec("DELETE FROM backup_objects WHERE kind = 'segment'"); err != nil {
		t.Fatal(err)
	}
	b.src.write("acme", 2)
	restarted := &Shipper{Repo: b.repo, Product: "tracker", Source: b.src, MaxBatch: 10}
	res, err := restarted.Ship(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Changes != 2 || res.Cursor.Pos != 7 {
		t.Fatalf("after restart shipped %+v; want only the 2 new changes", res)
	}
	if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
		t.Fatalf("verify after restart: %v %v", problems, err)
	}
}

// With the blob store down nothing is acknowledged, so the source keeps
// every change; status turns red; shipping catches up when it is back.
func TestBlobStoreDownKeepsChangesAndTurnsRed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.write("acme", 1)
	b.mustShip(t)
	b.faulty.SetDown(true)
	for i := 0; i < 5; i++ {
		b.src.write("acme", 1)
	}
	if _, err := b.ship.Ship(ctx); err == nil {
		t.Fatal("shipping into a blob store that is down succeeded")
	}
	if b.src.acked.Pos != 1 {
		t.Fatalf("acknowledged position %d while the store was down; changes could be lost", b.src.acked.Pos)
	}
	st, err := b.repo.Status(ctx, "tracker", 3)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Red || st.Backlog != 5 || st.Error == "" {
		t.Errorf("status while down = %+v; want red, backlog 5, the error", st)
	}
	b.faulty.SetDown(false)
	if res := b.mustShip(t); res.Changes != 5 {
		t.Errorf("after recovery shipped %d changes, want 5", res.Changes)
	}
	if st, _ := b.repo.Status(ctx, "tracker", 3); st.Red || st.Backlog != 0 {
		t.Errorf("status after recovery = %+v", st)
	}
}

func TestVerifyFindsCorruptionAndGaps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.src.write("acme", 2)
	b.mustShip(t)
	for i := 0; i < 3; i++ {
		b.src.write("acme", 10)
		b.mustShip(t)
	}
	objs, err := b.repo.Objects(ctx, "tracker")
	if err != nil || len(objs) != 4 {
		t.Fatalf("objects: %v %v", objs, err)
	}
	// Flip one byte in the middle of the second segment; remove the third.
	corrupt := filepath.Join(b.dir, "backups", objs[2].Key)
	raw, err := os.ReadFile(corrupt)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0x40
	if err := os.WriteFile(corrupt, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(b.dir, "backups", objs[1].Key)); err != nil {
		t.Fatal(err)
	}
	_, problems, err := b.repo.Verify(ctx, "tracker")
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprint(problems)
	for _, want := range []string{objs[2].Key, "gap: positions 3..22 are missing", objs[1].Key + " listed in the catalog but missing"} {
		if !strings.Contains(strings.ReplaceAll(text, ": ", " "), strings.ReplaceAll(want, ": ", " ")) {
			t.Errorf("verify problems %v do not mention %q", problems, want)
		}
	}
	if VerifyError(problems) == nil {
		t.Error("problems did not turn into a refusal")
	}
}
