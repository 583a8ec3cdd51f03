package restore

import (
	"context"
	"slices"
	"testing"

	"lifeline/internal/fault"
	"lifeline/internal/pgtest"
	"lifeline/internal/state"
)

// A restore whose context is cancelled (Ctrl-C) while it applies stops
// between transactions: each tenant is either restored and verified or
// untouched, the operation stays running (not done), the report and the
// exit status say it was interrupted, and running the same restore again
// finishes it. Cancelled while it rebuilds, it restores nothing, and is
// finished the same way.
func TestCancelledRestoreStopsBetweenTenantsAndResumes(t *testing.T) {
	for _, phase := range []string{"apply", "rebuild"} {
		t.Run(phase, func(t *testing.T) { cancelledRestore(t, phase) })
	}
}

func cancelledRestore(t *testing.T, phase string) {
	each(t, func(t *testing.T, e engine) {
		const n = 10
		b := setup(t, e, n)
		S := []int{1, 2, 3, 4, 5, 6, 7, 8}
		T := b.shipNow(t)
		atT := map[int]map[string][]string{}
		for _, s := range S {
			atT[s] = b.dump(t, s)
			b.april(t, s)
		}
		b.shipNow(t)
		before := b.dumpEach(t, S)
		beforeOthers := b.dump(t, others(n, S)...)

		// Cancel as soon as the first transaction of swaps committed, or
		// as soon as rebuilding starts.
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		b.svc.Progress = func(p Progress) {
			if p.Phase == phase && (phase == "rebuild" || p.StepsDone > 0) {
				cancel()
			}
		}
		req := Request{Tenants: keys(S...), To: T, Actor: "tester"}
		rep, err := b.svc.Run(cctx, req)
		b.svc.Progress = nil
		if err == nil || fault.ExitStatus(err) != 1 || rep.Status != "interrupted" {
			t.Fatalf("cancelled restore: status %q, err %v (exit %d), want interrupted, exit 1\n%+v", rep.Status, err, fault.ExitStatus(err), rep)
		}
		op, err := b.store.GetOperation(ctx, rep.Operation)
		if err != nil || op.Status != state.OpRunning {
			t.Fatalf("an interrupted restore's operation must stay running, to be resumed: %+v %v", op, err)
		}
		restored := b.cancelled(t, rep, S, "restored", atT, before)
		for _, tr := range rep.Tenants {
			if p := tr.Products[0]; p.Status == "restored" && p.Hash != "verified" {
				t.Errorf("tenant %s restored but %q", tr.Tenant, p.Hash)
			}
		}
		if (phase == "apply" && len(restored) == 0) || (phase == "rebuild" && len(restored) > 0) || len(restored) == len(S) {
			t.Fatalf("cancelled in %s: restored %v of %v", phase, restored, S)
		}
		for _, st := range op.Steps {
			want := state.StepPending
			if slices.Contains(keys(restored...), st.Tenant) {
				want = state.StepDone
			}
			if st.Status != want {
				t.Errorf("step of tenant %s recorded %s, want %s", st.Tenant, st.Status, want)
			}
		}
		sameDump(t, "other tenants", beforeOthers, b.dump(t, others(n, S)...))
		if left := b.staged(t); left != 0 {
			t.Errorf("%d rows left in staging after the cancel", left)
		}

		// The interrupted run released its lease: running the same restore
		// again in this process, with no time passing, takes the operation
		// over at once and finishes it.
		if !op.LeaseUntil.Before(b.clock.Now()) {
			t.Errorf("an interrupted restore's lease runs until %v, want released", op.LeaseUntil)
		}
		again, err := b.svc.Run(ctx, req)
		if err != nil || again.Status != "done" || again.Operation != rep.Operation {
			t.Fatalf("rerun: %v\n%+v", err, again)
		}
		for _, tr := range again.Tenants {
			s := S[slices.Index(keys(S...), tr.Tenant)]
			if p := tr.Products[0]; p.Status != "restored" || p.Hash != "verified" || p.Resumed != slices.Contains(restored, s) {
				t.Errorf("rerun, tenant %d: %+v", s, p)
			}
			sameDump(t, "tenant after the rerun", atT[s], b.dump(t, s))
		}
		if op, _ := b.store.GetOperation(ctx, rep.Operation); op.Status != state.OpDone {
			t.Errorf("after the rerun the operation is %s, want done", op.Status)
		}
		sameDump(t, "other tenants after the rerun", beforeOthers, b.dump(t, others(n, S)...))
	})
}

