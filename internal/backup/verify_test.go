package backup

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/blob/blobtest"
	"lifeline/internal/change"
	"lifeline/internal/fault"
	"lifeline/internal/pgtest"
	"lifeline/internal/productdb/productdbtest"
)

func TestMain(m *testing.M) {
	blobtest.S3Env()
	code := pgtest.Run(m)
	blobtest.StopS3()
	os.Exit(code)
}

// stateStores runs fn once on a SQLite state store and once on PostgreSQL.
func stateStores(t *testing.T, fn func(t *testing.T, b *bundle)) {
	t.Helper()
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			dsn := "sqlite:state.db"
			if engine == "postgres" {
				dsn = pgtest.NewDB(t)
			}
			fn(t, setupOn(t, dsn, nil))
		})
	}
}

// catalogDump is every row of the repository's tables in the state store,
// as text: what verify must leave byte for byte as it was.
func catalogDump(t *testing.T, db *sql.DB) string {
	t.Helper()
	var out strings.Builder
	for _, table := range []string{"backup_objects", "backup_shipper", "backup_pins", "backup_leases"} {
		rows, err := db.Query("SELECT * FROM " + table + " ORDER BY 1, 2")
		if err != nil {
			t.Fatal(err)
		}
		for _, vals := range productdbtest.Values(t, rows) {
			fmt.Fprintf(&out, "%s %q\n", table, vals)
		}
	}
	return out.String()
}

// Verify only reads. A catalog that lacks an object a crash left
// unrecorded is reported (with the command that records it), not
// repaired; a superseded upload is checked but no problem; a flipped byte
// in any object, catalogued or not, is found; and through all of it the
// catalog stays byte for byte the same. Then `backup run`'s rescan repairs
// the catalog and verify is clean. Listing what the catalog lacks only reads
// too.
func TestVerifyLeavesTheCatalogAsItIs(t *testing.T) {
	t.Parallel()
	stateStores(t, func(t *testing.T, b *bundle) {
		b.src.write("acme", 2)
		b.mustShip(t)
		for i := range 3 {
			b.src.write([]string{"acme", "zed"}[i%2], 5)
			b.mustShip(t)
		}
		// A superseded upload: positions 3-5, cut where nothing catalogued ends.
		var buf bytes.Buffer
		h := format.Header{Product: "tracker", First: 3, Last: 5, Source: 5, Tables: []change.Table{docs}, Created: time.Now()}
		if _, err := format.WriteSegment(&buf, h, b.src.log[2:5], b.repo.options()); err != nil {
			t.Fatal(err)
		}
		superseded := segmentKey("tracker", 3, 5)
		if err := b.repo.Blobs.Put(ctx, superseded, &buf, int64(buf.Len()), time.Time{}); err != nil {
			t.Fatal(err)
		}
		// The newest segment's recording was cut short by a crash.
		unrecorded := segmentKey("tracker", 13, 17)
		if _, err := b.repo.State.DB().Exec(b.repo.State.Rebind("DELETE FROM backup_objects WHERE key = ?"), unrecorded); err != nil {
			t.Fatal(err)
		}
		before := catalogDump(t, b.repo.State.DB())

		n, problems, err := b.repo.Verify(ctx, "tracker")
		if err != nil {
			t.Fatal(err)
		}
		if n != 5 || len(problems) != 1 || problems[0].Key != unrecorded || !strings.Contains(problems[0].Fix, "lifeline backup run") {
			t.Fatalf("verify checked %d objects, found %+v; want 5 checked and only %s unrecorded, fixed by `backup run`", n, problems, unrecorded)
		}
		if err := VerifyError(problems); fault.CodeOf(err) != fault.Refused || !strings.Contains(fault.HintOf(err), "lifeline backup run") {
			t.Errorf("the refusal %v (hint %q) does not name the repair", err, fault.HintOf(err))
		}
		if after := catalogDump(t, b.repo.State.DB()); after != before {
			t.Fatalf("verify changed the catalog:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		// So does the listing `backup list` prints, which tells the two apart.
		adopt, old, strays, err := b.repo.Unrecorded(ctx, "tracker")
		if err != nil || len(adopt) != 1 || adopt[0].Key != unrecorded || len(old) != 1 || old[0].Key != superseded || len(strays) != 0 {
			t.Fatalf("unrecorded: to record %+v, superseded %+v, strays %v, %v; want %s to record and %s superseded", adopt, old, strays, err, unrecorded, superseded)
		}
		if after := catalogDump(t, b.repo.State.DB()); after != before {
			t.Fatalf("listing changed the catalog:\nbefore:\n%s\nafter:\n%s", before, after)
		}

		var keys []string
		if err := filepath.WalkDir(filepath.Join(b.dir, "backups"), func(path string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				keys = append(keys, path)
			}
			return err
		}); err != nil || len(keys) != 5 {
			t.Fatalf("objects in the file store: %v %v", keys, err)
		}
		for _, path := range keys {
			key, _ := filepath.Rel(filepath.Join(b.dir, "backups"), path)
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			bad := bytes.Clone(raw)
			bad[len(bad)/3] ^= 0x20
			if err := os.WriteFile(path, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			_, problems, err := b.repo.Verify(ctx, "tracker")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(fmt.Sprint(problems), filepath.ToSlash(key)+" ") || VerifyError(problems) == nil {
				t.Errorf("a flipped byte in %s went unnoticed: %+v", key, problems)
			}
			if err := os.WriteFile(path, raw, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if after := catalogDump(t, b.repo.State.DB()); after != before {
			t.Fatalf("verifying damaged objects changed the catalog:\nbefore:\n%s\nafter:\n%s", before, after)
		}

		if _, err := b.repo.rescan(ctx, "tracker", nil); err != nil {
			t.Fatal(err)
		}
		if _, problems, err := b.repo.Verify(ctx, "tracker"); err != nil || len(problems) != 0 {
			t.Fatalf("verify after the rescan: %+v %v", problems, err)
		}
	})
}
