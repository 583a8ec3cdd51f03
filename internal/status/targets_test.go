package status

import (
	"context"
	"encoding/base64"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/state"
)

// fakeTargets stands in for the restore engine's records: each link names
// a fixed set of tenants; "restore:missing" is unknown and "restore:down"
// cannot answer now.
type fakeTargets struct {
	mu      sync.Mutex
	tenants map[string][]string
}

func (f *fakeTargets) AffectedTenants(_ context.Context, link string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch link {
	case "restore:missing":
		return nil, fault.New(fault.NotFound, "", "no restore %q", link)
	case "restore:down":
		return nil, fault.New(fault.Unavailable, "", "restore records unreadable")
	}
	return f.tenants[link], nil
}

func (f *fakeTargets) TenantProgress(_ context.Context, links []string, tenant string) ([]TenantStep, error) {
	var out []TenantStep
	for _, l := range links {
		out = append(out, TenantStep{Link: l, Product: "tracker", State: StepRestored}, TenantStep{Link: l, Product: "wiki", State: StepWaiting})
	}
	return out, nil
}

// fakeStates says every tenant is deleted in tracker, as recorded an hour
// ago.
type fakeStates struct{ at time.Time }

func (f fakeStates) TenantStates(context.Context, string) (map[string]string, time.Time, error) {
	return map[string]string{"tracker": "deleted"}, f.at, nil
}

func targetsConfig(c *Config) {
	c.Targets = &fakeTargets{tenants: map[string][]string{"restore:r1": {"1", "2", "3"}, "restore:r2": {"3", "4"}}}
	c.States = fakeStates{at: time.Date(2026, 4, 5, 8, 0, 0, 0, time.UTC)}
	c.TenantLinkTTL = 48 * time.Hour
}

// owedTo lists the pending targeted notices as "TENANT@UPDATE".
func owedTo(t *testing.T, svc *Service) []string {
	t.Helper()
	ns, err := svc.TenantNotices(context.Background(), NoticePending, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range ns {
		out = append(out, n.Tenant+"@"+n.UpdateID)
	}
	slices.Sort(out)
	return out
}

func at(u Update, tenants ...string) []string {
	var out []string
	for _, k := range tenants {
		out = append(out, k+"@"+u.ID)
	}
	return out
}

func TestTargetedNoticesAreOwedWithEachUpdate(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		ctx, svc := b.ctx, b.svc
		// Bad input refuses the update and writes nothing.
		for _, bad := range []struct {
			d    Draft
			code fault.Code
		}{
			{Draft{Tenants: []string{"product:1/tracker"}}, fault.Invalid},
			{Draft{Tenants: []string{" "}}, fault.Invalid},
			{Draft{Links: []string{"restore:missing"}}, fault.NotFound},
		} {
			bad.d.Impact, bad.d.Body = ImpactCritical, fullBody()
			if _, err := svc.OpenIncident(ctx, NewIncident{Name: Text{En: "x"}, Draft: bad.d}); fault.CodeOf(err) != bad.code {
				t.Fatalf("open with %+v: %v, want %s", bad.d, err, bad.code)
			}
		}
		if got := owedTo(t, svc); len(got) != 0 {
			t.Fatalf("refused updates owe %v", got)
		}

		// A list (site: or plain, duplicates once) and a linked restore.
		inc, err := svc.OpenIncident(ctx, NewIncident{Name: Text{En: "Sites deleted"}, Draft: Draft{Impact: ImpactCritical, Body: fullBody(),
			Tenants: []string{"site:7", "7", "8"}, Links: []string{"restore:r1"}}})
		if err != nil {
			t.Fatal(err)
		}
		first := inc.Updates[0]
		if got, want := owedTo(t, svc), at(first, "1", "2", "3", "7", "8"); !slices.Equal(got, want) {
			t.Fatalf("owed after opening: %v, want %v", got, want)
		}
		if inc.Tenants != 5 {
			t.Errorf("incident counts %d tenants, want 5", inc.Tenants)
		}
		list, err := svc.IncidentTenants(ctx, inc.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 5 || list[0].Tenant != "1" || list[0].Source != "restore:r1" || list[3].Tenant != "7" || list[3].Source != TargetFromList {
			t.Fatalf("incident tenants: %+v", list)
		}

		// Every later update is owed to every tenant again; a new link adds
		// its tenants; a link that cannot answer now is skipped, not fatal.
		inc, err = svc.PostUpdate(ctx, inc.ID, Draft{CarryOver: true, Links: []string{"restore:r2", "restore:down"}})
		if err != nil {
			t.Fatal(err)
		}
		second := inc.Updates[0]
		want := append(at(first, "1", "2", "3", "7", "8"), at(second, "1", "2", "3", "4", "7", "8")...)
		slices.Sort(want)
		if got := owedTo(t, svc); !slices.Equal(got, want) {
			t.Fatalf("owed after the second update: %v, want %v", got, want)
		}
		again, err := svc.Incident(ctx, inc.ID)
		if err != nil || again.Tenants != 6 {
			t.Fatalf("incident read back: %d tenants, %v; want 6", again.Tenants, err)
		}

		// The delivery side marks a notice once; a second mark changes nothing.
		n := TenantNotice{UpdateID: first.ID, Tenant: "7", Status: NoticeQueued, Contacts: 2}
		if err := svc.TenantNoticesDone(ctx, NoticePending, []TenantNotice{n}); err != nil {
			t.Fatal(err)
		}
		n.Status, n.Contacts = TenantNoticeUncontactable, 0
		if err := svc.TenantNoticesDone(ctx, NoticePending, []TenantNotice{n}); err != nil {
			t.Fatal(err)
		}
		queued, err := svc.TenantNotices(ctx, NoticeQueued, 0)
		if err != nil || len(queued) != 1 || queued[0].Tenant != "7" || queued[0].Contacts != 2 || queued[0].Queued.IsZero() {
			t.Fatalf("queued: %+v, %v", queued, err)
		}
		if got := owedTo(t, svc); len(got) != len(want)-1 {
			t.Fatalf("%d still owed, want %d", len(got), len(want)-1)
		}
	}, targetsConfig)
}

