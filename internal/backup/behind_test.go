package backup_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"lifeline/internal/backup"
	"lifeline/internal/blob"
	"lifeline/internal/capture"
	"lifeline/internal/capture/capturetest"
	"lifeline/internal/productdb"
)

// A `backup run` whose read cannot record where the newest transactions
// end, because the application holds SQLite's write lock, must wait and
// ship them, not return as if nothing were pending: a restore to a moment
// after them would then be refused ("known complete only up to …"), or
// `backup status` would show them shipped when they are not.
func TestShipWaitsOutTheWriteLock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "product.db")
	app, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	for _, q := range []string{
		`CREATE TABLE sites (id INTEGER PRIMARY KEY, name TEXT NOT NULL)`,
		`CREATE TABLE docs (id INTEGER PRIMARY KEY, site_id INTEGER NOT NULL REFERENCES sites(id), body TEXT NOT NULL)`,
		`INSERT INTO sites VALUES (1, 'one'), (2, 'two')`,
	} {
		if _, err := app.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	repo, src := protectedSQLite(t, dir, "p")
	sh := &backup.Shipper{Repo: repo, Product: "p", Source: src}
	if _, err := sh.Ship(ctx); err != nil { // the first snapshot
		t.Fatal(err)
	}
	const writes = 5
	for i := range writes {
		if _, err := app.ExecContext(ctx, "INSERT INTO docs (site_id, body) VALUES (1, ?)", i); err != nil {
			t.Fatal(err)
		}
	}
	// The application takes the write lock and keeps it a while.
	lock, err := app.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, _ = lock.ExecContext(ctx, "COMMIT")
		close(released)
	}()
	res, err := sh.Ship(ctx)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-released:
	default:
		t.Fatalf("Ship returned while the application still held the write lock, having shipped %d changes of the %d pending", res.Changes, writes)
	}
	if res.Changes != writes {
		t.Fatalf("Ship shipped %d changes, want the %d committed before it began", res.Changes, writes)
	}
	st, err := repo.Status(ctx, "p", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Backlog != 0 {
		t.Fatalf("status after Ship: %d changes waiting, want none", st.Backlog)
	}
}

// protectedSQLite protects dir/product.db (with sites as its tenants
// table, keyed by site_id) as product, and opens its capture source and a
// repository in dir/backups.
func protectedSQLite(t *testing.T, dir, product string) (*backup.Repo, capture.Source) {
	t.Helper()
	_, store, src := capturetest.SQLite(t, dir, "sqlite:product.db", productdb.Spec{Product: product, TenantColumn: "site_id", TenantsTable: "sites"})
	files, err := blob.OpenFile(filepath.Join(dir, "backups"))
	if err != nil {
		t.Fatal(err)
	}
	repo, err := backup.OpenRepo(context.Background(), &backup.Repo{Blobs: files, State: store})
	if err != nil {
		t.Fatal(err)
	}
	return repo, src
}
