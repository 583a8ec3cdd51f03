package productdb

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"

	"lifeline/internal/change"
)

// Row hashing: how a restore proves that a tenant's live rows are exactly
// the rows rebuilt from the backup. docs/restore.md describes the encoding;
// it is part of the restore report's contract, so it must not change
// silently.
//
// Every value is encoded canonically for its engine:
//
//   - SQLite: its storage class and payload, so 1, 1.0, '1' and x'31' all
//     differ: kind byte (0 NULL, 1 integer, 2 real, 3 text, 4 blob), then an
//     integer as 8 bytes big-endian two's complement, a real as its 8 IEEE
//     754 bytes big-endian, text and blobs as a uvarint length and the bytes.
//   - PostgreSQL: its text output (what `col::text` returns, and what every
//     type's input function reads back exactly): 0 for NULL, else 5, a
//     uvarint length and the text. Values captured in another kind are
//     turned into the text PostgreSQL would print for them.
//
// For each row and each column, the term SHA-256(table, key values, column
// name, value) — strings as uvarint length and bytes, values as above — is
// added, as four big-endian 64-bit lanes modulo 2^64, to that column's sum.
// Sums do not depend on the order rows are read in, so the rebuilt stream
// (in backup order) and the live table (in any order) can be compared, and
// they are kept per column so that a column added since the restored moment
// (present live with its default, absent from the backup) can be left out
// of the comparison without re-reading anything. A table's digest is the
// SHA-256 of its row count and its compared columns' names and sums.

// TableHash accumulates the hash of a set of rows of one table.
type TableHash struct {
	Table string
	Rows  int64
	// sums per column name.
	sums map[string]*[4]uint64
	// partial names the columns some added rows did not have.
	partial map[string]bool
	engine  string
	buf     []byte
}

// NewTableHash starts an empty hash of rows of table on engine (SQLite or
// Postgres).
func NewTableHash(engine, table string) *TableHash {
	return &TableHash{Table: table, engine: engine, sums: map[string]*[4]uint64{}, partial: map[string]bool{}}
}

