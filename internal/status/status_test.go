package status

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/pgtest"
	"lifeline/internal/state"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type bundle struct {
	ctx   context.Context
	svc   *Service
	clock *clock
	prog  *fakeProgress
}

// engines runs fn once on a SQLite state store and once on PostgreSQL;
// tweaks adjust the service's config.
func engines(t *testing.T, fn func(t *testing.T, b *bundle), tweaks ...func(*Config)) {
	t.Helper()
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "state.db")
			if engine == "postgres" {
				dsn = pgtest.NewDB(t)
			}
			fn(t, setup(t, dsn, tweaks...))
		})
	}
}

// setup opens a status service on dsn with a fake progress source; tweaks
// adjust its config first.
func setup(t *testing.T, dsn string, tweaks ...func(*Config)) *bundle {
	t.Helper()
	ctx := context.Background()
	clk := &clock{t: time.Date(2026, 4, 5, 9, 0, 0, 0, time.UTC)}
	st, err := state.Open(ctx, dsn, "", clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	prog := &fakeProgress{}
	cfg := Config{Store: st, Now: clk.Now, Progress: prog}
	for _, tw := range tweaks {
		tw(&cfg)
	}
	svc, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{ctx: ctx, svc: svc, clock: clk, prog: prog}
}

// fakeProgress stands in for the restore engine.
type fakeProgress struct {
	mu              sync.Mutex
	sites, verified int
	err             error
	calls           int
}

func (f *fakeProgress) set(sites, verified int) {
	f.mu.Lock()
	f.sites, f.verified = sites, verified
	f.mu.Unlock()
}

func (f *fakeProgress) Progress(ctx context.Context, links []string) (Counts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	for _, l := range links {
		if strings.HasSuffix(l, ":missing") {
			return Counts{}, fault.New(fault.NotFound, "", "no restore %q", l)
		}
	}
	if f.err != nil {
		return Counts{}, f.err
	}
	return Counts{Sites: f.sites, Verified: f.verified, Groups: []AffectedGroup{{Kind: "product", Name: "tracker", Count: f.sites}}}, nil
}

func pct(v float64) *float64 { return &v }

// fullBody fills every part of the template.
func fullBody() Body {
	return Body{
		Situation:          Text{En: "A maintenance script deleted 883 sites.", Zh: "一个维护脚本删除了 883 个站点。"},
		AffectedGroups:     []AffectedGroup{{Kind: "product", Name: "tracker", Count: 883}},
		Timeline:           Text{En: "Most sites back within 6 hours."},
		TimelineConfidence: Medium,
		FullerPictureAt:    time.Date(2026, 4, 5, 15, 0, 0, 0, time.UTC),
		PercentRestored:    pct(0),
		PercentConfidence:  High,
		DataLoss:           Text{En: "At most 5 minutes of changes."},
		DataLossConfidence: Low,
		Support:            Text{En: "Open a ticket at support.example."},
		SupportNoLogin:     Text{En: "Call +1 555 0100 or mail help@example.com."},
		Known:              Text{En: "Which sites were deleted."},
		Unknown:            Text{En: "Whether attachments are affected."},
	}
}

func missingFields(t *testing.T, err error) []Field {
	t.Helper()
	var m *MissingFieldsError
	if !errors.As(err, &m) {
		t.Fatalf("want a MissingFieldsError, got %v", err)
	}
	if fault.CodeOf(err) != fault.Refused {
		t.Fatalf("code = %s, want refused", fault.CodeOf(err))
	}
	return m.Fields
}

func TestPolicyRequiresFieldsPerImpact(t *testing.T) {
	t.Parallel()
	p := DefaultPolicy()
	only := Body{Situation: Text{En: "Something broke."}}

	if err := p.Check(ImpactNone, Investigating, only); err != nil {
		t.Fatalf("none impact with a situation: %v", err)
	}
	got := missingFields(t, p.Check(ImpactMinor, Investigating, only))
	if !slices.Equal(got, []Field{FieldSupport, FieldKnown, FieldUnknown}) {
		t.Fatalf("minor missing = %v", got)
	}
	err := p.Check(ImpactCritical, Investigating, only)
	got = missingFields(t, err)
	for _, f := range []Field{FieldAffectedGroups, FieldTimeline, FieldFullerPictureAt, FieldPercentRestored, FieldDataLoss, FieldSupportNoLogin} {
		if !slices.Contains(got, f) {
			t.Errorf("critical: %s not reported missing (got %v)", f, got)
		}
		if !strings.Contains(err.Error(), string(f)) {
			t.Errorf("message %q does not name %s", err, f)
		}
	}
	if err := p.Check(ImpactCritical, Investigating, fullBody()); err != nil {
		t.Fatalf("full body refused: %v", err)
	}

	// Every estimate needs its confidence, whatever the impact.
	b := fullBody()
	b.DataLossConfidence = ""
	if got := missingFields(t, p.Check(ImpactNone, Investigating, b)); !slices.Equal(got, []Field{FieldDataLossConfidence}) {
		t.Fatalf("missing = %v, want data_loss_confidence", got)
	}

	// Once resolved, no recovery estimate is owed.
	b = fullBody()
	b.Timeline, b.TimelineConfidence, b.FullerPictureAt = Text{}, "", time.Time{}
	if err := p.Check(ImpactMajor, Resolved, b); err != nil {
		t.Fatalf("resolved without timeline: %v", err)
	}
	if got := missingFields(t, p.Check(ImpactMajor, Identified, b)); !slices.Equal(got, []Field{FieldTimeline, FieldFullerPictureAt}) {
		t.Fatalf("identified without timeline: missing = %v", got)
	}

	// Values are checked too.
	b = fullBody()
	b.PercentRestored = pct(120)
	if err := p.Check(ImpactNone, Investigating, b); fault.CodeOf(err) != fault.Invalid {
		t.Fatalf("120%% accepted: %v", err)
	}
	b = fullBody()
	b.TimelineConfidence = "certain"
	if err := p.Check(ImpactNone, Investigating, b); fault.CodeOf(err) != fault.Invalid {
		t.Fatalf("unknown confidence accepted: %v", err)
	}
}

func TestIncidentLifecycle(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		ctx, svc := b.ctx, b.svc
		g, err := svc.PutGroup(ctx, Group{Name: Text{En: "Products", Zh: "产品"}})
		if err != nil {
			t.Fatal(err)
		}
		tracker, err := svc.PutComponent(ctx, Component{Name: Text{En: "tracker"}, GroupID: g.ID})
		if err != nil {
			t.Fatal(err)
		}
		wiki, err := svc.PutComponent(ctx, Component{Name: Text{En: "wiki"}, GroupID: g.ID, Position: 1})
		if err != nil {
			t.Fatal(err)
		}
		// Putting the same name again updates, it does not duplicate.
		again, err := svc.PutComponent(ctx, Component{Name: Text{En: "tracker", Zh: "追踪"}, GroupID: g.ID})
		if err != nil || again.ID != tracker.ID {
			t.Fatalf("re-put tracker: id %s vs %s, %v", again.ID, tracker.ID, err)
		}
		if _, err := svc.PutComponent(ctx, Component{Name: Text{En: "x"}, GroupID: "nope"}); fault.CodeOf(err) != fault.NotFound {
			t.Fatalf("unknown group accepted: %v", err)
		}

		rev0, _ := svc.Revision(ctx)
		// A critical incident with only a situation is refused and writes nothing.
		_, err = svc.OpenIncident(ctx, NewIncident{Name: Text{En: "Sites deleted"}, Draft: Draft{Impact: ImpactCritical,
			Body: Body{Situation: Text{En: "Sites are gone."}}, Components: []ComponentChange{{ComponentID: "tracker", Status: MajorOutage}}}})
		if f := missingFields(t, err); !slices.Contains(f, FieldPercentRestored) {
			t.Fatalf("missing = %v", f)
		}
		if rev, _ := svc.Revision(ctx); rev != rev0 {
			t.Fatalf("a refused update changed the revision %d → %d", rev0, rev)
		}
		if _, err := svc.OpenIncident(ctx, NewIncident{Name: Text{En: "x"}, Draft: Draft{Impact: ImpactNone, Body: fullBody(),
			Components: []ComponentChange{{ComponentID: "billing", Status: MajorOutage}}}}); fault.CodeOf(err) != fault.NotFound ||
			!strings.Contains(fault.HintOf(err), "tracker") {
			t.Fatalf("unknown component: %v (hint %q)", err, fault.HintOf(err))
		}

		inc, err := svc.OpenIncident(ctx, NewIncident{Name: Text{En: "Sites deleted", Zh: "站点被删除"}, Draft: Draft{Impact: ImpactCritical,
			Body: fullBody(), Author: "alice", Components: []ComponentChange{{ComponentID: "Tracker", Status: MajorOutage}}}})
		if err != nil {
			t.Fatal(err)
		}
		if inc.Status != Investigating || len(inc.Updates) != 1 || inc.Updates[0].Body.PercentSource != "manual" {
			t.Fatalf("opened = %+v", inc)
		}
		snap, err := svc.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if snap.Indicator != ImpactCritical || statusOf(snap, tracker.ID) != MajorOutage || statusOf(snap, wiki.ID) != Operational {
			t.Fatalf("indicator %s, tracker %s, wiki %s", snap.Indicator, statusOf(snap, tracker.ID), statusOf(snap, wiki.ID))
		}
		if snap.Revision <= rev0 || len(snap.Unresolved()) != 1 {
			t.Fatalf("revision %d (was %d), unresolved %d", snap.Revision, rev0, len(snap.Unresolved()))
		}

		b.clock.Add(20 * time.Minute)
		body := fullBody()
		body.PercentRestored = pct(40)
		inc, err = svc.PostUpdate(ctx, inc.ID, Draft{Status: Identified, Body: body,
			Components: []ComponentChange{{ComponentID: tracker.ID, Status: PartialOutage}, {ComponentID: "wiki", Status: DegradedPerformance}}})
		if err != nil {
			t.Fatal(err)
		}
		// A partial update (only the situation) is refused at critical impact…
		_, err = svc.PostUpdate(ctx, inc.ID, Draft{Body: Body{Situation: Text{En: "Still restoring."}}})
		missingFields(t, err)
		// …unless it carries the rest over from the last update.
		b.clock.Add(20 * time.Minute)
		inc, err = svc.PostUpdate(ctx, inc.ID, Draft{CarryOver: true, Body: Body{Situation: Text{En: "Still restoring."}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := inc.Updates[0].Body; got.Situation.En != "Still restoring." || *got.PercentRestored != 40 || got.Known.En == "" {
			t.Fatalf("carried over body = %+v", got)
		}

		inc, err = svc.Incident(ctx, inc.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(inc.Updates) != 3 || inc.Updates[0].Body.Situation.En != "Still restoring." || inc.Updates[2].Status != Investigating {
			t.Fatalf("updates not newest first: %+v", inc.Updates)
		}
		if a := affectedOf(inc, tracker.ID); a.Old != MajorOutage || a.New != PartialOutage {
			t.Fatalf("tracker affected = %+v", a)
		}

		b.clock.Add(time.Hour)
		if _, err := svc.Resolve(ctx, inc.ID, Draft{Body: fullBody()}); err != nil {
			t.Fatal(err)
		}
		snap, err = svc.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if snap.Indicator != ImpactNone || statusOf(snap, tracker.ID) != Operational || statusOf(snap, wiki.ID) != Operational {
			t.Fatalf("after resolve: indicator %s, tracker %s, wiki %s", snap.Indicator, statusOf(snap, tracker.ID), statusOf(snap, wiki.ID))
		}
		if got := snap.Incidents[0]; got.Status != Resolved || got.Resolved.IsZero() || len(snap.Unresolved()) != 0 {
			t.Fatalf("resolved incident = %+v", got)
		}
		if _, err := svc.PostUpdate(ctx, inc.ID, Draft{Body: fullBody()}); fault.CodeOf(err) != fault.Conflict {
			t.Fatalf("update after resolve: %v", err)
		}
		// Tracker was down (major 20 min, then partial 1h20) today: uptime shows it.
		today := snap.Components[slices.IndexFunc(snap.Components, func(c ComponentState) bool { return c.ID == tracker.ID })].Uptime
		last := today.Days[len(today.Days)-1]
		if last.Worst != MajorOutage || last.Down != 20*time.Minute+time.Duration(0.3*float64(80*time.Minute)) {
			t.Fatalf("today's bar = %+v", last)
		}
	})
}

func statusOf(s *Snapshot, id string) ComponentStatus {
	for _, c := range s.Components {
		if c.ID == id {
			return c.Status
		}
	}
	return "missing"
}

func affectedOf(inc *Incident, id string) AffectedComponent {
	for _, a := range inc.Affected {
		if a.ComponentID == id {
			return a
		}
	}
	return AffectedComponent{}
}

func TestTemplatesAreStoredAndReused(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		ctx, svc := b.ctx, b.svc
		if _, err := svc.PutComponent(ctx, Component{Name: Text{En: "tracker"}}); err != nil {
			t.Fatal(err)
		}
		tpl := Template{Name: "mass-deletion", Title: Text{En: "Sites unavailable after a deletion", Zh: "删除后站点不可用"}, Impact: ImpactMajor,
			Body:       Body{Support: Text{En: "Open a ticket."}, SupportNoLogin: Text{En: "Call +1 555 0100."}},
			Components: []ComponentChange{{ComponentID: "tracker", Status: MajorOutage}}}
		if _, err := svc.PutTemplate(ctx, tpl); err != nil {
			t.Fatal(err)
		}
		tpl.Body.Support = Text{En: "Open a ticket at help.example."}
		if _, err := svc.PutTemplate(ctx, tpl); err != nil {
			t.Fatal(err)
		}
		all, err := svc.Templates(ctx)
		if err != nil || len(all) != 1 || all[0].Body.Support.En != "Open a ticket at help.example." {
			t.Fatalf("templates = %+v, %v", all, err)
		}

		// The template supplies title, impact, support routes and components;
		// the draft the rest. Without the rest the policy still refuses.
		_, err = svc.OpenIncident(ctx, NewIncident{Draft: Draft{Template: "mass-deletion", Body: Body{Situation: Text{En: "Sites deleted."}}}})
		if f := missingFields(t, err); slices.Contains(f, FieldSupport) || !slices.Contains(f, FieldDataLoss) {
			t.Fatalf("missing = %v: support should come from the template, data_loss should not", f)
		}
		body := fullBody()
		body.Support, body.SupportNoLogin = Text{}, Text{}
		inc, err := svc.OpenIncident(ctx, NewIncident{Draft: Draft{Template: "mass-deletion", Body: body}})
		if err != nil {
			t.Fatal(err)
		}
		u := inc.Updates[0]
		if inc.Name.Zh != "删除后站点不可用" || inc.Impact != ImpactMajor || u.Body.Support.En != "Open a ticket at help.example." ||
			u.Body.Situation.En != body.Situation.En || len(u.Changes) != 1 || u.Changes[0].Status != MajorOutage {
			t.Fatalf("incident from template = %+v", inc)
		}
		if _, err := svc.OpenIncident(ctx, NewIncident{Draft: Draft{Template: "nope"}}); fault.CodeOf(err) != fault.NotFound {
			t.Fatalf("unknown template: %v", err)
		}
	})
}

func TestProgressFillsPercentFromVerifiedRestores(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		ctx, svc := b.ctx, b.svc
		b.prog.set(883, 441)
		body := fullBody()
		body.PercentRestored, body.AffectedGroups = pct(90), nil // a hand-typed guess, overridden
		inc, err := svc.OpenIncident(ctx, NewIncident{Name: Text{En: "Restore"}, Draft: Draft{Impact: ImpactCritical, Body: body, Links: []string{"restore:r1"}}})
		if err != nil {
			t.Fatal(err)
		}
		got := inc.Updates[0].Body
		if *got.PercentRestored != 49.9 || got.PercentSource != "verified_restores" || got.PercentConfidence != High ||
			len(got.AffectedGroups) != 1 || got.AffectedGroups[0].Count != 883 {
			t.Fatalf("body = %+v", got)
		}
		// The snapshot stays current between updates.
		b.prog.set(883, 883)
		snap, err := svc.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p := snap.Incidents[0].Progress; p == nil || p.Percent() != 100 || p.Verified != 883 {
			t.Fatalf("live progress = %+v", p)
		}
		// A link to nothing is refused; a bad link shape too.
		if _, err := svc.PostUpdate(ctx, inc.ID, Draft{CarryOver: true, Links: []string{"restore:missing"}}); fault.CodeOf(err) != fault.NotFound {
			t.Fatalf("unknown restore link: %v", err)
		}
		if _, err := svc.PostUpdate(ctx, inc.ID, Draft{CarryOver: true, Links: []string{"r1"}}); fault.CodeOf(err) != fault.Invalid {
			t.Fatalf("untyped link: %v", err)
		}
		// When the source cannot answer, the update still goes out with the typed numbers.
		b.prog.mu.Lock()
		b.prog.err = errors.New("restore engine down")
		b.prog.mu.Unlock()
		body = fullBody()
		body.PercentRestored = pct(60)
		inc, err = svc.PostUpdate(ctx, inc.ID, Draft{Body: body})
		if err != nil {
			t.Fatal(err)
		}
		if got := inc.Updates[0].Body; *got.PercentRestored != 60 || got.PercentSource != "manual" {
			t.Fatalf("fallback body = %+v", got)
		}
	})
}

