package plan

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// Phases of a running plan.
const (
	phaseSteps   = "steps"   // the wave's targets are being run
	phaseGate    = "gate"    // baking, then checking
	phasePromote = "promote" // checks passed; waiting for `plan promote`
)

type planKey struct{}

// withPlan marks ctx as a plan's: the admission check lets its lifecycle
// requests through (the plan was reviewed and approved as a whole).
func withPlan(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, planKey{}, id)
}

// FromPlan returns the plan a request runs for, or "".
func FromPlan(ctx context.Context) string {
	id, _ := ctx.Value(planKey{}).(string)
	return id
}

// planReason is the reason recorded on every operation a plan runs. It
// names the plan, so `lifeline ops list` shows where an operation came
// from, and a runner that crashed finds the operations it started.
func planReason(p *Plan) string { return "plan " + p.ID + ": " + p.Reason }

// Run runs an approved plan, or continues a running one whose runner
// stopped (a crash, a kill -9: its lease expired or its process is gone),
// wave by wave until it is done, paused, aborted, or waits for a promote.
// It returns the plan as it left it.
//
// Before the first wave the report is computed again: if it differs from
// the one approved, the approval is void (fault.Conflict) and nothing runs.
// Run refuses while Lifeline is frozen, without a backup repository for
// plans that delete or restore, and while another live runner holds the
// plan (fault.Conflict).
func (s *Service) Run(ctx context.Context, id string, actor Actor) (*Plan, error) {
	run, err := s.Begin(ctx, id, actor)
	if err != nil {
		return nil, err
	}
	return run(ctx)
}

// Begin is Run in two halves, for callers that run plans in the
// background (the API): it makes every check Run makes and takes the plan
// (its run lease), then returns the rest, which runs the waves. A refusal
// comes from Begin; the returned function must then be called, or the
// lease left to expire.
func (s *Service) Begin(ctx context.Context, id string, actor Actor) (func(context.Context) (*Plan, error), error) {
	p, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.refuseFrozen(ctx, "run plan "+id); err != nil {
		return nil, err
	}
	if p.Status != Approved && p.Status != Running {
		return nil, wrongStatus(p, "run", Approved, Running)
	}
	if (needsRestoreTest(p.Action) || p.Action == ActionRestore) && s.Restorer == nil {
		return nil, missingRestorer(p.Action)
	}
	now := s.now()
	switch p.Status {
	case Approved:
		rep, err := s.revalidate(ctx, p)
		if err != nil {
			return nil, err
		}
		if p.Approval == nil || rep.Hash != p.Approval.Hash {
			return nil, fault.New(fault.Conflict, "ask for approval again", "plan %s's approval does not match its report", p.ID)
		}
		err = s.transition(ctx, p, actor.Name, "run", Running, []Status{Approved}, map[string]any{
			"runner": s.owner(), "lease_until": micros(now.Add(s.ttl())), "wave": 0, "phase": phaseSteps,
			"last_progress": micros(now), "resumed_at": micros(now), "note": "",
		}, map[string]any{"hash": rep.Hash, "runner": s.owner()})
		if err != nil {
			return nil, err
		}
	case Running:
		if err := s.takeLease(ctx, p, actor); err != nil {
			return nil, err
		}
	}
	r := &runner{s: s, id: id, actor: actor}
	return r.run, nil
}

// takeLease claims a plan whose runner is gone (or that has none): to run
// it on, or to roll it back. The update is conditional on the lease seen,
// so of two processes taking over at once only one wins.
func (s *Service) takeLease(ctx context.Context, p *Plan, actor Actor) error {
	me, now := s.owner(), s.now()
	// A live lease is refused even when it is this process's own: another
	// goroutine here (a second API request) is running the plan.
	live := p.Runner != "" && p.leaseUntil.After(now) && !tenant.OwnerGone(p.Runner)
	if live {
		return fault.New(fault.Conflict, "wait for it (`lifeline plan show "+p.ID+"`), or pause it with `lifeline plan pause "+p.ID+"`",
			"plan %s is being run by %s (lease until %s)", p.ID, p.Runner, p.leaseUntil.Format(time.RFC3339))
	}
	// Conditional on the lease seen: of two processes taking over at once,
	// only one matches it. Taking over from another runner is audited in
	// the same transaction.
	q, args := "UPDATE plans SET runner = ?, lease_until = ? WHERE id = ? AND status = ? AND runner = ? AND lease_until = ?",
		[]any{me, micros(now.Add(s.ttl())), p.ID, string(p.Status), p.Runner, micros(p.leaseUntil)}
	var n int64
	var err error
	if p.Runner != "" && p.Runner != me {
		n, err = s.execAudited(ctx, state.AuditEntry{Actor: actor.Name, Action: "plan.takeover",
			Detail: map[string]any{"plan": p.ID, "from": p.Runner, "to": me}}, q, args...)
	} else {
		n, err = s.exec(ctx, q, args...)
	}
	if err != nil {
		return err
	}
	if n != 1 {
		return fault.New(fault.Conflict, "`lifeline plan show "+p.ID+"`", "plan %s was taken over by another runner", p.ID)
	}
	return nil
}

