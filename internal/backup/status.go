package backup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/blob"
	"lifeline/internal/fault"
)

// Status is what `lifeline backup status` reports for one product.
type Status struct {
	Product string `json:"product"`
	// LastPos is the last position in the repository; LastShipped the commit
	// time of that change.
	LastPos     uint64    `json:"last_pos"`
	LastShipped time.Time `json:"last_shipped,omitzero"`
	// Backlog is how many changes wait in the product database; Lag the age
	// of the oldest: the RPO right now.
	Backlog int64         `json:"backlog"`
	Lag     time.Duration `json:"lag_ns"`
	// Oldest and Newest bound the moments a restore can go back to.
	Oldest time.Time `json:"oldest_restorable,omitzero"`
	Newest time.Time `json:"newest_restorable,omitzero"`
	// LastSnapshot is the newest snapshot's position and commit time.
	LastSnapshotPos uint64    `json:"last_snapshot_pos"`
	LastSnapshot    time.Time `json:"last_snapshot,omitzero"`
	Snapshots       int       `json:"snapshots"`
	Segments        int       `json:"segments"`
	Bytes           int64     `json:"bytes"`
	PlainBytes      int64     `json:"plain_bytes"`
	// Ratio is plaintext bytes per stored byte (compression).
	Ratio      float64   `json:"compression_ratio"`
	Error      string    `json:"error,omitempty"`
	ErrorSince time.Time `json:"error_since,omitzero"`
	Checked    time.Time `json:"checked,omitzero"` // when the shipper last reported
	// Shipper is the process ("host:pid") holding the product's shipping
	// lease, when one does.
	Shipper string `json:"shipper,omitempty"`
	// Red is true when shipping is failing, the backlog is over its limit,
	// or there is no snapshot yet; Why says which, in words.
	Red bool     `json:"red"`
	Why []string `json:"why,omitempty"`
}

// Status summarises product's repository and its shipper's last report.
func (r *Repo) Status(ctx context.Context, product string, backlogLimit int64) (Status, error) {
	st := Status{Product: product}
	objs, err := r.Objects(ctx, product)
	if err != nil {
		return st, err
	}
	for _, o := range objs {
		st.Bytes += o.Size
		st.PlainBytes += o.PlainBytes
		if o.Kind == format.Snapshot {
			st.Snapshots++
			if st.Oldest.IsZero() || o.LastTime.Before(st.Oldest) {
				st.Oldest = o.LastTime
			}
			if o.Last >= st.LastSnapshotPos {
				st.LastSnapshotPos, st.LastSnapshot = o.Last, o.LastTime
			}
		} else {
			st.Segments++
		}
		if o.Last >= st.LastPos {
			st.LastPos = o.Last
			if o.LastTime.After(st.LastShipped) {
				st.LastShipped = o.LastTime
			}
		}
		if o.LastTime.After(st.Newest) {
			st.Newest = o.LastTime
		}
	}
	if st.Bytes > 0 {
		st.Ratio = float64(st.PlainBytes) / float64(st.Bytes)
	}
	var updated, oldest, since int64
	err = r.State.DB().QueryRowContext(ctx, r.State.Rebind(`SELECT updated, backlog, oldest_pending, last_error, error_since
		FROM backup_shipper WHERE product = ?`), product).Scan(&updated, &st.Backlog, &oldest, &st.Error, &since)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("backup shipper status: %w", err)
	}
	st.Checked, st.ErrorSince = fromMicros(updated), fromMicros(since)
	lease, err := r.Lease(ctx, product)
	if err != nil {
		return st, err
	}
	if lease.Until.After(r.Now()) {
		st.Shipper = lease.Owner
	}
	if st.Backlog != 0 && oldest != 0 {
		st.Lag = st.Checked.Sub(fromMicros(oldest))
	}
	if st.Backlog == 0 && !st.Checked.IsZero() && st.Checked.After(st.Newest) && st.Snapshots > 0 {
		// Nothing was waiting when the shipper last looked: the repository
		// was complete up to then.
		st.Newest = st.Checked
	}
	if st.Error != "" {
		st.Why = append(st.Why, fmt.Sprintf("shipping fails since %s: %s", st.ErrorSince.Format(time.RFC3339), st.Error))
	}
	if backlogLimit > 0 && st.Backlog > backlogLimit {
		st.Why = append(st.Why, fmt.Sprintf("%d changes wait in the product database, over the limit of %d", st.Backlog, backlogLimit))
	}
	if st.Snapshots == 0 {
		st.Why = append(st.Why, "no snapshot yet: nothing can be restored")
	}
	st.Red = len(st.Why) > 0
	return st, nil
}