func TestCounts(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		sites, verified int
		want            float64
	}{{883, 441, 49.9}, {883, 882, 99.8}, {3, 1, 33.3}, {0, 0, 100}, {10, 10, 100}} {
		if got := (Counts{Sites: c.sites, Verified: c.verified}).Percent(); got != c.want {
			t.Errorf("%d/%d = %v, want %v", c.verified, c.sites, got, c.want)
		}
	}
}

func TestMaintenanceFollowsItsWindow(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		ctx, svc := b.ctx, b.svc
		wiki, err := svc.PutComponent(ctx, Component{Name: Text{En: "wiki"}})
		if err != nil {
			t.Fatal(err)
		}
		start := b.clock.Now().Add(2 * time.Hour)
		if _, err := svc.ScheduleMaintenance(ctx, NewMaintenance{Name: Text{En: "Database upgrade"}, ScheduledFor: start, ScheduledUntil: start.Add(time.Hour),
			Components: []string{"wiki"}}); fault.CodeOf(err) != fault.Refused {
			t.Fatalf("maintenance without a situation: %v", err)
		}
		m, err := svc.ScheduleMaintenance(ctx, NewMaintenance{Name: Text{En: "Database upgrade"}, ScheduledFor: start, ScheduledUntil: start.Add(time.Hour),
			Components: []string{"wiki"}, Draft: Draft{Body: Body{Situation: Text{En: "Wiki read-only for an hour."}}}})
		if err != nil {
			t.Fatal(err)
		}
		snap, _ := svc.Snapshot(ctx)
		if len(snap.UpcomingMaintenances()) != 1 || len(snap.ActiveMaintenances()) != 0 || statusOf(snap, wiki.ID) != Operational {
			t.Fatalf("before: upcoming %d, active %d, wiki %s", len(snap.UpcomingMaintenances()), len(snap.ActiveMaintenances()), statusOf(snap, wiki.ID))
		}
		b.clock.Add(2*time.Hour + time.Minute)
		snap, _ = svc.Snapshot(ctx)
		if len(snap.ActiveMaintenances()) != 1 || snap.Maintenances[0].Status != InProgress || statusOf(snap, wiki.ID) != UnderMaintenance {
			t.Fatalf("during: %+v, wiki %s", snap.Maintenances[0], statusOf(snap, wiki.ID))
		}
		if snap.Indicator != ImpactNone {
			t.Fatalf("maintenance raised the indicator to %s", snap.Indicator)
		}
		b.clock.Add(time.Hour)
		snap, _ = svc.Snapshot(ctx)
		if snap.Maintenances[0].Status != Completed || statusOf(snap, wiki.ID) != Operational {
			t.Fatalf("after: %s, wiki %s", snap.Maintenances[0].Status, statusOf(snap, wiki.ID))
		}
		// Maintenance does not count against uptime.
		if u := snap.Components[0].Uptime.Percent; u != 100 {
			t.Fatalf("uptime after maintenance = %v", u)
		}
		if _, err := svc.PostUpdate(ctx, m.ID, Draft{Status: Investigating, Body: Body{Situation: Text{En: "x"}}}); fault.CodeOf(err) != fault.Invalid {
			t.Fatalf("incident status on a maintenance: %v", err)
		}
	})
}

