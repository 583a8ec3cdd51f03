package plan

import (
	"bytes"
	"database/sql"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"lifeline/internal/demo"
	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// The 2022 script's mistake, as a plan: site keys where app keys belong.
// It is refused before anything runs, with what the keys really are.
func TestAppPlanOfSiteKeysIsRefusedBeforeAnythingRuns(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	before := b.digests(t, 40)
	p, err := b.plans.Create(ctx, CreateRequest{Action: "delete", Kind: tenant.KindApp, Targets: keys(1, 30, ""), Reason: "remove insight", Requester: "alice"})
	wantCode(t, err, fault.Refused, "`1` is a site, not an app: this plan would delete whole sites", "30 of 30 targets are wrong", "and 20 more")
	if p == nil || p.Status != Draft || len(p.Report.Problems) != 30 || p.Report.Problems[29].Kind != "wrong_kind" {
		t.Fatalf("the refused plan is not kept as a draft with every problem: %+v", p)
	}
	if _, err := b.plans.Approve(ctx, ApproveRequest{ID: p.ID, Actor: carol}); fault.CodeOf(err) != fault.Conflict {
		t.Fatalf("approving a refused plan: %v", err)
	}
	if _, err := b.plans.Run(ctx, p.ID, carol); fault.CodeOf(err) != fault.Conflict {
		t.Fatalf("running a refused plan: %v", err)
	}
	if after := b.digests(t, 40); !maps.Equal(before, after) {
		t.Fatal("a refused plan changed data")
	}
	if acts := auditActions(t, b.store); !slices.Contains(acts, "plan.refused") || slices.Contains(acts, "operation.start") {
		t.Fatalf("audit after a refusal: %v", acts)
	}
	var text bytes.Buffer
	p.Report.Text(&text)
	if !strings.Contains(text.String(), "REFUSED") || !strings.Contains(text.String(), "`17` is a site, not an app") {
		t.Fatalf("the report does not show the refusal:\n%s", text.String())
	}
}

// Every refusal of plan create, each with its explanation; none records
// anything but the refused draft.
func TestCreateRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t, options{wikiName: "7"}) // a product named like tenant 7: "7" is ambiguous
	if _, err := b.tenants.Run(ctx, tenant.Request{Action: productdb.Deactivate, Target: "site:9", Actor: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.tenants.Run(ctx, tenant.Request{Action: productdb.Delete, Target: "site:9", Actor: "x", Reason: "gone"}); err != nil {
		t.Fatal(err)
	}
	busy := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"12"}})
	b.approve(t, busy, carol)
	for _, c := range []struct {
		name    string
		req     CreateRequest
		code    fault.Code
		message string
	}{
		{"site key for an app", CreateRequest{Action: "deactivate", Kind: tenant.KindApp, Targets: []string{"5"}}, fault.Refused,
			"`5` is a site, not an app: this plan would deactivate whole sites"},
		{"typed site for an app", CreateRequest{Action: "deactivate", Kind: tenant.KindApp, Targets: []string{"site:5"}}, fault.Refused,
			"`site:5` is a site, not an app"},
		{"app key for a site", CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"5/tracker/insight"}}, fault.Refused,
			"`5/tracker/insight` is an app, not a site: this plan would deactivate only app insight of tenant 5 in tracker"},
		{"product key for an app", CreateRequest{Action: "deactivate", Kind: tenant.KindApp, Targets: []string{"5/tracker"}}, fault.Refused,
			"`5/tracker` is a product, not an app: this plan would deactivate all of tenant 5's data in tracker"},
		{"ambiguous", CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"7"}}, fault.Refused,
			"`7` matches more than one kind: 7 is both a tenant key and a product"},
		{"a product for a site", CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"tracker"}}, fault.Refused,
			"`tracker` is a product, not a tenant"},
		{"unknown", CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"5", "999", "998"}}, fault.Refused,
			"2 unknown"},
		{"unknown app", CreateRequest{Action: "deactivate", Kind: tenant.KindApp, Targets: []string{"5/tracker/nope"}}, fault.Refused,
			"has no app \"nope\""},
		{"delete of an active site", CreateRequest{Action: "delete", Kind: tenant.KindSite, Targets: []string{"5"}}, fault.Refused,
			"delete needs deactivated (deactivate it first"},
		{"purge inside retention", CreateRequest{Action: "purge", Kind: tenant.KindSite, Targets: []string{"9"}}, fault.Refused,
			"retention"},
		{"listed twice", CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"5", "site:5"}}, fault.Refused,
			"listed more than once"},
		{"in another plan", CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"12"}}, fault.Refused,
			"already in plan " + busy.ID},
		{"bad key", CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"5//x"}}, fault.Refused, "is not a key"},
		{"unknown kind prefix", CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"tenant:5"}}, fault.Refused, "unknown kind"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.req.Requester, c.req.Reason = "alice", "test"
			p, err := b.plans.Create(ctx, c.req)
			wantCode(t, err, c.code, c.message)
			if p == nil || p.Status != Draft {
				t.Fatalf("refused plan: %+v", p)
			}
		})
	}
	// Malformed requests record nothing.
	for _, c := range []struct {
		name string
		req  CreateRequest
		msg  string
	}{
		{"no kind", CreateRequest{Action: "delete", Targets: []string{"5"}, Reason: "r", Requester: "a"}, "missing target kind"},
		{"no reason", CreateRequest{Action: "delete", Kind: tenant.KindSite, Targets: []string{"5"}, Requester: "a"}, "needs a reason"},
		{"bad action", CreateRequest{Action: "drop", Kind: tenant.KindSite, Targets: []string{"5"}, Reason: "r", Requester: "a"}, "unknown plan action"},
		{"internal not first", CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"5"}, Reason: "r", Requester: "a", Waves: []string{"1%", "internal", "100%"}}, "only come first"},
		{"short of all", CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"5"}, Reason: "r", Requester: "a", Waves: []string{"internal", "50%"}}, "must be 100%"},
		{"shrinking", CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: []string{"5"}, Reason: "r", Requester: "a", Waves: []string{"10%", "5%", "100%"}}, "does not grow"},
		{"restore of apps", CreateRequest{Action: "restore", Kind: tenant.KindApp, Targets: []string{"5/tracker/insight"}, Reason: "r", Requester: "a", Before: "op_x"}, "cannot target apps"},
		{"restore without moment", CreateRequest{Action: "restore", Kind: tenant.KindSite, Targets: []string{"5"}, Reason: "r", Requester: "a"}, "moment"},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := len(must[[]*Plan](t)(b.plans.List(ctx, 1000)))
			p, err := b.plans.Create(ctx, c.req)
			wantCode(t, err, fault.Invalid, c.msg)
			if p != nil || len(must[[]*Plan](t)(b.plans.List(ctx, 1000))) != n {
				t.Fatal("a malformed request was recorded")
			}
		})
	}
}

