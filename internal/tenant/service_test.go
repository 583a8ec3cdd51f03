package tenant

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
)

var ctx = context.Background()

// setup builds two small SQLite products whose tenants have text keys, one
// of which ("wiki") is also a product name, and a service over them.
func setup(t *testing.T) (*Service, map[string]*sql.DB) {
	t.Helper()
	dir := t.TempDir()
	store, err := state.Open(ctx, "sqlite:state.db", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	svc := &Service{Store: store, Retention: time.Hour, Owner: "test:1"}
	raws := map[string]*sql.DB{}
	for _, name := range []string{"tracker", "wiki"} {
		raw, err := sql.Open("sqlite", filepath.Join(dir, name+".db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		for _, stmt := range []string{
			"CREATE TABLE sites (key TEXT PRIMARY KEY, name TEXT)",
			"CREATE TABLE docs (id INTEGER PRIMARY KEY, site TEXT REFERENCES sites(key), body TEXT)",
			"INSERT INTO sites VALUES ('acme', 'Acme'), ('wiki', 'A tenant named like a product'), ('zed', 'Zed')",
			"INSERT INTO docs (site, body) VALUES ('acme', 'a1'), ('acme', 'a2'), ('zed', 'z1')",
		} {
			if _, err := raw.Exec(stmt); err != nil {
				t.Fatal(err)
			}
		}
		raws[name] = raw
		db, err := productdb.Open(ctx, "sqlite:"+name+".db", dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		l, err := Protect(ctx, store, db, productdb.Spec{Product: name, TenantColumn: "site", TenantsTable: "sites"}, "tester")
		if err != nil {
			t.Fatal(err)
		}
		svc.Products = append(svc.Products, &Product{Name: name, DB: db, Layout: l})
	}
	return svc, raws
}

func TestKeyMatchingSeveralKindsIsRefused(t *testing.T) {
	t.Parallel()
	svc, _ := setup(t)
	_, err := svc.Run(ctx, Request{Action: productdb.Deactivate, Target: "site:wiki", Actor: "a"})
	if fault.ExitStatus(err) != 2 || !strings.Contains(fmt.Sprint(err), "more than one kind") {
		t.Fatalf("a key that is both a tenant and a product: %v", err)
	}
	if _, err := svc.Run(ctx, Request{Action: productdb.Deactivate, Target: "site:acme", Actor: "a"}); err != nil {
		t.Fatalf("an unambiguous key: %v", err)
	}
}

// A step that fails after another product committed is undone, so the
// operation is never left half done.
func TestFailedStepRollsBackCommittedSteps(t *testing.T) {
	t.Parallel()
	svc, raws := setup(t)
	if _, err := svc.Run(ctx, Request{Action: productdb.Deactivate, Target: "site:acme", Actor: "a"}); err != nil {
		t.Fatal(err)
	}
	steps := 0
	svc.BeforeStep = func(st state.Step) {
		if steps++; steps == 2 {
			// The second product's state changes under the operation, so its
			// step fails inside its transaction.
			if _, err := svc.Run(ctx, Request{Action: productdb.Reactivate, Target: "product:acme/wiki", Actor: "b"}); err == nil {
				t.Error("a second operation on a locked tenant was allowed")
			}
			if _, err := raws["wiki"].Exec("DELETE FROM lifeline_tenant_state WHERE tenant = 'acme'"); err != nil {
				t.Error(err)
			}
		}
	}
	_, err := svc.Run(ctx, Request{Action: productdb.Delete, Target: "site:acme", Actor: "a", Reason: "test"})
	if err == nil {
		t.Fatal("the delete succeeded although its second step could not")
	}
	svc.BeforeStep = nil
	var live int
	if err := raws["tracker"].QueryRow("SELECT count(*) FROM docs WHERE site = 'acme'").Scan(&live); err != nil || live != 2 {
		t.Fatalf("tracker rows after the rolled-back delete: %d (%v); want both back", live, err)
	}
	d, err := svc.Show(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if st := d.Products["tracker"].State; st != productdb.Deactivated {
		t.Errorf("tracker state after rollback = %s, want deactivated", st)
	}
	ops, err := svc.Store.ListOperations(ctx, state.OpFilter{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if ops[0].Action != "delete" || ops[0].Status != state.OpRolledBack {
		t.Errorf("the failed delete is %s %s, want delete rolled_back", ops[0].Action, ops[0].Status)
	}
	// The tenant is free again.
	if _, err := svc.Run(ctx, Request{Action: productdb.Reactivate, Target: "product:acme/tracker", Actor: "a"}); err != nil {
		t.Errorf("tenant still locked after the rollback: %v", err)
	}
}

func TestPurgeAfterRetentionWritesTheErasureLedger(t *testing.T) {
	t.Parallel()
	svc, raws := setup(t)
	now := time.Now()
	svc.Now = func() time.Time { return now }
	for _, r := range []Request{
		{Action: productdb.Deactivate, Target: "site:zed"},
		{Action: productdb.Delete, Target: "site:zed", Reason: "closed"},
	} {
		r.Actor = "a"
		if _, err := svc.Run(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	_, err := svc.Run(ctx, Request{Action: productdb.Purge, Target: "site:zed", Actor: "a", Reason: "gdpr"})
	if fault.CodeOf(err) != fault.Refused || !strings.Contains(err.Error(), "retention") {
		t.Fatalf("purge inside retention: %v", err)
	}
	now = now.Add(2 * time.Hour)
	if _, err := svc.Run(ctx, Request{Action: productdb.Purge, Target: "site:zed", Actor: "a"}); fault.CodeOf(err) != fault.Invalid {
		t.Fatalf("purge without a reason: %v", err)
	}
	op, err := svc.Run(ctx, Request{Action: productdb.Purge, Target: "site:zed", Actor: "a", Reason: "gdpr request 17"})
	if err != nil {
		t.Fatal(err)
	}
	ers, err := svc.Store.Erasures(ctx, "zed")
	if err != nil || len(ers) != 2 {
		t.Fatalf("erasures = %v, %v; want one per product", ers, err)
	}
	if ers[0].OpID != op.ID || ers[0].Reason != "gdpr request 17" || ers[0].Rows["docs"] != 1 {
		t.Errorf("ledger entry = %+v", ers[0])
	}
	var trash int
	if err := raws["tracker"].QueryRow("SELECT count(*) FROM lifeline_trash_docs WHERE lifeline_tenant = 'zed'").Scan(&trash); err != nil || trash != 0 {
		t.Errorf("rows left in trash after purge: %d (%v)", trash, err)
	}
	if _, err := svc.Run(ctx, Request{Action: productdb.Undelete, Target: "site:zed", Actor: "a"}); fault.CodeOf(err) != fault.Conflict {
		t.Errorf("undelete after purge: %v; want a conflict", err)
	}
}

// Another tool's tables (Litestream's bookkeeping, say) are not drift;
// a new column in a protected table is.
func TestDriftIgnoresTablesProtectionDoesNotDependOn(t *testing.T) {
	t.Parallel()
	svc, raws := setup(t)
	p := svc.Products[0]
	if _, err := raws["tracker"].Exec("CREATE TABLE _litestream_seq (id INTEGER PRIMARY KEY, seq INTEGER)"); err != nil {
		t.Fatal(err)
	}
	if d, err := Drift(ctx, svc.Store, p); err != nil || len(d) != 0 {
		t.Fatalf("an unrelated table counted as drift: %v %v", d, err)
	}
	if _, err := raws["tracker"].Exec("ALTER TABLE docs ADD COLUMN extra TEXT"); err != nil {
		t.Fatal(err)
	}
	if d, err := Drift(ctx, svc.Store, p); err != nil || len(d) == 0 || !strings.Contains(strings.Join(d, " "), "extra") {
		t.Fatalf("a new column in a protected table: %v %v", d, err)
	}
}

// Under CheckSchemaOnce a product's schema is compared with the recorded
// one once: a drift that exists at the first check refuses, and a drift
// after it is seen again only outside that context (each operation a plan
// runs checks on its own).
func TestCheckSchemaOnce(t *testing.T) {
	t.Parallel()
	svc, raws := setup(t)
	req := Request{Action: productdb.Deactivate, Target: "site:acme"}
	once := CheckSchemaOnce(ctx)
	if _, _, err := svc.Check(once, req); err != nil {
		t.Fatal(err)
	}
	if _, err := raws["tracker"].Exec("ALTER TABLE docs ADD COLUMN extra TEXT"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Check(once, req); err != nil {
		t.Fatalf("the second check in one pass inspected the schema again: %v", err)
	}
	for name, c := range map[string]context.Context{"plain": ctx, "a new pass": CheckSchemaOnce(ctx)} {
		if _, _, err := svc.Check(c, req); fault.CodeOf(err) != fault.Refused || !strings.Contains(err.Error(), "drifted") {
			t.Errorf("%s: a drifted schema: %v; want refused", name, err)
		}
	}
}

// TestResumeRefusesWhatIsNotALifecycleOperation: an interrupted undo of a
// restore left running is not resumed (and so not marked failed with its
// tenants half undone) by the lifecycle's resume, which says what does.
func TestResumeRefusesWhatIsNotALifecycleOperation(t *testing.T) {
	svc, _ := setup(t)
	op := &state.Operation{Action: "restore-undo", Actor: "tester", Steps: []state.Step{{Product: "tracker", Tenant: "acme"}}}
	if err := svc.Store.CreateOperation(ctx, op, "gone:1", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Resume(ctx, op.ID)
	if fault.CodeOf(err) != fault.Refused || !strings.Contains(err.Error(), "restore-undo") || !strings.Contains(fault.HintOf(err), "--undo") {
		t.Fatalf("resume of an undo: %v (hint %q)", err, fault.HintOf(err))
	}
	got, err := svc.Store.GetOperation(ctx, op.ID)
	if err != nil || got.Status != state.OpRunning || got.Steps[0].Status != state.StepPending {
		t.Fatalf("the undo was changed: %+v, %v", got, err)
	}
}