func TestCadenceFlagsSilentMajorIncidents(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		ctx, svc := b.ctx, b.svc
		major, err := svc.OpenIncident(ctx, NewIncident{Name: Text{En: "Major"}, Draft: Draft{Impact: ImpactMajor, Body: fullBody()}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.OpenIncident(ctx, NewIncident{Name: Text{En: "Minor"}, Draft: Draft{Impact: ImpactMinor, Body: fullBody()}}); err != nil {
			t.Fatal(err)
		}
		b.clock.Add(59 * time.Minute)
		if snap, _ := svc.Snapshot(ctx); len(snap.Overdue) != 0 {
			t.Fatalf("overdue after 59 min: %+v", snap.Overdue)
		}
		b.clock.Add(2 * time.Minute)
		snap, _ := svc.Snapshot(ctx)
		if len(snap.Overdue) != 1 || snap.Overdue[0].IncidentID != major.ID || snap.Overdue[0].Late != time.Minute {
			t.Fatalf("overdue after 61 min: %+v", snap.Overdue)
		}
		if i := slices.IndexFunc(snap.Incidents, func(i Incident) bool { return i.ID == major.ID }); !snap.Incidents[i].Overdue {
			t.Fatal("incident not marked overdue")
		}
		if _, err := svc.PostUpdate(ctx, major.ID, Draft{CarryOver: true}); err != nil {
			t.Fatal(err)
		}
		if snap, _ := svc.Snapshot(ctx); len(snap.Overdue) != 0 {
			t.Fatalf("still overdue after an update: %+v", snap.Overdue)
		}
	})
}

