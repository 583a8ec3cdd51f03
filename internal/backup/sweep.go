package backup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/blob"
)

// SweepGrace is how long an object must have been in the blob store before
// Sweep may delete it as superseded. A live shipper records its upload in
// the same round, right after the upload returns, and one that loses its
// lease (30 s) on the way is fenced, so an upload still unrecorded after a
// day is no live shipper's. A day is far past any upload's duration (S3
// dates a multipart upload from its start), a stalled process's pause and
// any clock skew between this host and the store; the cost is a day's space
// for a rare object.
const SweepGrace = 24 * time.Hour

// SweepEvery is how often maintenance sweeps a product (Maintain). A sweep
// lists the product's whole prefix in the blob store, and what it deletes
// has waited a day (SweepGrace) anyway: sweeping at every pass (a minute
// in serve) would list every object of the repository every minute for
// nothing, while sweeping hourly delays a deletion by at most an hour.
const SweepEvery = time.Hour

// sweepDue says whether Maintain sweeps product now: at the first pass of
// this process (so each `backup run` does), then once SweepEvery by r.Now
// has passed since the last sweep began. A sweep that fails calls
// sweepFailed, so the next pass tries again.
func (r *Repo) sweepDue(product string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.Now()
	if last, ok := r.swept[product]; ok && now.Sub(last) < SweepEvery && !now.Before(last) {
		return false
	}
	if r.swept == nil {
		r.swept = map[string]time.Time{}
	}
	r.swept[product] = now
	return true
}

func (r *Repo) sweepFailed(product string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.swept, product)
}

// Sweep deletes the shipper's product's superseded uploads: objects in
// the blob store that the catalog does not hold and Rescan would not adopt
// (a fenced shipper's upload, see adoptable), whose positions the
// catalog's chain from its oldest snapshot all holds, that are older than
// SweepGrace, not pinned, and whose retention date (Object Lock) has
// passed; under retention one stays until a later sweep. It never touches
// the catalog, but deletes only after checking (and renewing) the
// shipper's lease, as a catalog change would (fence).
func (s *Shipper) Sweep(ctx context.Context) (deleted []string, err error) {
	r, product, f := s.Repo, s.Product, s.fence()
	objs, err := r.Objects(ctx, product)
	if err != nil || len(objs) == 0 {
		return nil, err
	}
	held := chained(objs)
	var unknown []Object
	written := map[string]time.Time{}
	_, err = r.uncatalogued(ctx, product, objs, func(o Object, info blob.Info) {
		unknown = append(unknown, o)
		written[o.Key] = info.ModTime
	})
	if err != nil {
		return nil, err
	}
	adopted := map[string]bool{}
	for _, o := range adoptions(objs, unknown) {
		adopted[o.Key] = true
	}
	pinned, err := r.pinned(ctx)
	if err != nil {
		return nil, err
	}
	cutoff := r.Now().Add(-SweepGrace)
	var sweep []Object
	for _, u := range unknown {
		if !adopted[u.Key] && !pinned[u.Key] && u.Last <= held && !written[u.Key].After(cutoff) {
			sweep = append(sweep, u)
		}
	}
	if len(sweep) == 0 {
		return nil, nil
	}
	if err := r.change(ctx, f, nil); err != nil {
		return nil, err
	}
	for _, u := range sweep {
		if err := r.Blobs.Delete(ctx, u.Key); err != nil {
			if errors.Is(err, blob.ErrRetained) {
				continue
			}
			return deleted, fmt.Errorf("sweeping %s: %w", u.Key, err)
		}
		deleted = append(deleted, u.Key)
	}
	return deleted, nil
}

// chained returns the last position up to which the catalog objs holds
// every change without a gap, from its oldest snapshot on (0: no snapshot).
func chained(objs []Object) uint64 {
	var segs []Object
	var base *Object
	for i, o := range objs {
		if o.Kind == format.Segment {
			segs = append(segs, o)
		} else if base == nil || o.Last < base.Last {
			base = &objs[i]
		}
	}
	if base == nil {
		return 0
	}
	reach := base.Last
	slices.SortFunc(segs, byFirstLongest)
	for _, s := range segs {
		if s.First > reach+1 {
			break
		}
		reach = max(reach, s.Last)
	}
	return reach
}
