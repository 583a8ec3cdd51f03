package backup

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/blob"
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

// startsBy says whether o's first change is at or before the moment.
func (u Upto) startsBy(o Object) bool {
	return (u.Pos == 0 || o.First <= u.Pos) && (u.Time.IsZero() || !o.FirstTime.After(u.Time))
}

// keepsAll says whether all of o's changes are at or before the moment.
func (u Upto) keepsAll(o Object) bool {
	return (u.Pos == 0 || o.Last <= u.Pos) && (u.Time.IsZero() || !o.LastTime.After(u.Time))
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
	// gap names the positions between the snapshot and the moment that no
	// readable object holds ("" when none). Then only tenants that cover
	// holds as they were at the moment can be rebuilt (see Depends).
	gap string
	// cover is the first snapshot after the moment, when every change
	// between the moment and it is readable in checks (nil otherwise).
	cover    *format.Reader
	coverObj Object
	checks   []*format.Reader
	extra    []Object // cover and checks, for Objects
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
		if o.Kind == format.Segment && o.First > base.Last {
			segs = append(segs, o)
		}
	}
	// At each position the longest segment: a merge rather than the small
	// segments it holds. Positions no segment holds, or whose segment
	// cannot be read, are missing; missing positions that may lie after
	// the moment (unsure) leave no tenant's state at the moment known.
	slices.SortFunc(segs, byFirstLongest)
	var missing [][2]uint64
	unsure := false
	next := base.Last + 1
	i := 0
	for ; i < len(segs) && (segs[i].First < next || upto.startsBy(segs[i])); i++ {
		if s := segs[i]; s.First >= next {
			if s.First > next {
				missing = append(missing, [2]uint64{next, s.First - 1})
			}
			next = s.Last + 1
			rd.objects = append(rd.objects, s)
		}
	}
	// After the last segment the moment uses, the repository goes on at
	// next, or positions from next are missing: before the moment if it is
	// a position they do not pass; a time does not tell.
	resumes := lastPos + 1
	if i < len(segs) {
		resumes = segs[i].First
	}
	if resumes > next {
		missing = append(missing, [2]uint64{next, resumes - 1})
		unsure = !upto.Time.IsZero() || upto.Pos != 0 && resumes-1 > upto.Pos
		next = resumes
	}
	fr, err := r.open(ctx, base.Key, base.Size)
	if err != nil {
		return nil, err
	}
	rd.readers = append(rd.readers, fr)
	var checks []Object // what changed between the moment and a cover
	for _, o := range slices.Clone(rd.objects[1:]) {
		fr, err := r.open(ctx, o.Key, o.Size)
		if unreadable(err) {
			missing = append(missing, [2]uint64{o.First, o.Last})
			unsure = unsure || !upto.keepsAll(o)
			rd.objects = slices.DeleteFunc(rd.objects, func(x Object) bool { return x.Key == o.Key })
			continue
		}
		if err != nil {
			return nil, err
		}
		rd.readers = append(rd.readers, fr)
		if !upto.keepsAll(o) {
			checks = append(checks, o)
		}
	}
	if len(missing) == 0 {
		return rd, nil
	}
	slices.SortFunc(missing, func(a, b [2]uint64) int { return cmp.Compare(a[0], b[0]) })
	var ranges []string
	for _, m := range missing {
		ranges = append(ranges, fmt.Sprintf("%d..%d", m[0], m[1]))
	}
	rd.gap = strings.Join(ranges, ", ")
	if !unsure {
		if err := rd.findCover(ctx, objs, segs[i:], next, checks); err != nil {
			return nil, err
		}
	}
	return rd, nil
}

// unreadable says whether err means an object cannot be read at all:
// gone from the blob store, or damaged beyond its footer.
func unreadable(err error) bool {
	return errors.Is(err, blob.ErrNotFound) || errors.Is(err, format.ErrCorrupt)
}

