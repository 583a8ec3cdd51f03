package restore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// pinFor is how long a restore keeps its objects from retention; a crashed
// restore's pins lapse on their own.
const pinFor = 24 * time.Hour

// inPlace runs the restore as an operation: every tenant is rebuilt into
// staging first (so a broken backup object refuses before anything
// changed), then each tenant is swapped in its own verified transaction.
func (s *Service) inPlace(ctx context.Context, pl *plan) error {
	op, err := s.startOperation(ctx, pl)
	if err != nil || op == nil {
		return err
	}
	rep := pl.report
	rep.Operation = op.ID
	stop := s.Tenants.KeepLease(ctx, op.ID)
	defer stop()
	bg := context.WithoutCancel(ctx)
	var keys []string
	for _, o := range rep.Objects {
		keys = append(keys, o.Key)
	}
	// A cancelled context (Ctrl-C, SIGTERM) is not a failure: the
	// operation stays running, to be finished by the same command again.
	end := func(err error) error {
		if ctx.Err() != nil {
			stop()
			return s.interrupted(bg, pl, op, context.Cause(ctx))
		}
		return s.finish(bg, pl, op, err)
	}
	if err := s.Repo.Pin(ctx, op.ID, keys, s.Tenants.Clock().Add(pinFor)); err != nil {
		return end(err)
	}
	defer func() { _ = s.Repo.Unpin(bg, op.ID) }()

	// Staging tables fit the tables as they are now.
	for _, p := range pl.products {
		if pl.readings[p.Name] == nil {
			continue
		}
		rts, err := p.DB.PrepareRestore(ctx, p.Layout)
		if err != nil {
			return end(err)
		}
		pl.tables[p.Name] = rts
	}
	if err := s.recognise(ctx, pl, op); err != nil {
		return end(err)
	}
	if err := s.stageAll(ctx, pl, op); err != nil {
		s.clearStaging(bg, pl, op)
		return end(err)
	}
	s.applyAll(ctx, pl, op)
	return end(nil)
}

// clearStaging drops what this operation staged, in every product.
func (s *Service) clearStaging(ctx context.Context, pl *plan, op *state.Operation) {
	for _, p := range pl.products {
		if rts := pl.tables[p.Name]; rts != nil {
			_ = p.DB.ClearStaging(ctx, rts, op.ID, "")
		}
	}
}

