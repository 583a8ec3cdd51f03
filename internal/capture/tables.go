package capture

import (
	"container/heap"
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"lifeline/internal/change"
	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

// This file holds what both engines share: the recorded table shapes, the
// drift checks, value conversion and the snapshot's tenant-ordered merge.

// history is every recorded shape of the captured tables.
type history struct {
	byTable map[string][]productdb.CapturedShape // ascending FromSeq
	names   []string                             // sorted
}

func newHistory(shapes []productdb.CapturedShape) *history {
	h := &history{byTable: map[string][]productdb.CapturedShape{}}
	for _, s := range shapes {
		if _, ok := h.byTable[s.Name]; !ok {
			h.names = append(h.names, s.Name)
		}
		h.byTable[s.Name] = append(h.byTable[s.Name], s)
	}
	slices.Sort(h.names)
	return h
}

// at is the shape table had at source position seq (nil: not captured).
func (h *history) at(table string, seq uint64) *change.Table {
	var t *change.Table
	for _, s := range h.byTable[table] {
		if uint64(s.FromSeq) <= seq {
			t = s.Table
		}
	}
	return t
}

// current returns the latest shape of every captured table, by name.
func (h *history) current() []change.Table {
	var out []change.Table
	for _, n := range h.names {
		if t := h.at(n, math.MaxUint64); t != nil {
			out = append(out, *t)
		}
	}
	return out
}

// bounds are the source positions after which some table changes shape: a
// batch never crosses one. Protect records a new shape in its own write
// transaction, so each is also a transaction boundary.
func (h *history) bounds() []uint64 {
	var out []uint64
	for _, ss := range h.byTable {
		for _, s := range ss {
			if s.FromSeq > 1 {
				out = append(out, uint64(s.FromSeq-1))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// width is the most columns any recorded shape has.
func (h *history) width() int {
	w := 0
	for _, ss := range h.byTable {
		for _, s := range ss {
			if s.Table != nil {
				w = max(w, len(s.Table.Columns))
			}
		}
	}
	return w
}

// shapeDiff is one way a table's shape changed. breaking: rows of the new
// shape cannot be filed under the old one (a column gone, the primary key or
// the tenant column changed); added columns, a new order or new types are
// described by the new shape.
type shapeDiff struct {
	line     string
	breaking bool
}

// diffShape lists how a table's shape cur differs from old, naming the
// table and the column.
func diffShape(old, cur *change.Table) []shapeDiff {
	var out []shapeDiff
	add := func(breaking bool, format string, args ...any) {
		out = append(out, shapeDiff{fmt.Sprintf("table %s: ", old.Name) + fmt.Sprintf(format, args...), breaking})
	}
	find := func(t *change.Table, name string) int {
		return slices.IndexFunc(t.Columns, func(c change.Column) bool { return c.Name == name })
	}
	for _, c := range old.Columns {
		j := find(cur, c.Name)
		switch {
		case j < 0:
			add(true, "column %s removed or renamed", c.Name)
		case cur.Columns[j].Type != c.Type:
			add(false, "column %s type changed from %s to %s", c.Name, c.Type, cur.Columns[j].Type)
		}
	}
	for _, c := range cur.Columns {
		if find(old, c.Name) < 0 {
			add(false, "column %s added", c.Name)
		}
	}
	if len(out) == 0 && !slices.Equal(old.Columns, cur.Columns) {
		add(false, "columns reordered")
	}
	names := func(t *change.Table, idx []int) string {
		var n []string
		for _, i := range idx {
			if i >= 0 && i < len(t.Columns) {
				n = append(n, t.Columns[i].Name)
			} else {
				n = append(n, "?")
			}
		}
		return strings.Join(n, ", ")
	}
	if a, b := names(old, old.PrimaryKey), names(cur, cur.PrimaryKey); a != b {
		add(true, "primary key changed from (%s) to (%s)", a, b)
	}
	if a, b := names(old, []int{old.Tenant}), names(cur, []int{cur.Tenant}); a != b {
		add(true, "tenant column changed from %s to %s", a, b)
	}
	return out
}

// lines renders diffs, only the breaking ones if breakingOnly.
func lines(diffs []shapeDiff, breakingOnly bool) []string {
	var out []string
	for _, d := range diffs {
		if d.breaking || !breakingOnly {
			out = append(out, d.line)
		}
	}
	return out
}

// drift builds the error that stops capture, listing every problem.
func drift(product string, problems []string) error {
	return fault.Wrap(ErrDrift, fault.Refused, "run `lifeline protect`: it re-installs capture for the new shape; changes made meanwhile are kept",
		"product %s: %s", product, strings.Join(problems, "; "))
}

// checkCapture compares what capture was installed for (captured, current
// shapes) with the database now, through tx when not nil: each table's
// columns (when columns is set; PostgreSQL follows them in the stream
// instead), the capture objects, and the set of tables the layout's spec
// protects today (a table that gained the tenant column must not be missed
// silently). It returns ErrDrift listing every difference.
func checkCapture(ctx context.Context, db *productdb.DB, tx *sql.Tx, layout *productdb.Layout, captured []change.Table, columns bool) error {
	var problems []string
	names := make([]string, len(captured))
	for i, t := range captured {
		names[i] = t.Name
	}
	l := *layout
	l.Tables = names
	live, err := db.LiveShapes(ctx, tx, &l)
	switch {
	case fault.CodeOf(err) == fault.Refused:
		problems = append(problems, err.Error())
	case err != nil:
		return err
	case columns:
		for i := range captured {
			problems = append(problems, lines(diffShape(&captured[i], &live[i]), false)...)
		}
	}
	p, err := db.CaptureProblems(ctx, tx, layout.Product, names)
	if err != nil {
		return err
	}
	problems = append(problems, p...)
	s, err := db.Inspect(ctx)
	if err != nil {
		return err
	}
	fresh, err := productdb.Resolve(layout.Spec, s)
	if err != nil {
		problems = append(problems, err.Error())
	} else {
		for _, t := range fresh.Tables {
			if !slices.Contains(names, t) {
				problems = append(problems, fmt.Sprintf("table %s is protected by the configuration but not captured", t))
			}
		}
	}
	if len(problems) > 0 {
		return drift(layout.Product, problems)
	}
	return nil
}

// sqliteValue converts what the SQLite driver scanned: the storage class
// decides the kind, and every bit is kept.
func sqliteValue(v any) (change.Value, error) {
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
		if x == nil {
			x = []byte{}
		}
		return change.Value{Kind: change.Blob, Bytes: x}, nil
	}
	return change.Value{}, fmt.Errorf("unexpected SQLite value %T", v)
}

// pgValue converts a value selected as text (or decoded from pgoutput's
// text format): PostgreSQL's text output of any type, or NULL.
func pgValue(v any) (change.Value, error) {
	switch x := v.(type) {
	case nil:
		return change.Value{}, nil
	case string:
		return change.Value{Kind: change.PG, Bytes: []byte(x)}, nil
	case []byte:
		return change.Value{Kind: change.PG, Bytes: append([]byte{}, x...)}, nil
	}
	return change.Value{}, fmt.Errorf("unexpected PostgreSQL value %T", v)
}

// chunker yields one table's rows in snapshot order: each the tenant text,
// then the row's values.
type chunker interface {
	// chunk scans up to n more rows into dst (reusing it); none at the end.
	chunk(ctx context.Context, n int, dst [][]any) ([][]any, error)
	close() error
}

// scanRows reads up to n rows of width w from rows into dst.
func scanRows(rows *sql.Rows, n, w int, dst [][]any) ([][]any, error) {
	dst = dst[:0]
	ptrs := make([]any, w)
	for len(dst) < n && rows.Next() {
		k := len(dst)
		if k < cap(dst) {
			dst = dst[:k+1]
		} else {
			dst = append(dst, nil)
		}
		if len(dst[k]) != w {
			dst[k] = make([]any, w)
		}
		for i := range ptrs {
			ptrs[i] = &dst[k][i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
	}
	return dst, rows.Err()
}

// rowsChunker reads one open query (SQLite, which can step several queries
// of one transaction at once).
type rowsChunker struct {
	rows *sql.Rows
	w    int
}

func (c *rowsChunker) chunk(_ context.Context, n int, dst [][]any) ([][]any, error) {
	return scanRows(c.rows, n, c.w, dst)
}

func (c *rowsChunker) close() error { return c.rows.Close() }

// stream is one table's rows during a snapshot merge.
type stream struct {
	t      *change.Table
	src    chunker
	conv   func(any) (change.Value, error)
	buf    [][]any
	i      int
	done   bool
	tenant string
	row    []change.Value
}

const snapshotChunk = 512

// next moves to the stream's next row; false at the end.
func (s *stream) next(ctx context.Context) (bool, error) {
	if s.i >= len(s.buf) {
		if s.done {
			return false, nil
		}
		var err error
		if s.buf, err = s.src.chunk(ctx, snapshotChunk, s.buf); err != nil {
			return false, err
		}
		s.i = 0
		if len(s.buf) < snapshotChunk {
			s.done = true
		}
		if len(s.buf) == 0 {
			return false, nil
		}
	}
	vals := s.buf[s.i]
	s.i++
	if len(vals) != len(s.t.Columns)+1 {
		return false, fmt.Errorf("table %s: %d values for %d columns", s.t.Name, len(vals)-1, len(s.t.Columns))
	}
	tv, err := s.conv(vals[0])
	if err != nil {
		return false, err
	}
	s.tenant = string(tv.Bytes)
	if s.row == nil {
		s.row = make([]change.Value, len(s.t.Columns))
	}
	for i, v := range vals[1:] {
		if s.row[i], err = s.conv(v); err != nil {
			return false, fmt.Errorf("table %s column %s: %w", s.t.Name, s.t.Columns[i].Name, err)
		}
	}
	return true, nil
}

// merge orders the streams' current rows by (tenant, table).
type merge []*stream

func (m merge) Len() int { return len(m) }
func (m merge) Less(i, j int) bool {
	if m[i].tenant != m[j].tenant {
		return m[i].tenant < m[j].tenant
	}
	return m[i].t.Name < m[j].t.Name
}
func (m merge) Swap(i, j int) { m[i], m[j] = m[j], m[i] }
func (m *merge) Push(x any)   { *m = append(*m, x.(*stream)) }
func (m *merge) Pop() any {
	old := *m
	x := old[len(old)-1]
	*m = old[:len(old)-1]
	return x
}

// snapshot is a Snapshot over one engine's consistent read transaction.
// Each table is one query ordered by (tenant text, primary key); the tables
// are merged here, so the database sorts and Lifeline holds one chunk of
// rows per table.
type snapshot struct {
	cur    Cursor
	tables []change.Table
	at     time.Time
	open   func(ctx context.Context, t *change.Table) (chunker, error)
	conv   func(any) (change.Value, error)
	done   func() error
	used   bool
}

func (s *snapshot) Cursor() Cursor         { return s.cur }
func (s *snapshot) Tables() []change.Table { return s.tables }

func (s *snapshot) Rows(ctx context.Context, fn func(*change.Change) error) error {
	if s.used {
		return fmt.Errorf("snapshot rows can be read once")
	}
	s.used = true
	var m merge
	var all []*stream
	defer func() {
		for _, st := range all {
			st.src.close()
		}
	}()
	for i := range s.tables {
		src, err := s.open(ctx, &s.tables[i])
		if err != nil {
			return fmt.Errorf("snapshot of table %s: %w", s.tables[i].Name, err)
		}
		st := &stream{t: &s.tables[i], src: src, conv: s.conv}
		all = append(all, st)
		ok, err := st.next(ctx)
		if err != nil {
			return fmt.Errorf("snapshot of table %s: %w", st.t.Name, err)
		}
		if ok {
			m = append(m, st)
		}
	}
	heap.Init(&m)
	c := change.Change{Pos: s.cur.Pos, Op: change.Snapshot, Time: s.at}
	for len(m) > 0 {
		st := m[0]
		c.Tenant, c.Table, c.Row = st.tenant, st.t.Name, st.row
		if err := fn(&c); err != nil {
			return err
		}
		ok, err := st.next(ctx)
		if err != nil {
			return fmt.Errorf("snapshot of table %s: %w", st.t.Name, err)
		}
		if ok {
			heap.Fix(&m, 0)
		} else {
			heap.Pop(&m)
		}
	}
	return nil
}

func (s *snapshot) Close() error {
	if s.done == nil {
		return nil
	}
	err := s.done()
	s.done = nil
	return err
}
