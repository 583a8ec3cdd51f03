package backup

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/blob"
	"lifeline/internal/blob/blobtest"
	"lifeline/internal/change"
)

// A fenced shipper's superseded upload is deleted by maintenance once it is
// older than SweepGrace, not before, not while pinned, and never under its
// Object Lock retention; an unrecorded upload a rescan would adopt is never
// swept, and the catalogued objects are untouched. On a folder and on S3
// (versitygw, Object Lock in governance mode).
func TestMaintenanceSweepsSupersededUploads(t *testing.T) {
	t.Parallel()
	for _, store := range []string{"file", "s3"} {
		for _, locked := range []bool{false, true} {
			name := store
			if locked {
				name += "/locked"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var blobs blob.Store
				if store == "s3" {
					var err error
					if blobs, err = blob.Open(ctx, blobtest.S3URL(blobtest.S3Endpoint(t), blobtest.LockBucket, "governance"), ""); err != nil {
						t.Fatal(err)
					}
				}
				b := setupOn(t, "sqlite:state.db", blobs)
				now := time.Now()
				b.repo.Now = func() time.Time { return now }
				if locked {
					b.repo.RetainFor = 72 * time.Hour
				}
				stale, other := stallPastTheLease(t, b, &now)
				other.Window = 30 * 24 * time.Hour
				b.src.write("acme", 1)
				if _, err := other.Ship(ctx); err != nil {
					t.Fatal(err)
				}
				catalogued, err := b.repo.Objects(ctx, "tracker")
				if err != nil {
					t.Fatal(err)
				}
				maintain := func(what string) []string {
					t.Helper()
					_, deleted, err := other.Maintain(ctx)
					if err != nil {
						t.Fatalf("%s: maintenance: %v", what, err)
					}
					return deleted
				}
				exists := func(key string) bool {
					t.Helper()
					_, err := b.repo.Blobs.Stat(ctx, key)
					if err != nil && !errors.Is(err, blob.ErrNotFound) {
						t.Fatal(err)
					}
					return err == nil
				}

				if deleted := maintain("within the grace period"); len(deleted) != 0 || !exists(stale) {
					t.Fatalf("within the grace period maintenance deleted %v", deleted)
				}
				now = now.Add(SweepGrace + time.Hour)
				if err := b.repo.Pin(ctx, "drill", []string{stale}, now.Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
				if deleted := maintain("pinned"); len(deleted) != 0 || !exists(stale) {
					t.Fatalf("maintenance deleted %v although %s is pinned", deleted, stale)
				}
				if err := b.repo.Unpin(ctx, "drill"); err != nil {
					t.Fatal(err)
				}
				now = now.Add(SweepEvery)
				deleted := maintain("past the grace period")
				if locked {
					if len(deleted) != 0 || !exists(stale) {
						t.Fatalf("maintenance deleted %v under Object Lock retention", deleted)
					}
				} else if !slices.Equal(deleted, []string{stale}) || exists(stale) {
					t.Fatalf("past the grace period maintenance deleted %v; want only the superseded %s", deleted, stale)
				}
				for _, o := range catalogued {
					if !exists(o.Key) {
						t.Fatalf("maintenance deleted the catalogued %s", o.Key)
					}
				}

				// Uploads a rescan adopts are never swept, however old: one
				// whose recording a crash cut short, and a merge of
				// catalogued segments whose recording was cut short.
				newest := catalogued[len(catalogued)-1].Key
				if _, err := b.repo.State.DB().Exec("DELETE FROM backup_objects WHERE key = ?", newest); err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				h := format.Header{Product: "tracker", First: 3, Last: 10, Source: 10, Tables: []change.Table{docs}, Created: now}
				if _, err := format.WriteSegment(&buf, h, b.src.log[2:10], b.repo.options()); err != nil {
					t.Fatal(err)
				}
				merged := segmentKey("tracker", 3, 10)
				if err := b.repo.Blobs.Put(ctx, merged, &buf, int64(buf.Len()), time.Time{}); err != nil {
					t.Fatal(err)
				}
				now = now.Add(SweepGrace)
				if deleted := maintain("unrecorded uploads"); len(deleted) != 0 || !exists(newest) || !exists(merged) {
					t.Fatalf("maintenance deleted %v; the unrecorded %s continues the catalog, %s merges it", deleted, newest, merged)
				}
				if _, err := b.repo.rescan(ctx, "tracker", nil); err != nil {
					t.Fatal(err)
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
	}
}

// listCounter counts List calls, and fails them while failing is set.
type listCounter struct {
	blob.Store
	lists   atomic.Int64
	failing atomic.Bool
}

func (l *listCounter) List(ctx context.Context, prefix string, fn func(blob.Info) error) error {
	l.lists.Add(1)
	if l.failing.Load() {
		return errors.New("listing failed")
	}
	return l.Store.List(ctx, prefix, fn)
}

// Maintenance lists a product's prefix to sweep it only once every
// SweepEvery, not at every pass (serve: every minute); a sweep that failed
// is tried again at the next pass; and a superseded upload past the grace
// is still deleted, by the next sweep due.
func TestMaintenanceSweepsOnceEverySweepEvery(t *testing.T) {
	t.Parallel()
	b, now, stale, other := superseded(t)
	other.Window = 30 * 24 * time.Hour
	lists := &listCounter{Store: b.repo.Blobs}
	b.repo.Blobs = lists
	maintain := func(what string, wantLists int64) []string {
		t.Helper()
		_, deleted, err := other.Maintain(ctx)
		if err != nil && !lists.failing.Load() {
			t.Fatalf("%s: maintenance: %v", what, err)
		}
		if n := lists.lists.Load(); n != wantLists {
			t.Fatalf("%s: %d listings of the blob store so far, want %d", what, n, wantLists)
		}
		return deleted
	}
	maintain("the first pass", 1)
	*now = now.Add(SweepEvery - time.Minute)
	maintain("a pass within the hour", 1)
	*now = now.Add(time.Minute)
	lists.failing.Store(true)
	maintain("a pass an hour after the last sweep", 2)
	lists.failing.Store(false)
	maintain("the pass after a failed sweep", 3)
	maintain("the pass after that", 3)

	b.src.write("acme", 1)
	if _, err := other.Ship(ctx); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(SweepGrace)
	if deleted := maintain("past the grace period", 4); !slices.Equal(deleted, []string{stale}) {
		t.Fatalf("maintenance deleted %v; want the superseded %s", deleted, stale)
	}
}
