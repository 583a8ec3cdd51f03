// Package change defines a committed row change as Lifeline captures it from
// a product database and stores it in the backup repository. Capture
// produces Changes, the repository format encodes them, restore replays them.
package change

import (
	"fmt"
	"math"
	"time"
)

// Op is what happened to a row.
type Op byte

const (
	Insert Op = 'I'
	Update Op = 'U'
	Delete Op = 'D'
	// Snapshot marks a row image taken by a full snapshot, not a change.
	Snapshot Op = 'S'
)

func (o Op) String() string {
	switch o {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	case Snapshot:
		return "snapshot"
	}
	return fmt.Sprintf("op(%d)", byte(o))
}

// Kind is the type of a Value. It keeps exactly what the database had, so
// that a row written back is the same row: SQLite's storage classes, and
// PostgreSQL's text representation of any type.
type Kind byte

const (
	Null  Kind = 0
	Int   Kind = 1 // Value.Int
	Float Kind = 2 // Value.Float, every bit kept (-0, NaN payloads, infinities)
	Text  Kind = 3 // Value.Bytes holds UTF-8 (or whatever the database stored)
	Blob  Kind = 4 // Value.Bytes
	// PG is PostgreSQL's text output of a value of any type (numeric,
	// timestamptz, jsonb, arrays…), written back through the type's input
	// function, which round-trips exactly.
	PG Kind = 5
	// Absent marks a column the table did not have when the row was
	// captured: a restore leaves it to the column's default, as the
	// database filled it when the column was added. Only backup snapshots
	// compacted across a schema change hold it (format version 2).
	Absent Kind = 6
)

// Value is one column value.
type Value struct {
	Kind  Kind
	Int   int64
	Float float64
	Bytes []byte
}

// Equal reports whether two values are identical, bit for bit for floats.
func (v Value) Equal(w Value) bool {
	if v.Kind != w.Kind {
		return false
	}
	switch v.Kind {
	case Int:
		return v.Int == w.Int
	case Float:
		return math.Float64bits(v.Float) == math.Float64bits(w.Float)
	case Text, Blob, PG:
		return string(v.Bytes) == string(w.Bytes)
	}
	return true
}

// Column is one column of a table as captured.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"` // declared type, for creating tables out of place
}

// Table is a protected table's shape at one schema version.
type Table struct {
	Name       string   `json:"name"`
	Columns    []Column `json:"columns"`
	PrimaryKey []int    `json:"primary_key"` // indexes into Columns
	Tenant     int      `json:"tenant"`      // index of the tenant column in Columns
}

// Change is one committed change to one row of a protected table.
type Change struct {
	// Pos is the change's position in its product's stream: 1, 2, 3… with no
	// gaps, so a missing change is detectable.
	Pos uint64
	// Tx numbers the transaction; changes of one transaction are adjacent
	// and share Tx. TxEnd marks the last change of a transaction.
	Tx    uint64
	TxEnd bool
	// Time is the commit time (PostgreSQL) or the statement time (SQLite).
	Time   time.Time
	Tenant string
	Table  string
	Op     Op
	// Row is the full row image in the table's column order: the new row
	// for inserts and updates, the old row for deletes.
	Row []Value
}

// Key returns the primary key values of the change's row.
func (c *Change) Key(t *Table) []Value {
	k := make([]Value, len(t.PrimaryKey))
	for i, idx := range t.PrimaryKey {
		if idx < len(c.Row) {
			k[i] = c.Row[idx]
		}
	}
	return k
}