// Add hashes one row: key are its primary key values, in the live table's
// key order; cols and vals are the columns the row has and their values.
// Columns of want that the row lacks are marked partial (left out of
// comparisons).
func (h *TableHash) Add(key []change.Value, cols []string, vals []change.Value, want []string) {
	h.Rows++
	prefix := appendString(h.buf[:0], h.Table)
	for _, k := range key {
		prefix = h.appendValue(prefix, k)
	}
	n := len(prefix)
	for i, c := range cols {
		b := appendString(prefix[:n], c)
		b = h.appendValue(b, vals[i])
		sum := sha256.Sum256(b)
		acc := h.sums[c]
		if acc == nil {
			acc = new([4]uint64)
			h.sums[c] = acc
		}
		for l := range acc {
			acc[l] += binary.BigEndian.Uint64(sum[l*8:])
		}
		prefix = b
	}
	h.buf = prefix[:0]
	if len(cols) < len(want) { // cols is a subset of want
		for _, c := range want {
			if !contains(cols, c) {
				h.partial[c] = true
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Partial lists the columns left out of comparisons because some rows did
// not have them.
func (h *TableHash) Partial() []string {
	var out []string
	for c := range h.partial {
		out = append(out, c)
	}
	return out
}

// Equal reports whether h and o hash the same rows over cols, leaving out
// the columns either marks partial.
func (h *TableHash) Equal(o *TableHash, cols []string) bool {
	return h.Digest(cols, o) == o.Digest(cols, h)
}

// Digest is the hex digest of the rows over cols, leaving out the columns
// h or other (if given) marks partial.
func (h *TableHash) Digest(cols []string, other *TableHash) string {
	d := sha256.New()
	var b []byte
	b = binary.BigEndian.AppendUint64(b, uint64(h.Rows))
	for _, c := range cols {
		if h.partial[c] || (other != nil && other.partial[c]) {
			continue
		}
		b = appendString(b, c)
		var zero [4]uint64
		acc := h.sums[c]
		if acc == nil {
			acc = &zero
		}
		for _, l := range acc {
			b = binary.BigEndian.AppendUint64(b, l)
		}
	}
	d.Write(b)
	return hex.EncodeToString(d.Sum(nil))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendValue appends v's canonical encoding for the hash's engine.
func (h *TableHash) appendValue(b []byte, v change.Value) []byte { return AppendValue(h.engine, b, v) }

// AppendValue appends v's canonical encoding on engine (see above): equal
// encodings, equal values as the database stores them.
func AppendValue(engine string, b []byte, v change.Value) []byte {
	if engine == Postgres {
		text, null := PGText(v)
		if null {
			return append(b, 0)
		}
		b = append(b, byte(change.PG))
		b = binary.AppendUvarint(b, uint64(len(text)))
		return append(b, text...)
	}
	b = append(b, byte(v.Kind))
	switch v.Kind {
	case change.Int:
		b = binary.BigEndian.AppendUint64(b, uint64(v.Int))
	case change.Float:
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(v.Float))
	case change.Text, change.Blob, change.PG:
		b = binary.AppendUvarint(b, uint64(len(v.Bytes)))
		b = append(b, v.Bytes...)
	}
	return b
}

// RowDigest is one row's SHA-256 over its table, key and columns' names and
// values, canonically encoded: for comparing single rows (a dry run).
func RowDigest(engine, table string, key []change.Value, cols []string, vals []change.Value) [32]byte {
	b := appendString(nil, table)
	for _, k := range key {
		b = AppendValue(engine, b, k)
	}
	for i, c := range cols {
		b = appendString(b, c)
		b = AppendValue(engine, b, vals[i])
	}
	return sha256.Sum256(b)
}

// PGText is the text PostgreSQL prints for v (and reads back through the
// column type's input function), or null. Values captured from PostgreSQL
// are already text; the other kinds are converted as PostgreSQL prints
// them.
func PGText(v change.Value) (text []byte, null bool) {
	switch v.Kind {
	case change.Null:
		return nil, true
	case change.Int:
		return strconv.AppendInt(nil, v.Int, 10), false
	case change.Float:
		switch {
		case math.IsNaN(v.Float):
			return []byte("NaN"), false
		case math.IsInf(v.Float, 1):
			return []byte("Infinity"), false
		case math.IsInf(v.Float, -1):
			return []byte("-Infinity"), false
		}
		return strconv.AppendFloat(nil, v.Float, 'g', -1, 64), false
	case change.Blob:
		out := make([]byte, 2+hex.EncodedLen(len(v.Bytes)))
		copy(out, `\x`)
		hex.Encode(out[2:], v.Bytes)
		return out, false
	}
	return v.Bytes, false
}

// sqliteArg is the driver value that stores v in SQLite with its storage
// class: int64, float64, string, []byte or nil.
func sqliteArg(v change.Value) (any, error) {
	switch v.Kind {
	case change.Null:
		return nil, nil
	case change.Int:
		return v.Int, nil
	case change.Float:
		return v.Float, nil
	case change.Text:
		return string(v.Bytes), nil
	case change.Blob:
		if v.Bytes == nil {
			return []byte{}, nil
		}
		return v.Bytes, nil
	}
	return nil, fmt.Errorf("a PostgreSQL value (%q) cannot be written to a SQLite database", truncate(v.Bytes))
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

// scanValue turns what the driver scanned for a column read by selectList
// into a Value: SQLite's storage class, or PostgreSQL's text.
func (db *DB) scanValue(v any) (change.Value, error) {
	if db.d.engine() == Postgres {
		switch x := v.(type) {
		case nil:
			return change.Value{}, nil
		case string:
			return change.Value{Kind: change.PG, Bytes: []byte(x)}, nil
		case []byte:
			return change.Value{Kind: change.PG, Bytes: bytes.Clone(x)}, nil
		}
		return change.Value{}, fmt.Errorf("unexpected PostgreSQL value %T", v)
	}
	switch x := v.(type) {
	case nil:
		return change.Value{}, nil
	case int64:
		return change.Value{Kind: change.Int, Int: x}, nil
	case float64:
		return change.Value{Kind: change.Float, Float: x}, nil
	case string:
		return change.Value{Kind: change.Text, Bytes: []byte(x)}, nil
	case []byte:
		b := bytes.Clone(x)
		if b == nil {
			b = []byte{}
		}
		return change.Value{Kind: change.Blob, Bytes: b}, nil
	}
	return change.Value{}, fmt.Errorf("unexpected SQLite value %T", v)
}
