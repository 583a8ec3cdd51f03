package backup

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/capture"
	"lifeline/internal/change"
	"lifeline/internal/fault"
	"lifeline/internal/tenant"
)

// Shipper moves one product's captured changes into the repository. Exactly
// one shipper ships a product at a time, across every process sharing the
// state store: each round claims the product's lease first (lease.go). It
// starts from a snapshot, then ships batches of whole transactions as
// segments. Changes are acknowledged to the source — and only then
// forgotten by it — after their segment is durable in the blob store.
type Shipper struct {
	Repo    *Repo
	Product string
	Source  capture.Source
	// MaxBatch is how many changes a segment holds at most (a transaction
	// is never split, so one may hold more). Default 20,000.
	MaxBatch int
	// BacklogLimit turns the status red when more changes than this wait in
	// the product database (the blob store is down, say). Nothing is
	// dropped. Default 1,000,000.
	BacklogLimit int64
	Log          *slog.Logger
	Metrics      *Metrics
	// Owner names this process in the product's lease; default
	// tenant.DefaultOwner() ("host:pid"), the identity of operation leases.
	Owner string
	// LeaseTTL is how long the lease lasts without renewal, so how long a
	// dead holder on another host delays the take-over (one on this host
	// is taken over at once). Default 30 s.
	LeaseTTL time.Duration
	// Window is the point-in-time window maintenance (Maintain) keeps
	// restorable (retention.backups).
	Window time.Duration
	// MaintainEvery is how often Run maintains the repository while it
	// holds the lease, in the background: a pass starts this long after the
	// last one ended. Default a minute.
	MaintainEvery time.Duration

	cur     capture.Cursor
	ready   bool
	held    bool      // this shipper held the lease at its last claim
	claimed time.Time // when
	// epoch is the lease's epoch at the last claim. Atomic: maintenance
	// passes make their fences beside the shipping loop's claims.
	epoch atomic.Int64
}

// ErrLeased is wrapped by the fault.Conflict a round returns when another
// process holds the product's lease: that process ships it.
var ErrLeased = errors.New("shipped by another process")

func (s *Shipper) owner() string {
	if s.Owner == "" {
		s.Owner = tenant.DefaultOwner()
	}
	return s.Owner
}

func (s *Shipper) leaseTTL() time.Duration {
	if s.LeaseTTL > 0 {
		return s.LeaseTTL
	}
	return 30 * time.Second
}

// claim takes or renews the lease. A shipper whose lease was taken in the
// meantime (even if it is back now) forgets its cursor: another holder may
// have moved the repository on.
func (s *Shipper) claim(ctx context.Context) error {
	epoch, renewed, err := s.Repo.claimLease(ctx, s.Product, s.owner(), s.leaseTTL())
	if err != nil {
		s.held, s.ready = false, false
		if fault.CodeOf(err) == fault.Conflict {
			return fault.Wrap(ErrLeased, fault.Conflict, fault.HintOf(err), "%s", err.Error())
		}
		return err
	}
	s.claimed = time.Now()
	s.epoch.Store(epoch)
	if !renewed {
		s.held = false
	}
	if !s.held {
		s.held, s.ready = true, false
		if s.Log != nil {
			s.Log.Info("shipping as the product's lease holder", "product", s.Product, "owner", s.owner())
		}
	}
	return nil
}

// Release gives the product's lease up, so a standby process takes over at
// once. Run releases it when it stops.
func (s *Shipper) Release(ctx context.Context) error {
	s.held, s.ready = false, false
	return s.Repo.releaseLease(ctx, s.Product, s.owner())
}

// Shipped is what one Ship call did.
type Shipped struct {
	Product  string         `json:"product"`
	Snapshot *Object        `json:"snapshot,omitempty"`
	Segments int            `json:"segments"`
	Changes  int            `json:"changes"`
	Bytes    int64          `json:"bytes"`
	Cursor   capture.Cursor `json:"cursor"`
	// Compacted and Pruned are filled by maintenance after shipping.
	Compacted *Object  `json:"compacted,omitempty"`
	Pruned    []string `json:"pruned,omitempty"`
}

func (s *Shipper) maxBatch() int {
	if s.MaxBatch > 0 {
		return s.MaxBatch
	}
	return 20000
}

// start finds where the repository is: the catalog, brought up to date with
// the blob store (an upload may have landed just before a crash).
func (s *Shipper) start(ctx context.Context) error {
	if s.ready {
		return nil
	}
	if _, err := s.Rescan(ctx); err != nil {
		return err
	}
	cur, ok, err := s.Repo.Cursor(ctx, s.Product)
	if err != nil {
		return err
	}
	s.cur, s.ready = cur, ok
	return nil
}

