package plan

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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

// A status transition, its audit entry and its event commit together: when
// the audit append fails (here the database refuses it), the plan keeps
// its status and no event is recorded. On both engines.
func TestTransitionFailsWithItsAuditEntry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, dsn   string
		down, ready []string
	}{
		{"sqlite", "", []string{`CREATE TRIGGER audit_down BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit is down'); END`},
			[]string{`DROP TRIGGER audit_down`}},
		{"postgres", pgtest.NewDB(t), []string{
			`CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit is down'; END $$`,
			`CREATE TRIGGER audit_down BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_down()`},
			[]string{`DROP TRIGGER audit_down ON audit_log`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, options{tenants: 5, stateDSN: tc.dsn})
			b.plans.Config.Events = []string{"http://127.0.0.1:1/events"}
			p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 2, ""), Waves: []string{"100%"}})
			p = b.approve(t, p, carol)
			events := countRows(t, b.store, "SELECT COUNT(*) FROM plan_events")
			execAll(t, b.store, tc.down)
			if _, err := b.plans.Pause(ctx, p.ID, carol, "audit down"); err == nil || !strings.Contains(err.Error(), "audit is down") {
				t.Fatalf("pause with the audit log refusing: %v", err)
			}
			// A plan is created with its plan.create entry, a freeze with
			// freeze.on: neither is kept without it.
			plans := countRows(t, b.store, "SELECT COUNT(*) FROM plans")
			if _, err := b.plans.Create(ctx, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(3, 3, ""), Reason: "r",
				Requester: "alice"}); err == nil || countRows(t, b.store, "SELECT COUNT(*) FROM plans") != plans {
				t.Fatalf("create with the audit log refusing: %v, %d plans (were %d)", err, countRows(t, b.store, "SELECT COUNT(*) FROM plans"), plans)
			}
			if _, err := b.plans.SetFreeze(ctx, true, "carol", "incident"); err == nil || countRows(t, b.store, "SELECT COUNT(*) FROM plan_freeze") != 0 {
				t.Fatalf("freeze with the audit log refusing: %v", err)
			}
			if got := must[*Plan](t)(b.plans.Get(ctx, p.ID)); got.Status != Approved || got.Note != "" {
				t.Fatalf("after a failed audit append the plan is %s (%q); want it still approved", got.Status, got.Note)
			}
			if n := countRows(t, b.store, "SELECT COUNT(*) FROM plan_events"); n != events {
				t.Fatalf("%d events after the failed transition; want %d", n, events)
			}
			execAll(t, b.store, tc.ready)
			if got := must[*Plan](t)(b.plans.Pause(ctx, p.ID, carol, "audit back")); got.Status != Paused {
				t.Fatalf("pause with the audit log back: %s", got.Status)
			}
			if n := countRows(t, b.store, "SELECT COUNT(*) FROM plan_events"); n != events+1 {
				t.Fatalf("%d events after the transition; want %d", n, events+1)
			}
		})
	}
}

// A wave's end, its audit entry and its event commit together: when the
// event of the gate phase cannot be recorded (the database refuses it),
// the plan stays in its wave's steps with neither the wave_done entry nor
// the event, and a later run records all three. On both engines.
func TestWaveChangeFailsWithItsEvent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, dsn   string
		down, ready []string
	}{
		{"sqlite", "", []string{`CREATE TRIGGER events_down BEFORE INSERT ON plan_events WHEN NEW.body LIKE '%"phase":"gate"%'
			BEGIN SELECT RAISE(ABORT, 'events are down'); END`}, []string{`DROP TRIGGER events_down`}},
		{"postgres", pgtest.NewDB(t), []string{
			`CREATE FUNCTION events_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
				IF NEW.body LIKE '%"phase":"gate"%' THEN RAISE EXCEPTION 'events are down'; END IF; RETURN NEW; END $$`,
			`CREATE TRIGGER events_down BEFORE INSERT ON plan_events FOR EACH ROW EXECUTE FUNCTION events_down()`},
			[]string{`DROP TRIGGER events_down ON plan_events`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, options{tenants: 4, stateDSN: tc.dsn})
			b.plans.Config.Events = []string{"http://127.0.0.1:1/events"}
			p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 4, ""), Waves: []string{"50%", "100%"},
				Bake: ptr(Duration(time.Minute))})
			p = b.approve(t, p, carol)
			execAll(t, b.store, tc.down)
			gateEvents := `SELECT COUNT(*) FROM plan_events WHERE body LIKE '%"phase":"gate"%'`
			if _, err := b.plans.Run(ctx, p.ID, carol); err == nil || !strings.Contains(err.Error(), "events are down") {
				t.Fatalf("run with the gate's event refused: %v", err)
			}
			got := must[*Plan](t)(b.plans.Get(ctx, p.ID))
			if got.Status != Running || got.Wave != 0 || got.Phase != phaseSteps || got.Progress.Done != 2 {
				t.Fatalf("after the refused event: %s wave %d phase %q, %d done; want running, still in wave 0's steps with its 2 done",
					got.Status, got.Wave, got.Phase, got.Progress.Done)
			}
			if slices.Contains(auditActions(t, b.store), "plan.wave_done") || countRows(t, b.store, gateEvents) != 0 {
				t.Fatalf("the wave's end was recorded without its change: audit %v", auditActions(t, b.store))
			}
			execAll(t, b.store, tc.ready)
			got = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
			if got.Status != Done || got.Progress.Done != 4 {
				t.Fatalf("run with events back: %s, %+v", got.Status, got.Progress)
			}
			waveDone := 0
			for _, a := range auditActions(t, b.store) {
				if a == "plan.wave_done" {
					waveDone++
				}
			}
			if waveDone != 2 || countRows(t, b.store, gateEvents) != 1 || len(got.Gates) != 1 {
				t.Fatalf("%d wave_done entries, %d gate events, %d gates; want 2, 1, 1", waveDone, countRows(t, b.store, gateEvents), len(got.Gates))
			}
		})
	}
}

// execAll runs statements on the state store (here: to make it refuse
// writes, and to let it take them again).
func execAll(t *testing.T, st *state.Store, qs []string) {
	t.Helper()
	for _, q := range qs {
		if _, err := st.DB().ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
}
