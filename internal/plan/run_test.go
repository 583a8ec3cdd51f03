package plan

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// Internal tenants run first, then each wave its cumulative share, each
// gate after its bake; every step goes through tenant operations.
func TestWavesRunInOrderWithTheirSizesAndBakes(t *testing.T) {
	t.Parallel()
	b := setup(t, options{internal: 3})
	var order []string
	var bakes []time.Time
	b.plans.BeforeStep = func(st Step) { order = append(order, st.Tenant) }
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 40, ""),
		Waves: []string{"internal", "10%", "50%", "100%"}, Bake: ptr(Duration(10 * time.Minute))})
	if got := waveSizes(p.Report.Waves); !slices.Equal(got, []int{3, 4, 15, 18}) {
		t.Fatalf("wave sizes %v; want internal 3, then ceil(10%% of 37)=4, up to ceil(50%%)=19, the rest", got)
	}
	p = b.approve(t, p, carol)
	start := b.clock.Now().Truncate(time.Microsecond)
	b.plans.OnChange = func(_ context.Context, pl *Plan) {
		if pl.Phase == phaseGate {
			bakes = append(bakes, pl.GateUntil)
		}
	}
	p, err := b.plans.Run(ctx, p.ID, carol)
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != Done || p.Progress.Done != 40 {
		t.Fatalf("plan %s, progress %+v, note %s", p.Status, p.Progress, p.Note)
	}
	if !slices.Equal(order[:3], []string{"1", "2", "3"}) || !slices.Equal(order[3:7], []string{"4", "5", "6", "7"}) {
		t.Fatalf("execution order %v: internal tenants first, then the first 10%%", order)
	}
	if len(p.Gates) != 3 || p.Gates[0].Result != Pass || p.Gates[2].Wave != 2 {
		t.Fatalf("gates: %+v", p.Gates)
	}
	if len(bakes) != 3 || bakes[0].Sub(start) < 10*time.Minute {
		t.Fatalf("bakes end at %v (start %v)", bakes, start)
	}
	// Each gate came after its bake, and each wave after its gate.
	for _, g := range p.Gates {
		var lastOfWave, firstOfNext time.Time
		for _, st := range p.Steps {
			if st.Wave == g.Wave && st.Finished.After(lastOfWave) {
				lastOfWave = st.Finished
			}
			if st.Wave == g.Wave+1 && (firstOfNext.IsZero() || st.Started.Before(firstOfNext)) {
				firstOfNext = st.Started
			}
		}
		if g.At.Sub(lastOfWave) < 10*time.Minute || firstOfNext.Before(g.At) {
			t.Fatalf("wave %d ended %v, gate %v, next wave began %v", g.Wave, lastOfWave, g.At, firstOfNext)
		}
	}
	for i := 1; i <= 40; i++ {
		if st := b.state(t, "wiki", itoa(i)); st != productdb.Deactivated {
			t.Fatalf("site %d is %s in wiki", i, st)
		}
	}
	ops := must[[]state.Operation](t)(b.store.ListOperations(ctx, state.OpFilter{Limit: 100}))
	if len(ops) != 40 || !strings.HasPrefix(ops[0].Reason, "plan "+p.ID+": ") || ops[0].Actor != "carol" {
		t.Fatalf("%d operations; newest %+v", len(ops), ops[0])
	}
	acts := auditActions(t, b.store)
	for _, want := range []string{"plan.create", "plan.validate", "plan.approve", "plan.run", "plan.wave_done", "plan.gate", "plan.done"} {
		if !slices.Contains(acts, want) {
			t.Errorf("audit lacks %s: %v", want, acts)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func itoa(i int) string { return strconv.Itoa(i) }

func waveSizes(ws []WaveReport) []int {
	var out []int
	for _, w := range ws {
		out = append(out, w.Size)
	}
	return out
}

// A webhook check that fails aborts the plan at its gate; one that is
// inconclusive pauses it; `plan promote` passes that gate.
func TestGatesAbortOrPause(t *testing.T) {
	t.Parallel()
	answer := atomic.Value{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req GateRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Plan == nil {
			w.WriteHeader(400)
			return
		}
		w.Write([]byte(answer.Load().(string)))
	}))
	defer srv.Close()
	b := setup(t, options{internal: 2})
	run := func(targets []string) *Plan {
		p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: targets, Waves: []string{"internal", "100%"}, Checks: []string{srv.URL}})
		p = b.approve(t, p, carol)
		p, err := b.plans.Run(ctx, p.ID, carol)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	answer.Store(`{"result": "fail", "detail": "error rate up"}`)
	p := run(keys(1, 5, ""))
	if p.Status != Aborted || p.Progress.Done != 2 || !strings.Contains(p.Note, "error rate up") {
		t.Fatalf("failed check: %s, %+v, %s", p.Status, p.Progress, p.Note)
	}
	if b.state(t, "tracker", "3") != productdb.Active {
		t.Fatal("a wave ran after its gate failed")
	}
	if _, err := b.plans.Run(ctx, p.ID, carol); fault.CodeOf(err) != fault.Conflict {
		t.Fatalf("running an aborted plan: %v", err)
	}

	answer.Store(`not json`)
	b.plans.Config.Internal = []InternalQuery{{Product: "tracker", Query: "SELECT id FROM sites WHERE id IN (10)"}}
	p = run(keys(10, 14, ""))
	if p.Status != Paused || p.Phase != phaseGate || !strings.Contains(p.Note, "inconclusive") {
		t.Fatalf("inconclusive check: %s %s, %s", p.Status, p.Phase, p.Note)
	}
	if _, err := b.plans.Resume(ctx, p.ID, carol); err != nil {
		t.Fatal(err)
	}
	if p, _ = b.plans.Run(ctx, p.ID, carol); p.Status != Paused {
		t.Fatalf("resumed, the gate is asked again and is still inconclusive: %s", p.Status)
	}
	if p, err := b.plans.Promote(ctx, p.ID, bob); err != nil || p.Status != Running {
		t.Fatalf("promote: %v", err)
	}
	p, err := b.plans.Run(ctx, p.ID, carol)
	if err != nil || p.Status != Done || p.Progress.Done != 5 {
		t.Fatalf("after promote: %v %s %+v", err, p.Status, p.Progress)
	}
	if last := p.Gates[len(p.Gates)-1]; last.Result != Promoted || last.Checks[0].Detail != "by bob" {
		t.Fatalf("the promotion is not recorded: %+v", last)
	}

	// A manual gate waits for a person even when its checks pass.
	answer.Store(`{"result": "pass"}`)
	b.plans.Config.Internal = []InternalQuery{{Product: "tracker", Query: "SELECT id FROM sites WHERE id = 20"}}
	m := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(20, 22, ""), Waves: []string{"internal", "100%"}, Manual: true})
	m = b.approve(t, m, carol)
	m = must[*Plan](t)(b.plans.Run(ctx, m.ID, carol))
	if m.Status != Running || m.Phase != phasePromote || m.Progress.Done != 1 {
		t.Fatalf("manual gate: %s %s %+v", m.Status, m.Phase, m.Progress)
	}
	must[*Plan](t)(b.plans.Promote(ctx, m.ID, bob))
	if m = must[*Plan](t)(b.plans.Run(ctx, m.ID, carol)); m.Status != Done {
		t.Fatalf("after promote: %s", m.Status)
	}
}