// runner is one process running one plan.
type runner struct {
	s     *Service
	id    string
	actor Actor
	lost  atomic.Bool
	// tables caches each product's restore tables for digests.
	tables map[string][]productdb.RestoreTable
}

func (r *runner) run(ctx context.Context) (*Plan, error) {
	stop := r.keepLease(ctx)
	defer stop()
	for {
		h, err := r.s.head(ctx, r.id)
		if err != nil {
			return r.finish(ctx, err)
		}
		if halt, err := r.control(ctx, h); halt || err != nil {
			return r.finish(ctx, err)
		}
		if wait := h.GateUntil.Sub(r.s.now()); h.Phase == phaseGate && wait > 0 {
			if err := r.s.sleep(ctx, min(wait, time.Second)); err != nil {
				return r.finish(ctx, err)
			}
			continue
		}
		p, err := r.s.get(ctx, r.id)
		if err != nil {
			return r.finish(ctx, err)
		}
		switch p.Phase {
		case phaseSteps:
			halt, err := r.wave(ctx, p)
			if halt || err != nil {
				return r.finish(ctx, err)
			}
			if err := r.waveDone(ctx, p); err != nil {
				return r.finish(ctx, err)
			}
		case phaseGate:
			halt, err := r.gate(ctx, p)
			if halt || err != nil {
				return r.finish(ctx, err)
			}
		case phasePromote:
			if p.promoted <= p.Wave {
				return r.finish(ctx, nil)
			}
			if err := r.nextWave(ctx, p, nil); err != nil { // the promotion was recorded with its transition
				return r.finish(ctx, err)
			}
		default:
			return nil, fmt.Errorf("plan %s: unknown phase %q", p.ID, p.Phase)
		}
	}
}

// released adds the lease's release to a runner's own transition out of
// Running, so nobody sees the plan stopped while its lease still holds it
// (a rollback right after "done" would otherwise be refused as running).
func released(set map[string]any) map[string]any {
	set["runner"], set["lease_until"] = "", int64(0)
	return set
}

// finish releases the lease and returns the plan as it is.
func (r *runner) finish(ctx context.Context, err error) (*Plan, error) {
	bg := context.WithoutCancel(ctx)
	_, _ = r.s.exec(bg, "UPDATE plans SET runner = '', lease_until = 0 WHERE id = ? AND runner = ?", r.id, r.s.owner())
	p, gerr := r.s.get(bg, r.id)
	if err != nil {
		return p, err
	}
	return p, gerr
}

// keepLease renews the run lease until stop; a renewal that finds the
// lease taken marks the runner lost, and it stops before its next tenant.
func (r *runner) keepLease(ctx context.Context) (stop func()) {
	return state.KeepLease(ctx, r.s.ttl(), func(ctx context.Context) {
		n, err := r.s.exec(ctx, "UPDATE plans SET lease_until = ? WHERE id = ? AND runner = ?", micros(r.s.now().Add(r.s.ttl())), r.id, r.s.owner())
		if err == nil && n == 0 {
			r.lost.Store(true)
		}
	})
}

