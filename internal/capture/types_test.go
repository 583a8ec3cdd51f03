package capture

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"testing"

	"lifeline/internal/change"
)

// TestTypesSQLite: every storage class comes through capture exactly as
// SQLite stores it, in the stream and in the snapshot: 64-bit integers at
// the limits, floats bit for bit (-0, the smallest subnormal, infinities;
// SQLite stores NaN as NULL), blobs with zero bytes, empty blob versus
// empty text versus NULL, unicode, JSON text, text in a DATETIME column,
// and values whose class differs from the column's affinity.
func TestTypesSQLite(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0], 1)
	x.exec(t, `CREATE TABLE vals (id INTEGER PRIMARY KEY, site_id TEXT NOT NULL, i INTEGER, r REAL, t TEXT, b BLOB, u, d DATETIME, j TEXT)`)
	x.protect(t)
	src := x.open(t)
	_, cur := x.snapshot(t, src)

	I := func(v int64) change.Value { return change.Value{Kind: change.Int, Int: v} }
	F := func(v float64) change.Value { return change.Value{Kind: change.Float, Float: v} }
	T := func(v string) change.Value { return change.Value{Kind: change.Text, Bytes: []byte(v)} }
	B := func(v ...byte) change.Value { return change.Value{Kind: change.Blob, Bytes: v} }
	N := change.Value{}
	S := T("s000")
	json := `{"a": [1, 2.50, "x"], "ü": null}`
	type row struct {
		args []any
		want []change.Value
	}
	rows := []row{
		{[]any{1, "s000", int64(math.MaxInt64), 1e-308, "", []byte{0, 0, 1, 0}, math.Copysign(0, -1), "2024-02-29 12:34:56.789+05:30", json},
			[]change.Value{I(1), S, I(math.MaxInt64), F(1e-308), T(""), B(0, 0, 1, 0), F(math.Copysign(0, -1)), T("2024-02-29 12:34:56.789+05:30"), T(json)}},
		{[]any{2, "s000", int64(math.MinInt64), math.Inf(1), "héllo ✓ 𝄞 \x00 nul", []byte{}, 5e-324, nil, nil},
			[]change.Value{I(2), S, I(math.MinInt64), F(math.Inf(1)), T("héllo ✓ 𝄞 \x00 nul"), B(), F(5e-324), N, N}},
		{[]any{3, "s000", 0, math.Inf(-1), nil, nil, math.MaxFloat64, "not a date", ""},
			[]change.Value{I(3), S, I(0), F(math.Inf(-1)), N, N, F(math.MaxFloat64), T("not a date"), T("")}},
		{[]any{4, "s000", "abc", 3, "123", []byte("text as blob"), "123", 20240229, nil},
			[]change.Value{I(4), S, T("abc"), F(3), T("123"), B([]byte("text as blob")...), T("123"), I(20240229), N}},
		{[]any{5, "s000", nil, math.NaN(), nil, nil, math.NaN(), nil, nil},
			[]change.Value{I(5), S, N, N, N, N, N, N, N}},
		// A REAL column stores an integral float as an integer on disk and
		// reads it back as REAL; -0 then comes back as 0, in the table and
		// in the log alike.
		{[]any{6, "s000", math.Copysign(0, -1), math.Copysign(0, -1), 1.5, nil, -1.5, 1.5, nil},
			[]change.Value{I(6), S, I(0), F(0), T("1.5"), N, F(-1.5), F(1.5), N}},
	}
	for _, r := range rows {
		x.exec(t, "INSERT INTO vals (id, site_id, i, r, t, b, u, d, j) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", r.args...)
	}
	b, err := src.Read(x.ctx, cur, 100)
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, cur, b)
	if len(b.Changes) != len(rows) {
		t.Fatalf("%d changes, want %d", len(b.Changes), len(rows))
	}
	for k, c := range b.Changes {
		for i, v := range c.Row {
			if !v.Equal(rows[k].want[i]) {
				t.Errorf("row %d column %d: captured %+v, want %+v", k+1, i, v, rows[k].want[i])
			}
		}
	}
	// The snapshot reads the same values back from the table.
	m, _ := x.snapshot(t, src)
	vals := m.tables["vals"]
	for _, c := range b.Changes {
		got := m.rows["vals"][keyOf(vals, c.Row)]
		for i := range c.Row {
			if !got[i].Equal(c.Row[i]) {
				t.Errorf("row %v column %d: snapshot %+v, stream %+v", c.Row[0].Int, i, got[i], c.Row[i])
			}
		}
	}
}