// Rescan takes or renews the product's lease and brings the catalog up to
// date with the blob store under it, as a holder does before it ships: it
// records the objects an interrupted upload, merge or compaction left
// unrecorded (see adoptable), and returns the keys under the product's
// prefix that are not repository objects.
func (s *Shipper) Rescan(ctx context.Context) (strays []string, err error) {
	if err := s.claim(ctx); err != nil {
		return nil, err
	}
	return s.Repo.rescan(ctx, s.Product, s.fence())
}

// Ship takes the first snapshot if the repository has none, then ships
// everything pending when it began (and what came meanwhile, up to the
// last read), and returns. `lifeline backup run` is one call. When
// another process holds the product's lease it ships nothing and returns a
// fault.Conflict wrapping ErrLeased.
func (s *Shipper) Ship(ctx context.Context) (Shipped, error) {
	res := Shipped{Product: s.Product}
	err := s.ship(ctx, &res)
	if errors.Is(err, ErrLeased) {
		return res, err // the holder reports the product's health
	}
	s.report(ctx, err)
	res.Cursor = s.cur
	return res, err
}

func (s *Shipper) ship(ctx context.Context, res *Shipped) error {
	if err := s.claim(ctx); err != nil {
		return err
	}
	if err := s.start(ctx); err != nil {
		return err
	}
	if !s.ready {
		o, err := s.snapshot(ctx)
		if err != nil {
			return err
		}
		res.Snapshot = &o
	}
	for {
		b, err := s.Source.Read(ctx, s.cur, s.maxBatch())
		if err != nil {
			return err
		}
		if len(b.Changes) == 0 {
			if !b.Behind {
				return s.refresh(ctx, res)
			}
			// The read found changes whose transactions' end it could not
			// record (an application held SQLite's write lock): they are
			// still to come, and Ship must not report them shipped.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(behindRetry):
			}
			continue
		}
		if err := s.shipBatch(ctx, b, res); err != nil {
			return err
		}
		// Everything pending when Ship began is shipped: done. Under
		// steady writes no read may ever come back empty.
		if s.caughtUp(b) {
			return s.refresh(ctx, res)
		}
	}
}

// behindRetry is how long Ship waits before reading again after a read
// that could not record where the newest transactions end.
const behindRetry = 10 * time.Millisecond

// caughtUp reports whether b holds every change committed before its read
// began: it is short of max (a full batch may have stopped early) and left
// nothing older behind.
func (s *Shipper) caughtUp(b capture.Batch) bool {
	return len(b.Changes) < s.maxBatch() && !b.Behind
}

// shipBatch writes one batch as a segment and counts it in res.
func (s *Shipper) shipBatch(ctx context.Context, b capture.Batch, res *Shipped) error {
	n, err := s.segment(ctx, b)
	if err != nil {
		return err
	}
	res.Segments++
	res.Changes += len(b.Changes)
	res.Bytes += n
	return nil
}

// segment writes one batch as a segment, then acknowledges it.
func (s *Shipper) segment(ctx context.Context, b capture.Batch) (int64, error) {
	p, err := s.encode(s.cur, b)
	if err != nil {
		return 0, err
	}
	if err := s.record(ctx, p); err != nil {
		return 0, err
	}
	s.ack(ctx, s.cur)
	return p.sum.Size, nil
}

// piece is a batch encoded as a segment, not yet uploaded.
type piece struct {
	from, end capture.Cursor // the cursor it continues, and the one after it
	key       string
	data      []byte
	sum       format.Summary
	changes   int
}

// encode writes batch b, read after cursor from, as a segment. It touches
// no shipper state, so Run encodes while the previous piece uploads.
func (s *Shipper) encode(from capture.Cursor, b capture.Batch) (piece, error) {
	first, last := from.Pos+1, b.End.Pos
	if b.Changes[0].Pos != first || last != b.Changes[len(b.Changes)-1].Pos {
		return piece{}, fault.New(fault.Internal, "", "%s: capture returned positions %d..%d after cursor %d", s.Product, b.Changes[0].Pos, last, from.Pos)
	}
	h := format.Header{Product: s.Product, First: first, Last: last, Source: b.End.Src, Tables: b.Tables, Created: s.Repo.Now()}
	var buf bytes.Buffer
	sum, err := format.WriteSegment(&buf, h, b.Changes, s.Repo.options())
	if err != nil {
		return piece{}, err
	}
	return piece{from: from, end: b.End, key: segmentKey(s.Product, first, last), data: buf.Bytes(), sum: sum, changes: len(b.Changes)}, nil
}