// A wave whose steps fail more than allowed fails its gate: abort.
func TestFailedStepsFailTheGate(t *testing.T) {
	t.Parallel()
	b := setup(t, options{internal: 3})
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 10, ""), Waves: []string{"internal", "100%"}})
	p = b.approve(t, p, carol)
	b.plans.BeforeStep = func(st Step) {
		if st.Tenant == "2" { // someone deactivates it by hand just before
			if _, err := b.tenants.Run(ctx, tenant.Request{Action: productdb.Deactivate, Target: "site:2", Actor: "x"}); err != nil {
				t.Error(err)
			}
		}
	}
	p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	if p.Status != Aborted || !strings.Contains(p.Note, "failed_steps: 1 of 3 steps failed") {
		t.Fatalf("%s: %s", p.Status, p.Note)
	}
	if p.Steps[1].Status != StepFailed || !strings.Contains(p.Steps[1].Error, "deactivated") {
		t.Fatalf("step 2: %+v", p.Steps[1])
	}
	if b.state(t, "tracker", "4") != productdb.Active {
		t.Fatal("the next wave ran")
	}
}

// pause, resume and abort work at any time; a pause lands within one
// tenant.
func TestPauseResumeAbort(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 8, ""), Waves: []string{"100%"}})
	p = b.approve(t, p, carol)
	b.plans.BeforeStep = func(st Step) {
		if st.Tenant == "3" {
			if _, err := b.plans.Pause(ctx, p.ID, bob, "looks odd"); err != nil {
				t.Error(err)
			}
		}
	}
	p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	if p.Status != Paused || p.Progress.Done != 3 || !strings.Contains(p.Note, "paused by bob: looks odd") {
		t.Fatalf("paused: %s %+v %s", p.Status, p.Progress, p.Note)
	}
	b.plans.BeforeStep = nil
	if _, err := b.plans.Run(ctx, p.ID, carol); fault.CodeOf(err) != fault.Conflict {
		t.Fatalf("running a paused plan without resuming: %v", err)
	}
	must[*Plan](t)(b.plans.Resume(ctx, p.ID, carol))
	b.plans.BeforeStep = func(st Step) {
		if st.Tenant == "6" {
			if _, err := b.plans.Abort(ctx, p.ID, bob, "stop"); err != nil {
				t.Error(err)
			}
		}
	}
	p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	if p.Status != Aborted || p.Progress.Done != 6 || !strings.Contains(p.Note, "rollback") {
		t.Fatalf("aborted: %s %+v %s", p.Status, p.Progress, p.Note)
	}
	if _, err := b.plans.Resume(ctx, p.ID, carol); fault.CodeOf(err) != fault.Conflict {
		t.Fatalf("resuming an aborted plan: %v", err)
	}
	// A runner elsewhere still finishing its tenant holds the lease: the
	// rollback waits for it instead of racing it.
	if _, err := b.store.DB().ExecContext(ctx, "UPDATE plans SET runner = 'elsewhere:1', lease_until = ? WHERE id = ?",
		b.clock.Now().Add(time.Minute).UnixMicro(), p.ID); err != nil {
		t.Fatal(err)
	}
	_, err := b.plans.Rollback(ctx, p.ID, carol)
	wantCode(t, err, fault.Conflict, "being run by elsewhere:1")
	b.clock.Advance(2 * time.Minute)
	if p = must[*Plan](t)(b.plans.Rollback(ctx, p.ID, carol)); p.Status != RolledBack || p.Progress.RolledBack != 6 {
		t.Fatalf("rollback after the lease expired: %s %+v", p.Status, p.Progress)
	}
}