func TestTenantLinksAreSignedAndExpire(t *testing.T) {
	t.Parallel()
	b := setup(t, "sqlite:"+filepath.Join(t.TempDir(), "state.db"), targetsConfig)
	ctx, svc := b.ctx, b.svc
	body := fullBody()
	inc, err := svc.OpenIncident(ctx, NewIncident{Name: Text{En: "Sites deleted"}, Draft: Draft{Impact: ImpactCritical, Body: body,
		Tenants: []string{"42"}, Links: []string{"restore:r1"}}})
	if err != nil {
		t.Fatal(err)
	}
	b.clock.Add(time.Hour)
	// A later update restates only the situation: the page still shows the
	// support route given before.
	if inc, err = svc.PostUpdate(ctx, inc.ID, Draft{Status: Identified, Body: Body{Situation: Text{En: "Restores running."},
		AffectedGroups: body.AffectedGroups, Timeline: body.Timeline, TimelineConfidence: Medium, FullerPictureAt: body.FullerPictureAt,
		PercentRestored: pct(10), PercentConfidence: High, DataLoss: body.DataLoss, DataLossConfidence: Low,
		Support: Text{En: "Reply to this mail."}, SupportNoLogin: body.SupportNoLogin, Known: body.Known, Unknown: body.Unknown}}); err != nil {
		t.Fatal(err)
	}

	token, exp, err := svc.TenantToken(ctx, inc.ID, "42")
	if err != nil {
		t.Fatal(err)
	}
	if want := b.clock.Now().Add(48 * time.Hour); !exp.Equal(want) {
		t.Fatalf("expires %s, want %s (the TTL from now)", exp, want)
	}
	v, err := svc.TenantView(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	if v.Tenant != "42" || v.Incident.ID != inc.ID || len(v.Incident.Updates) != 2 || v.Incident.Status != Identified ||
		v.States["tracker"] != "deleted" || v.StatesAsOf.IsZero() || len(v.Restore) != 2 || v.Restore[0].State != StepRestored ||
		v.Support.En != "Reply to this mail." || v.SupportNoLogin.En != body.SupportNoLogin.En || !v.Expires.Equal(exp) {
		t.Fatalf("view = %+v", v)
	}

	// Forgeries: each part changed, a token of another purpose, garbage.
	enc, mac, _ := strings.Cut(token, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(enc)
	reenc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) + "." + mac }
	parts := strings.Split(string(raw), "\n")
	unsub, err := svc.UnsubscribeToken(ctx, "42")
	if err != nil {
		t.Fatal(err)
	}
	for name, forged := range map[string]string{
		"other tenant":     reenc(parts[0] + "\n43\n" + parts[2]),
		"later expiry":     reenc(parts[0] + "\n" + parts[1] + "\n" + "99999999999"),
		"other incident":   reenc("aaaaaaaaaaaa\n" + parts[1] + "\n" + parts[2]),
		"flipped mac":      enc + "." + flip(mac),
		"no mac":           enc,
		"unsubscribe link": unsub,
		"garbage":          "%%%.###",
		"empty":            "",
	} {
		if _, err := svc.TenantView(ctx, forged); fault.CodeOf(err) != fault.Invalid {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}

	// Another installation (another state store, another key) refuses it.
	other := setup(t, "sqlite:"+filepath.Join(t.TempDir(), "other.db"), targetsConfig)
	if _, err := other.svc.TenantView(ctx, token); fault.CodeOf(err) != fault.Invalid {
		t.Errorf("another installation's link: %v, want invalid", err)
	}

	// Expired: refused, and says when.
	b.clock.Add(48*time.Hour - time.Second)
	if _, err := svc.TenantView(ctx, token); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	b.clock.Add(time.Second)
	if _, err := svc.TenantView(ctx, token); fault.CodeOf(err) != fault.Refused || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired link: %v, want refused", err)
	}
}

