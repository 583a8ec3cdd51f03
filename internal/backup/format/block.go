package format

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"lifeline/internal/change"
)

// Record order inside an object: tenant, table name, primary key values,
// position. Values of different kinds order by kind; floats by their bits in
// a total order (so -0 < +0 and NaNs have a place); bytes lexicographically.
// The order only has to be deterministic: writer and reader share it.

func compareValue(a, b change.Value) int {
	if a.Kind != b.Kind {
		return cmp.Compare(a.Kind, b.Kind)
	}
	switch a.Kind {
	case change.Int:
		return cmp.Compare(a.Int, b.Int)
	case change.Float:
		return cmp.Compare(floatOrder(a.Float), floatOrder(b.Float))
	case change.Text, change.Blob, change.PG:
		return bytes.Compare(a.Bytes, b.Bytes)
	}
	return 0
}

func floatOrder(f float64) uint64 {
	u := math.Float64bits(f)
	if u>>63 == 1 {
		return ^u
	}
	return u | 1<<63
}

// CompareRows orders two rows of one tenant as objects store them: by table
// name, then primary key values, then position. t and u are the rows'
// tables. Producers of snapshot rows sort with it before SnapshotWriter.Add.
func CompareRows(a *change.Change, t *change.Table, b *change.Change, u *change.Table) int {
	c, _ := compareRows(a, t, b, u)
	return c
}

// compareRows compares two changes of one tenant by (table, key, position);
// t and u are their tables. sameKey reports whether table and key are equal.
func compareRows(a *change.Change, t *change.Table, b *change.Change, u *change.Table) (c int, sameKey bool) {
	if c := strings.Compare(t.Name, u.Name); c != 0 {
		return c, false
	}
	for _, i := range t.PrimaryKey {
		if c := compareValue(a.Row[i], b.Row[i]); c != 0 {
			return c, false
		}
	}
	return cmp.Compare(a.Pos, b.Pos), true
}

// checkOrder reports why b cannot follow a in an object of kind k, or nil.
// Segments hold each position once, so (table, key, position) strictly
// ascends. Snapshots hold one image per row: the key strictly ascends, and
// for tables without a primary key (where rows may repeat) the position
// does not descend.
func checkOrder(k Kind, a *change.Change, t *change.Table, b *change.Change, u *change.Table) error {
	c, same := compareRows(a, t, b, u)
	switch {
	case c > 0:
		return fmt.Errorf("row of table %q at position %d sorts before the row before it (position %d)", u.Name, b.Pos, a.Pos)
	case k == Segment && c == 0:
		return fmt.Errorf("position %d appears twice", b.Pos)
	case k == Snapshot && same && len(t.PrimaryKey) > 0:
		return fmt.Errorf("table %q: two images of one primary key (positions %d and %d)", u.Name, a.Pos, b.Pos)
	}
	return nil
}

// validateChange checks a change against the object it goes into.
func validateChange(h *Header, c *change.Change, t *change.Table) error {
	switch {
	case h.Kind == Segment && c.Op != change.Insert && c.Op != change.Update && c.Op != change.Delete:
		return fmt.Errorf("position %d: operation %v does not belong in a segment", c.Pos, c.Op)
	case h.Kind == Snapshot && c.Op != change.Snapshot:
		return fmt.Errorf("position %d: operation %v does not belong in a snapshot", c.Pos, c.Op)
	case h.Kind == Snapshot && c.Pos > h.Last:
		return fmt.Errorf("row at position %d is after the snapshot's position %d", c.Pos, h.Last)
	case c.Tenant == "" || len(c.Tenant) > maxString:
		return fmt.Errorf("position %d: tenant key empty or longer than %d bytes", c.Pos, maxString)
	case !timeOK(c.Time):
		return fmt.Errorf("position %d: time %v outside the years 1..9999", c.Pos, c.Time)
	case len(c.Row) != len(t.Columns):
		return fmt.Errorf("position %d: table %q row has %d values for %d columns", c.Pos, t.Name, len(c.Row), len(t.Columns))
	}
	for i, v := range c.Row {
		switch {
		case v.Kind <= change.PG:
		case v.Kind == change.Absent && h.Kind == Snapshot && h.Version >= 2:
			if i == t.Tenant || slices.Contains(t.PrimaryKey, i) {
				return fmt.Errorf("position %d: table %q column %d: the tenant and primary key columns cannot be absent", c.Pos, t.Name, i)
			}
		default:
			return fmt.Errorf("position %d: table %q column %d: value kind %d unknown in a version %d %s", c.Pos, t.Name, i, v.Kind, h.Version, h.Kind)
		}
	}
	return nil
}