// record uploads and records p, and moves the cursor past it. p must
// continue the shipper's cursor: pieces are recorded one at a time, in
// order.
func (s *Shipper) record(ctx context.Context, p piece) error {
	if p.from != s.cur {
		return fault.New(fault.Internal, "", "%s: segment %s continues cursor %d, the shipper is at %d", s.Product, p.key, p.from.Pos, s.cur.Pos)
	}
	// Renewed before an upload when the lease was last renewed a third of
	// it ago: the lease cannot pass to another process during the upload
	// unless the upload outlasts two thirds of it.
	if time.Since(s.claimed) > s.leaseTTL()/3 {
		if err := s.claim(ctx); err != nil {
			return err
		}
	}
	started := time.Now()
	if err := s.put(ctx, p.key, bytes.NewReader(p.data), p.sum); err != nil {
		return err
	}
	s.claimed = started // recording renewed the lease (fence.check)
	s.cur = p.end
	if s.Metrics != nil {
		s.Metrics.shipped(s.Product, p.changes, p.sum.Size)
	}
	return nil
}

// ack tells the source that everything up to cur is durable in the
// repository, so it may forget it. A failed Ack only means those changes
// are read again and skipped next time.
func (s *Shipper) ack(ctx context.Context, cur capture.Cursor) {
	if err := s.Source.Ack(ctx, cur); err != nil && ctx.Err() == nil && s.Log != nil {
		s.Log.Warn("acknowledging shipped changes failed; they will be skipped when read again", "product", s.Product, "err", err)
	}
}

// put uploads an object and records it, fenced by the lease: an upload
// that outlasted the lease (another process took over meanwhile) is not
// recorded, nothing is acknowledged, and the shipper stands by. Its object
// stays in the blob store, superseded (see Shipper.Rescan): the positions it
// holds are the ones the new holder ships from the same cursor.
//
// The catalog must also still end where this shipper's cursor is: a rescan
// elsewhere may have adopted the fenced object of a former holder for the
// same positions. Then this object is the superseded one, and the next
// round starts from the catalog.
func (s *Shipper) put(ctx context.Context, key string, body io.Reader, sum format.Summary) error {
	f := s.fence()
	f.upload, f.top = true, -1
	if s.ready {
		f.top = int64(s.cur.Pos)
	}
	err := s.Repo.put(ctx, key, body, sum, f)
	switch {
	case errors.Is(err, ErrLeased):
		s.held, s.ready = false, false
		if s.Log != nil {
			s.Log.Warn("lost the shipping lease during an upload; standing by", "product", s.Product, "object", key)
		}
	case errors.Is(err, errCatalogMoved):
		s.ready = false
	}
	return err
}

// fence is the shipper's lease as held now, for a catalog change to commit
// only while this process still holds it without having lost it meanwhile.
// A maintenance step makes its fence before it reads the catalog it
// decides from.
func (s *Shipper) fence() *fence {
	return &fence{product: s.Product, owner: s.owner(), epoch: s.epoch.Load(), ttl: s.leaseTTL()}
}

// snapshot writes the first full image of the product, consistent with the
// position the change stream continues from.
func (s *Shipper) snapshot(ctx context.Context) (_ Object, err error) {
	ctx, kept := s.keepLease(ctx)
	defer kept(&err)
	snap, err := s.Source.Snapshot(ctx)
	if err != nil {
		return Object{}, err
	}
	defer snap.Close()
	cur := snap.Cursor()
	key, sp, sum, err := s.image(ctx, snap, cur)
	defer sp.close()
	if err != nil {
		return Object{}, err
	}
	body, err := sp.reader()
	if err != nil {
		return Object{}, err
	}
	if err := s.put(ctx, key, body, sum); err != nil {
		return Object{}, err
	}
	s.cur, s.ready = cur, true
	if err := s.Source.Ack(ctx, cur); err != nil && s.Log != nil {
		s.Log.Warn("acknowledging the snapshot position failed", "product", s.Product, "err", err)
	}
	return objectOf(key, sum.Header, sum.Size, sum.PlainBytes, sum.Records, len(sum.Tenants)), nil
}

