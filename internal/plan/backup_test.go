package plan

import (
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeline/internal/backup/format"
	"lifeline/internal/backup/format/formattest"
	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/tenant"
)

// deactivate runs a deactivate plan over targets (as a plan, so the
// handful outside plans is not used up).
func (b *bundle) deactivate(t *testing.T, kind tenant.Kind, targets []string) *Plan {
	t.Helper()
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: kind, Targets: targets, Waves: []string{"100%"}})
	p = b.approve(t, p, carol)
	p, err := b.plans.Run(ctx, p.ID, carol)
	if err != nil || p.Status != Done {
		t.Fatalf("deactivate plan: %v %+v", err, p)
	}
	return p
}

// corruptTenant flips a byte inside tenant's first block of the product's
// snapshot: that tenant's backup is broken, the others' are intact.
func (b *bundle) corruptTenant(t *testing.T, product, key string) {
	t.Helper()
	objs, err := b.repo.Objects(ctx, product)
	if err != nil {
		t.Fatal(err)
	}
	var snap string
	for _, o := range objs {
		if o.Kind == format.Snapshot {
			snap = o.Key
		}
	}
	if !formattest.CorruptTenant(t, filepath.Join(b.blobDir, snap), key) {
		t.Fatalf("snapshot %s has no tenant %s", snap, key)
	}
}

// No deletion without a proven way back: a tenant whose backup is broken
// is skipped and reported, the plan pauses, and resuming goes on without
// it.
func TestRestoreTestBlocksATenantWithABrokenBackup(t *testing.T) {
	t.Parallel()
	b := setup(t, options{backup: true})
	b.deactivate(t, tenant.KindSite, keys(1, 6, ""))
	b.corruptTenant(t, "tracker", "4")
	before := b.digest(t, "tracker", "4")
	p := b.create(t, CreateRequest{Action: "delete", Kind: tenant.KindSite, Targets: keys(1, 6, ""), Waves: []string{"100%"}})
	p = b.approve(t, p, carol)
	p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	if p.Status != Paused || !strings.Contains(p.Note, "the backup cannot reproduce 4") || p.Progress.Done != 0 {
		t.Fatalf("%s %+v: %s", p.Status, p.Progress, p.Note)
	}
	st := p.Steps[3]
	if st.Status != StepSkipped || st.RestoreTest != "failed" || !strings.Contains(st.Error, "tenant 4") {
		t.Fatalf("step of tenant 4: %+v", st)
	}
	if p.Steps[0].RestoreTest != "passed" {
		t.Fatalf("step of tenant 1: %+v", p.Steps[0])
	}
	must[*Plan](t)(b.plans.Resume(ctx, p.ID, carol))
	p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	if p.Status != Done || p.Progress.Done != 5 || p.Progress.Skipped != 1 {
		t.Fatalf("after resume: %s %+v %s", p.Status, p.Progress, p.Note)
	}
	if b.state(t, "tracker", "4") != productdb.Deactivated || b.digest(t, "tracker", "4") != before {
		t.Fatal("the tenant whose backup is broken was touched")
	}
	if b.state(t, "tracker", "5") != productdb.Deleted {
		t.Fatal("the others were not deleted")
	}
}

