package backup

import (
	"container/heap"
	"context"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/change"
	"lifeline/internal/fault"
)

// Upto says which changes belong to the state being rebuilt.
type Upto struct {
	// Pos, if non-zero, keeps changes at positions <= Pos.
	Pos uint64
	// Time, if non-zero, keeps changes committed at or before Time.
	Time time.Time
}

func (u Upto) keeps(c *change.Change) bool {
	if u.Pos != 0 && c.Pos > u.Pos {
		return false
	}
	if !u.Time.IsZero() && c.Time.After(u.Time) {
		return false
	}
	return true
}

func (u Upto) String() string {
	if u.Pos != 0 {
		return fmt.Sprintf("position %d", u.Pos)
	}
	return u.Time.UTC().Format(time.RFC3339Nano)
}

// Reading is a set of objects opened to rebuild tenants of one product as
// of one moment: the newest snapshot at or before it and the segments after
// that snapshot up to it. Objects are opened once (footer, header, index)
// and then read only in the byte ranges of the tenants asked for.
type Reading struct {
	repo    *Repo
	product string
	upto    Upto
	objects []Object
	readers []*format.Reader // readers[0] is the snapshot
	// present caches the shapes rows with Absent values are handed over
	// under, by shape and absent columns, so each is one pointer.
	present map[presentKey]*change.Table
}

type presentKey struct {
	t      *change.Table
	absent string
}

// OpenAt chooses and opens the objects that rebuild product as of upto. It
// refuses (fault.Refused) a moment outside the restorable window, saying
// what the window is.
func (r *Repo) OpenAt(ctx context.Context, product string, upto Upto) (*Reading, error) {
	objs, err := r.Objects(ctx, product)
	if err != nil {
		return nil, err
	}
	var base *Object
	var segs []Object
	var oldest, newest time.Time
	var lastPos uint64
	for i := range objs {
		o := &objs[i]
		if o.Kind == format.Snapshot {
			if oldest.IsZero() || o.LastTime.Before(oldest) {
				oldest = o.LastTime
			}
			if o.LastTime.After(newest) {
				newest = o.LastTime
			}
			within := (upto.Pos == 0 || o.Last <= upto.Pos) && (upto.Time.IsZero() || !o.LastTime.After(upto.Time))
			if within && (base == nil || o.Last > base.Last) {
				base = o
			}
		} else if o.LastTime.After(newest) {
			newest = o.LastTime
		}
		lastPos = max(lastPos, o.Last)
	}
	window := fmt.Sprintf("the repository of %s can restore from %s to %s (positions up to %d)", product,
		oldest.UTC().Format(time.RFC3339), newest.UTC().Format(time.RFC3339), lastPos)
	if base == nil {
		if len(objs) == 0 {
			return nil, fault.New(fault.Refused, "run `lifeline backup run` (or `lifeline serve`) to take the first snapshot", "the repository holds nothing for %s yet", product)
		}
		return nil, fault.New(fault.Refused, "choose a moment inside the window", "%s is before the oldest restorable moment: %s", upto, window)
	}
	if upto.Pos > lastPos || (!upto.Time.IsZero() && upto.Time.After(newest) && upto.Time.After(r.Now())) {
		return nil, fault.New(fault.Refused, "choose a moment inside the window", "%s is after the newest shipped change: %s", upto, window)
	}
	rd := &Reading{repo: r, product: product, upto: upto, objects: []Object{*base}}
	for _, o := range objs {
		if o.Kind == format.Segment && o.First > base.Last && (upto.Pos == 0 || o.First <= upto.Pos) && (upto.Time.IsZero() || !o.FirstTime.After(upto.Time)) {
			segs = append(segs, o)
		}
	}
	// At each position the longest segment: a merge rather than the small
	// segments it holds.
	slices.SortFunc(segs, byFirstLongest)
	next := base.Last + 1
	for _, s := range segs {
		if s.First < next {
			continue
		}
		if s.First != next {
			return nil, fault.New(fault.Refused, "run `lifeline backup verify` to list the damage; a restore to before the gap or after a newer snapshot still works",
				"%s cannot be rebuilt as of %s: positions %d..%d are missing from the repository", product, upto, next, s.First-1)
		}
		next = s.Last + 1
		rd.objects = append(rd.objects, s)
	}
	for _, o := range rd.objects {
		fr, err := r.open(ctx, o.Key, o.Size)
		if err != nil {
			return nil, err
		}
		rd.readers = append(rd.readers, fr)
	}
	return rd, nil
}

// Objects returns the objects the reading uses, snapshot first.
func (rd *Reading) Objects() []Object { return rd.objects }

// Tables returns the table shapes of the moment rebuilt: the newest object's.
func (rd *Reading) Tables() []change.Table {
	return rd.readers[len(rd.readers)-1].Header().Tables
}

// Cost returns how many stored bytes rebuilding tenant reads, beyond the
// indexes already read.
func (rd *Reading) Cost(tenant string) int64 {
	var n int64
	for _, fr := range rd.readers {
		if t, ok := fr.Lookup(tenant); ok {
			n += t.Bytes()
		}
	}
	return n
}

