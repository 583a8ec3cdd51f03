// Package productdbtest gives tests of packages that work on product
// databases (productdb, capture, restore…) the same two real engines: a
// fresh SQLite file and a fresh database on the pgtest PostgreSQL server.
package productdbtest

import (
	"database/sql"
	"encoding/hex"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
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

// Dump renders every row of table matching where ("" for all) exactly, one
// string a row, sorted: on PostgreSQL the row's text; on SQLite each
// value's storage class and value, floats by their bits and blobs in hex,
// read without the column's declared type (a driver would turn DATETIME
// text into a time). The reference tests compare product data with.
func Dump(t testing.TB, raw *sql.DB, engine, table, where string) []string {
	t.Helper()
	if where == "" {
		where = "1=1"
	}
	quoted := `"` + strings.ReplaceAll(table, `"`, `""`) + `"`
	query := "SELECT r::text FROM " + quoted + " r WHERE " + where
	if engine != "postgres" {
		probe, err := raw.Query("SELECT * FROM " + quoted + " LIMIT 0")
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := probe.Columns()
		probe.Close()
		var sel []string
		for _, c := range cols {
			c = `"` + strings.ReplaceAll(c, `"`, `""`) + `"`
			sel = append(sel, "typeof("+c+")", "+"+c)
		}
		query = "SELECT " + strings.Join(sel, ", ") + " FROM " + quoted + " WHERE " + where
	}
	rows, err := raw.Query(query)
	if err != nil {
		t.Fatalf("%v\n%s", err, query)
	}
	var out []string
	for _, vals := range Values(t, rows) {
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = render(v)
		}
		out = append(out, strings.Join(parts, "|"))
	}
	sort.Strings(out)
	return out
}

// Values reads every row of rows as the values the driver gives, whatever
// the columns, and closes rows.
func Values(t testing.TB, rows *sql.Rows) [][]any {
	t.Helper()
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func render(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case float64:
		return "f:" + strconv.FormatFloat(x, 'g', -1, 64) + "/" + strconv.FormatUint(math.Float64bits(x), 16)
	case []byte:
		return "b:" + hex.EncodeToString(x)
	case string:
		return "s:" + strconv.Quote(x)
	default:
		return fmt.Sprintf("%T:%v", v, v)
	}
}

// SameDump reports every table whose rows in got differ from want.
func SameDump(t testing.TB, what string, want, got map[string][]string) {
	t.Helper()
	for table, rows := range want {
		if !slices.Equal(rows, got[table]) {
			t.Errorf("%s: table %s differs\nwant %d rows: %.600q\ngot  %d rows: %.600q", what, table, len(rows), rows, len(got[table]), got[table])
		}
	}
}