// findCover looks, for a reading with missing positions before the moment,
// for the first snapshot after the moment, with every change between the
// moment and it readable: checks (the reading's segments that reach past
// the moment) and after (the following segments, from position next). A
// tenant none of them touches was at the moment as that snapshot holds it.
func (rd *Reading) findCover(ctx context.Context, objs, after []Object, next uint64, checks []Object) error {
	var cover *Object
	for i := range objs {
		if o := &objs[i]; o.Kind == format.Snapshot && o.Last >= next-1 && o.Last > rd.objects[0].Last && (cover == nil || o.Last < cover.Last) {
			cover = o
		}
	}
	if cover == nil {
		return nil
	}
	for _, s := range after {
		if next > cover.Last {
			break
		}
		if s.First < next {
			continue
		}
		if s.First > next {
			return nil // missing positions after the moment too
		}
		checks = append(checks, s)
		next = s.Last + 1
	}
	if next <= cover.Last {
		return nil
	}
	for _, o := range append([]Object{*cover}, checks...) {
		fr, err := rd.repo.open(ctx, o.Key, o.Size)
		if unreadable(err) {
			rd.cover, rd.checks = nil, nil
			return nil
		}
		if err != nil {
			return err
		}
		if rd.cover == nil {
			rd.cover, rd.coverObj = fr, o
		} else {
			rd.checks = append(rd.checks, fr)
		}
	}
	rd.extra = append([]Object{*cover}, checks...)
	return nil
}

// Gap names the positions between the snapshot and the moment that no
// readable object holds, "" when none.
func (rd *Reading) Gap() string { return rd.gap }

// Depends says whether rebuilding tenant as of the moment needs the
// changes at the missing positions (Gap): it does unless the first
// snapshot after the moment holds the tenant as it was at the moment,
// because no readable change between the moment and that snapshot touches
// it. Tenant refuses a tenant that depends on the gap.
func (rd *Reading) Depends(tenant string) bool {
	if rd.gap == "" {
		return false
	}
	if rd.cover == nil {
		return true
	}
	for _, fr := range rd.checks {
		if _, ok := fr.Lookup(tenant); ok {
			return true
		}
	}
	return false
}

// gapError is Tenant's refusal of a tenant that depends on the gap. It
// wraps blob.ErrNotFound: the objects holding those positions are gone,
// which a restore treats like any unreadable object (--skip-broken).
func (rd *Reading) gapError(tenant string) error {
	return fault.Wrap(blob.ErrNotFound, fault.Refused, "run `lifeline backup verify` to list the damage; a restore to before the gap or after a newer snapshot still works",
		"tenant %s of %s cannot be rebuilt as of %s: positions %s are missing from the repository", tenant, rd.product, rd.upto, rd.gap)
}

// Objects returns the objects the reading uses, snapshot first (with a
// gap, then the snapshot after the moment and the segments before it).
func (rd *Reading) Objects() []Object { return append(slices.Clone(rd.objects), rd.extra...) }

// Tables returns the table shapes of the moment rebuilt: the newest object's.
func (rd *Reading) Tables() []change.Table {
	return rd.readers[len(rd.readers)-1].Header().Tables
}

// Cost returns how many stored bytes rebuilding tenant reads, beyond the
// indexes already read.
// With a gap, a tenant that depends on it costs at least 1 (what the
// missing objects held of it is unknown), and one that does not costs its
// bytes in the snapshot after the moment.
func (rd *Reading) Cost(tenant string) int64 {
	readers := rd.readers
	if rd.gap != "" && !rd.Depends(tenant) {
		readers = []*format.Reader{rd.cover}
	}
	var n int64
	for _, fr := range readers {
		if t, ok := fr.Lookup(tenant); ok {
			n += t.Bytes()
		}
	}
	if rd.Depends(tenant) {
		n = max(n, 1)
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
	readers, objects, upto := rd.readers, rd.objects, rd.upto
	if rd.gap != "" {
		if rd.Depends(tenant) {
			return rd.gapError(tenant)
		}
		// As the snapshot after the moment holds it.
		readers, objects, upto = []*format.Reader{rd.cover}, []Object{rd.coverObj}, Upto{}
	}
	wrap := func(obj int, err error) error {
		return fault.Wrap(err, fault.CodeOf(err), fault.HintOf(err), "reading backup object %s", objects[obj].Key)
	}
	h := &mergeHeap{}
	for i, fr := range readers {
		if _, ok := fr.Lookup(tenant); !ok {
			continue
		}
		next, stop := iter.Pull2(fr.Tenant(ctx, tenant))
		defer stop()
		cur := &cursor{obj: i, next: next, hdr: fr.Header()}
		if err := cur.advance(); err != nil {
			return wrap(i, err)
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
			return wrap(cur.obj, fault.New(fault.Internal, "", "record names table %q missing from its header", c.Table))
		}
		if best != nil && !sameKey(best, bestTable, &c, t) {
			if err := emit(); err != nil {
				return err
			}
			best = nil
		}
		if upto.keeps(&c) && (best == nil || c.Pos >= best.Pos) {
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
			return wrap(cur.obj, err)
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
