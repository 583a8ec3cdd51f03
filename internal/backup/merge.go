package backup

import (
	"bytes"
	"cmp"
	"context"
	"slices"

	"lifeline/internal/backup/format"
	"lifeline/internal/change"
	"lifeline/internal/fault"
)

// Small segments cost a rebuild more than their changes: every object's
// footer, header (all table shapes) and index are read whole, whatever
// tenants are asked for. A shipper writing a segment a second leaves many
// small ones, so maintenance merges each run of MergeRun consecutive small
// segments (after the newest snapshot, of one schema version) into one
// segment of the same positions. The small ones become redundant — every
// reader prefers the longest segment starting where it stands — and are
// pruned once nothing holds them (a pin, an Object Lock retention date).
const (
	MergeRun    = 16
	mergeBelow  = 1 << 20  // a segment this big is left alone
	mergeAtMost = 32 << 20 // nor is a merge made bigger than this
)

// Merge merges runs of small segments of the shipper's product, and runs
// of merged segments that are still small in turn, until no run is left;
// it returns the merged segments it wrote. Each change is rewritten once
// per level, and a level holds MergeRun times the one below. Each merge is
// recorded only while the shipper holds the product's lease (fence).
func (s *Shipper) Merge(ctx context.Context) ([]Object, error) {
	var all []Object
	for {
		merged, err := s.Repo.mergePass(ctx, s.Product, s.fence())
		all = append(all, merged...)
		if err != nil || len(merged) == 0 {
			return all, err
		}
	}
}

// mergePass merges each run of MergeRun small segments once, recording
// each merge under f.
func (r *Repo) mergePass(ctx context.Context, product string, f *fence) ([]Object, error) {
	objs, err := r.Objects(ctx, product)
	if err != nil {
		return nil, err
	}
	var base *Object
	for i := range objs {
		if objs[i].Kind == format.Snapshot && (base == nil || objs[i].Last > base.Last) {
			base = &objs[i]
		}
	}
	if base == nil {
		return nil, nil
	}
	var out []Object
	var run []*format.Reader
	var runObjs []Object
	var size int64
	flush := func() error {
		if len(run) >= MergeRun {
			o, err := r.mergeRun(ctx, product, runObjs, run, f)
			if err != nil {
				return err
			}
			out = append(out, o)
		}
		run, runObjs, size = nil, nil, 0
		return nil
	}
	for _, s := range chainAfter(objs, base.Last) {
		if s.Size >= mergeBelow || size+s.Size > mergeAtMost || positions(runObjs)+s.Last-s.First+1 > 1<<26 {
			if err := flush(); err != nil {
				return nil, err
			}
			if s.Size >= mergeBelow {
				continue
			}
		}
		rd, err := r.open(ctx, s.Key, s.Size)
		if err != nil {
			return nil, err
		}
		if len(run) > 0 && !sameShapes(run[0].Header().Tables, rd.Header().Tables) {
			if err := flush(); err != nil {
				return nil, err
			}
		}
		run, runObjs, size = append(run, rd), append(runObjs, s), size+s.Size
		if len(run) == MergeRun {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	return out, flush()
}

// positions is how many positions a run of consecutive segments covers (a
// segment holds at most 2^26).
func positions(run []Object) uint64 {
	if len(run) == 0 {
		return 0
	}
	return run[len(run)-1].Last - run[0].First + 1
}

// mergeRun writes the changes of consecutive segments as one segment,
// recorded under f.
func (r *Repo) mergeRun(ctx context.Context, product string, objs []Object, readers []*format.Reader, f *fence) (Object, error) {
	var changes []change.Change
	for i, rd := range readers {
		for c, err := range rd.All(ctx) {
			if err != nil {
				return Object{}, fault.Wrap(err, fault.CodeOf(err), fault.HintOf(err), "reading backup object %s", objs[i].Key)
			}
			c.Row = cloneRow(c.Row)
			changes = append(changes, c)
		}
	}
	first, last := objs[0], objs[len(objs)-1]
	h := format.Header{Product: product, First: first.First, Last: last.Last, Source: last.Source,
		Tables: readers[len(readers)-1].Header().Tables, Created: r.Now()}
	var buf bytes.Buffer
	sum, err := format.WriteSegment(&buf, h, changes, r.options())
	if err != nil {
		return Object{}, err
	}
	key := segmentKey(product, first.First, last.Last)
	if err := r.put(ctx, key, &buf, sum, f); err != nil {
		return Object{}, err
	}
	return objectOf(key, sum.Header, sum.Size, sum.PlainBytes, sum.Records, len(sum.Tenants)), nil
}

// chainAfter returns the segments that continue the stream after position
// base, in order, preferring at each step the longest segment that starts
// there (a merge over the segments it holds). It stops at a gap.
func chainAfter(objs []Object, base uint64) []Object {
	var segs []Object
	for _, o := range objs {
		if o.Kind == format.Segment && o.First > base {
			segs = append(segs, o)
		}
	}
	slices.SortFunc(segs, byFirstLongest)
	var out []Object
	next := base + 1
	for _, s := range segs {
		if s.First == next {
			out = append(out, s)
			next = s.Last + 1
		}
	}
	return out
}

// contained returns the keys of the segments whose positions lie inside
// another segment's: a merge holds them, so they are redundant.
func contained(objs []Object) map[string]bool {
	var segs []Object
	for _, o := range objs {
		if o.Kind == format.Segment {
			segs = append(segs, o)
		}
	}
	// By first position, the longest first: a segment is inside an earlier
	// one exactly when it ends at or before the furthest end seen so far.
	slices.SortFunc(segs, byFirstLongest)
	out := map[string]bool{}
	var reach uint64
	for i, s := range segs {
		if i > 0 && s.Last <= reach {
			out[s.Key] = true
		}
		reach = max(reach, s.Last)
	}
	return out
}

// byFirstLongest orders segments by first position, the longest first.
func byFirstLongest(a, b Object) int {
	if a.First != b.First {
		return cmp.Compare(a.First, b.First)
	}
	return cmp.Compare(b.Last, a.Last)
}