// An undo whose context is cancelled (Ctrl-C) stops between tenants: each
// is undone or left restored, the undo stays running with its lease
// released and the restore is not marked rolled back; the report and exit
// status say it was interrupted. Running the same undo again in this
// process, at once, takes it over and finishes it.
func TestCancelledUndoStopsBetweenTenantsAndResumes(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		const n = 8
		b := setup(t, e, n)
		S := []int{1, 2, 3, 4, 5}
		T := b.shipNow(t)
		for _, s := range S {
			b.april(t, s)
		}
		b.shipNow(t)
		before := b.dumpEach(t, S)
		restored := mustRestore(t, b, Request{Tenants: keys(S...), To: T})
		after := b.dumpEach(t, S)
		beforeOthers := b.dump(t, others(n, S)...)

		// Cancel as the second tenant's undo is about to start: that one
		// is finished, the rest are not started.
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		started := 0
		b.svc.BeforeStep = func(state.Step) {
			if started++; started == 2 {
				cancel()
			}
		}
		rep, err := b.svc.Undo(cctx, restored.Operation, "tester", "")
		b.svc.BeforeStep = nil
		if err == nil || fault.ExitStatus(err) != 1 || rep.Status != "interrupted" || rep.Operation == "" {
			t.Fatalf("cancelled undo: status %q, err %v (exit %d), want interrupted, exit 1\n%+v", rep.Status, err, fault.ExitStatus(err), rep)
		}
		op, err := b.store.GetOperation(ctx, rep.Operation)
		if err != nil || op.Status != state.OpRunning || !op.LeaseUntil.Before(b.clock.Now()) {
			t.Fatalf("an interrupted undo must stay running with its lease released: %+v %v", op, err)
		}
		if orig, _ := b.store.GetOperation(ctx, restored.Operation); orig.Status != state.OpDone {
			t.Errorf("the restore is %s while its undo is interrupted, want still done", orig.Status)
		}
		undone := b.cancelled(t, rep, S, "undone", before, after)
		if len(undone) != 2 {
			t.Fatalf("undone before the cancel: %v, want the first 2 tenants", undone)
		}

		again, err := b.svc.Undo(ctx, restored.Operation, "tester", "")
		if err != nil || again.Status != "done" || again.Operation != rep.Operation {
			t.Fatalf("rerun: %v\n%+v", err, again)
		}
		for _, tr := range again.Tenants {
			s := S[slices.Index(keys(S...), tr.Tenant)]
			if p := tr.Products[0]; p.Status != "undone" || p.Resumed != slices.Contains(undone, s) {
				t.Errorf("rerun, tenant %d: %+v", s, p)
			}
			sameDump(t, "tenant after the rerun", before[s], b.dump(t, s))
		}
		if op, _ := b.store.GetOperation(ctx, rep.Operation); op.Status != state.OpDone {
			t.Errorf("after the rerun the undo is %s, want done", op.Status)
		}
		if orig, _ := b.store.GetOperation(ctx, restored.Operation); orig.Status != state.OpRolledBack {
			t.Errorf("after the rerun the restore is %s, want rolled_back", orig.Status)
		}
		sameDump(t, "other tenants", beforeOthers, b.dump(t, others(n, S)...))
		if left := b.staged(t); left != 0 {
			t.Errorf("%d rows left in staging", left)
		}
	})
}

// A restore --into whose context is cancelled while it loads rolls its one
// transaction back: the target stays empty, the report and exit status say
// it was interrupted, and the same command run again loads it.
func TestCancelledRestoreIntoLeavesTheTargetEmpty(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 6)
		T := b.shipNow(t)
		atT := b.dump(t, 2, 3, 5)
		b.april(t, 2)
		b.shipNow(t)
		into, base := "sqlite:drill.db", t.TempDir()
		if e.Name == "postgres" {
			into = pgtest.NewDB(t)
		}
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		b.svc.Progress = func(p Progress) {
			if p.Phase == "load" && p.StepsDone > 0 {
				cancel()
			}
		}
		req := Request{Tenants: keys(2, 3, 5), To: T, Into: into, IntoBase: base, Actor: "tester"}
		rep, err := b.svc.Run(cctx, req)
		b.svc.Progress = nil
		if err == nil || fault.ExitStatus(err) != 1 || rep.Status != "interrupted" || rep.Rows != 0 {
			t.Fatalf("cancelled restore --into: status %q, %d rows, err %v (exit %d), want interrupted, 0 rows, exit 1",
				rep.Status, rep.Rows, err, fault.ExitStatus(err))
		}
		for _, tr := range rep.Tenants {
			if p := tr.Products[0]; p.Status != "interrupted" || p.Error == "" {
				t.Errorf("tenant %s after the cancel: %+v", tr.Tenant, p)
			}
		}

		// A target left with anything in it refuses a restore ("not
		// empty"): the same command is accepted and loads it.
		again, err := b.svc.Run(ctx, req)
		if err != nil || again.Status != "done" {
			t.Fatalf("rerun: %v\n%+v", err, again)
		}
		sameDump(t, "the tenants loaded by the rerun", atT, dumpDB(t, openTarget(t, e.Name, into, base), e.Name))
	})
}

// dumpEach dumps each of tenants on its own.
func (b *bundle) dumpEach(t *testing.T, tenants []int) map[int]map[string][]string {
	t.Helper()
	out := map[int]map[string][]string{}
	for _, s := range tenants {
		out[s] = b.dump(t, s)
	}
	return out
}

// cancelled checks the report of a run over tenants that was cancelled:
// each tenant is reported done (restored, undone) and now as in done, or
// interrupted, saying so, and as in left. It returns the tenants done.
func (b *bundle) cancelled(t *testing.T, rep *Report, tenants []int, done string, doneDump, leftDump map[int]map[string][]string) []int {
	t.Helper()
	var out []int
	for _, tr := range rep.Tenants {
		s := tenants[slices.Index(keys(tenants...), tr.Tenant)]
		switch p := tr.Products[0]; p.Status {
		case done:
			sameDump(t, "tenant "+done+" before the cancel", doneDump[s], b.dump(t, s))
			out = append(out, s)
		case "interrupted":
			if p.Error == "" {
				t.Errorf("tenant %d: an interrupted step must say what happened", s)
			}
			sameDump(t, "tenant not reached before the cancel", leftDump[s], b.dump(t, s))
		default:
			t.Errorf("tenant %d: status %q after a cancel (%s)", s, p.Status, p.Error)
		}
	}
	return out
}