// A plan that makes no progress for longer than its deadline is aborted.
func TestProgressDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 4, ""), Waves: []string{"100%"}, Deadline: ptr(Duration(time.Minute))})
	p = b.approve(t, p, carol)
	b.plans.BeforeStep = func(st Step) {
		if st.Tenant == "2" {
			b.clock.Advance(2 * time.Minute) // a step that takes too long
		}
	}
	p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	if p.Status != Aborted || p.Progress.Done != 2 || !strings.Contains(p.Note, "deadline of 1m0s") {
		t.Fatalf("%s %+v %s", p.Status, p.Progress, p.Note)
	}
}

// Freeze: a runner finishes its current tenant and stops; nothing
// destructive starts while it is on; rollbacks and reactivations still run.
func TestFreezeStopsRunnersWithinOneTenant(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 10, ""), Waves: []string{"100%"}})
	p = b.approve(t, p, carol)
	b.plans.BeforeStep = func(st Step) {
		if st.Tenant == "3" {
			if _, err := b.plans.SetFreeze(ctx, true, "incident-commander", "INC-1 sites missing"); err != nil {
				t.Error(err)
			}
		}
	}
	p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	if p.Status != Paused || p.Progress.Done != 3 || !strings.Contains(p.Note, "freeze of incident-commander (INC-1 sites missing)") {
		t.Fatalf("frozen: %s %+v %s", p.Status, p.Progress, p.Note)
	}
	if b.state(t, "tracker", "3") != productdb.Deactivated || b.state(t, "tracker", "4") != productdb.Active {
		t.Fatal("the freeze did not stop after exactly the tenant in progress")
	}
	b.plans.BeforeStep = nil
	_, err := b.plans.Resume(ctx, p.ID, carol)
	wantCode(t, err, fault.Refused, "frozen since", "INC-1")
	other := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"20"}})
	other = b.approve(t, other, carol)
	_, err = b.plans.Run(ctx, other.ID, carol)
	wantCode(t, err, fault.Refused, "frozen")
	_, err = b.tenants.Run(ctx, tenant.Request{Action: productdb.Deactivate, Target: "site:30", Actor: "x"})
	wantCode(t, err, fault.Refused, "frozen")
	if _, err := b.tenants.Run(ctx, tenant.Request{Action: productdb.Reactivate, Target: "site:1", Actor: "x"}); err != nil {
		t.Fatalf("a reactivation during a freeze: %v", err)
	}
	f := must[Freeze](t)(b.plans.SetFreeze(ctx, false, "incident-commander", "over"))
	if f.On {
		t.Fatal("still frozen")
	}
	must[*Plan](t)(b.plans.Resume(ctx, p.ID, carol))
	if p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol)); p.Status != Done || p.Progress.Done != 10 {
		t.Fatalf("after the freeze: %s %+v", p.Status, p.Progress)
	}
	if acts := auditActions(t, b.store); !slices.Contains(acts, "freeze.on") || !slices.Contains(acts, "freeze.off") {
		t.Fatalf("freeze not audited: %v", acts)
	}
}

