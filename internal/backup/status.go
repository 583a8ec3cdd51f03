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

// Problem is one thing `backup verify` found wrong; Fix says what repairs
// it, when a command does.
type Problem struct {
	Key  string `json:"key,omitempty"`
	What string `json:"what"`
	Fix  string `json:"fix,omitempty"`
}

// fixByShipping repairs a catalog that lacks objects the repository holds:
// every shipping round starts with a Rescan.
const fixByShipping = "`lifeline backup run` records it (every shipping round rescans the repository)"

// Verify reads and decodes every object of product, checks every checksum,
// the index, the order, and that the positions chain from a snapshot with no
// gap or overlap, and that the catalog matches the blob store. It only
// reads: the catalog is left as it is, and where it disagrees with the
// repository that is a problem saying what repairs it. An object the
// catalog lacks that Rescan would adopt and that holds positions past the
// catalog's end is such a problem (and is chained as if adopted); any other
// uncatalogued object holds nothing the catalog lacks (a superseded upload
// or an interrupted merge, see adoptable): checked, but left out of the
// chain, as readers leave it out.
func (r *Repo) Verify(ctx context.Context, product string) (checked int, problems []Problem, err error) {
	cat, err := r.Objects(ctx, product)
	if err != nil {
		return 0, nil, err
	}
	inCatalog := map[string]Object{}
	for _, o := range cat {
		inCatalog[o.Key] = o
	}
	// Every object, catalogued or not, is read and checked.
	readable := map[string]bool{}
	var unknown []Object
	err = r.Blobs.List(ctx, product+"/", func(info blob.Info) error {
		kind, first, last, ok := parseKey(product, info.Key)
		if !ok {
			problems = append(problems, Problem{Key: info.Key, What: "not a repository object (unexpected name)"})
			return nil
		}
		checked++
		if err := format.Verify(ctx, blobRange{r.Blobs, info.Key}, info.Size, r.Key); err != nil {
			problems = append(problems, Problem{Key: info.Key, What: err.Error()})
			return nil
		}
		rd, err := r.open(ctx, info.Key, info.Size)
		if err != nil {
			problems = append(problems, Problem{Key: info.Key, What: err.Error()})
			return nil
		}
		h := rd.Header()
		if h.Kind != kind || h.First != first || h.Last != last || h.Product != product {
			problems = append(problems, Problem{Key: info.Key, What: fmt.Sprintf("its header says %s %s %d-%d, its name says otherwise", h.Product, h.Kind, h.First, h.Last)})
			return nil
		}
		readable[info.Key] = true
		o, known := inCatalog[info.Key]
		switch {
		case !known:
			unknown = append(unknown, Object{Key: info.Key, Kind: kind, First: first, Last: last})
		case o.Size != info.Size:
			problems = append(problems, Problem{Key: info.Key, What: fmt.Sprintf("the catalog says %d bytes, the blob store holds %d", o.Size, info.Size),
				Fix: "put back the object the catalog recorded from another copy"})
		}
		return nil
	})
	if err != nil {
		return checked, problems, err
	}
	var objs []span
	for _, o := range cat {
		if readable[o.Key] {
			objs = append(objs, span{o.Key, o.Kind, o.First, o.Last})
		} else {
			problems = append(problems, Problem{Key: o.Key, What: "listed in the catalog but missing or unreadable in the blob store"})
		}
	}
	top, _, err := r.Cursor(ctx, product)
	if err != nil {
		return checked, problems, err
	}
	for _, u := range adoptions(cat, unknown) {
		if len(cat) > 0 && u.Last <= top.Pos {
			continue // on the catalog's boundaries: holds nothing it lacks
		}
		problems = append(problems, Problem{Key: u.Key, What: "holds positions the catalog lacks (a shipper stopped between upload and record)", Fix: fixByShipping})
		objs = append(objs, span{u.Key, u.Kind, u.First, u.Last})
	}
	return checked, append(problems, chain(objs)...), nil
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
				problems = append(problems, Problem{Key: sg.key, What: fmt.Sprintf("overlaps positions before %d", next)})
			}
		case sg.first > next:
			problems = append(problems, Problem{Key: sg.key, What: fmt.Sprintf("gap: positions %d..%d are missing before it", next, sg.first-1)})
			next = sg.last + 1
		case sg.first < next:
			problems = append(problems, Problem{Key: sg.key, What: fmt.Sprintf("overlaps: starts at %d, the chain is at %d", sg.first, next)})
			next = sg.last + 1
		default:
			next = sg.last + 1
		}
	}
	return problems
}

// VerifyError turns problems into the refusal `backup verify` exits with;
// its hint is the problems' own fix when they share one.
func VerifyError(problems []Problem) error {
	if len(problems) == 0 {
		return nil
	}
	hint := problems[0].Fix
	for _, p := range problems {
		if p.Fix != hint {
			hint = ""
		}
	}
	if hint == "" {
		hint = "put damaged or missing objects back from another copy of the repository; a problem that a command repairs names the command"
	}
	return fault.New(fault.Refused, hint, "%d problem(s) in the backup repository", len(problems))
}
