package productdb

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// The Watch sees other connections' commits, once each, and nothing
// while nobody commits.
func TestWatchSeesOtherConnectionsCommits(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p.db")
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec("CREATE TABLE t (x)"); err != nil {
		t.Fatal(err)
	}
	db, err := Open(ctx, "sqlite:"+path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	w, err := db.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	look := func(want bool, what string) {
		t.Helper()
		got, err := w.Changed(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%s: Changed = %v, want %v", what, got, want)
		}
	}
	look(false, "nothing committed")
	if _, err := raw.Exec("INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	look(true, "after another connection's commit")
	look(false, "the same commit looked at again")
	if _, err := db.db.ExecContext(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	look(true, "after a commit on another connection of the same pool")
}