// control is checked before every tenant and while baking: a pause or an
// abort by a person, a freeze, a lost lease or a missed progress deadline
// stops the runner here. halt says stop; the plan's status says why.
func (r *runner) control(ctx context.Context, p *Plan) (halt bool, err error) {
	if err := ctx.Err(); err != nil {
		return true, err
	}
	cur, err := r.s.head(ctx, r.id)
	if err != nil {
		return true, err
	}
	// A plan no longer running has stopped for a reason its status gives
	// (this runner's own last transition released the lease with it).
	if cur.Status != Running {
		return true, nil
	}
	if err := r.fenced(cur); err != nil {
		return true, err
	}
	if f, err := r.s.frozen(ctx); err != nil {
		return true, err
	} else if f != nil {
		note := fmt.Sprintf("paused by the freeze of %s (%s): `lifeline freeze off`, then `lifeline plan resume %s`", f.Actor, f.Reason, r.id)
		return true, r.s.transition(ctx, cur, "lifeline", "pause", Paused, []Status{Running}, released(map[string]any{"note": note}), map[string]any{"why": "freeze"})
	}
	waiting := cur.Phase == phaseGate || cur.Phase == phasePromote
	if dl := cur.Spec.Deadline.D(); dl > 0 && !waiting && r.s.now().Sub(cur.lastProgress) > dl {
		note := fmt.Sprintf("aborted: no progress for more than its deadline of %s; `lifeline plan rollback %s` undoes what ran", dl, r.id)
		return true, r.s.transition(ctx, cur, "lifeline", "abort", Aborted, []Status{Running}, released(map[string]any{"note": note}), map[string]any{"why": "progress deadline"})
	}
	return false, nil
}

// fence fails when this runner no longer holds the plan's lease.
func (r *runner) fence(ctx context.Context) error {
	cur, err := r.s.head(ctx, r.id)
	if err != nil {
		return err
	}
	return r.fenced(cur)
}

func (r *runner) fenced(cur *Plan) error {
	if !r.lost.Load() && cur.Runner == r.s.owner() {
		return nil
	}
	by := cur.Runner
	if by == "" {
		by = "another runner, which has let it go since"
	}
	return fault.New(fault.Conflict, "`lifeline plan show "+r.id+"`", "plan %s: this runner lost its lease to %s", r.id, by)
}

// wave runs the current wave's remaining targets, restore-testing them in
// batches first when the action deletes.
func (r *runner) wave(ctx context.Context, p *Plan) (halt bool, err error) {
	var todo []Step
	for _, st := range p.Steps {
		if st.Wave == p.Wave && (st.Status == StepPending || st.Status == StepRunning) {
			todo = append(todo, st)
		}
	}
	batch := r.s.Config.withDefaults().RestoreTestBatch
	for len(todo) > 0 {
		chunk := todo[:min(batch, len(todo))]
		todo = todo[len(chunk):]
		if halt, err := r.control(ctx, p); halt || err != nil {
			return true, err
		}
		if needsRestoreTest(p.Action) {
			halt, err := r.restoreTest(ctx, p, chunk)
			if halt || err != nil {
				return true, err
			}
		}
		for i := range chunk {
			st := &chunk[i]
			if st.RestoreTest == "failed" {
				continue
			}
			if halt, err := r.control(ctx, p); halt || err != nil {
				return true, err
			}
			if err := r.step(ctx, p, st); err != nil {
				return true, err
			}
		}
	}
	return false, nil
}

// restoreTest proves the backup can bring back each pending tenant of the
// chunk before it is deleted or purged. A tenant it cannot is skipped and
// reported, and the plan pauses: no deletion without a proven way back.
func (r *runner) restoreTest(ctx context.Context, p *Plan, chunk []Step) (halt bool, err error) {
	t := RestoreTest{DeletedBy: map[string]string{}, Trash: map[string]map[string]map[string]int64{}, Tables: map[string][]string{}, Actor: r.actor.Name}
	products := map[string]bool{}
	for _, st := range chunk {
		if st.Status != StepPending {
			continue // a step interrupted mid-run was tested before it started
		}
		t.Tenants = append(t.Tenants, st.Tenant)
		for _, prod := range productsOf(st.Target) {
			products[prod] = true
		}
		t.Tables[st.Tenant] = append(t.Tables[st.Tenant], r.appTables(st.Target)...)
		if p.Action == "purge" {
			by, trash, err := r.deletedBy(ctx, st)
			if err != nil {
				return true, err
			}
			t.DeletedBy[st.Tenant], t.Trash[st.Tenant] = by, trash
		}
	}
	if len(t.Tenants) == 0 {
		return false, nil
	}
	if !slices.ContainsFunc(chunk, func(st Step) bool { return productsOf(st.Target) == nil }) {
		t.Products = sortedKeys(products)
	}
	results, err := r.s.Restorer.TestRestore(ctx, t)
	if err != nil {
		return true, err
	}
	var failed []string
	for i := range chunk {
		st := &chunk[i]
		if st.Status != StepPending {
			continue
		}
		if terr := results[st.Tenant]; terr != nil {
			st.Status, st.RestoreTest, st.Error, st.Finished = StepSkipped, "failed", terr.Error(), r.s.now()
			failed = append(failed, st.Tenant)
		} else {
			st.RestoreTest = "passed"
		}
		if err := r.s.updateStep(ctx, p.ID, st); err != nil {
			return true, err
		}
	}
	if len(failed) == 0 {
		return false, nil
	}
	note := fmt.Sprintf("paused: the backup cannot reproduce %s, so their steps were skipped (see each step's error); fix the backup, then `lifeline plan resume %s` goes on without them",
		strings.Join(head(failed, 5), ", "), p.ID)
	cur, err := r.s.get(ctx, p.ID)
	if err != nil {
		return true, err
	}
	return true, r.s.transition(ctx, cur, "lifeline", "pause", Paused, []Status{Running}, map[string]any{"note": note},
		map[string]any{"why": "restore test", "tenants": failed})
}

