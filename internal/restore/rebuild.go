package restore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"lifeline/internal/backup"
	"lifeline/internal/change"
	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

// emitFunc receives rebuilt rows, as batches of one table each, at most
// chunk rows (and maxBatchBytes) in all: one write transaction's worth. The
// batches are the callee's to keep.
type emitFunc func(batches []productdb.Batch) error

// maxBatchBytes bounds a batch's values, so memory stays bounded with wide
// rows too.
const maxBatchBytes = 8 << 20

// mapping turns rows of one captured shape into rows of a live table.
type mapping struct {
	rt   *productdb.RestoreTable // nil: a table not restored
	cols []string                // live columns the shape has, live order
	src  []int                   // their indexes in the shape
	key  []int                   // the live key's indexes in the shape
	ref  string                  // identity of the column set, for batching
}

// rebuilder streams one tenant of one product as of a reading's moment.
type rebuilder struct {
	engine     string
	tables     map[string]*productdb.RestoreTable
	allowDrift bool
	chunk      int
	maps       map[*change.Table]*mapping
	skipped    map[string]int64 // rows of tables not restored, per table
	dropped    map[string]bool  // "table.column" left out (AllowDrift)
	// unchanged, if set, is asked about each table whose rows all fit in
	// one batch, once they are all hashed: true drops them (the live table
	// already holds exactly these rows, so there is nothing to stage).
	unchanged func(rt *productdb.RestoreTable, h *productdb.TableHash) bool
}

func newRebuilder(engine string, tables []productdb.RestoreTable, allowDrift bool, chunk int) *rebuilder {
	r := &rebuilder{engine: engine, tables: map[string]*productdb.RestoreTable{}, allowDrift: allowDrift, chunk: chunk,
		maps: map[*change.Table]*mapping{}, skipped: map[string]int64{}, dropped: map[string]bool{}}
	for i := range tables {
		r.tables[tables[i].Name] = &tables[i]
	}
	return r
}

// mapShape maps a captured shape onto its live table by column name. A
// column the live table no longer has refuses the restore, unless drift is
// allowed; a live column the shape lacks (added since) is left to its
// default.
func (r *rebuilder) mapShape(t *change.Table) (*mapping, error) {
	if m, ok := r.maps[t]; ok {
		return m, nil
	}
	m := &mapping{rt: r.tables[t.Name]}
	if m.rt != nil {
		byName := map[string]int{}
		for i, c := range t.Columns {
			byName[c.Name] = i
		}
		for _, c := range m.rt.Columns {
			if i, ok := byName[c]; ok {
				m.cols = append(m.cols, c)
				m.src = append(m.src, i)
				delete(byName, c)
			}
		}
		for _, k := range m.rt.Key {
			i := slices.Index(m.cols, k)
			if i < 0 {
				return nil, fault.New(fault.Refused, "restore to a moment after the key changed",
					"table %s: primary key column %s did not exist at the moment restored", t.Name, k)
			}
			m.key = append(m.key, i)
		}
		if len(byName) > 0 {
			var gone []string
			for c := range byName {
				gone = append(gone, c)
				r.dropped[t.Name+"."+c] = true
			}
			slices.Sort(gone)
			if !r.allowDrift {
				return nil, fault.New(fault.Refused, "add --allow-drift to restore without those columns' values, or put the columns back first",
					"table %s had columns %s at the moment restored, and no longer has them: their values cannot be put back", t.Name, strings.Join(gone, ", "))
			}
		}
		m.ref = strings.Join(m.cols, "\x00")
	}
	r.maps[t] = m
	return m, nil
}

// run streams tenant's rows from rd into emit in batches and returns each
// restored table's hash (tables without rows have none).
func (r *rebuilder) run(ctx context.Context, rd *backup.Reading, tenant string, emit emitFunc) (map[string]*productdb.TableHash, error) {
	hashes := map[string]*productdb.TableHash{}
	var cur *mapping
	var pending []productdb.Batch
	var rows, size int
	tableStart, tableSize := 0, 0 // where the current table's rows begin in pending
	flushed := map[string]bool{}
	flush := func() error {
		if rows == 0 {
			return nil
		}
		b := pending
		for _, x := range b {
			flushed[x.Table.Name] = true
		}
		pending, rows, size, tableStart, tableSize = nil, 0, 0, 0, 0
		return emit(b)
	}
	// endTable drops the finished table's rows if they need no staging.
	endTable := func() {
		if cur == nil || r.unchanged == nil || flushed[cur.rt.Name] || !r.unchanged(cur.rt, hashes[cur.rt.Name]) {
			return
		}
		for _, b := range pending[tableStart:] {
			rows -= len(b.Rows)
		}
		pending, size = pending[:tableStart], size-tableSize
	}
	key := []change.Value{}
	err := rd.Tenant(ctx, tenant, func(t *change.Table, c *change.Change) error {
		m, err := r.mapShape(t)
		if err != nil {
			return err
		}
		if m.rt == nil {
			r.skipped[t.Name]++
			return nil
		}
		if cur != nil && cur.rt != m.rt {
			endTable()
			tableStart, tableSize = len(pending), 0
		}
		if rows >= r.chunk || size >= maxBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		if cur == nil || len(pending) == tableStart || cur.rt != m.rt || cur.ref != m.ref {
			pending = append(pending, productdb.Batch{Table: m.rt, Tenant: tenant, Cols: m.cols})
		}
		cur = m
		vals := make([]change.Value, len(m.src))
		for i, si := range m.src {
			v := c.Row[si]
			if v.Bytes != nil {
				v.Bytes = bytes.Clone(v.Bytes)
				size += len(v.Bytes)
				tableSize += len(v.Bytes)
			}
			vals[i] = v
		}
		size += 24 * len(vals)
		tableSize += 24 * len(vals)
		key = key[:0]
		for _, k := range m.key {
			key = append(key, vals[k])
		}
		h := hashes[m.rt.Name]
		if h == nil {
			h = productdb.NewTableHash(r.engine, m.rt.Name)
			hashes[m.rt.Name] = h
		}
		h.Add(key, m.cols, vals, m.rt.Columns)
		last := &pending[len(pending)-1]
		last.Rows = append(last.Rows, vals)
		rows++
		return nil
	})
	if err == nil {
		endTable()
		err = flush()
	}
	return hashes, err
}

// notes says what the rebuild left out.
func (r *rebuilder) notes() []string {
	var out []string
	for t, n := range r.skipped {
		out = append(out, fmt.Sprintf("%d rows of table %s at the moment are not restored: it is not a protected table of the product now", n, t))
	}
	for c := range r.dropped {
		out = append(out, "column "+c+" existed at the moment but not now: its values were left out (--allow-drift)")
	}
	slices.Sort(out)
	return out
}