// Above the caps an admin must approve; below them an approver may.
func TestCapsRaiseTheApprovalRole(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	b.plans.Config.MaxShare = 0.5 // 40 tenants: 1% would make every plan exceed
	b.plans.Config.MaxTenants = 10
	small := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 10, "")})
	if small.RequiredRole != state.RoleApprover || small.Report.Caps.Exceeded {
		t.Fatalf("10 tenants: required %s, caps %+v", small.RequiredRole, small.Report.Caps)
	}
	b.approve(t, small, bob)
	big := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(11, 21, "")})
	if big.RequiredRole != state.RoleAdmin || !strings.Contains(big.Report.Caps.Why, "11 tenants is more than 10") {
		t.Fatalf("11 tenants: required %s, caps %+v", big.RequiredRole, big.Report.Caps)
	}
	_, err := b.plans.Approve(ctx, ApproveRequest{ID: big.ID, Actor: bob})
	wantCode(t, err, fault.Unauthorized, "needs approval by the admin role", "above the caps")
	b.approve(t, big, carol)
	share := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindApp, Targets: keys(22, 30, "/tracker/insight")})
	if share.RequiredRole != state.RoleApprover {
		t.Fatalf("9 of 40 tenants (22%%) is below a 50%% cap: %s", share.RequiredRole)
	}
	rep := big.Report
	if rep.Totals.Tenants != 11 || rep.Totals.TenantsKnown != 40 || rep.Totals.RowsTotal == 0 || rep.Totals.Rows["tracker.issues"] != 11*24 {
		t.Fatalf("blast radius: %+v", rep.Totals)
	}
	if n := share.Report.Totals.Rows["tracker.insight_objects"]; n != 9*3 || share.Report.Totals.Rows["tracker.issues"] != 0 {
		t.Fatalf("an app plan's blast radius counts only the app's tables: %+v", share.Report.Totals.Rows)
	}
	var text bytes.Buffer
	big.Report.Text(&text)
	for _, want := range []string{"Robotics", "site:11", "blast radius: 11 tenants", "an admin must approve", "report hash: " + big.ReportHash} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, text.String())
		}
	}
}