// appTables are an app target's tables as "product.table"; nil for other
// targets.
func (r *runner) appTables(target string) []string {
	t, err := tenant.ParseTarget(target)
	if err != nil || t.App == "" {
		return nil
	}
	var out []string
	for _, p := range r.s.Tenants.Products {
		if p.Name == t.Product {
			for _, table := range p.Layout.AppTables(t.App, false) {
				out = append(out, p.Name+"."+table)
			}
		}
	}
	return out
}

// deletedBy finds, for a purge, the operation that deleted the tenant and
// what its trash holds.
func (r *runner) deletedBy(ctx context.Context, st Step) (string, map[string]map[string]int64, error) {
	trash := map[string]map[string]int64{}
	op := ""
	t, err := tenant.ParseTarget(st.Target)
	if err != nil {
		return "", nil, err
	}
	for _, p := range r.s.Tenants.Products {
		if t.Product != "" && p.Name != t.Product {
			continue
		}
		info, err := p.DB.Tenant(ctx, p.Layout, st.Tenant)
		if fault.CodeOf(err) == fault.NotFound {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		trash[p.Name] = info.Trash
		if info.OpID != "" {
			op = info.OpID
		}
	}
	return op, trash, nil
}

func head(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("%d more", len(s)-n))
	}
	return s
}

// step runs one target through tenant.Service (or restore), recording
// before it starts what it will compare a rollback against, and after it
// ends whether the target is in the state the action promises.
func (r *runner) step(ctx context.Context, p *Plan, st *Step) error {
	if st.Status == StepRunning {
		won, err := r.s.reclaimStep(ctx, p.ID, st)
		if err != nil || !won {
			return err
		}
		done, err := r.reconcile(ctx, p, st)
		if done || err != nil {
			return err
		}
	} else {
		t, err := tenant.ParseTarget(st.Target)
		if err != nil {
			return err
		}
		if st.digest, err = r.digest(ctx, t); err != nil {
			return err
		}
		won, err := r.s.claimStep(ctx, p.ID, st)
		if err != nil || !won {
			return err // another runner has it
		}
	}
	if r.s.BeforeStep != nil {
		r.s.BeforeStep(*st)
	}
	// Fencing: a runner that lost its lease since it claimed the step
	// leaves it to the runner that took over. (A pause or a freeze lets
	// the claimed tenant finish.)
	if err := r.fence(ctx); err != nil {
		return err
	}
	opID, err := r.apply(ctx, p, st)
	st.OpID = opID
	return r.record(ctx, p, st, err)
}

// apply runs the step's action and returns its operation's ID.
func (r *runner) apply(ctx context.Context, p *Plan, st *Step) (string, error) {
	pctx := withPlan(ctx, p.ID)
	if p.Action == ActionRestore {
		to := time.Time{}
		if p.Spec.To != nil {
			to = *p.Spec.To
		}
		return r.s.Restorer.Restore(pctx, RestoreStep{Tenant: st.Tenant, Products: productsOf(st.Target), To: to, Before: p.Spec.Before,
			Actor: r.actor.Name, Reason: planReason(p)})
	}
	op, err := r.s.Tenants.Run(pctx, tenant.Request{Action: productdb.Action(p.Action), Target: st.Target, Actor: r.actor.Name, Reason: planReason(p)})
	if op != nil {
		return op.ID, err
	}
	return "", err
}