func TestUptime(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 4, 5, 12, 0, 0, 0, time.UTC)
	created := now.AddDate(-1, 0, 0)
	day := func(d int, h int) time.Time { return time.Date(2026, 4, 5, h, 0, 0, 0, time.UTC).AddDate(0, 0, d) }
	inc := func(id string, resolved time.Time, changes ...any) Incident {
		i := Incident{ID: id, Kind: KindIncident, Resolved: resolved}
		for k := 0; k < len(changes); k += 2 {
			u := Update{Created: changes[k].(time.Time), Changes: []ComponentChange{{ComponentID: "c", Status: changes[k+1].(ComponentStatus)}}}
			i.Updates = append([]Update{u}, i.Updates...) // newest first
		}
		return i
	}

	none := ComputeUptime("c", created, nil, now)
	if none.Percent != 100 || len(none.Days) != UptimeDays || !none.Days[89].Date.Equal(day(0, 0)) || none.Days[0].Worst != Operational {
		t.Fatalf("no incidents: %v%%, %d days, last %s", none.Percent, len(none.Days), none.Days[89].Date)
	}

	// 9 hours of major outage across midnight two days ago, then 10h of partial.
	a := inc("a", day(-1, 5), day(-2, 20), MajorOutage, day(-1, 5), Operational)
	b := inc("b", day(-1, 3), day(-1, 1), PartialOutage) // overlaps a entirely: counts once
	u := ComputeUptime("c", created, []Incident{a, b}, now)
	if u.Days[87].Worst != MajorOutage || u.Days[87].Down != 4*time.Hour || u.Days[88].Down != 5*time.Hour {
		t.Fatalf("days = %+v / %+v", u.Days[87], u.Days[88])
	}
	if !slices.Equal(u.Days[88].Incidents, []string{"a", "b"}) || u.Days[89].Worst != Operational {
		t.Fatalf("day -1 incidents %v, today %s", u.Days[88].Incidents, u.Days[89].Worst)
	}
	window := now.Sub(day(-89, 0))
	want := 100 * (1 - (9*time.Hour).Seconds()/window.Seconds())
	if diff := u.Percent - want; diff > 0.006 || diff < -0.006 {
		t.Fatalf("percent = %v, want %.2f", u.Percent, want)
	}

	// An open partial outage lasts until now, at 30%; degraded costs nothing.
	c := inc("c", time.Time{}, day(0, 2), DegradedPerformance, day(0, 6), PartialOutage)
	u = ComputeUptime("c", created, []Incident{c}, now)
	if u.Days[89].Worst != PartialOutage || u.Days[89].Down != time.Duration(0.3*float64(6*time.Hour)) {
		t.Fatalf("open incident today: %+v", u.Days[89])
	}

	// A component created yesterday counts only since then.
	u = ComputeUptime("c", day(-1, 12), []Incident{inc("d", day(-1, 18), day(-1, 6), MajorOutage)}, now)
	if want := 100 * (1 - 6.0/24); u.Percent != want {
		t.Fatalf("young component: %v%%, want %v", u.Percent, want)
	}
	if !u.Days[87].NoData || u.Days[88].NoData || none.Days[0].NoData {
		t.Fatalf("no-data days: %v %v %v", u.Days[87].NoData, u.Days[88].NoData, none.Days[0].NoData)
	}
	// Another component is unaffected.
	if u := ComputeUptime("other", created, []Incident{a, b, c}, now); u.Percent != 100 {
		t.Fatalf("other component: %v", u.Percent)
	}
}