// interrupted ends a run (restore or undo) whose context was cancelled,
// once its lease renewal has stopped. The swaps stop between transactions,
// so every tenant is restored and verified (or undone) or left as it was;
// the operation stays running (its steps record which tenants are done) so
// that the same command takes it over and finishes it. Its lease is
// released, so that a runner that stays alive (a plan, `serve`) resumes it
// at once rather than when the lease lapses. The report says which tenants
// were not reached, and the error (exit 1) that the run did not finish. A
// cancel that came after the last swap changes nothing: the run finishes.
func (s *Service) interrupted(ctx context.Context, pl *plan, op *state.Operation, cause error) error {
	var done int
	var left []string
	for _, st := range pl.steps {
		switch {
		case st.done:
			done++
		case st.skip || st.report.Status != "": // erased, broken, failed
		default:
			left = append(left, st.tenant+" in "+st.product.Name)
			st.report.Status = "interrupted"
			st.report.Error = "left as it was: the " + op.Action + " was interrupted before this tenant"
		}
	}
	if len(left) == 0 {
		return s.finish(ctx, pl, op, nil)
	}
	s.clearStaging(ctx, pl, op)
	pl.report.Status = "interrupted"
	hint := "run the same command again to finish it"
	if op.Action == "restore" {
		hint = "run the same command again, or `lifeline ops resume " + op.ID + "`, to finish it"
	}
	err := fault.Wrap(cause, fault.Internal, hint,
		"%s %s was interrupted: %d tenant steps done and verified, %d not reached and left as they were (%s)",
		op.Action, op.ID, done, len(left), strings.Join(head(left, 10), ", "))
	if rerr := s.Tenants.Store.ReleaseOperation(ctx, op.ID, s.Tenants.Owner); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// startOperation records the restore as an operation (or takes over the
// interrupted one this command already started). nil, nil: nothing to do.
func (s *Service) startOperation(ctx context.Context, pl *plan) (*state.Operation, error) {
	store := s.Tenants.Store
	if pl.resume != nil {
		if err := s.Tenants.Claim(ctx, pl.resume); err != nil {
			return nil, err
		}
		if s.Log != nil {
			s.Log.Info("resuming interrupted restore", "op", pl.resume.ID)
		}
		return store.GetOperation(ctx, pl.resume.ID)
	}
	var steps []state.Step
	targets := []string{}
	for _, st := range pl.steps {
		if !st.skip {
			steps = append(steps, state.Step{Product: st.product.Name, Tenant: st.tenant, Status: state.StepPending})
		}
	}
	for _, t := range pl.report.Tenants {
		targets = append(targets, "site:"+t.Tenant)
	}
	if len(steps) == 0 {
		pl.report.Status = "done"
		return nil, s.outcome(pl)
	}
	id := state.NewOperationID(s.Tenants.Clock())
	if err := saveRun(ctx, store, id, pl.key, pl.req); err != nil {
		return nil, err
	}
	op := &state.Operation{ID: id, Action: "restore", Actor: pl.req.Actor, Reason: reason(pl), Targets: targets, Steps: steps}
	if err := store.CreateOperation(ctx, op, s.Tenants.Owner, s.Tenants.TTL()); err != nil {
		return nil, err
	}
	return op, nil
}

func reason(pl *plan) string {
	r := "restore to " + strings.Join(sortedValues(pl.report.Moment.Products), ", ")
	if pl.req.Before != "" {
		r = "restore to before " + pl.req.Before
	}
	if pl.req.Policy != productdb.Replace {
		r += " (" + string(pl.req.Policy) + ")"
	}
	if pl.req.Reason != "" {
		r = pl.req.Reason + " — " + r
	}
	return r
}

func sortedValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		if len(out) == 0 || out[len(out)-1] != v {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// recognise marks the steps an earlier run of this operation committed:
// recorded as done, or committed just before a crash (the product's
// applied marker says so).
func (s *Service) recognise(ctx context.Context, pl *plan, op *state.Operation) error {
	status := map[[2]string]state.StepStatus{}
	for _, st := range op.Steps {
		status[[2]string{st.Product, st.Tenant}] = st.Status
	}
	markers := map[string]map[string]productdb.SwapResult{} // by product, then tenant: read once
	for _, st := range pl.steps {
		if st.skip {
			continue
		}
		k := [2]string{st.product.Name, st.tenant}
		stat, inOp := status[k]
		if !inOp || stat == state.StepSkipped || stat == state.StepFailed {
			st.skip = true
			st.report.Status = "skipped"
			st.report.Error = "not part of operation " + op.ID + ", or failed in an earlier run of it; run the restore again after it finishes"
			continue
		}
		m, read := markers[st.product.Name]
		if !read {
			var err error
			if m, err = st.product.DB.RestoreMarkers(ctx, op.ID); err != nil {
				return err
			}
			markers[st.product.Name] = m
		}
		res, ok := m[st.tenant]
		if !ok {
			continue
		}
		st.skip, st.done = true, true
		s.record(st, res, 0)
		st.report.Resumed = true
		if stat != state.StepDone {
			if err := s.Tenants.Store.UpdateStep(ctx, op.ID, stepDone(st, res)); err != nil {
				return err
			}
		}
	}
	return nil
}

// stageAll rebuilds every pending step into staging, Workers at a time.
// SQLite takes one writer at a time, so each product's writes are
// serialised while the rebuilds run in parallel.
func (s *Service) stageAll(ctx context.Context, pl *plan, op *state.Operation) error {
	var pending []*step
	for _, st := range pl.steps {
		if !st.skip {
			pending = append(pending, st)
		}
	}
	stagers := map[string]*stager{}
	for _, p := range pl.products {
		if rts := pl.tables[p.Name]; rts != nil {
			// What an interrupted run of this operation staged is stale.
			if err := p.DB.ClearStaging(ctx, rts, op.ID, ""); err != nil {
				return err
			}
			stagers[p.Name] = s.newStager(p.DB, op.ID)
		}
	}
	var budget atomic.Int64 // bytes held for direct swaps
	budget.Store(maxHeldBytes)
	err := pool(ctx, s.workers(), pending, func(ctx context.Context, st *step) error {
		t0 := time.Now()
		p := st.product
		r := newRebuilder(p.DB.Engine(), st.tables, pl.req.AllowDrift, s.chunkRows())
		// A small tenant is held in memory and swapped directly; one that
		// turns out larger (or with columns added since) is staged.
		g := stagers[p.Name]
		held := &directRows{ok: pl.req.Policy == productdb.Replace && s.DirectRows >= 0, budget: &budget, rows: map[string]int{}, limit: s.directRows}
		if !held.ok && pl.req.Policy == productdb.Replace {
			// A table already as at the moment needs no staging; the swap
			// checks it again inside its transaction.
			r.unchanged = func(rt *productdb.RestoreTable, h *productdb.TableHash) bool {
				if len(h.Partial()) > 0 {
					return false
				}
				live, err := p.DB.HashLive(ctx, nil, rt, st.tenant)
				return err == nil && live.Equal(h, rt.Columns)
			}
		}
		want, err := r.run(ctx, pl.readings[p.Name], st.tenant, func(batches []productdb.Batch) error {
			s.advance("rebuild", len(pending), 0, countRows(batches))
			if held.take(p.DB, batches) {
				return nil
			}
			if len(held.batches) > 0 {
				if err := g.add(ctx, held.batches); err != nil {
					return err
				}
				held.release()
			}
			return g.add(ctx, batches)
		})
		if err != nil {
			held.release()
		}
		st.report.Notes = append(st.report.Notes, r.notes()...)
		st.report.Seconds += time.Since(t0).Seconds()
		if err != nil {
			if broken(err) && pl.req.SkipBroken {
				st.skip = true
				st.report.Status, st.report.Error = "skipped", err.Error()
				if err := g.drop(context.WithoutCancel(ctx), st.tables, st.tenant); err != nil {
					return err
				}
				return s.Tenants.Store.UpdateStep(ctx, op.ID, state.Step{Product: p.Name, Tenant: st.tenant, Status: state.StepSkipped, Error: err.Error()})
			}
			if broken(err) {
				return fault.Wrap(err, fault.Refused, "run `lifeline backup verify` to list the damage; --skip-broken restores the other tenants and reports this one",
					"tenant %s of %s cannot be rebuilt; nothing was restored", st.tenant, p.Name)
			}
			return fmt.Errorf("rebuilding tenant %s of %s: %w", st.tenant, p.Name, err)
		}
		if err := wholeTenant(p, st, want); err != nil {
			return err
		}
		st.want = want
		if held.ok { // non-nil, even for a tenant without rows: swapped directly
			st.rows = append([]productdb.Batch{}, held.batches...)
		}
		s.advance("rebuild", len(pending), 1, 0)
		return nil
	})
	if err != nil {
		return err
	}
	for _, g := range stagers {
		if err := g.flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// maxHeldBytes bounds the rebuilt rows held in memory for direct swaps,
// from the end of the rebuild until each tenant's swap: tenants beyond it
// are staged.
const maxHeldBytes = 256 << 20

// directRows holds one tenant's rebuilt rows for a direct swap while they
// fit: at most productdb.DirectMaxRows per table, every column present,
// within the restore's shared memory budget. ok turns false, for good,
// once they do not.
type directRows struct {
	ok      bool
	batches []productdb.Batch
	rows    map[string]int
	size    int64
	budget  *atomic.Int64
	limit   func(*productdb.RestoreTable) int
}

func (d *directRows) take(db *productdb.DB, batches []productdb.Batch) bool {
	if !d.ok {
		return false
	}
	var size int64
	for _, b := range batches {
		n := d.rows[b.Table.Name] + len(b.Rows)
		if !db.CanSwapDirect(productdb.Replace, b) || n > d.limit(b.Table) {
			d.ok = false
			return false
		}
		size += batchBytes(b)
	}
	if d.budget.Add(-size) < 0 {
		d.budget.Add(size)
		d.ok = false
		return false
	}
	for _, b := range batches {
		d.rows[b.Table.Name] += len(b.Rows)
	}
	d.size += size
	d.batches = append(d.batches, batches...)
	return true
}

// release gives the rows' memory back to the budget: staged, swapped or
// dropped.
func (d *directRows) release() {
	d.budget.Add(d.size)
	d.size, d.batches, d.ok = 0, nil, false
}

func batchBytes(b productdb.Batch) int64 {
	var n int64
	for _, row := range b.Rows {
		for _, v := range row {
			n += 24 + int64(len(v.Bytes))
		}
	}
	return n
}

// stager gathers one product's rebuilt rows, from every tenant being
// rebuilt, into staging transactions: many small tenants share one
// transaction and one commit. Writes are serialised: SQLite has one writer,
// and on PostgreSQL staging is a small share of the time. On SQLite a
// transaction is sized to last about TxBudget and followed by Pause, as
// the swaps are (see applyPaced); elsewhere it takes ChunkRows rows.
type stager struct {
	db      *productdb.DB
	op      string
	chunk   int
	paced   bool
	budget  time.Duration
	pause   time.Duration
	mu      sync.Mutex
	pending []productdb.Batch
	rows    int
	size    int
	limit   int // rows per transaction
}

func (s *Service) newStager(db *productdb.DB, opID string) *stager {
	g := &stager{db: db, op: opID, chunk: s.chunkRows(), limit: s.chunkRows()}
	if db.Engine() == productdb.SQLite {
		g.paced, g.budget, g.pause, g.limit = true, s.txBudget(), s.pause(), min(g.chunk, 100)
	}
	return g
}

// add takes batches (the stager's to keep) and writes what it holds once
// it holds a transaction's worth.
func (g *stager) add(ctx context.Context, batches []productdb.Batch) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, b := range batches {
		g.rows += len(b.Rows)
		g.size += int(batchBytes(b))
	}
	g.pending = append(g.pending, batches...)
	if g.rows < g.limit && g.size < maxBatchBytes {
		return nil
	}
	return g.write(ctx)
}

// flush writes what is left.
func (g *stager) flush(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.write(ctx)
}

func (g *stager) write(ctx context.Context) error {
	if len(g.pending) == 0 {
		return nil
	}
	t0 := time.Now()
	err := g.db.StageRows(ctx, g.op, g.pending)
	if g.paced {
		per := time.Since(t0) / time.Duration(max(1, g.rows))
		g.limit = max(1, min(g.chunk, int(g.budget/max(per, time.Microsecond))))
		time.Sleep(g.pause)
	}
	g.pending, g.rows, g.size = nil, 0, 0
	return err
}

// drop forgets a skipped tenant: its rows still waiting here, and those
// already staged.
func (g *stager) drop(ctx context.Context, tables []productdb.RestoreTable, tenant string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending = slices.DeleteFunc(g.pending, func(b productdb.Batch) bool { return b.Tenant == tenant })
	return g.db.ClearStaging(ctx, tables, g.op, tenant)
}

// wholeTenant refuses to restore a tenant whose root row did not exist at
// the moment while it exists now: that "restore" would remove the tenant.
func wholeTenant(p *tenant.Product, st *step, want map[string]*productdb.TableHash) error {
	if h := want[p.Layout.TenantsTable]; h != nil && h.Rows > 0 {
		return nil
	}
	for _, rt := range st.tables {
		if rt.Name == p.Layout.TenantsTable {
			return fault.New(fault.Refused, "choose a moment when the tenant existed, or leave this product out with --products",
				"tenant %s had no root row in %s.%s at the moment chosen; restoring it there would remove the tenant", st.tenant, p.Name, rt.Name)
		}
	}
	return nil
}

// pool runs fn over items with that many goroutines; the first error stops
// the others from starting new steps and is returned.
func pool[T any](ctx context.Context, workers int, items []T, fn func(context.Context, T) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan T)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range min(workers, max(1, len(items))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range jobs {
				if err := fn(ctx, it); err != nil {
					mu.Lock()
					if first == nil {
						first = err
						cancel()
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		jobs <- it
	}
	close(jobs)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// applyAll swaps every staged step, several tenants per transaction, every
// product at once. On PostgreSQL, Workers batches (see batches) at a time.
// On SQLite, one transaction at a time (it has one writer), each sized to
// last about TxBudget, with Pause between two: the application's writers,
// waiting on the one write lock, get in quickly. A failed step is reported
// and does not stop the others; a cancelled ctx stops them all between
// transactions, leaving the steps not reached pending.
func (s *Service) applyAll(ctx context.Context, pl *plan, op *state.Operation) {
	byProduct := map[string][]*step{}
	total := 0
	for _, st := range pl.steps {
		if !st.skip {
			byProduct[st.product.Name] = append(byProduct[st.product.Name], st)
			total++
		}
	}
	rec := s.recordSteps(context.WithoutCancel(ctx), op.ID)
	defer rec.wait()
	apply := func(b []*step) productdb.Locked {
		if ctx.Err() != nil {
			return productdb.Locked{} // interrupted: the rest stays pending
		}
		records, held := s.applyBatch(ctx, pl, op, b)
		rec.add(records)
		s.advance("apply", total, len(b), 0)
		return held
	}
	var wg sync.WaitGroup
	for _, p := range pl.products {
		steps := byProduct[p.Name]
		if len(steps) == 0 {
			continue
		}
		if p.DB.Engine() == productdb.SQLite {
			wg.Go(func() { s.applyPaced(ctx, steps, apply) })
			continue
		}
		wg.Go(func() {
			_ = pool(ctx, s.workers(), s.batches(steps), func(_ context.Context, b []*step) error {
				apply(b)
				return nil
			})
		})
	}
	wg.Wait()
}

// applyPaced applies steps of one SQLite product in transactions that
// hold the write lock about TxBudget each, sized from the last one's time
// per tenant (starting with one tenant), and leaves the lock free after
// each for Pause, or longer after a transaction that overran it
// (pauseAfter). Both count only the time the lock is held: the wait for
// it, and the log's sync after the commit (SwapAll), happen while the
// application's writers can write.
func (s *Service) applyPaced(ctx context.Context, steps []*step, apply func([]*step) productdb.Locked) {
	n := 1
	for len(steps) > 0 && ctx.Err() == nil {
		b := steps[:min(n, len(steps))]
		steps = steps[len(b):]
		t0 := time.Now()
		held := apply(b)
		if held.To.IsZero() { // it never held the lock: failed, or interrupted
			held = productdb.Locked{From: t0, To: time.Now()}
		}
		per := held.To.Sub(held.From) / time.Duration(len(b))
		n = max(1, min(s.batchTenants(), int(s.txBudget()/max(per, time.Microsecond))))
		if len(steps) > 0 {
			time.Sleep(time.Until(held.To.Add(s.pauseAfter(held.To.Sub(held.From)))))
		}
	}
}

// busyRetries are the times after its first try at which SQLite's default
// busy handler (sqlite3_busy_timeout, which applications' drivers set)
// tries a locked database again: it sleeps 1, 2, 5, 10, 15, 20, 25, 25,
// 25, 50 and 50 ms, then 100 ms at a time. In milliseconds.
var busyRetries = []int{0, 1, 3, 8, 18, 33, 53, 78, 103, 128, 178, 228}

// pauseAfter is how long the write lock stays free after a transaction
// that held it for held: Pause, but after one that overran TxBudget (a
// large tenant's swap: a tenant is never split) at least the gap between
// two of the busy handler's tries that a writer who has waited up to held
// can be in, plus 2 ms for the sleeps' own lateness. Every writer that
// found the lock taken during the transaction then tries again inside the
// pause; one that missed it would sleep through the next transaction too.
// Within the budget the configured pacing stands as it is.
func (s *Service) pauseAfter(held time.Duration) time.Duration {
	if held <= s.txBudget() {
		return s.pause()
	}
	gap := 100 * time.Millisecond
	for i := 1; i < len(busyRetries); i++ {
		if time.Duration(busyRetries[i])*time.Millisecond > held {
			gap = time.Duration(busyRetries[i]-busyRetries[i-1]) * time.Millisecond
			break
		}
	}
	return max(s.pause(), gap+2*time.Millisecond)
}

// batches groups PostgreSQL steps into swap transactions of up to BatchTenants
// tenants and about ChunkRows rebuilt rows: small tenants share a commit,
// and a transaction stays short so the application's writers are never
// held up long. A tenant larger than that is a transaction of its own. The
// first batches are smaller (1, 2, 4… tenants), so the first tenants are
// restored, and a problem shows, before the restore commits to big ones.
func (s *Service) batches(steps []*step) [][]*step {
	var out [][]*step
	var cur []*step
	var rows int64
	limit := 1
	for _, st := range steps {
		var n int64
		for _, h := range st.want {
			n += h.Rows
		}
		if len(cur) > 0 && (len(cur) >= limit || rows+n > int64(s.chunkRows())) {
			out = append(out, cur)
			cur, rows, limit = nil, 0, min(2*limit, s.batchTenants())
		}
		cur = append(cur, st)
		rows += n
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// stepRecorder writes swapped steps to the state store in the background,
// as many at a time as have come since the last write: a write waits for
// the disk, and the next transaction need not wait for it. A crash that
// loses a record loses nothing: the product's applied markers say which
// tenants committed (recognise).
type stepRecorder struct {
	mu      sync.Mutex
	pending []state.Step
	wake    chan struct{}
	closed  chan struct{}
	done    chan struct{}
}

func (s *Service) recordSteps(ctx context.Context, opID string) *stepRecorder {
	r := &stepRecorder{wake: make(chan struct{}, 1), closed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-r.wake:
			case <-r.closed:
			}
			r.mu.Lock()
			steps := r.pending
			r.pending = nil
			r.mu.Unlock()
			if len(steps) > 0 {
				if err := s.Tenants.Store.UpdateSteps(ctx, opID, steps); err != nil && s.Log != nil {
					s.Log.Warn("recording restored steps failed; the product's markers still record them", "op", opID, "err", err)
				}
				continue
			}
			select {
			case <-r.closed:
				return
			default:
			}
		}
	}()
	return r
}

func (r *stepRecorder) add(steps []state.Step) {
	r.mu.Lock()
	r.pending = append(r.pending, steps...)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// wait writes what is left and returns once it is written.
func (r *stepRecorder) wait() {
	close(r.closed)
	<-r.done
}

// applyBatch swaps a batch of tenants of one product in one transaction,
// each in its own savepoint, and returns every outcome, to be recorded in
// the state store. A batch once started is finished even if ctx is
// cancelled meanwhile: a restore stops between transactions, never inside
// one it would then record as failed.
func (s *Service) applyBatch(ctx context.Context, pl *plan, op *state.Operation, batch []*step) ([]state.Step, productdb.Locked) {
	if s.BeforeStep != nil {
		s.hookMu.Lock() // products apply at once; the hook need not be safe for that
		for _, st := range batch {
			s.BeforeStep(state.Step{Product: st.product.Name, Tenant: st.tenant})
		}
		s.hookMu.Unlock()
	}
	t0 := time.Now()
	p := batch[0].product
	specs := make([]productdb.SwapSpec, len(batch))
	for i, st := range batch {
		specs[i] = productdb.SwapSpec{OpID: op.ID, Tenant: st.tenant, Policy: pl.req.Policy, Tables: st.tables, Want: st.want, Rows: st.rows}
	}
	bg := context.WithoutCancel(ctx)
	records := make([]state.Step, len(batch))
	fail := func(st *step, err error) state.Step {
		st.report.Status, st.report.Error = "failed", err.Error()
		if errors.Is(err, productdb.ErrMismatch) {
			st.report.Hash = "mismatch"
		}
		_ = p.DB.ClearStaging(bg, st.tables, op.ID, st.tenant)
		return state.Step{Product: p.Name, Tenant: st.tenant, Status: state.StepFailed, Error: err.Error()}
	}
	held, err := p.DB.SwapAll(bg, p.Layout, specs, func(i int, res productdb.SwapResult, err error) {
		st := batch[i]
		if err != nil {
			records[i] = fail(st, err)
			return
		}
		st.done = true
		s.record(st, res, 0)
		records[i] = stepDone(st, res)
	})
	if err != nil {
		for i, st := range batch {
			records[i] = fail(st, err)
		}
	}
	for _, st := range batch {
		st.rows = nil // swapped or failed: the memory can go
	}
	// The batch's time, shared by its tenants.
	each := time.Since(t0).Seconds() / float64(len(batch))
	for _, st := range batch {
		st.report.Seconds += each
	}
	return records, held
}

// record fills a step's report from what the swap did.
func (s *Service) record(st *step, res productdb.SwapResult, seconds float64) {
	r := st.report
	r.Status, r.State, r.Hash = "restored", res.State, "verified"
	r.Seconds += seconds
	r.Tables, r.Rows = nil, 0
	for _, rt := range st.tables {
		tr, ok := res.Tables[rt.Name]
		if !ok {
			continue
		}
		r.Tables = append(r.Tables, TableReport{Table: rt.Name, TableResult: tr})
		r.Rows += tr.Rows
	}
}

// stepDone is the state store's record of a restored step: rows changed
// per table.
func stepDone(st *step, res productdb.SwapResult) state.Step {
	rows := map[string]int64{}
	for t, r := range res.Tables {
		if n := r.Inserted + r.Replaced + r.Removed; n > 0 {
			rows[t] = n
		}
	}
	return state.Step{Product: st.product.Name, Tenant: st.tenant, Status: state.StepDone, Rows: rows}
}

// finish ends the operation and sets the report's status. err is a failure
// that stopped the restore before any swap.
func (s *Service) finish(ctx context.Context, pl *plan, op *state.Operation, err error) error {
	store := s.Tenants.Store
	if err != nil {
		if ferr := store.FinishOperation(ctx, op.ID, state.OpFailed, err.Error()); ferr != nil {
			err = errors.Join(err, ferr)
		}
		for _, st := range pl.steps {
			if !st.done && st.report.Status == "" {
				st.report.Status = "failed"
			}
		}
		pl.report.Status = "failed"
		if fault.ExitStatus(err) == 2 {
			pl.report.Status = "refused"
		}
		return err
	}
	out := s.outcome(pl)
	status, text := state.OpDone, ""
	if out != nil {
		status, text = state.OpFailed, out.Error()
	}
	if ferr := store.FinishOperation(ctx, op.ID, status, text); ferr != nil {
		return errors.Join(out, ferr)
	}
	return out
}

// outcome sets the report's status from its steps, and returns the failure
// to report if not every tenant was restored and verified.
func (s *Service) outcome(pl *plan) error {
	var failed, skipped []string
	for _, st := range pl.steps {
		name := st.tenant + " in " + st.product.Name
		switch st.report.Status {
		case "failed":
			failed = append(failed, name+": "+st.report.Error)
		case "skipped":
			skipped = append(skipped, name)
		}
	}
	pl.report.Status = "done"
	if len(failed) == 0 && len(skipped) == 0 {
		return nil
	}
	pl.report.Status = "failed"
	msg := ""
	if len(failed) > 0 {
		msg = fmt.Sprintf("%d tenant steps failed and were rolled back: %s", len(failed), strings.Join(failed, "; "))
	}
	if len(skipped) > 0 {
		if msg != "" {
			msg += "; "
		}
		msg += fmt.Sprintf("%d were skipped, their backup being unreadable: %s", len(skipped), strings.Join(skipped, ", "))
	}
	return fault.New(fault.Internal, "the report lists each tenant; run the same command again to retry the failed ones", "%s", msg)
}

// Resume finishes an interrupted in-place restore (its runner gone, after
// kill -9 or a crash), as running its command again does: the request it
// was recorded with runs again and takes the operation over. A restore that
// is not running is a fault.Conflict; one whose runner is alive is refused
// as busy.
func (s *Service) Resume(ctx context.Context, opID string) (*Report, error) {
	rep := &Report{Status: "refused", Objects: []ObjectRead{}, Tenants: []TenantReport{}, Moment: Moment{Products: map[string]string{}}}
	fail := func(err error) (*Report, error) {
		rep.Error, rep.Hint = err.Error(), fault.HintOf(err)
		return rep, err
	}
	op, err := s.Tenants.Store.GetOperation(ctx, opID)
	if err != nil {
		return fail(err)
	}
	if op.Action != "restore" {
		return fail(fault.New(fault.Invalid, "`lifeline ops resume` runs restores and lifecycle operations", "operation %s is a %s, not a restore", opID, op.Action))
	}
	if op.Status != state.OpRunning {
		return fail(fault.New(fault.Conflict, "nothing to resume", "operation %s is %s, not running", opID, op.Status))
	}
	req, err := loadArgs(ctx, s.Tenants.Store, opID)
	if err != nil {
		return fail(err)
	}
	req.resume = opID
	return s.Run(ctx, req)
}

// Undo takes back a finished restore operation: for each tenant it
// restored, the rows it removed or overwrote come back from its trash, the
// rows it inserted go (kept in the trash under the undo), and the states it
// changed are set back. Rows written since the restore to rows it did not
// touch stay. The undo is an operation of its own (restore-undo); the
// restore is marked rolled back. Cancelling ctx stops the undo between
// tenants and leaves it running (report status interrupted, exit 1); the
// same Undo run again, like one after a crash, takes it over and finishes
// it.
func (s *Service) Undo(ctx context.Context, opID, actor, why string) (*Report, error) {
	start := time.Now()
	store := s.Tenants.Store
	rep := &Report{Status: "failed", Policy: productdb.Replace, Objects: []ObjectRead{}, Tenants: []TenantReport{}, Moment: Moment{Undoes: opID, Products: map[string]string{}}}
	fail := func(err error) (*Report, error) {
		rep.Error, rep.Hint = err.Error(), fault.HintOf(err)
		if fault.ExitStatus(err) == 2 {
			rep.Status = "refused"
		}
		rep.Seconds = time.Since(start).Seconds()
		return rep, err
	}
	orig, err := store.GetOperation(ctx, opID)
	if err != nil {
		return fail(err)
	}
	if orig.Action != "restore" {
		return fail(fault.New(fault.Invalid, "name a restore operation (`lifeline ops list`)", "operation %s is a %s, not a restore", opID, orig.Action))
	}
	if orig.Status != state.OpDone && orig.Status != state.OpFailed {
		return fail(fault.New(fault.Conflict, "see `lifeline ops show "+opID+"`", "restore %s is %s; only a finished restore can be undone", opID, orig.Status))
	}
	if at, err := trashExpired(ctx, store, opID); err != nil {
		return fail(err)
	} else if !at.IsZero() {
		return fail(fault.New(fault.Refused, "restore the tenants to before it instead: `lifeline restore --before "+opID+"`",
			"restore %s can no longer be undone: retention.deleted removed the rows it replaced on %s", opID, at.UTC().Format(time.RFC3339)))
	}
	// An undo of opID that was interrupted is taken over, not started
	// again: its tenants stay locked to it.
	op, err := s.runningUndo(ctx, opID)
	if err != nil {
		return fail(err)
	}
	resumed := map[string]state.Step{} // product/tenant -> undone before the interruption
	if op != nil {
		for _, st := range op.Steps {
			if st.Status == state.StepDone {
				resumed[st.Product+"/"+st.Tenant] = st
			}
		}
	}
	pl := &plan{report: rep, req: Request{Actor: actor, Policy: productdb.Replace}}
	var steps []state.Step
	byTenant := map[string]int{}
	for _, os := range orig.Steps {
		if os.Status != state.StepDone {
			continue
		}
		p := productOf(s.Tenants, os.Product)
		if p == nil {
			return fail(fault.New(fault.NotFound, "add the product back to lifeline.yaml", "restore %s touched product %s, which is not configured", opID, os.Product))
		}
		i, ok := byTenant[os.Tenant]
		if !ok {
			i = len(rep.Tenants)
			rep.Tenants = append(rep.Tenants, TenantReport{Tenant: os.Tenant})
			byTenant[os.Tenant] = i
		}
		sr := &StepReport{Product: p.Name}
		rep.Tenants[i].Products = append(rep.Tenants[i].Products, sr)
		st := &step{product: p, tenant: os.Tenant, report: sr}
		if done, ok := resumed[p.Name+"/"+os.Tenant]; ok {
			st.done, sr.Status, sr.Resumed = true, "undone", true
			for _, n := range done.Rows {
				sr.Rows += n
			}
		}
		pl.steps = append(pl.steps, st)
		steps = append(steps, state.Step{Product: p.Name, Tenant: os.Tenant, Status: state.StepPending})
	}
	if len(steps) == 0 {
		return fail(fault.New(fault.Conflict, "see `lifeline ops show "+opID+"`", "restore %s restored no tenant: nothing to undo", opID))
	}
	if op == nil {
		op = &state.Operation{ID: state.NewOperationID(s.Tenants.Clock()), Action: "restore-undo", Actor: actor,
			Reason: strings.TrimSpace(why + " undo of " + opID), Targets: orig.Targets, Steps: steps}
		if err := saveRun(ctx, store, op.ID, undoKey(opID), pl.req); err != nil {
			return fail(err)
		}
		if err := store.CreateOperation(ctx, op, s.Tenants.Owner, s.Tenants.TTL()); err != nil {
			return fail(err)
		}
	}
	rep.Operation = op.ID
	stop := s.Tenants.KeepLease(ctx, op.ID)
	defer stop()
	// A cancelled ctx (Ctrl-C) stops the undo between tenants, each undone
	// in its own transaction; a tenant once started is finished.
	bg := context.WithoutCancel(ctx)
	for _, st := range pl.steps {
		if st.done || ctx.Err() != nil {
			continue
		}
		if s.BeforeStep != nil {
			s.BeforeStep(state.Step{Product: st.product.Name, Tenant: st.tenant})
		}
		if err := s.undoStep(bg, op, opID, st); err != nil {
			st.report.Status, st.report.Error = "failed", err.Error()
			_ = store.UpdateStep(bg, op.ID, state.Step{Product: st.product.Name, Tenant: st.tenant, Status: state.StepFailed, Error: err.Error()})
		}
	}
	if ctx.Err() != nil {
		stop()
		err = s.interrupted(bg, pl, op, context.Cause(ctx))
	} else {
		err = s.finish(bg, pl, op, nil)
	}
	if err == nil {
		err = store.FinishOperation(bg, opID, state.OpRolledBack, "")
	}
	rep.Seconds = time.Since(start).Seconds()
	for _, t := range rep.Tenants {
		for _, p := range t.Products {
			rep.Rows += p.Rows
		}
	}
	if err != nil {
		rep.Error, rep.Hint = err.Error(), fault.HintOf(err)
	}
	return rep, err
}

// undoKey is what an undo of restore opID is recorded with, so that the
// same `lifeline restore --undo` run again finds and finishes it.
func undoKey(opID string) string { return "undo " + opID }

// runningUndo returns the undo of restore opID that is still running, taken
// over by this process: its runner was interrupted (Ctrl-C, kill -9). nil
// if there is none; fault.Conflict if its runner is alive.
func (s *Service) runningUndo(ctx context.Context, opID string) (*state.Operation, error) {
	store := s.Tenants.Store
	running, err := store.ListOperations(ctx, state.OpFilter{Status: state.OpRunning, Limit: math.MaxInt32})
	if err != nil {
		return nil, err
	}
	for i := range running {
		op := &running[i]
		if op.Action != "restore-undo" {
			continue
		}
		if k, err := loadRun(ctx, store, op.ID); err != nil || k != undoKey(opID) {
			continue
		}
		if !s.Tenants.Interrupted(op) {
			return nil, fault.New(fault.Conflict, "wait for it to finish (`lifeline ops show "+op.ID+"`)",
				"restore %s is being undone by operation %s", opID, op.ID)
		}
		if err := s.Tenants.Claim(ctx, op); err != nil {
			return nil, err
		}
		if s.Log != nil {
			s.Log.Info("resuming interrupted undo", "op", op.ID, "undoes", opID)
		}
		return op, nil
	}
	return nil, nil
}

// undoStep undoes restore opID for one tenant in one product.
func (s *Service) undoStep(ctx context.Context, op *state.Operation, opID string, st *step) error {
	t0 := time.Now()
	db := st.product.DB
	marker, err := db.RestoreMarker(ctx, opID, st.tenant)
	if err != nil {
		return err
	}
	rts, err := db.PrepareRestore(ctx, st.product.Layout)
	if err != nil {
		return err
	}
	for _, rt := range rts {
		if _, ok := marker.Tables[rt.Name]; ok {
			st.tables = append(st.tables, rt)
		}
	}
	if err := db.ClearStaging(ctx, st.tables, op.ID, st.tenant); err != nil {
		return err
	}
	want, err := db.StageUndo(ctx, st.tables, opID, op.ID, st.tenant)
	if err != nil {
		return err
	}
	res, err := db.Swap(ctx, st.product.Layout, productdb.SwapSpec{OpID: op.ID, Tenant: st.tenant, Policy: productdb.Replace,
		Tables: st.tables, Want: want, States: marker.Previous, Action: "restore-undo"})
	if err != nil {
		_ = db.ClearStaging(context.WithoutCancel(ctx), st.tables, op.ID, st.tenant)
		return err
	}
	st.done = true
	s.record(st, res, time.Since(t0).Seconds())
	st.report.Status = "undone"
	return s.Tenants.Store.UpdateStep(ctx, op.ID, stepDone(st, res))
}

// Validate makes restored tenants active again once support has confirmed
// them with the customer: in every product where a tenant (or an app of
// it) is restored-pending-validation, it becomes active. It is an operation
// (validate) like the others. A tenant with nothing pending is a
// fault.Conflict naming its states.
func (s *Service) Validate(ctx context.Context, keys []string, actor, why string) (*state.Operation, error) {
	keys, err := tenantKeys(keys)
	if err != nil {
		return nil, err
	}
	op := &state.Operation{ID: state.NewOperationID(s.Tenants.Clock()), Action: "validate", Actor: actor, Reason: why}
	var pending []string
	for _, key := range keys {
		found := false
		var states []string
		for _, p := range s.Tenants.Products {
			info, err := p.DB.Tenant(ctx, p.Layout, key)
			if fault.CodeOf(err) == fault.NotFound {
				continue
			}
			if err != nil {
				return nil, err
			}
			states = append(states, p.Name+": "+string(info.State))
			if info.State == productdb.RestoredPending {
				op.Steps = append(op.Steps, state.Step{Product: p.Name, Tenant: key})
				found = true
			}
			for _, a := range info.Apps {
				if a.State == productdb.RestoredPending {
					op.Steps = append(op.Steps, state.Step{Product: p.Name, Tenant: key, App: a.App})
					found = true
				}
			}
		}
		if !found {
			pending = append(pending, fmt.Sprintf("%s (%s)", key, orNone(strings.Join(states, ", "))))
		}
		op.Targets = append(op.Targets, "site:"+key)
	}
	if len(pending) > 0 {
		return nil, fault.New(fault.Conflict, "only a restored tenant waits for validation; see `lifeline tenants show KEY`",
			"nothing of these tenants is %s: %s", productdb.RestoredPending, strings.Join(pending, "; "))
	}
	if err := s.Tenants.Store.CreateOperation(ctx, op, s.Tenants.Owner, s.Tenants.TTL()); err != nil {
		return nil, err
	}
	bg := context.WithoutCancel(ctx)
	var failure error
	for _, st := range op.Steps {
		p := productOf(s.Tenants, st.Product)
		res, err := p.DB.Apply(ctx, p.Layout, productdb.Step{OpID: op.ID, Action: productdb.Reactivate, Tenant: st.Tenant, App: st.App,
			From: []productdb.State{productdb.RestoredPending}, To: productdb.Active})
		if err != nil {
			st.Status, st.Error = state.StepFailed, err.Error()
			_ = s.Tenants.Store.UpdateStep(bg, op.ID, st)
			failure = err
			break
		}
		st.Status, st.Rows = state.StepDone, res.Rows
		if err := s.Tenants.Store.UpdateStep(ctx, op.ID, st); err != nil {
			return nil, err
		}
	}
	status, text := state.OpDone, ""
	if failure != nil {
		status, text = state.OpFailed, failure.Error()
	}
	if err := s.Tenants.Store.FinishOperation(bg, op.ID, status, text); err != nil {
		return nil, errors.Join(failure, err)
	}
	if failure != nil {
		return nil, failure
	}
	return s.Tenants.Store.GetOperation(bg, op.ID)
}

func productOf(svc *tenant.Service, name string) *tenant.Product {
	for _, p := range svc.Products {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "in no product"
	}
	return s
}

func countRows(batches []productdb.Batch) int64 {
	var n int64
	for _, b := range batches {
		n += int64(len(b.Rows))
	}
	return n
}