// flip changes the first character of s.
func flip(s string) string {
	if s == "" {
		return "x"
	}
	c := byte('A')
	if s[0] == 'A' {
		c = 'B'
	}
	return string(c) + s[1:]
}

// fakeOps is the state store's operations for LinkSource.
type fakeOps map[string]*state.Operation

func (f fakeOps) GetOperation(_ context.Context, id string) (*state.Operation, error) {
	if op, ok := f[id]; ok {
		return op, nil
	}
	return nil, fault.New(fault.NotFound, "", "operation %q not found", id)
}

func TestLinkSourceCountsVerifiedSites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	step := func(p, k string, s state.StepStatus) state.Step { return state.Step{Product: p, Tenant: k, Status: s} }
	ops := fakeOps{
		"op_a": {ID: "op_a", Action: "restore", Status: state.OpRunning, Targets: []string{"site:1", "site:2", "site:3", "site:4"}, Steps: []state.Step{
			step("tracker", "1", state.StepDone), step("wiki", "1", state.StepDone),
			step("tracker", "2", state.StepDone), step("wiki", "2", state.StepPending),
			step("tracker", "3", state.StepFailed), step("wiki", "3", state.StepDone),
		}},
		// Another restore, in which site 5 waits.
		"op_b":   {ID: "op_b", Action: "restore", Status: state.OpDone, Targets: []string{"site:5"}, Steps: []state.Step{step("wiki", "5", state.StepPending)}},
		"op_del": {ID: "op_del", Action: "delete", Targets: []string{"site:9"}},
		"op_undone": {ID: "op_undone", Action: "restore", Status: state.OpRolledBack, Targets: []string{"site:1"},
			Steps: []state.Step{step("tracker", "1", state.StepDone)}},
	}
	now := time.Date(2026, 4, 5, 12, 0, 0, 0, time.UTC)
	src := &LinkSource{Ops: ops, Now: func() time.Time { return now }}

	c, err := src.Progress(ctx, []string{"restore:op_a"})
	if err != nil {
		t.Fatal(err)
	}
	// Site 1 only: 2 waits in wiki, 3 failed in tracker, 4 has no step.
	if c.Sites != 4 || c.Verified != 1 || c.Percent() != 25 || !c.AsOf.Equal(now) ||
		!slices.Equal(c.Groups, []AffectedGroup{{"product", "tracker", 3}, {"product", "wiki", 3}}) {
		t.Fatalf("counts = %+v", c)
	}
	if c, err = src.Progress(ctx, []string{"restore:op_a", "restore:op_b"}); err != nil || c.Sites != 5 || c.Verified != 1 {
		t.Fatalf("two restores: %+v, %v", c, err)
	}
	if c, err = src.Progress(ctx, []string{"restore:op_undone"}); err != nil || c.Sites != 1 || c.Verified != 0 {
		t.Fatalf("an undone restore restores nothing: %+v, %v", c, err)
	}

	keys, err := src.AffectedTenants(ctx, "restore:op_a")
	if err != nil || !slices.Equal(keys, []string{"1", "2", "3", "4"}) {
		t.Fatalf("tenants = %v, %v", keys, err)
	}
	steps, err := src.TenantProgress(ctx, []string{"restore:op_a", "restore:op_b"}, "2")
	if err != nil || len(steps) != 2 || steps[0].State != StepRestored || steps[1].State != StepWaiting || steps[1].Product != "wiki" {
		t.Fatalf("site 2's steps = %+v, %v", steps, err)
	}
	if steps, _ := src.TenantProgress(ctx, []string{"restore:op_a"}, "3"); steps[0].State != StepFailed {
		t.Fatalf("site 3: %+v", steps)
	}

	for link, code := range map[string]fault.Code{"restore:op_nope": fault.NotFound, "restore:op_del": fault.NotFound, "plan:p1": fault.Unavailable} {
		if _, err := src.AffectedTenants(ctx, link); fault.CodeOf(err) != code {
			t.Errorf("%s: %v, want %s", link, err, code)
		}
		if _, err := src.Progress(ctx, []string{"restore:op_a", link}); fault.CodeOf(err) != code {
			t.Errorf("progress with %s: %v, want %s", link, err, code)
		}
	}
}

