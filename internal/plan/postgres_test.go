package plan

import (
	"sync"
	"testing"

	"lifeline/internal/fault"
	"lifeline/internal/pgtest"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// second is another process over the same state store and products: its
// own services, its own lease owner.
func (b *bundle) second(owner string) *Service {
	ts := *b.tenants
	ts.Owner, ts.BeforeStep, ts.Admit = owner, nil, nil
	ps := &Service{Tenants: &ts, Sleep: b.clock.sleep, Owner: owner, Config: b.plans.Config}
	ts.Admit = ps.Admit
	return ps
}

// Two runners against one PostgreSQL state store never run a step twice:
// started together, one runs the plan and the other is refused; a runner
// whose lease is taken over mid-wave stops before its next tenant, and the
// one that took over does not redo what it did.
func TestTwoRunnersOnePostgresStore(t *testing.T) {
	t.Parallel()
	b := setup(t, options{stateDSN: pgtest.NewDB(t)})
	other := b.second("other:2")

	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 10, ""), Waves: []string{"100%"}})
	p = b.approve(t, p, carol)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*Service{b.plans, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Run(ctx, p.ID, carol)
		}()
	}
	wg.Wait()
	refused := 0
	for _, err := range errs {
		if err != nil {
			if fault.CodeOf(err) != fault.Conflict {
				t.Fatalf("the losing runner: %v", err)
			}
			refused++
		}
	}
	if refused != 1 {
		t.Fatalf("runners refused: %d (%v)", refused, errs)
	}
	checkOnce(t, b, p.ID, keys(1, 10, ""))

	// Runner 1's lease is lost (it hung past its lease) while it runs
	// tenant 13; runner 2 takes the plan over at that moment.
	p = b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(11, 20, ""), Waves: []string{"100%"}})
	p = b.approve(t, p, carol)
	var second *Plan
	var secondErr error
	b.plans.BeforeStep = func(st Step) {
		if st.Tenant != "13" {
			return
		}
		if _, err := b.store.DB().ExecContext(ctx, "UPDATE plans SET lease_until = 1 WHERE id = $1", p.ID); err != nil {
			t.Error(err)
		}
		second, secondErr = other.Run(ctx, p.ID, carol)
	}
	first, err := b.plans.Run(ctx, p.ID, carol)
	wantCode(t, err, fault.Conflict, "lost its lease")
	if secondErr != nil || second.Status != Done {
		t.Fatalf("the runner that took over: %v %+v", secondErr, second)
	}
	if first.Status != Done {
		t.Fatalf("the plan: %s", first.Status)
	}
	checkOnce(t, b, p.ID, keys(11, 20, ""))
}

// checkOnce fails unless every target of the plan ran exactly once.
func checkOnce(t *testing.T, b *bundle, id string, sites []string) {
	t.Helper()
	p := must[*Plan](t)(b.plans.Get(ctx, id))
	if p.Status != Done || p.Progress.Done != len(sites) {
		t.Fatalf("plan %s: %s %+v %s", id, p.Status, p.Progress, p.Note)
	}
	ops := must[[]state.Operation](t)(b.store.ListOperations(ctx, state.OpFilter{Limit: 1000}))
	per := map[string]int{}
	for _, op := range ops {
		if op.Reason == planReason(p) {
			per[op.Targets[0]]++
		}
	}
	for _, k := range sites {
		if per["site:"+k] != 1 {
			t.Errorf("site %s ran %d times", k, per["site:"+k])
		}
	}
}