// More than a handful of tenants outside a plan is refused; plans,
// reactivations and undeletes are not counted.
func TestHandfulOutsidePlans(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(20, 30, ""), Waves: []string{"100%"}})
	p = b.approve(t, p, carol)
	if p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol)); p.Status != Done {
		t.Fatalf("plan: %s %s", p.Status, p.Note)
	}
	for i := 1; i <= 5; i++ {
		if _, err := b.tenants.Run(ctx, tenant.Request{Action: productdb.Deactivate, Target: "site:" + itoa(i), Actor: "script"}); err != nil {
			t.Fatalf("tenant %d of the handful: %v", i, err)
		}
	}
	_, err := b.tenants.Run(ctx, tenant.Request{Action: productdb.Deactivate, Target: "site:6", Actor: "script"})
	wantCode(t, err, fault.Refused, "6 tenants changed by deactivate, delete or purge outside a plan within 1h0m0s, more than the 5 allowed")
	if !strings.Contains(fault.HintOf(err), "lifeline plan create --action deactivate --kind site") {
		t.Fatalf("hint: %s", fault.HintOf(err))
	}
	if _, err := b.tenants.Run(ctx, tenant.Request{Action: productdb.Delete, Target: "site:1", Actor: "script", Reason: "r"}); err != nil {
		t.Fatalf("a tenant already counted: %v", err)
	}
	if _, err := b.tenants.Run(ctx, tenant.Request{Action: productdb.Reactivate, Target: "site:20", Actor: "script"}); err != nil {
		t.Fatalf("reactivate: %v", err)
	}
	b.clock.Advance(61 * time.Minute)
	if _, err := b.tenants.Run(ctx, tenant.Request{Action: productdb.Deactivate, Target: "site:6", Actor: "script"}); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

// Plan state changes are recorded as events with the change and survive
// the process: a plan runs while nothing delivers; a new process over the
// same state store delivers every event, in order, retrying a receiver
// that fails each event's first attempt, with the same id on every attempt.
func TestEventWebhooksAreDurableAndRetried(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	tries := map[string]int{}
	var delivered []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil || ev.Plan == nil || r.Header.Get("webhook-id") != ev.ID {
			w.WriteHeader(400)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if tries[ev.ID]++; tries[ev.ID] == 1 {
			w.WriteHeader(503)
			return
		}
		delivered = append(delivered, ev.Event+" "+ev.Plan.Phase)
	}))
	defer srv.Close()
	b := setup(t, options{internal: 1})
	b.plans.Config.Events = []string{srv.URL}
	// No bake: the fake clock must not run ahead of the next process's.
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 3, ""), Waves: []string{"internal", "100%"},
		Bake: ptr(Duration(0))})
	p = b.approve(t, p, carol)
	must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	want := []string{"plan.validated ", "plan.approved ", "plan.running steps", "plan.running gate", "plan.running steps", "plan.done "}
	if n := countRows(t, b.store, "SELECT COUNT(*) FROM plan_events WHERE state = 'pending'"); n != len(want) {
		t.Fatalf("%d pending events recorded; want %d", n, len(want))
	}

	// Another process: the same state store, opened again.
	next := setup(t, options{dir: b.dir, owner: "test:2"})
	next.plans.EventBackoff = 10 * time.Millisecond
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { next.plans.DeliverEvents(dctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for countRows(t, next.store, "SELECT COUNT(*) FROM plan_events WHERE state = 'sent'") < len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("events not all delivered: %v", delivered)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(delivered, want) {
		t.Fatalf("events %v; want %v", delivered, want)
	}
	for id, n := range tries {
		if n != 2 {
			t.Errorf("event %s was tried %d times; want 2 (a failure, then the retry)", id, n)
		}
	}
	// A week later, the delivered events are pruned.
	next.clock.Advance(8 * 24 * time.Hour)
	if err := next.plans.pruneEvents(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, next.store, "SELECT COUNT(*) FROM plan_events"); n != 0 {
		t.Errorf("%d events left a week after delivery", n)
	}
}

func countRows(t *testing.T, s *state.Store, q string) int {
	t.Helper()
	var n int
	if err := s.DB().QueryRowContext(ctx, q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A second run of a plan this very process is running (two API requests)
// is refused: the live lease is refused even when it is its own.
func TestSecondRunInOneProcessIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 3, ""), Waves: []string{"100%"}})
	p = b.approve(t, p, carol)
	run, err := b.plans.Begin(ctx, p.ID, carol)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.plans.Begin(ctx, p.ID, carol)
	wantCode(t, err, fault.Conflict, "is being run by test:1")
	if p = must[*Plan](t)(run(ctx)); p.Status != Done {
		t.Fatalf("%s %s", p.Status, p.Note)
	}
}

