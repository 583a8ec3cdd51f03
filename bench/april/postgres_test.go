package main

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"lifeline/internal/demo"
	"lifeline/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// loaded generates a small demo and loads each product into the databases
// <product><suffix> on the shared server, once per suffix.
func loaded(t *testing.T, e *pgEngine, suffixes ...string) string {
	t.Helper()
	gen := t.TempDir()
	if err := demo.Generate(context.Background(), gen, demo.Options{Tenants: 6}); err != nil {
		t.Fatal(err)
	}
	for _, p := range products {
		for _, s := range suffixes {
			if err := e.srv.Exec("CREATE DATABASE " + p + s); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.srv.Exec("DROP DATABASE " + p + s + " WITH (FORCE)") })
			if err := demo.LoadPostgres(context.Background(), filepath.Join(gen, p+".db"), e.srv.URL(p+s), demo.Tables[p]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return gen
}

// The load keeps every row of every table, blobs byte for byte, and indexes
// the foreign keys the script's deletes are checked through.
func TestLoadCopiesTheDemoIntoPostgres(t *testing.T) {
	e := &pgEngine{srv: pgtest.Shared(t)}
	gen := loaded(t, e, "_load")
	for _, p := range products {
		src, err := sql.Open("sqlite", "file:"+filepath.Join(gen, p+".db")+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		dst := e.open(p + "_load")
		defer dst.Close()
		for _, tb := range demo.Tables[p] {
			var want, got int
			if err := src.QueryRow("SELECT count(*) FROM " + tb[0]).Scan(&want); err != nil {
				t.Fatal(err)
			}
			if err := dst.QueryRow("SELECT count(*) FROM " + tb[0]).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if want == 0 || got != want {
				t.Errorf("%s.%s: %d rows in PostgreSQL, want %d", p, tb[0], got, want)
			}
		}
	}
	src, _ := sql.Open("sqlite", "file:"+filepath.Join(gen, "tracker.db")+"?mode=ro")
	defer src.Close()
	dst := e.open("tracker_load")
	defer dst.Close()
	var want, got []byte
	if err := src.QueryRow("SELECT content FROM attachments WHERE id = 3").Scan(&want); err != nil {
		t.Fatal(err)
	}
	if err := dst.QueryRow("SELECT content FROM attachments WHERE id = 3").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 || string(got) != string(want) {
		t.Errorf("attachment 3: %x in PostgreSQL, want %x", got, want)
	}
	var n int
	if err := dst.QueryRow("SELECT count(*) FROM pg_indexes WHERE indexname IN ('comments_parent_id', 'comments_issue_id', 'insight_links_to_id')").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("%d of the 3 foreign-key indexes exist", n)
	}
}

// The script damages a tenant, the raw write-back puts its rows back from
// the restored database, and exact tells the two states apart.
func TestWriteBackUndoesTheScript(t *testing.T) {
	e := &pgEngine{srv: pgtest.Shared(t), dbs: map[string]*sql.DB{}}
	loaded(t, e, "_restored", "_limit")
	for _, p := range products {
		e.dbs[p] = e.open(p + "_limit")
		defer e.dbs[p].Close()
	}
	keys := []string{"2", "5"}
	script(e, keys)
	if n := e.exact(keys); n != 0 {
		t.Fatalf("after the script %d of 2 tenants equal the reference; want 0", n)
	}
	e.limit(keys)
	if n := e.exact(keys); n != 2 {
		t.Errorf("after the write-back %d of 2 tenants equal the reference; want 2", n)
	}
	if n := e.exact([]string{"1", "3"}); n != 2 {
		t.Errorf("%d of 2 untouched tenants equal the reference; want 2", n)
	}
}