const flagTxEnd = 1

// appendRecord encodes one change; ti is its table's index in the header.
func appendRecord(b []byte, c *change.Change, ti int) []byte {
	b = binary.AppendUvarint(b, uint64(ti))
	b = append(b, byte(c.Op))
	b = binary.AppendUvarint(b, c.Pos)
	b = binary.AppendUvarint(b, c.Tx)
	var flags byte
	if c.TxEnd {
		flags |= flagTxEnd
	}
	b = append(b, flags)
	b = appendTime(b, c.Time)
	for _, v := range c.Row {
		b = appendValue(b, v)
	}
	return b
}

// blockHead is the start of a block's plaintext: its tenant and record count.
func appendBlockHead(b []byte, tenant string, records uint64) []byte {
	b = appendString(b, tenant)
	return binary.AppendUvarint(b, records)
}

// blockParser walks the records of one block's plaintext. It checks each
// record on its own (table, operation, values, positions against the
// header); order and index agreement are checked by the caller.
type blockParser struct {
	h       *Header
	d       decoder
	tenant  string
	records uint64 // declared
	read    uint64
}

func newBlockParser(h *Header, plain []byte) (*blockParser, error) {
	p := &blockParser{h: h, d: decoder{b: plain}}
	p.tenant = p.d.str()
	p.records = p.d.uvarint()
	if p.d.err != nil {
		return nil, fmt.Errorf("block head: %v", p.d.err)
	}
	if p.tenant == "" {
		return nil, fmt.Errorf("block head: empty tenant key")
	}
	if p.records == 0 || p.records > uint64(p.d.left()/minRecord) {
		return nil, fmt.Errorf("block head: record count %d out of range for %d bytes", p.records, p.d.left())
	}
	return p, nil
}

// next decodes the next record into c, returning its table. At the end of
// the block it returns nil, nil after checking nothing is left over.
func (p *blockParser) next(c *change.Change) (*change.Table, error) {
	if p.read == p.records {
		if p.d.left() != 0 {
			return nil, fmt.Errorf("%d bytes left over after %d records", p.d.left(), p.records)
		}
		return nil, nil
	}
	start := p.d.off
	d := &p.d
	ti := d.index(len(p.h.Tables))
	if d.err != nil {
		return nil, fmt.Errorf("record %d (byte %d): table: %v", p.read, start, d.err)
	}
	t := &p.h.Tables[ti]
	*c = change.Change{Tenant: p.tenant, Table: t.Name}
	c.Op = change.Op(d.byte1())
	c.Pos = d.uvarint()
	c.Tx = d.uvarint()
	flags := d.byte1()
	c.TxEnd = flags&flagTxEnd != 0
	c.Time = d.time()
	if d.err == nil && flags&^flagTxEnd != 0 {
		d.fail(fmt.Errorf("unknown flags %#x", flags))
	}
	if d.err == nil && d.left() < len(t.Columns) {
		d.fail(errShort)
	}
	if d.err != nil {
		return nil, fmt.Errorf("record %d (byte %d): %v", p.read, start, d.err)
	}
	c.Row = make([]change.Value, len(t.Columns))
	for i := range c.Row {
		c.Row[i] = d.value()
	}
	if d.err != nil {
		return nil, fmt.Errorf("record %d (byte %d) of table %q: %v", p.read, start, t.Name, d.err)
	}
	if err := validateChange(p.h, c, t); err != nil {
		return nil, fmt.Errorf("record %d (byte %d): %v", p.read, start, err)
	}
	if p.h.Kind == Segment && (c.Pos < p.h.First || c.Pos > p.h.Last) {
		return nil, fmt.Errorf("record %d (byte %d): position %d outside the segment's %d..%d", p.read, start, c.Pos, p.h.First, p.h.Last)
	}
	p.read++
	return t, nil
}