// Events given up after every attempt are listed, and a retry gives them a
// fresh run of attempts: one event by id, or every failed one; a retry of
// an event not given up, or of none, is refused naming it.
func TestFailedEventsAreListedAndRetried(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	down := true
	var delivered []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			w.WriteHeader(503)
			return
		}
		delivered = append(delivered, r.Header.Get("webhook-id"))
	}))
	defer srv.Close()
	b := setup(t, options{})
	b.plans.Config.Events = []string{srv.URL}
	b.plans.EventBackoff = time.Millisecond
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 2, ""), Waves: []string{"100%"}})
	b.approve(t, p, carol) // two events: validated, approved
	for range maxEventAttempts {
		must[int](t)(b.plans.deliverDue(ctx))
		b.clock.Advance(2 * maxEventBackoff)
	}
	failed := must[[]EventRecord](t)(b.plans.Events(ctx, p.ID, true))
	if len(failed) != 2 || failed[0].Event != "plan.approved" || failed[0].Attempts != maxEventAttempts || failed[0].LastError != "answered HTTP 503" ||
		failed[0].URL != srv.URL || failed[0].Plan != p.ID {
		t.Fatalf("failed events: %+v", failed)
	}
	if other := must[[]EventRecord](t)(b.plans.Events(ctx, "plan_other", false)); len(other) != 0 {
		t.Fatalf("another plan's events: %+v", other)
	}

	mu.Lock()
	down = false
	mu.Unlock()
	if n := must[int](t)(b.plans.RetryEvents(ctx, failed[0].ID, "carol")); n != 1 {
		t.Fatalf("retry of one event put back %d", n)
	}
	_, err := b.plans.RetryEvents(ctx, failed[0].ID, "carol")
	wantCode(t, err, fault.Conflict, "is pending, not failed")
	_, err = b.plans.RetryEvents(ctx, "pev_nope", "carol")
	wantCode(t, err, fault.NotFound, `no plan event "pev_nope"`)
	must[int](t)(b.plans.deliverDue(ctx))
	if n := len(must[[]EventRecord](t)(b.plans.Events(ctx, p.ID, true))); n != 1 {
		t.Fatalf("%d failed after retrying one; want 1", n)
	}
	if n := must[int](t)(b.plans.RetryEvents(ctx, "", "carol")); n != 1 {
		t.Fatalf("retry of every failed event put back %d; want 1", n)
	}
	must[int](t)(b.plans.deliverDue(ctx))
	all := must[[]EventRecord](t)(b.plans.Events(ctx, "", false))
	mu.Lock()
	defer mu.Unlock()
	if len(all) != 2 || all[0].State != eventSent || all[1].State != eventSent || !slices.Equal(delivered, []string{failed[0].ID, failed[1].ID}) {
		t.Fatalf("after the retries: %+v, delivered %v", all, delivered)
	}
	retries := 0
	for _, a := range auditActions(t, b.store) {
		if a == "plan.events_retry" {
			retries++
		}
	}
	if retries != 2 {
		t.Errorf("%d plan.events_retry audit entries; want 2 (the refused ones change nothing)", retries)
	}
}
