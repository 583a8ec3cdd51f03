// Package productdbtest gives tests of packages that work on product
// databases (productdb, capture, restore…) the same two real engines: a
// fresh SQLite file and a fresh database on the pgtest PostgreSQL server.
package productdbtest

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite" // the "sqlite" driver the application connection uses

	"lifeline/internal/pgtest"
)

// Engine is what a conformance suite needs to know about one engine.
type Engine struct {
	Name string
	// NewDB creates an empty product database: its Lifeline DSN, the base
	// folder sqlite: paths are relative to, and a plain connection the
	// "application" writes through.
	NewDB func(t *testing.T) (dsn, base string, raw *sql.DB)
	// Types fills the {id}, {int} and {blob} placeholders of shared DDL.
	Types *strings.Replacer
}

// Engines are SQLite and PostgreSQL, in that order.
var Engines = []Engine{
	{
		Name: "sqlite",
		NewDB: func(t *testing.T) (string, string, *sql.DB) {
			dir := t.TempDir()
			path := filepath.Join(dir, "product.db")
			raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)&_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { raw.Close() })
			return "sqlite:product.db", dir, raw
		},
		Types: strings.NewReplacer("{id}", "INTEGER PRIMARY KEY", "{int}", "INTEGER", "{blob}", "BLOB"),
	},
	{
		Name: "postgres",
		NewDB: func(t *testing.T) (string, string, *sql.DB) {
			dsn := pgtest.NewDB(t)
			raw, err := sql.Open("pgx", dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { raw.Close() })
			return dsn, "", raw
		},
		Types: strings.NewReplacer("{id}", "bigint PRIMARY KEY", "{int}", "bigint", "{blob}", "bytea"),
	},
}

// Each runs fn against every engine, in parallel subtests.
func Each(t *testing.T, fn func(t *testing.T, e Engine)) {
	t.Parallel()
	for _, e := range Engines {
		t.Run(e.Name, func(t *testing.T) {
			t.Parallel()
			fn(t, e)
		})
	}
}