// A change that never reached the backup fails the restore test too: the
// backup could not bring it back.
func TestRestoreTestNeedsEveryChangeShipped(t *testing.T) {
	t.Parallel()
	b := setup(t, options{backup: true})
	b.deactivate(t, tenant.KindSite, keys(1, 2, ""))
	res, err := b.plans.Restorer.TestRestore(ctx, RestoreTest{Tenants: []string{"1", "2"}, Actor: "t"})
	if err != nil || res["1"] != nil || res["2"] != nil {
		t.Fatalf("intact: %v %v", res, err)
	}
	if _, err := b.raw["tracker"].Exec("UPDATE issues SET title = 'edited after the last ship' WHERE id = (SELECT min(id) FROM issues WHERE site_id = 2)"); err != nil {
		t.Fatal(err)
	}
	noShip := &Backup{Service: b.plans.Restorer.(*Backup).Service}
	res, err = noShip.TestRestore(ctx, RestoreTest{Tenants: []string{"1", "2"}, Actor: "t"})
	if err != nil || res["1"] != nil {
		t.Fatalf("tenant 1: %v %v", res["1"], err)
	}
	if res["2"] == nil || !strings.Contains(res["2"].Error(), "tracker.issues") || fault.CodeOf(res["2"]) != fault.Refused {
		t.Fatalf("tenant 2 with an unshipped change: %v", res["2"])
	}
	// For an app removal only the app's tables count: its users may go on
	// writing elsewhere.
	app := map[string][]string{"2": {"tracker.insight_objects", "tracker.insight_links"}}
	res, err = noShip.TestRestore(ctx, RestoreTest{Tenants: []string{"2"}, Products: []string{"tracker"}, Tables: app, Actor: "t"})
	if err != nil || res["2"] != nil {
		t.Fatalf("tenant 2's app, with a change elsewhere: %v %v", res["2"], err)
	}
	if _, err := b.raw["tracker"].Exec("UPDATE insight_objects SET kind = 'edited' WHERE site_id = 2"); err != nil {
		t.Fatal(err)
	}
	res, err = noShip.TestRestore(ctx, RestoreTest{Tenants: []string{"2"}, Products: []string{"tracker"}, Tables: app, Actor: "t"})
	if err != nil || res["2"] == nil || !strings.Contains(res["2"].Error(), "tracker.insight_objects") {
		t.Fatalf("tenant 2's app with an unshipped change: %v %v", res["2"], err)
	}
}

// Rollback undoes every executed step, newest first, and the rows come
// back byte for byte; other tenants are never touched.
func TestRollbackRestoresExactBytes(t *testing.T) {
	t.Parallel()
	b := setup(t, options{backup: true, internal: 2})
	original := b.digests(t, 40)
	d := b.deactivate(t, tenant.KindSite, keys(1, 8, ""))
	p := b.create(t, CreateRequest{Action: "delete", Kind: tenant.KindSite, Targets: keys(1, 8, ""), Waves: []string{"internal", "50%", "100%"}})
	p = b.approve(t, p, carol)
	p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	if p.Status != Done || p.Progress.Done != 8 {
		t.Fatalf("delete: %s %+v %s", p.Status, p.Progress, p.Note)
	}
	for i := 1; i <= 8; i++ {
		if !strings.HasSuffix(b.digest(t, "tracker", itoa(i)), "/0") {
			t.Fatalf("site %d still has live rows", i)
		}
	}
	_, err := b.plans.Rollback(ctx, d.ID, carol)
	wantCode(t, err, fault.Conflict, "nothing was undone", "site:1 is deleted in tracker") // its delete must be undone first
	p = must[*Plan](t)(b.plans.Rollback(ctx, p.ID, carol))
	if p.Status != RolledBack || p.Progress.RolledBack != 8 {
		t.Fatalf("rollback: %s %+v %s", p.Status, p.Progress, p.Note)
	}
	for _, st := range p.Steps {
		if st.UndoOpID == "" || !strings.Contains(st.Verify, "identical") {
			t.Fatalf("step %+v", st)
		}
	}
	if d = must[*Plan](t)(b.plans.Rollback(ctx, d.ID, carol)); d.Status != RolledBack {
		t.Fatalf("rollback of the deactivation: %s %s", d.Status, d.Note)
	}
	if after := b.digests(t, 40); !maps.Equal(original, after) {
		for k, v := range original {
			if after[k] != v {
				t.Errorf("%s: %s before, %s after", k, v, after[k])
			}
		}
		t.Fatal("rows differ after rollback")
	}
	for i := 1; i <= 8; i++ {
		if s := b.state(t, "wiki", itoa(i)); s != productdb.Active {
			t.Fatalf("site %d is %s after both rollbacks", i, s)
		}
	}
	if _, err := b.plans.Rollback(ctx, p.ID, carol); fault.CodeOf(err) != fault.Conflict {
		t.Fatalf("a second rollback: %v", err)
	}
}