// record stores a step's outcome and verifies a successful one.
func (r *runner) record(ctx context.Context, p *Plan, st *Step, runErr error) error {
	bg := context.WithoutCancel(ctx)
	st.Finished = r.s.now()
	if runErr != nil {
		if ctx.Err() != nil {
			return ctx.Err() // interrupted: the step stays running and is reconciled
		}
		st.Status, st.Error = StepFailed, runErr.Error()
	} else {
		st.Status, st.Error = StepDone, ""
		st.Verify = r.verify(bg, p, st)
	}
	if held, err := r.s.finishStep(bg, p.ID, st); err != nil || !held {
		return err
	}
	// A step that took longer than the deadline is no progress: the mark
	// stays where it was, and control aborts the plan before the next.
	since := int64(0)
	if dl := p.Spec.Deadline.D(); dl > 0 {
		since = micros(st.Finished.Add(-dl))
	}
	_, err := r.s.exec(bg, "UPDATE plans SET last_progress = ? WHERE id = ? AND status = ? AND last_progress >= ?",
		micros(st.Finished), p.ID, string(Running), since)
	return err
}

// reconcile finishes a step a crashed runner had claimed: its operation
// finished (recorded now), is interrupted (resumed now), or never started
// (done reports false: run it).
func (r *runner) reconcile(ctx context.Context, p *Plan, st *Step) (done bool, err error) {
	op, err := r.findOp(ctx, p, st)
	if err != nil || op == nil {
		return false, err
	}
	switch op.Status {
	case state.OpDone:
		st.OpID = op.ID
		return true, r.record(ctx, p, st, nil)
	case state.OpRunning:
		if p.Action == ActionRestore {
			return false, nil // restore recognises and resumes its own run
		}
		res, err := r.s.Tenants.Resume(withPlan(ctx, p.ID), op.ID)
		st.OpID = op.ID
		if res != nil && res.Status == state.OpDone {
			err = nil
		}
		return true, r.record(ctx, p, st, err)
	default:
		st.OpID = op.ID
		return true, r.record(ctx, p, st, errors.New(op.Error))
	}
}

// findOp finds the operation a step started, by its plan reason, action
// and target, among the tenant's operations since the step was claimed.
func (r *runner) findOp(ctx context.Context, p *Plan, st *Step) (*state.Operation, error) {
	ops, err := r.s.store().ListOperations(ctx, state.OpFilter{Tenant: st.Tenant, Limit: 20})
	if err != nil {
		return nil, err
	}
	for i := range ops {
		op := &ops[i]
		if op.Reason == planReason(p) && op.Action == p.Action && !op.Created.Before(st.Started.Add(-time.Second)) &&
			(p.Action == ActionRestore || slices.Equal(op.Targets, []string{st.Target})) {
			return op, nil
		}
	}
	return nil, nil
}

// verify checks that a step left its target as the action promises: the
// new state in every product of its scope and, for a delete or purge, no
// live rows in the tables it removed. "passed", or what is wrong.
func (r *runner) verify(ctx context.Context, p *Plan, st *Step) string {
	if p.Action == ActionRestore {
		return "passed" // restore verifies every row's hash itself
	}
	_, want := tenant.Inverse(productdb.Action(p.Action))
	t, err := tenant.ParseTarget(st.Target)
	if err != nil {
		return err.Error()
	}
	var problems []string
	for _, prod := range r.s.Tenants.Products {
		if t.Product != "" && prod.Name != t.Product {
			continue
		}
		info, err := prod.DB.Tenant(ctx, prod.Layout, t.Tenant)
		if fault.CodeOf(err) == fault.NotFound {
			continue
		}
		if err != nil {
			return err.Error()
		}
		if got, _ := t.StateIn(info); got != want {
			problems = append(problems, fmt.Sprintf("%s is %s in %s, not %s", t, got, prod.Name, want))
		}
		if want == productdb.Deleted || want == productdb.Purged {
			for _, table := range prod.Layout.AppTables(t.App, t.App == "") {
				if n := info.Rows[table]; n > 0 {
					problems = append(problems, fmt.Sprintf("%s still has %d live rows in %s.%s", t, n, prod.Name, table))
				}
			}
		}
	}
	if len(problems) == 0 {
		return "passed"
	}
	return strings.Join(problems, "; ")
}