// image encodes snap's rows as a snapshot object at position cur, in a
// spool the caller closes (also on error). It holds one tenant's rows at a
// time in memory, besides the writer's block and index.
func (s *Shipper) image(ctx context.Context, snap capture.Snapshot, cur capture.Cursor) (key string, sp *spool, sum format.Summary, err error) {
	now := s.Repo.Now()
	h := format.Header{Product: s.Product, First: cur.Pos, Last: cur.Pos, Source: cur.Src, Tables: snap.Tables(),
		FirstTime: now, LastTime: now, Created: now}
	if sp, err = newSpool(); err != nil {
		return "", nil, sum, err
	}
	w, err := format.NewSnapshotWriter(sp, h, s.Repo.options())
	if err != nil {
		return "", sp, sum, err
	}
	tables := map[string]*change.Table{}
	for i := range h.Tables {
		tables[h.Tables[i].Name] = &h.Tables[i]
	}
	var tenant []change.Change
	flush := func() error {
		// Rows arrive grouped by tenant in the database's key order, which
		// can differ from the format's for unusual key types; sort to be
		// sure. Only one tenant's rows are held at a time.
		slices.SortStableFunc(tenant, func(a, b change.Change) int { return format.CompareRows(&a, tables[a.Table], &b, tables[b.Table]) })
		for i := range tenant {
			if err := w.Add(&tenant[i]); err != nil {
				return err
			}
		}
		tenant = tenant[:0]
		return nil
	}
	err = snap.Rows(ctx, func(c *change.Change) error {
		if len(tenant) > 0 && tenant[0].Tenant != c.Tenant {
			if err := flush(); err != nil {
				return err
			}
		}
		cp := *c
		cp.Row = cloneRow(c.Row)
		tenant = append(tenant, cp)
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return "", sp, sum, err
	}
	if sum, err = w.Close(); err != nil {
		return "", sp, sum, err
	}
	return snapshotKey(s.Product, cur.Pos), sp, sum, nil
}

// cloneRow copies a row whose byte slices may be reused by the source.
func cloneRow(row []change.Value) []change.Value {
	out := make([]change.Value, len(row))
	for i, v := range row {
		out[i] = v
		if v.Bytes != nil {
			out[i].Bytes = bytes.Clone(v.Bytes)
		}
	}
	return out
}

func (r *Repo) options() format.Options {
	return format.Options{Key: r.Key, KeyID: r.KeyID}
}

// Run ships until ctx ends, keeping interval as the RPO target: each change
// is to be recorded in the repository within interval of its commit (see
// stream). While this process holds the product's lease and streams, it
// also maintains the repository every MaintainEvery (Maintain), in the
// background (upkeep); otherwise it stands by and claims the lease every
// interval, taking over when the holder stops, dies or stops renewing.
// Errors are recorded for status and retried with backoff; they never stop
// the loop. It releases the lease when ctx ends.
func (s *Shipper) Run(ctx context.Context, interval time.Duration) {
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := s.Release(ctx); err != nil && s.Log != nil {
			s.Log.Warn("releasing the shipping lease failed; another process takes over when it expires", "product", s.Product, "err", err)
		}
	}()
	wait := interval
	up := &upkeep{every: cmp.Or(s.MaintainEvery, time.Minute), ended: time.Now()}
	for {
		// A round claims the lease, takes the first snapshot if needed and
		// catches up; then stream ships as changes come, until it fails or
		// the lease was taken.
		started := time.Now()
		_, err := s.Ship(ctx)
		if err == nil {
			wait = interval
			if err = s.stream(ctx, interval, started, up); err != nil && !errors.Is(err, ErrLeased) {
				s.report(ctx, err)
			}
		}
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			continue // the lease changed hands meanwhile: start over from the catalog
		case errors.Is(err, ErrLeased):
			wait = interval // standing by
		default:
			if s.Log != nil {
				s.Log.Error("shipping failed; changes stay in the product database until it works", "product", s.Product, "err", err)
			}
			wait = min(wait*2, time.Minute)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// stream ships while this process holds the lease and knows its cursor,
// and returns when that ends (nil) or a step fails. A change must be
// recorded within target of its commit. Reads aim at 60% of it (aim): the
// rest is headroom for a round slower than the recent ones (a checkpoint,
// a busy disk, the CPU taken by the application), which at 1 s and 2,000
// writes/s set the p99 past the target in most runs without it. Recording
// a segment takes up to d after its read starts (the longest of the last
// rounds, plus a poll period of margin), so a read
// starts at the latest aim-d after the oldest change it would find. No
// change committed before the last read that caught up started is
// pending, so that read's start bounds it. While reads find nothing the
// source's Backlog is polled every target/10 (at most 100 ms; on SQLite a
// read-only query while nothing is pending), and its oldest pending
// change's commit time sets the read instead: a change is read when it is
// about to be aim old, not on a fixed beat, and a backlog of a batch or
// more at once. Reads start no closer than the poll period, so segments do
// not shrink to a change or two when rounds are slow.
//
// The upload and record of a segment overlap the read and encoding of the
// next, but uploads are one at a time, in order: a segment is uploaded only
// after the previous one is recorded, so each is still recorded in a
// transaction that renews this shipper's lease and finds the catalog at the
// segment's first position minus one (put), and acknowledged only after
// that. When an upload fails, the segment read after it is dropped unsent;
// Run's next round reads it again from the shipper's cursor.
//
// Maintenance passes run beside it (up), never in its path; stream stops
// the one running, and waits for it, before it returns: once it returns
// the lease may be lost, or no longer renewed (Run backing off, or
// releasing it), and only the lease holder maintains.
func (s *Shipper) stream(ctx context.Context, target time.Duration, caught time.Time, up *upkeep) error {
	poll := max(min(target/10, 100*time.Millisecond), time.Millisecond)
	aim := target * 6 / 10
	type done struct {
		took time.Duration // from the start of its read to recorded
		err  error
	}
	var (
		next     = s.cur
		flight   chan done // the commit in flight, nil when none
		took     [8]time.Duration
		rounds   int
		reported = time.Now()
		idle     = true // the last read found nothing
	)
	// settle waits for the commit in flight. The shipper's own state (its
	// cursor, lease) is touched only while nothing is in flight.
	settle := func() error {
		if flight == nil {
			return nil
		}
		r := <-flight
		flight = nil
		if r.err == nil {
			took[rounds%len(took)] = r.took
			rounds++
		}
		return r.err
	}
	// Acknowledging (SQLite: deleting from the change log, which waits for
	// the product's write lock) is off the path of the next upload: a
	// goroutine acknowledges the newest recorded cursor, skipping those
	// recorded while it waited.
	acks, acked := make(chan capture.Cursor, 1), make(chan struct{})
	go func() {
		defer close(acked)
		for cur := range acks {
			s.ack(ctx, cur)
		}
	}()
	offer := func(cur capture.Cursor) {
		for {
			select {
			case acks <- cur:
				return
			default:
				select {
				case <-acks:
				default:
				}
			}
		}
	}
	defer func() {
		up.stop()
		settle()
		close(acks)
		<-acked
	}()
	for {
		if flight == nil && time.Since(s.claimed) > s.leaseTTL()/3 {
			if err := s.claim(ctx); err != nil {
				return err
			}
			if !s.ready {
				return nil
			}
		}
		// A poll period of margin: a round may be slower than the last
		// eight, and the change may be found a poll late.
		d := slices.Max(took[:]) + poll
		due := caught.Add(aim - d)
		if idle {
			n, oldest, err := s.Source.Backlog(ctx, next)
			switch {
			case err != nil:
				return errors.Join(err, settle())
			case n >= int64(s.maxBatch()):
				due = time.Time{}
			case n > 0:
				due = oldest.Add(aim - d)
			}
		}
		if floor := caught.Add(poll); due.Before(floor) && !due.IsZero() {
			due = floor
		}
		if wait := time.Until(due); wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(wait, poll)):
			}
			continue
		}
		start := time.Now()
		b, err := s.Source.Read(ctx, next, s.maxBatch())
		if err != nil {
			return errors.Join(err, settle())
		}
		if s.caughtUp(b) {
			caught = start
		}
		// A read that left older changes behind is followed, like one
		// that found nothing, by the backlog's oldest change.
		idle = len(b.Changes) == 0 || b.Behind
		var p piece
		if len(b.Changes) > 0 {
			if p, err = s.encode(next, b); err != nil {
				return errors.Join(err, settle())
			}
		}
		// The previous segment must be recorded before this one uploads:
		// its fence continues the catalog where that one ends.
		if err := settle(); err != nil {
			return err
		}
		if time.Since(reported) >= target {
			s.report(ctx, nil)
			reported = time.Now()
		}
		up.start(ctx, s.maintain)
		if len(b.Changes) == 0 {
			continue
		}
		ch := make(chan done, 1)
		flight, next = ch, b.End
		go func() {
			err := s.record(ctx, p)
			if err == nil {
				offer(p.end)
			}
			ch <- done{time.Since(start), err}
		}()
	}
}