// fakePlans is the plan runner's records for LinkSource.
type fakePlans map[string]PlanRun

func (f fakePlans) PlanRun(_ context.Context, id string) (PlanRun, error) {
	if p, ok := f[id]; ok {
		return p, nil
	}
	return PlanRun{}, fault.New(fault.NotFound, "", "no plan %q", id)
}

func TestLinkSourceFollowsPlans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	step := func(k, status string, verified bool, products ...string) PlanStep {
		return PlanStep{Tenant: k, Status: status, Verified: verified, Products: products}
	}
	src := &LinkSource{Ops: fakeOps{}, Plans: fakePlans{
		// A delete plan stopped after two sites: 3 was never reached, 1 is
		// rolled back, 2 is not yet.
		"p_del": {Action: "delete", Steps: []PlanStep{step("1", "rolled_back", true, "tracker", "wiki"), step("2", "done", true, "tracker", "wiki"),
			step("3", "pending", false, "tracker")}},
		// A restore plan: 4 verified, 5 waiting, 6 skipped by a failed restore test.
		"p_res": {Action: "restore", Steps: []PlanStep{step("4", "done", true, "tracker"), step("5", "running", false, "tracker"),
			step("6", "skipped", false, "tracker")}},
		"p_purge": {Action: "purge", Steps: []PlanStep{step("7", "done", true, "tracker")}},
	}}
	for _, tc := range []struct {
		link            string
		tenants         []string
		sites, verified int
	}{
		{"plan:p_del", []string{"1", "2"}, 2, 1},
		{"plan:p_res", []string{"4", "5", "6"}, 3, 1},
		{"plan:p_purge", []string{"7"}, 1, 0},
	} {
		keys, err := src.AffectedTenants(ctx, tc.link)
		if err != nil || !slices.Equal(keys, tc.tenants) {
			t.Errorf("%s: tenants %v, %v; want %v", tc.link, keys, err, tc.tenants)
		}
		c, err := src.Progress(ctx, []string{tc.link})
		if err != nil || c.Sites != tc.sites || c.Verified != tc.verified {
			t.Errorf("%s: counts %+v, %v; want %d of %d", tc.link, c, err, tc.verified, tc.sites)
		}
	}
	steps, err := src.TenantProgress(ctx, []string{"plan:p_del", "plan:p_res"}, "1")
	if err != nil || len(steps) != 2 || steps[0].State != StepRestored || steps[1].Product != "wiki" {
		t.Fatalf("site 1: %+v, %v", steps, err)
	}
	if steps, _ := src.TenantProgress(ctx, []string{"plan:p_res"}, "6"); len(steps) != 1 || steps[0].State != StepNotRestored {
		t.Fatalf("site 6: %+v", steps)
	}
	if _, err := src.Progress(ctx, []string{"plan:p_nope"}); fault.CodeOf(err) != fault.NotFound {
		t.Fatalf("unknown plan: %v", err)
	}
}

