package plan

import (
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/productdb/productdbtest"
	"lifeline/internal/tenant"
)

// The April 2022 replay, scaled down with the same shape: 883 of many
// sites becomes 88 of 120 (30 with -short). Removing the insight app,
// someone hands over site keys.
//
//  1. A plan with --kind app and the site keys is refused before anything
//     runs, saying each key is a site and the plan would delete whole sites.
//  2. The same deletion as raw SQL is refused by the database guards.
//  3. The correct app-removal plan (deactivate, then delete, the app on
//     those sites) runs internal tenants first, then waves, with a bake;
//     every site's other data is untouched; both plans roll back cleanly,
//     to the byte.
func TestAprilReplay(t *testing.T) {
	t.Parallel()
	sites, victims := 120, 88
	if testing.Short() {
		sites, victims = 50, 30
	}
	b := setup(t, options{tenants: sites, internal: 3, backup: true})
	original := b.digests(t, sites)
	others := b.otherData(t, sites)
	siteKeys := keys(1, victims, "")

	// 1. The script's plan.
	p, err := b.plans.Create(ctx, CreateRequest{Action: "delete", Kind: tenant.KindApp, Targets: siteKeys, Reason: "remove the insight app", Requester: "script"})
	wantCode(t, err, fault.Refused, "`1` is a site, not an app: this plan would delete whole sites", fmt.Sprintf("%d of %d targets are wrong", victims, victims))
	if p.Status != Draft {
		t.Fatalf("the script's plan is %s", p.Status)
	}

	// 2. The script's SQL.
	list := strings.Join(siteKeys, ",")
	for _, stmt := range []string{
		"DELETE FROM sites WHERE id IN (" + list + ")",
		"DELETE FROM insight_objects WHERE site_id IN (" + list + ")",
		"DELETE FROM issues WHERE site_id IN (" + list + ")",
	} {
		_, err := b.raw["tracker"].Exec(stmt)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "lifeline") {
			t.Fatalf("%s: %v; want the guards' refusal", stmt, err)
		}
	}
	if !maps.Equal(original, b.digests(t, sites)) {
		t.Fatal("the refused plan or SQL changed data")
	}

	// 3. The correct plans: the app, on those sites, in waves.
	appKeys := keys(1, victims, "/tracker/insight")
	var order []string
	b.plans.BeforeStep = func(st Step) { order = append(order, st.Tenant) }
	run := func(action string) *Plan {
		t.Helper()
		order = nil
		p := b.create(t, CreateRequest{Action: action, Kind: tenant.KindApp, Targets: appKeys, Reason: "remove the insight app",
			Requester: "alice", Waves: []string{"internal", "10%", "100%"}, Bake: ptr(Duration(15 * time.Minute))})
		if p.RequiredRole != "admin" || !p.Report.Caps.Exceeded {
			t.Fatalf("%d of %d sites is above the caps: %s %+v", victims, sites, p.RequiredRole, p.Report.Caps)
		}
		if _, err := b.plans.Approve(ctx, ApproveRequest{ID: p.ID, Actor: bob}); fault.CodeOf(err) != fault.Unauthorized {
			t.Fatalf("an approver below the caps' role: %v", err)
		}
		p = b.approve(t, p, carol)
		p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
		if p.Status != Done || p.Progress.Done != victims {
			t.Fatalf("%s: %s %+v %s", action, p.Status, p.Progress, p.Note)
		}
		if !slices.Equal(order[:3], []string{"1", "2", "3"}) {
			t.Fatalf("%s ran %v first; internal tenants go first", action, order[:3])
		}
		if len(p.Gates) != 2 {
			t.Fatalf("gates: %+v", p.Gates)
		}
		for _, st := range p.Steps {
			if st.Wave == 2 && st.Started.Sub(p.Gates[0].At) < 0 {
				t.Fatalf("wave 2 began before the first gate")
			}
		}
		return p
	}
	deactivate := run("deactivate")
	remove := run("delete")
	for _, st := range remove.Steps {
		if st.RestoreTest != "passed" || st.Verify != "passed" {
			t.Fatalf("delete step %+v", st)
		}
	}
	for _, k := range siteKeys {
		var n int
		if err := b.raw["tracker"].QueryRow("SELECT count(*) FROM insight_objects WHERE site_id = ?", k).Scan(&n); err != nil || n != 0 {
			t.Fatalf("site %s keeps %d insight objects (%v)", k, n, err)
		}
		if st := b.appState(t, k, "insight"); st != productdb.Deleted {
			t.Fatalf("site %s's insight is %s", k, st)
		}
		if st := b.state(t, "tracker", k); st != productdb.Active {
			t.Fatalf("site %s is %s: only its app should have gone", k, st)
		}
	}
	if after := b.otherData(t, sites); !maps.Equal(others, after) {
		t.Fatal("the app removal touched other data")
	}
	for i := victims + 1; i <= sites; i++ {
		k := fmt.Sprintf("tracker/%d", i)
		if b.digest(t, "tracker", itoa(i)) != original[k] {
			t.Fatalf("site %d, not in the plan, changed", i)
		}
	}

	// Roll both back: the bytes come back.
	if p := must[*Plan](t)(b.plans.Rollback(ctx, remove.ID, carol)); p.Status != RolledBack {
		t.Fatalf("rollback of the delete: %s %s", p.Status, p.Note)
	}
	if p := must[*Plan](t)(b.plans.Rollback(ctx, deactivate.ID, carol)); p.Status != RolledBack {
		t.Fatalf("rollback of the deactivate: %s %s", p.Status, p.Note)
	}
	if !maps.Equal(original, b.digests(t, sites)) {
		t.Fatal("after rollback the rows differ from before")
	}
	for _, k := range siteKeys {
		if st := b.appState(t, k, "insight"); st != productdb.Active {
			t.Fatalf("site %s's insight is %s after rollback", k, st)
		}
	}
}

// otherData digests, per site, every row outside the insight app, with
// each value's SQLite storage class: an observer independent of Lifeline.
func (b *bundle) otherData(t *testing.T, n int) map[string]string {
	t.Helper()
	tables := map[string][]string{
		"tracker": {"sites:id", "site_admins:site_id", "projects:site_id", "issues:site_id", "comments:site_id", "attachments:site_id"},
		"wiki":    {"sites:id", "spaces:site_id", "pages:site_id", "page_versions:site_id"},
	}
	out := map[string]string{}
	for product, list := range tables {
		for i := 1; i <= n; i++ {
			h := sha256.New()
			for _, tc := range list {
				table, col, _ := strings.Cut(tc, ":")
				rows, err := b.raw[product].Query(fmt.Sprintf("SELECT * FROM %s WHERE %s = ? ORDER BY rowid", table, col), i)
				if err != nil {
					t.Fatal(err)
				}
				hashRows(t, h, rows)
			}
			out[fmt.Sprintf("%s/%d", product, i)] = hex.EncodeToString(h.Sum(nil))
		}
	}
	return out
}

func hashRows(t *testing.T, h io.Writer, rows *sql.Rows) {
	t.Helper()
	for _, vals := range productdbtest.Values(t, rows) {
		fmt.Fprintf(h, "%#v\n", vals)
	}
}