// upkeep runs a shipper's maintenance passes in the background, one at a
// time, so that a long merge or compaction never holds up shipping. Only
// the goroutine streaming uses it.
type upkeep struct {
	every time.Duration
	// ended is when the last pass ended (at first, when Run started); the
	// pass running writes it before closing done.
	ended  time.Time
	cancel context.CancelFunc // the running pass's, nil when none
	done   chan struct{}
}

// start starts a pass of fn under ctx when none is running and the last
// ended at least every ago.
func (u *upkeep) start(ctx context.Context, fn func(context.Context)) {
	if u.cancel != nil {
		select {
		case <-u.done:
			u.cancel()
			u.cancel = nil
		default:
			return // still running
		}
	}
	if time.Since(u.ended) < u.every {
		return
	}
	ctx, u.cancel = context.WithCancel(ctx)
	done := make(chan struct{})
	u.done = done
	go func() {
		defer close(done)
		fn(ctx)
		u.ended = time.Now()
	}()
}

// stop cancels the running pass, if any, and waits until it has returned.
func (u *upkeep) stop() {
	if u.cancel == nil {
		return
	}
	u.cancel()
	<-u.done
	u.cancel = nil
}

// maintain is one of Run's background maintenance passes (Maintain). Run
// has one run every MaintainEvery while this process holds the lease, and
// each of its catalog changes commits only while it still does, so one
// process at a time maintains a product, as one ships it.
//
// It runs while segments are recorded. That is safe because maintenance
// adds objects only up to the catalog's last position (merges, snapshots)
// and deletes none that holds it, so the fenced record of a segment
// uploaded meanwhile still finds the catalog ending at the shipper's
// cursor (fence.check); it merges, compacts and prunes from the catalog as
// it read it, so never a segment recorded after; and Sweep leaves such a
// segment alone, as past its chain and younger than SweepGrace.
func (s *Shipper) maintain(ctx context.Context) {
	_, _, err := s.Maintain(ctx)
	switch {
	case err == nil || ctx.Err() != nil || s.Log == nil:
	case errors.Is(err, ErrLeased):
		s.Log.Warn("lost the shipping lease during maintenance; the pass stopped, the new holder maintains", "product", s.Product, "err", err)
	default:
		s.Log.Warn("backup maintenance failed", "product", s.Product, "err", err)
	}
}