// Tenants returns every tenant present in any of the objects, ascending.
func (rd *Reading) Tenants() []string {
	seen := map[string]bool{}
	var out []string
	for _, fr := range rd.readers {
		for _, t := range fr.Tenants() {
			if !seen[t.Tenant] {
				seen[t.Tenant] = true
				out = append(out, t.Tenant)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Tenant streams the rows tenant had at the reading's moment, in (table,
// primary key) order, one image per row, each with the position of the
// change that wrote it. It merges the snapshot and the segments record by
// record, holding one block per object: memory does not grow with the
// tenant's size. fn gets each row's own table shape: when a column was added
// between objects, older rows have fewer columns, mapped by name.
func (rd *Reading) Tenant(ctx context.Context, tenant string, fn func(t *change.Table, c *change.Change) error) error {
	h := &mergeHeap{}
	for i, fr := range rd.readers {
		if _, ok := fr.Lookup(tenant); !ok {
			continue
		}
		next, stop := iter.Pull2(fr.Tenant(ctx, tenant))
		defer stop()
		cur := &cursor{obj: i, next: next, hdr: fr.Header()}
		if err := cur.advance(); err != nil {
			return rd.wrap(i, err)
		}
		if cur.ok {
			heap.Push(h, cur)
		}
	}
	var best *change.Change
	var bestTable *change.Table
	emit := func() error {
		if best == nil || best.Op == change.Delete {
			return nil
		}
		out := *best
		out.Op = change.Snapshot
		t := rd.withoutAbsent(bestTable, &out)
		return fn(t, &out)
	}
	for h.Len() > 0 {
		cur := (*h)[0]
		c, t := cur.c, cur.table()
		if t == nil {
			return rd.wrap(cur.obj, fault.New(fault.Internal, "", "record names table %q missing from its header", c.Table))
		}
		if best != nil && !sameKey(best, bestTable, &c, t) {
			if err := emit(); err != nil {
				return err
			}
			best = nil
		}
		if rd.upto.keeps(&c) && (best == nil || c.Pos >= best.Pos) {
			cp := c
			best, bestTable = &cp, t
		} else if best == nil {
			// A change after the moment of a row not yet seen: remember the
			// key so later versions of it are grouped, but emit nothing.
			cp := c
			cp.Op = change.Delete
			cp.Pos = 0
			best, bestTable = &cp, t
		}
		if err := cur.advance(); err != nil {
			return rd.wrap(cur.obj, err)
		}
		if cur.ok {
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
	return emit()
}

// withoutAbsent hands a row of a snapshot compacted across a schema change
// over as it was captured: its Absent columns (added after it was written)
// left out of the row and of its shape, so a restore leaves them to their
// default, exactly as a row read from the original segment.
func (rd *Reading) withoutAbsent(t *change.Table, c *change.Change) *change.Table {
	var absent []byte
	for i, v := range c.Row {
		if v.Kind == change.Absent {
			absent = append(absent, byte(i), byte(i>>8))
		}
	}
	if absent == nil {
		return t
	}
	k := presentKey{t, string(absent)}
	shape, ok := rd.present[k]
	if !ok {
		shape = &change.Table{Name: t.Name}
		for i, col := range t.Columns {
			if c.Row[i].Kind == change.Absent {
				continue
			}
			if i == t.Tenant {
				shape.Tenant = len(shape.Columns)
			}
			shape.Columns = append(shape.Columns, col)
		}
		// Key columns are never absent (the format refuses it).
		for _, i := range t.PrimaryKey {
			shape.PrimaryKey = append(shape.PrimaryKey, slices.IndexFunc(shape.Columns, func(col change.Column) bool { return col.Name == t.Columns[i].Name }))
		}
		if rd.present == nil {
			rd.present = map[presentKey]*change.Table{}
		}
		rd.present[k] = shape
	}
	row := make([]change.Value, 0, len(shape.Columns))
	for _, v := range c.Row {
		if v.Kind != change.Absent {
			row = append(row, v)
		}
	}
	c.Row = row
	return shape
}

func (rd *Reading) wrap(obj int, err error) error {
	return fault.Wrap(err, fault.CodeOf(err), fault.HintOf(err), "reading backup object %s", rd.objects[obj].Key)
}

// sameKey reports whether two records are versions of the same row.
func sameKey(a *change.Change, t *change.Table, b *change.Change, u *change.Table) bool {
	if t.Name != u.Name {
		return false
	}
	x, y := *a, *b
	x.Pos, y.Pos = 0, 0
	return format.CompareRows(&x, t, &y, u) == 0
}

// cursor is one object's position in a merge.
type cursor struct {
	obj  int
	next func() (change.Change, error, bool)
	hdr  format.Header
	c    change.Change
	ok   bool
}

func (c *cursor) advance() error {
	rec, err, ok := c.next()
	if err != nil {
		return err
	}
	c.c, c.ok = rec, ok
	return nil
}

func (c *cursor) table() *change.Table {
	t, _ := c.hdr.Table(c.c.Table)
	return t
}

// mergeHeap orders cursors by (table, primary key, position).
type mergeHeap []*cursor

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	ta, tb := a.table(), b.table()
	if ta == nil || tb == nil {
		return ta == nil
	}
	if c := strings.Compare(ta.Name, tb.Name); c != 0 {
		return c < 0
	}
	return format.CompareRows(&a.c, ta, &b.c, tb) < 0
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(*cursor)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