// TestTypesPostgres: every column type comes through as PostgreSQL's text
// output, identical in the stream and the snapshot, and goes back through
// the type's input function to the same value: bigint limits, double
// precision -0, NaN, ±Infinity, 1e-308 and the smallest subnormal, real,
// numeric(38,10), text (empty versus NULL, unicode, quotes), bytea with
// zero bytes, json (kept verbatim) and jsonb, timestamptz and timestamp,
// date, interval, uuid, arrays with NULLs and quoting, boolean, and a large
// TOASTed text left unchanged by an UPDATE.
func TestTypesPostgres(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[1], 1)
	cols := []string{"id bigint PRIMARY KEY", "site_id text NOT NULL", "i bigint", "f double precision", "r real", "n numeric(38,10)",
		"t text", "b bytea", "j json", "jb jsonb", "ts timestamptz", "tsl timestamp", "d date", "iv interval", "u uuid",
		"a int[]", "ta text[]", "bo boolean", "big text"}
	x.exec(t, "CREATE TABLE vals ("+strings.Join(cols, ", ")+")")
	x.protect(t)
	src := x.open(t)
	_, cur := x.snapshot(t, src)

	noise := make([]byte, 150000)
	rand.Read(noise)
	big := hex.EncodeToString(noise) // incompressible: stored out of line
	type row struct {
		lits []string // SQL literals, id first
		want []string // captured text, "NULL" for NULL
	}
	rows := []row{
		{[]string{"1", "'s000'", "9223372036854775807", "'-0'", "'3.4028235e38'", "'1234567890123456789012345678.0123456789'",
			"''", `'\x00ff00'`, `'{"b": 1,   "a": [1,2]}'`, `'{"b": 1,   "a": [1,2]}'`, "'2024-02-29 12:34:56.123456+05:30'",
			"'2024-02-29 12:34:56.5'", "'2024-02-29'", "'1 year 2 mons 3 days 04:05:06.7'", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
			"'{1,NULL,3}'", `'{"a b","c,d",NULL,"\"q\""}'`, "true", "'" + big + "'"},
			[]string{"1", "s000", "9223372036854775807", "-0", "3.4028235e+38", "1234567890123456789012345678.0123456789",
				"", `\x00ff00`, `{"b": 1,   "a": [1,2]}`, `{"a": [1, 2], "b": 1}`, "2024-02-29 07:04:56.123456+00",
				"2024-02-29 12:34:56.5", "2024-02-29", "1 year 2 mons 3 days 04:05:06.7", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
				"{1,NULL,3}", `{"a b","c,d",NULL,"\"q\""}`, "t", big}},
		{[]string{"2", "'s000'", "-9223372036854775808", "'NaN'", "'-Infinity'", "'-0.0000000001'", "'héllo ✓ 𝄞 ''quoted'''", `'\x'`,
			"'[]'", "'null'", "'-infinity'", "'infinity'", "'4713-01-01 BC'", "'-1 days'", "NULL", "'{}'", "'{}'", "false", "NULL"},
			[]string{"2", "s000", "-9223372036854775808", "NaN", "-Infinity", "-0.0000000001", "héllo ✓ 𝄞 'quoted'", `\x`,
				"[]", "null", "-infinity", "infinity", "4713-01-01 BC", "-1 days", "NULL", "{}", "{}", "f", "NULL"}},
		{[]string{"3", "'s000'", "0", "'Infinity'", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"},
			[]string{"3", "s000", "0", "Infinity", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"}},
		{[]string{"4", "'s000'", "1", "'1e-308'", "'1.17549435e-38'", "'0'", "'x'", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"},
			[]string{"4", "s000", "1", "1e-308", "1.1754944e-38", "0.0000000000", "x", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"}},
		{[]string{"5", "'s000'", "1", "'4.9406564584124654e-324'", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"},
			[]string{"5", "s000", "1", "5e-324", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL"}},
	}
	for _, r := range rows {
		x.exec(t, "INSERT INTO vals VALUES ("+strings.Join(r.lits, ", ")+")")
	}
	// Unchanged TOAST: only bo changes; big must still be captured.
	x.exec(t, "UPDATE vals SET bo = false WHERE id = 1")
	rows[0].want[17] = "f"

	var changes []change.Change
	for len(changes) < len(rows)+1 {
		b, err := src.Read(x.ctx, cur, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Changes) == 0 {
			t.Fatalf("%d changes, want %d", len(changes), len(rows)+1)
		}
		checkBatch(t, cur, b)
		changes = append(changes, b.Changes...)
		cur = b.End
	}
	text := func(v change.Value) string {
		if v.Kind == change.Null {
			return "NULL"
		}
		if v.Kind != change.PG {
			t.Fatalf("kind %d", v.Kind)
		}
		return string(v.Bytes)
	}
	final := append([]change.Change{changes[len(rows)]}, changes[1:len(rows)]...) // row 1's latest image is the update
	if changes[len(rows)].Op != change.Update {
		t.Fatalf("last change %v, want update", changes[len(rows)].Op)
	}
	for k, c := range final {
		for i, v := range c.Row {
			if got := text(v); got != rows[k].want[i] {
				t.Errorf("row %d column %s: captured %.80q, want %.80q", k+1, cols[i], got, rows[k].want[i])
			}
		}
	}
	// The snapshot prints every value the same way.
	m, _ := x.snapshot(t, src)
	tab := m.tables["vals"]
	for _, c := range final {
		got := m.rows["vals"][keyOf(tab, c.Row)]
		for i := range c.Row {
			if !got[i].Equal(c.Row[i]) {
				t.Errorf("row %s column %s: snapshot %.80q, stream %.80q", c.Row[0].Bytes, cols[i], got[i].Bytes, c.Row[i].Bytes)
			}
		}
	}
	// Written back through each type's input function, the values are the
	// same values (compared as the database prints them).
	x.exec(t, "CREATE TABLE vals2 (LIKE vals)")
	for _, c := range final {
		args := make([]any, len(c.Row))
		ph := make([]string, len(c.Row))
		for i, v := range c.Row {
			ph[i] = fmt.Sprintf("$%d::text::%s", i+1, tab.Columns[i].Type)
			if v.Kind == change.PG {
				args[i] = string(v.Bytes)
			}
		}
		x.exec(t, "INSERT INTO vals2 VALUES ("+strings.Join(ph, ", ")+")", args...)
	}
	var diff, bits int
	if err := x.raw.QueryRow(`SELECT count(*) FROM vals v1 FULL JOIN vals2 v2 USING (id) WHERE v1::text IS DISTINCT FROM v2::text`).Scan(&diff); err != nil {
		t.Fatal(err)
	}
	if err := x.raw.QueryRow(`SELECT count(*) FROM vals v1 JOIN vals2 v2 USING (id)
		WHERE float8send(v1.f) IS DISTINCT FROM float8send(v2.f) OR v1.n IS DISTINCT FROM v2.n OR v1.ts IS DISTINCT FROM v2.ts OR v1.big IS DISTINCT FROM v2.big`).Scan(&bits); err != nil {
		t.Fatal(err)
	}
	if diff != 0 || bits != 0 {
		t.Fatalf("%d rows differ after writing the captured text back (%d by float bits, numeric, timestamptz or the large text)", diff, bits)
	}
}