// report records the shipper's health for `backup status` and the metrics.
func (s *Shipper) report(ctx context.Context, shipErr error) {
	if ctx.Err() != nil {
		return
	}
	var backlog int64
	var oldest time.Time
	if s.ready {
		var err error
		backlog, oldest, err = s.Source.Backlog(ctx, s.cur)
		if err != nil && shipErr == nil {
			shipErr = err
		}
	}
	msg := ""
	if shipErr != nil {
		msg = shipErr.Error()
	}
	if s.Metrics != nil {
		s.Metrics.health(s.Product, backlog, oldest, s.Repo.Now(), shipErr != nil, backlog > s.backlogLimit())
		if l, ok := s.Source.(capture.Lagger); ok {
			if n, err := l.LagBytes(ctx); err == nil {
				s.Metrics.slot(s.Product, n)
			}
		}
	}
	if err := s.Repo.recordShipper(ctx, s.Product, backlog, oldest, msg); err != nil && s.Log != nil {
		s.Log.Warn("recording shipper status failed", "product", s.Product, "err", errors.Join(err, shipErr))
	}
}

func (s *Shipper) backlogLimit() int64 {
	if s.BacklogLimit > 0 {
		return s.BacklogLimit
	}
	return 1_000_000
}

func (r *Repo) recordShipper(ctx context.Context, product string, backlog int64, oldest time.Time, errText string) error {
	now, since := micros(r.Now()), int64(0)
	if errText != "" {
		since = now
	}
	_, err := r.State.DB().ExecContext(ctx, r.State.Rebind(`INSERT INTO backup_shipper (product, updated, backlog, oldest_pending, last_error, error_since)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (product) DO UPDATE SET updated = excluded.updated, backlog = excluded.backlog,
			oldest_pending = excluded.oldest_pending, last_error = excluded.last_error,
			error_since = CASE WHEN excluded.last_error = '' THEN 0
				WHEN backup_shipper.error_since = 0 THEN excluded.error_since ELSE backup_shipper.error_since END`),
		product, now, backlog, micros(oldest), errText, since)
	if err != nil {
		return fmt.Errorf("backup shipper status: %w", err)
	}
	return nil
}