// waveDone ends a wave: the last one finishes the plan; an empty one goes
// straight on; any other starts its gate's bake.
func (r *runner) waveDone(ctx context.Context, p *Plan) error {
	last := 0
	size := 0
	for _, st := range p.Steps {
		last = max(last, st.Wave)
		if st.Wave == p.Wave {
			size++
		}
	}
	if p.Report != nil {
		last = len(p.Report.Waves) - 1
	}
	// The wave's end is audited with what follows it, in one transaction.
	done := r.s.auditTx(ctx, state.AuditEntry{Actor: r.actor.Name, Action: "plan.wave_done",
		Detail: map[string]any{"plan": p.ID, "wave": p.Wave, "targets": size}})
	if p.Wave >= last {
		cur, err := r.s.get(ctx, p.ID)
		if err != nil {
			return err
		}
		pr := cur.Progress
		note := fmt.Sprintf("%d done, %d failed, %d skipped", pr.Done, pr.Failed, pr.Skipped)
		return r.s.transitionWith(ctx, cur, r.actor.Name, "done", Done, []Status{Running}, released(map[string]any{"note": note, "phase": ""}), nil, done)
	}
	if size == 0 {
		return r.nextWave(ctx, p, done)
	}
	_, err := r.s.advance(ctx, p.ID, map[string]any{"phase": phaseGate, "gate_until": micros(r.s.now().Add(p.Spec.Bake.D()))}, done)
	return err
}

// nextWave starts the next wave's steps, with also (what led to it: the
// wave's end, a passed gate) in the same transaction.
func (r *runner) nextWave(ctx context.Context, p *Plan, also func(*sql.Tx) error) error {
	_, err := r.s.advance(ctx, p.ID, map[string]any{"wave": p.Wave + 1, "phase": phaseSteps, "gate_until": 0,
		"last_progress": micros(r.s.now())}, also)
	return err
}

// ResumeInterrupted runs on every interrupted plan (see Interrupted) until
// ctx ends: at once, then every interval (default the lease TTL, after
// which a dead runner on another host has lost its lease). Each plan runs
// in its own goroutine as actor; the run lease keeps two processes, or two
// rounds here, from running one plan at once. It returns when ctx has
// ended and every plan it started has stopped.
func (s *Service) ResumeInterrupted(ctx context.Context, actor Actor, interval time.Duration) {
	if interval <= 0 {
		interval = s.ttl()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ids, err := s.Interrupted(ctx)
		if err != nil && ctx.Err() == nil && s.Log != nil {
			s.Log.Warn("plans: listing interrupted plans failed", "err", err)
		}
		for _, id := range ids {
			run, err := s.Begin(ctx, id, actor)
			if err != nil {
				// Taken by another process meanwhile, frozen, or refused:
				// the plan's own state says why; the next round looks again.
				s.logf("interrupted plan not resumed", "plan", id, "err", err)
				continue
			}
			s.logf("resuming interrupted plan", "plan", id)
			wg.Go(func() {
				p, err := run(ctx)
				if err != nil && ctx.Err() == nil && s.Log != nil {
					s.Log.Warn("resumed plan stopped", "plan", id, "err", err)
				} else if p != nil {
					s.logf("resumed plan stopped", "plan", id, "status", p.Status, "note", p.Note)
				}
			})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Interrupted lists the running plans nobody is running: their runner's
// lease expired or its process on this host exited (a crash, a restart).
// serve runs them on; `lifeline plan run ID` does the same by hand. Plans
// waiting for `plan promote` are left waiting.
func (s *Service) Interrupted(ctx context.Context) ([]string, error) {
	rows, err := s.store().DB().QueryContext(ctx, s.store().Rebind("SELECT id, runner, lease_until, phase FROM plans WHERE status = ? ORDER BY created"), string(Running))
	if err != nil {
		return nil, fmt.Errorf("plan: interrupted plans: %w", err)
	}
	defer rows.Close()
	var out []string
	now := s.now()
	for rows.Next() {
		var id, owner, phase string
		var lease int64
		if err := rows.Scan(&id, &owner, &lease, &phase); err != nil {
			return nil, err
		}
		gone := owner == "" || !fromMicros(lease).After(now) || tenant.OwnerGone(owner)
		if gone && phase != phasePromote {
			out = append(out, id)
		}
	}
	return out, rows.Err()
}