// A plan needs two people; the approval binds to the report the approver
// saw, and a change to it voids the approval.
func TestApprovalBindsToTheReport(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(4, 8, "")})
	_, err := b.plans.Approve(ctx, ApproveRequest{ID: p.ID, Actor: Actor{Name: " Alice ", Role: state.RoleAdmin}})
	wantCode(t, err, fault.Refused, "cannot also approve it: a plan needs two people")
	_, err = b.plans.Approve(ctx, ApproveRequest{ID: p.ID, Actor: carol, Hash: "0123456789abcdef"})
	wantCode(t, err, fault.Conflict, "not the 0123456789ab you reviewed")

	// A target renamed between showing and approving: refused, new report.
	if _, err := b.raw["tracker"].Exec("UPDATE sites SET name = 'Renamed Ltd' WHERE id = 6"); err != nil {
		t.Fatal(err)
	}
	_, err = b.plans.Approve(ctx, ApproveRequest{ID: p.ID, Actor: carol, Hash: p.ReportHash})
	wantCode(t, err, fault.Conflict, `site:6 was renamed from "Harbor Energy 6" to "Renamed Ltd"`)
	p = must[*Plan](t)(b.plans.Get(ctx, p.ID))
	if p.Status != Validated || p.Approval != nil {
		t.Fatalf("after a changed report: %s, %+v", p.Status, p.Approval)
	}
	p = b.approve(t, p, carol)
	if p.Status != Approved || p.Approval.Hash != p.ReportHash || p.Approval.By != "carol" {
		t.Fatalf("approved: %+v", p.Approval)
	}

	// Changed after approval: marked internal, so it moves to wave 0.
	if _, err := b.raw["tracker"].Exec("UPDATE sites SET internal = 1 WHERE id = 8"); err != nil {
		t.Fatal(err)
	}
	_, err = b.plans.Run(ctx, p.ID, carol)
	wantCode(t, err, fault.Conflict, "approval is void", "site:8 moved from wave")
	p = must[*Plan](t)(b.plans.Get(ctx, p.ID))
	if p.Status != Validated || p.Approval != nil || b.state(t, "tracker", "4") != productdb.Active {
		t.Fatalf("after a voided approval: %s %+v; tenant 4 %s", p.Status, p.Approval, b.state(t, "tracker", "4"))
	}
	if acts := auditActions(t, b.store); !slices.Contains(acts, "plan.approval_voided") {
		t.Fatalf("the voided approval is not audited: %v", acts)
	}

	// A target whose state no longer allows the action: back to draft.
	p = b.approve(t, p, carol)
	if _, err := b.tenants.Run(ctx, tenant.Request{Action: productdb.Deactivate, Target: "site:5", Actor: "x"}); err != nil {
		t.Fatal(err)
	}
	_, err = b.plans.Run(ctx, p.ID, carol)
	wantCode(t, err, fault.Refused, "site:5 is deactivated")
	if p = must[*Plan](t)(b.plans.Get(ctx, p.ID)); p.Status != Draft {
		t.Fatalf("a plan whose target no longer validates is %s", p.Status)
	}
}

// Wave 0 follows the configured tag column (plans.internal.column): the
// tenants whose root row has it set, not those of the default "internal".
func TestInternalTagColumn(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := demo.Generate(ctx, dir, demo.Options{Tenants: 20, Internal: 3, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "tracker.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"ALTER TABLE sites ADD COLUMN staff INTEGER NOT NULL DEFAULT 0", "UPDATE sites SET staff = 1 WHERE id IN (7, 8)"} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	b := setup(t, options{dir: dir})
	b.plans.Config.InternalColumn = "staff"
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 10, ""), Waves: []string{"internal", "100%"}})
	var wave0 []string
	for _, tr := range p.Report.Targets {
		if tr.Wave == 0 {
			wave0 = append(wave0, tr.Target)
		}
	}
	if !slices.Equal(wave0, []string{"site:7", "site:8"}) || p.Report.Totals.Internal != 2 {
		t.Fatalf("wave 0 is %v (%d internal); want the sites tagged staff, site:7 and site:8", wave0, p.Report.Totals.Internal)
	}
}