// Problem is one thing `backup verify` found wrong.
type Problem struct {
	Key  string `json:"key,omitempty"`
	What string `json:"what"`
}

// Verify reads and decodes every object of product, checks every checksum,
// the index, the order, and that the positions chain from a snapshot with no
// gap or overlap, and that the catalog matches the blob store. It rescans
// first; an object the catalog still lacks then is a superseded upload (see
// adoptable): checked, but left out of the chain, as readers leave it out.
func (r *Repo) Verify(ctx context.Context, product string) (checked int, problems []Problem, err error) {
	if _, err := r.Rescan(ctx, product); err != nil {
		return 0, nil, err
	}
	cat, err := r.Objects(ctx, product)
	if err != nil {
		return 0, nil, err
	}
	inCatalog := map[string]bool{}
	for _, o := range cat {
		inCatalog[o.Key] = true
	}
	var objs []span
	err = r.Blobs.List(ctx, product+"/", func(info blob.Info) error {
		kind, first, last, ok := parseKey(product, info.Key)
		if !ok {
			problems = append(problems, Problem{info.Key, "not a repository object (unexpected name)"})
			return nil
		}
		checked++
		if err := format.Verify(ctx, blobRange{r.Blobs, info.Key}, info.Size, r.Key); err != nil {
			problems = append(problems, Problem{info.Key, err.Error()})
			return nil
		}
		rd, err := r.open(ctx, info.Key, info.Size)
		if err != nil {
			problems = append(problems, Problem{info.Key, err.Error()})
			return nil
		}
		h := rd.Header()
		if h.Kind != kind || h.First != first || h.Last != last || h.Product != product {
			problems = append(problems, Problem{info.Key, fmt.Sprintf("its header says %s %s %d-%d, its name says otherwise", h.Product, h.Kind, h.First, h.Last)})
			return nil
		}
		if inCatalog[info.Key] {
			objs = append(objs, span{info.Key, kind, first, last})
		}
		return nil
	})
	if err != nil {
		return checked, problems, err
	}
	problems = append(problems, chain(objs)...)
	inStore := map[string]bool{}
	for _, o := range objs {
		inStore[o.key] = true
	}
	for _, o := range cat {
		if !inStore[o.Key] {
			problems = append(problems, Problem{o.Key, "listed in the catalog but missing or unreadable in the blob store"})
		}
	}
	return checked, problems, nil
}

// span is an object's place in its product's stream.
type span struct {
	key         string
	kind        format.Kind
	first, last uint64
}

// chain checks that segments continue each other, from the oldest snapshot
// on, with no gap and no overlap: a missing change is detected here.
func chain(objs []span) []Problem {
	var problems []Problem
	var segs []span
	var base *span
	var all []Object
	for _, o := range objs {
		all = append(all, Object{Key: o.key, Kind: o.kind, First: o.first, Last: o.last})
	}
	merged := contained(all)
	for i := range objs {
		o := &objs[i]
		if merged[o.key] {
			continue // a merge holds the same changes
		}
		if o.kind == format.Snapshot {
			if base == nil || o.last < base.last {
				base = o
			}
		} else {
			segs = append(segs, *o)
		}
	}
	if base == nil {
		if len(objs) > 0 {
			problems = append(problems, Problem{What: "no snapshot: the segments have nothing to start from"})
		}
		return problems
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].first < segs[j].first })
	next := base.last + 1
	for _, sg := range segs {
		switch {
		case sg.last < next:
			// Older than the chain so far: covered by a snapshot, or by an
			// overlapping segment, which is a problem.
			if sg.last > base.last {
				problems = append(problems, Problem{sg.key, fmt.Sprintf("overlaps positions before %d", next)})
			}
		case sg.first > next:
			problems = append(problems, Problem{sg.key, fmt.Sprintf("gap: positions %d..%d are missing before it", next, sg.first-1)})
			next = sg.last + 1
		case sg.first < next:
			problems = append(problems, Problem{sg.key, fmt.Sprintf("overlaps: starts at %d, the chain is at %d", sg.first, next)})
			next = sg.last + 1
		default:
			next = sg.last + 1
		}
	}
	return problems
}

// VerifyError turns problems into the refusal `backup verify` exits with.
func VerifyError(problems []Problem) error {
	if len(problems) == 0 {
		return nil
	}
	return fault.New(fault.Refused, "restore the named objects from another copy, or take a new snapshot with `lifeline backup run --snapshot`",
		"%d problem(s) in the backup repository", len(problems))
}