// Purge needs retention, an admin and the typed count, and cannot be
// rolled back.
func TestPurgePlan(t *testing.T) {
	t.Parallel()
	b := setup(t, options{backup: true})
	b.plans.Config.Handful = 100
	for _, k := range keys(1, 3, "") {
		for _, a := range []productdb.Action{productdb.Deactivate, productdb.Delete} {
			if _, err := b.tenants.Run(ctx, tenant.Request{Action: a, Target: "site:" + k, Actor: "x", Reason: "closing"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.ship(ctx); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(31 * 24 * 3600e9)
	p := b.create(t, CreateRequest{Action: "purge", Kind: tenant.KindSite, Targets: keys(1, 3, ""), Waves: []string{"100%"}})
	if p.RequiredRole != "admin" {
		t.Fatalf("purge approval role: %s", p.RequiredRole)
	}
	_, err := b.plans.Approve(ctx, ApproveRequest{ID: p.ID, Actor: carol})
	wantCode(t, err, fault.Refused, "type that count")
	if !strings.Contains(fault.HintOf(err), "--confirm 3") {
		t.Fatalf("hint: %s", fault.HintOf(err))
	}
	p = b.approve(t, p, carol)
	p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	if p.Status != Done || p.Progress.Done != 3 || p.Steps[0].RestoreTest != "passed" {
		t.Fatalf("purge: %s %+v %s %+v", p.Status, p.Progress, p.Note, p.Steps[0])
	}
	_, err = b.plans.Rollback(ctx, p.ID, carol)
	wantCode(t, err, fault.Refused, "cannot be rolled back")
}

// A restore plan puts tenants back as of a moment, one tenant per step, in
// waves; its rollback undoes each restore, to the byte.
func TestRestorePlan(t *testing.T) {
	t.Parallel()
	b := setup(t, options{backup: true, internal: 1})
	good := b.digests(t, 10)
	if err := b.ship(ctx); err != nil {
		t.Fatal(err)
	}
	// Capture stamps commits to the millisecond: a moment a whole
	// millisecond before the script, after everything before it.
	moment := b.clock.Now().Truncate(time.Millisecond).Add(-time.Millisecond)
	// A script garbles some tenants' issues (updates pass the guards).
	if _, err := b.raw["tracker"].Exec("UPDATE issues SET title = 'garbled' WHERE site_id IN (1, 2, 3, 4)"); err != nil {
		t.Fatal(err)
	}
	if err := b.ship(ctx); err != nil {
		t.Fatal(err)
	}
	garbled := b.digests(t, 10)
	_, err := b.plans.Create(ctx, CreateRequest{Action: "restore", Kind: tenant.KindSite, Targets: keys(1, 4, ""), Reason: "undo the script", Requester: "alice"})
	wantCode(t, err, fault.Invalid, "moment")
	p := b.create(t, CreateRequest{Action: "restore", Kind: tenant.KindSite, Targets: keys(1, 4, ""), Reason: "undo the script", To: &moment, Waves: []string{"internal", "100%"}})
	p = b.approve(t, p, carol)
	p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	if p.Status != Done || p.Progress.Done != 4 {
		t.Fatalf("restore plan: %s %+v %s", p.Status, p.Progress, p.Note)
	}
	after := b.digests(t, 10)
	for i := 1; i <= 10; i++ {
		k := "tracker/" + itoa(i)
		if after[k] != good[k] {
			t.Fatalf("site %d after the restore plan: %s; before the script %s", i, after[k], good[k])
		}
	}
	if p = must[*Plan](t)(b.plans.Rollback(ctx, p.ID, carol)); p.Status != RolledBack {
		t.Fatalf("rollback: %s %s", p.Status, p.Note)
	}
	if !maps.Equal(garbled, b.digests(t, 10)) {
		t.Fatal("the rollback of a restore plan did not bring back exactly what the restores replaced")
	}
}