// fakeRegistry knows tenants 1 to 8; "down" makes it unable to answer.
type fakeRegistry struct{ down bool }

func (f fakeRegistry) UnknownTenants(_ context.Context, keys []string) ([]string, error) {
	if f.down {
		return nil, fault.New(fault.Unavailable, "", "vault unreachable")
	}
	var out []string
	for _, k := range keys {
		if len(k) != 1 || k < "1" || k > "8" {
			out = append(out, k)
		}
	}
	return out, nil
}

// TestUnknownTenantsAreRefused: keys the registry does not know refuse the
// update, every one named and nothing written, unless explicitly accepted;
// a registry that cannot answer refuses too, saying how to go ahead.
func TestUnknownTenantsAreRefused(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		ctx, svc := b.ctx, b.svc
		open := func(d Draft) (*Incident, error) {
			d.Impact, d.Body = ImpactCritical, fullBody()
			return svc.OpenIncident(ctx, NewIncident{Name: Text{En: "Sites deleted"}, Draft: d})
		}
		_, err := open(Draft{Tenants: []string{"7", "site:42", "4711"}})
		if fault.CodeOf(err) != fault.Invalid || !strings.Contains(err.Error(), `"42", "4711"`) || strings.Contains(err.Error(), `"7"`) ||
			!strings.Contains(fault.HintOf(err), "--allow-unknown-tenants") {
			t.Fatalf("open with unknown tenants: %v (hint %q); want both named, and the flag in the hint", err, fault.HintOf(err))
		}
		list, err := svc.Incidents(ctx)
		if err != nil || len(list) != 0 || len(owedTo(t, svc)) != 0 {
			t.Fatalf("a refused open left %d incidents, %v", len(list), err)
		}
		inc, err := open(Draft{Tenants: []string{"7", "4711"}, AllowUnknownTenants: true})
		if err != nil || inc.Tenants != 2 {
			t.Fatalf("open accepting unknown tenants: %v, %d tenants", err, inc.Tenants)
		}
		// An update checks the keys it adds the same way.
		if _, err := svc.PostUpdate(ctx, inc.ID, Draft{CarryOver: true, Tenants: []string{"99"}}); fault.CodeOf(err) != fault.Invalid || !strings.Contains(err.Error(), `"99"`) {
			t.Fatalf("update with an unknown tenant: %v", err)
		}
	}, func(c *Config) { c.Registry = fakeRegistry{} })
	engines(t, func(t *testing.T, b *bundle) {
		_, err := b.svc.OpenIncident(b.ctx, NewIncident{Name: Text{En: "x"}, Draft: Draft{Impact: ImpactCritical, Body: fullBody(), Tenants: []string{"7"}}})
		if fault.CodeOf(err) != fault.Unavailable || !strings.Contains(fault.HintOf(err), "--allow-unknown-tenants") {
			t.Fatalf("open with the registry down: %v", err)
		}
	}, func(c *Config) { c.Registry = fakeRegistry{down: true} })
}