func TestTextLanguages(t *testing.T) {
	t.Parallel()
	b := fullBody()
	en, zh := b.Plain(English), b.Plain(Chinese)
	if !strings.HasPrefix(en, "A maintenance script deleted 883 sites.") || !strings.Contains(en, "If you cannot sign in: Call +1 555 0100") ||
		!strings.Contains(en, "Recovery timeline: Most sites back within 6 hours. (confidence: medium)") {
		t.Fatalf("english body:\n%s", en)
	}
	// Chinese where written, English where not, under Chinese headings.
	if !strings.HasPrefix(zh, "一个维护脚本删除了 883 个站点。") || !strings.Contains(zh, "恢复时间预估: Most sites back") || !strings.Contains(zh, "可信度: 中") {
		t.Fatalf("chinese body:\n%s", zh)
	}
	if got := (Text{Zh: "只有中文"}).In(English); got != "只有中文" {
		t.Fatalf("fallback to chinese = %q", got)
	}
	if n := len(b.Sections(English)); n != 8 {
		t.Fatalf("%d sections, want 8 (situation, affected, timeline, restored, dataloss, support, known, unknown)", n)
	}
}

func TestCarryOverReplacesBothLanguages(t *testing.T) {
	t.Parallel()
	prev := fullBody()
	next := prev.Over(Body{Situation: Text{En: "Restores running."}})
	if next.Situation.Zh != "" || next.Situation.En != "Restores running." {
		t.Fatalf("stale Chinese carried over: %+v", next.Situation)
	}
	if next.Known != prev.Known || *next.PercentRestored != 0 {
		t.Fatalf("untouched parts not carried: %+v", next)
	}
}

// TestSeedingWhileAnotherProcessSeeds puts a group while another process's
// transaction has inserted the same name and not yet committed, as two serve
// processes starting together on one state store do: the put waits for it
// and updates that row instead of failing on the unique name.
func TestSeedingWhileAnotherProcessSeeds(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		db := b.svc.db.st.DB()
		other, err := db.BeginTx(b.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Rollback()
		q := b.svc.db.q("INSERT INTO status_groups (id, name_en, name_zh, position, created_at, updated_at) VALUES ('g-other', 'Products', '', 0, 1, 1)")
		if _, err := other.ExecContext(b.ctx, q); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := b.svc.PutGroup(b.ctx, Group{Name: Text{En: "Products", Zh: "产品"}})
			done <- err
		}()
		time.Sleep(200 * time.Millisecond) // let the put reach the other's row lock (SQLite: its write lock)
		if err := other.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("put while another process seeds the same name: %v", err)
		}
		gs, _, err := b.svc.Components(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(gs) != 1 || gs[0].ID != "g-other" || gs[0].Name.Zh != "产品" {
			t.Fatalf("groups %+v: want the other's row, updated", gs)
		}
	})
}
