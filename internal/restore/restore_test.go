package restore

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/pgtest"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
)

// april is the raw script of the incident, on one tenant, within the guard
// limits: row deletes (some cascading), overwrites, and a row added.
func (b *bundle) april(t *testing.T, s int) {
	t.Helper()
	blob := "x'00'"
	if b.e.Name == "postgres" {
		blob = `'\x00'::bytea`
	}
	b.exec(t, fmt.Sprintf(`DELETE FROM comments WHERE site_id = %[1]d AND n = 2;
UPDATE docs SET title = 'corrupted', data = %[2]s WHERE site_id = %[1]d;
DELETE FROM docs WHERE id = %[1]d04;
DELETE FROM folders WHERE id = %[1]d3;
UPDATE folders SET parent_id = NULL WHERE id = %[1]d2;
UPDATE sites SET name = 'hacked', plan = 'free' WHERE id = %[1]d;
INSERT INTO insight (id, site_id, label) VALUES (%[1]d000, %[1]d, 'added by the script')`, s, blob))
}

// writers keep inserting docs into tenants ws until the returned stop is
// called; stop returns the ids written per tenant and any error.
func (b *bundle) writers(t *testing.T, ws []int) (stop func() (map[int][]int, error)) {
	t.Helper()
	conn := b.open(t)
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	written := map[int][]int{}
	var firstErr error
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				id := 900000 + w*1000 + i
				_, err := conn.Exec(`INSERT INTO docs (id, site_id, folder_id, title) VALUES ($1, $2, $3, 'written during the restore')`, id, w, w*10+1)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					written[w] = append(written[w], id)
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return func() (map[int][]int, error) {
		close(done)
		wg.Wait()
		return written, firstErr
	}
}

// withoutWriterRows drops the docs the writers added.
func withoutWriterRows(d map[string][]string) map[string][]string {
	out := map[string][]string{}
	for table, rows := range d {
		for _, r := range rows {
			if table == "docs" && strings.Contains(r, "written during the restore") {
				continue
			}
			out[table] = append(out[table], r)
		}
	}
	return out
}

func mustRestore(t *testing.T, b *bundle, req Request) *Report {
	t.Helper()
	if req.Actor == "" {
		req.Actor = "tester"
	}
	rep, err := b.svc.Run(ctx, req)
	if err != nil {
		t.Fatalf("restore: %v (hint: %s)\n%+v", err, fault.HintOf(err), rep)
	}
	return rep
}

// Property 2: after restoring tenants S to T, every row of every tenant in
// S is as in an independent copy taken at T, and every row of every other
// tenant is as just before the restore — with other tenants writing during
// it. Repeating the restore changes nothing; undoing it puts back exactly
// what the script left.
//
// It runs three times: small tenants swapped directly (the default); every
// tenant staged, as a large one is; and tenants found too large part way
// through their rebuild (3 rows of a table at most), whose rows held so far
// are staged with the rest.
func TestRestoreIsExactAgainstAReferenceCopy(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		exactAgainstAReferenceCopy(t, e, 0)
		t.Run("staged", func(t *testing.T) { exactAgainstAReferenceCopy(t, e, -1) })
		t.Run("mixed", func(t *testing.T) { exactAgainstAReferenceCopy(t, e, 3) })
	})
}

func exactAgainstAReferenceCopy(t *testing.T, e engine, directRows int) {
	{
		const n = 24
		b := setup(t, e, n)
		b.svc.DirectRows = directRows
		S, W := []int{3, 7, 11, 19}, []int{5, 6}
		b.exec(t, `UPDATE sites SET plan = 'enterprise' WHERE id = 3;
UPDATE docs SET body = 'edited after the snapshot' WHERE id = 701`)
		T := b.shipNow(t)
		atT := b.dump(t, S...)
		for _, s := range S {
			b.april(t, s)
		}
		b.exec(t, `UPDATE sites SET name = 'an ordinary edit' WHERE id = 2`)
		b.shipNow(t)
		beforeS, beforeOthers, beforeW := b.dump(t, S...), b.dump(t, others(n, S, W)...), b.dump(t, W...)

		stop := b.writers(t, W)
		rep := mustRestore(t, b, Request{Tenants: keys(S...), To: T})
		written, werr := stop()
		if werr != nil {
			t.Errorf("a writer on another tenant failed during the restore: %v", werr)
		}
		sameDump(t, "restored tenants against the copy at T", atT, b.dump(t, S...))
		sameDump(t, "untouched tenants", beforeOthers, b.dump(t, others(n, S, W)...))
		sameDump(t, "tenants written during the restore", beforeW, withoutWriterRows(b.dump(t, W...)))
		for _, w := range W {
			var got int
			if err := b.raw.QueryRow(`SELECT count(*) FROM docs WHERE site_id = $1 AND title = 'written during the restore'`, w).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != len(written[w]) || got == 0 {
				t.Errorf("tenant %d: %d rows written during the restore, %d found", w, len(written[w]), got)
			}
		}
		if rep.Status != "done" || len(rep.Tenants) != len(S) || rep.Operation == "" {
			t.Fatalf("report: %+v", rep)
		}
		for _, tr := range rep.Tenants {
			for _, p := range tr.Products {
				if p.Status != "restored" || p.Hash != "verified" || p.State != productdb.Active || len(p.Tables) != 5 {
					t.Errorf("tenant %s: %+v", tr.Tenant, p)
				}
			}
		}
		op, err := b.store.GetOperation(ctx, rep.Operation)
		if err != nil || op.Status != state.OpDone || op.Action != "restore" || len(op.Steps) != len(S) {
			t.Fatalf("operation: %+v %v", op, err)
		}

		// Repeating it changes nothing.
		again := mustRestore(t, b, Request{Tenants: keys(S...), To: T})
		for _, tr := range again.Tenants {
			for _, p := range tr.Products {
				for _, tb := range p.Tables {
					if tb.Inserted+tb.Replaced+tb.Removed != 0 {
						t.Errorf("repeating the restore changed %s of tenant %s: %+v", tb.Table, tr.Tenant, tb)
					}
				}
			}
		}
		sameDump(t, "after repeating", atT, b.dump(t, S...))

		// Undoing the first restore brings back exactly the damaged state.
		u, err := b.svc.Undo(ctx, rep.Operation, "tester", "")
		if err != nil {
			t.Fatalf("undo: %v\n%+v", err, u)
		}
		sameDump(t, "after undo", beforeS, b.dump(t, S...))
		sameDump(t, "others after undo", beforeOthers, b.dump(t, others(n, S, W)...))
		if op, _ := b.store.GetOperation(ctx, rep.Operation); op.Status != state.OpRolledBack {
			t.Errorf("the undone restore is %s, want rolled_back", op.Status)
		}
	}
}

// Rows of a self-referencing table that form a cycle go back although no
// order of inserting them satisfies the foreign key row by row: a direct
// swap writes them in several statements, finds the reference broken, and
// swaps the tenant again with the foreign keys checked at commit.
func TestRestoreSelfReferenceCycle(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 6)
		b.svc.DirectRows = 0
		b.exec(t, `UPDATE folders SET parent_id = 43 WHERE id = 41`) // 41 -> 43 -> 42 -> 41
		T := b.shipNow(t)
		atT := b.dump(t, 4)
		b.exec(t, `DELETE FROM comments WHERE site_id = 4;
DELETE FROM docs WHERE site_id = 4;
UPDATE folders SET parent_id = NULL WHERE site_id = 4;
DELETE FROM folders WHERE site_id = 4`)
		b.shipNow(t)
		others := b.dump(t, 1, 2, 3, 5, 6)
		rep := mustRestore(t, b, Request{Tenants: keys(4), To: T})
		sameDump(t, "the restored tenant", atT, b.dump(t, 4))
		sameDump(t, "the other tenants", others, b.dump(t, 1, 2, 3, 5, 6))
		for _, tr := range rep.Tenants {
			for _, p := range tr.Products {
				for _, tb := range p.Tables {
					if tb.Table == "folders" && tb.Inserted != 3 {
						t.Errorf("folders: %+v, want 3 rows inserted", tb)
					}
				}
			}
		}
	})
}

// A deleted tenant comes back pending validation, and so does a deleted
// app of it.
func TestRestoredDeletedTenantIsPendingValidation(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 6)
		T := b.shipNow(t)
		atT := b.dump(t, 4)
		b.softDelete(t, "site:4")
		b.shipNow(t)
		rep := mustRestore(t, b, Request{Tenants: []string{"site:4"}, To: T})
		sameDump(t, "deleted tenant", atT, b.dump(t, 4))
		if p := rep.Tenants[0].Products[0]; p.State != productdb.RestoredPending {
			t.Errorf("state after restore: %s", p.State)
		}
		info, err := b.db.Tenant(ctx, b.layout, "4")
		if err != nil || info.State != productdb.RestoredPending {
			t.Errorf("tenant state: %+v %v", info, err)
		}

		// Support confirmed it with the customer: it is active again.
		op, err := b.svc.Validate(ctx, []string{"4"}, "support", "customer confirmed")
		if err != nil || op.Status != state.OpDone {
			t.Fatalf("validate: %+v %v", op, err)
		}
		if info, _ := b.db.Tenant(ctx, b.layout, "4"); info.State != productdb.Active {
			t.Errorf("after validation: %s", info.State)
		}
		if _, err := b.svc.Validate(ctx, []string{"4"}, "support", ""); fault.CodeOf(err) != fault.Conflict {
			t.Errorf("validating an active tenant: %v", err)
		}
		sameDump(t, "after validation", atT, b.dump(t, 4))
	})
}

// --before an operation restores to just before it; --before pos:N to just
// before a change position.
func TestRestoreBeforeAnOperationOrAPosition(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 6)
		b.exec(t, `UPDATE docs SET title = 'first edit' WHERE id = 201`)
		b.shipNow(t)
		atT := b.dump(t, 2)
		b.clock.tick()
		op, err := b.tenants.Run(ctx, tenantReq(productdb.Deactivate, "site:2"))
		if err != nil {
			t.Fatal(err)
		}
		b.clock.tick()
		b.exec(t, `UPDATE docs SET title = 'after the operation' WHERE id = 201`)
		b.shipNow(t)
		rep := mustRestore(t, b, Request{Before: op.ID})
		sameDump(t, "before the operation", atT, b.dump(t, 2))
		if len(rep.Tenants) != 1 || rep.Tenants[0].Tenant != "2" {
			t.Errorf("--before an operation without --tenants should restore its tenants: %+v", rep.Tenants)
		}

		// A raw script at a known position (after the restore's own changes).
		b.shipNow(t)
		b.clock.tick()
		pos := len(b.src.log) + 1
		atPos := b.dump(t, 2)
		b.april(t, 2)
		b.shipNow(t)
		mustRestore(t, b, Request{Tenants: []string{"2"}, Before: fmt.Sprintf("pos:%d", pos)})
		sameDump(t, "before the position", atPos, b.dump(t, 2))
	})
}

func TestRestoreMissingOnlyKeepsNewerEdits(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 4)
		T := b.shipNow(t)
		b.exec(t, `DELETE FROM comments WHERE site_id = 2 AND n = 2;
UPDATE docs SET title = 'a newer edit' WHERE id = 201;
INSERT INTO insight (id, site_id, label) VALUES (2000, 2, 'newer row')`)
		b.shipNow(t)
		rep := mustRestore(t, b, Request{Tenants: []string{"2"}, To: T, Policy: productdb.MissingOnly})
		var n int
		if err := b.raw.QueryRow(`SELECT count(*) FROM comments WHERE site_id = 2`).Scan(&n); err != nil || n != 8 {
			t.Errorf("%d comments after missing-only, want all 8 (%v)", n, err)
		}
		var title string
		if err := b.raw.QueryRow(`SELECT title FROM docs WHERE id = 201`).Scan(&title); err != nil || title != "a newer edit" {
			t.Errorf("missing-only overwrote a newer edit: %q %v", title, err)
		}
		if err := b.raw.QueryRow(`SELECT count(*) FROM insight WHERE id = 2000`).Scan(&n); err != nil || n != 1 {
			t.Errorf("missing-only removed a newer row")
		}
		if got := rep.Tenants[0].Products[0]; got.Hash != "verified" {
			t.Errorf("report: %+v", got)
		}
	})
}

// Rows purged for erasure never come back, whatever the moment.
func TestRestoreRespectsTheErasureLedger(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 6)
		T := b.shipNow(t)
		// Tenant 2 purged from the product; tenant 3's insight app purged.
		b.softDelete(t, "site:2")
		b.softDelete(t, "app:3/tracker/insight")
		// Purge after retention: the product stamps deletes with the real clock.
		b.tenants.Now = func() time.Time { return time.Now().Add(time.Hour) }
		for _, target := range []string{"site:2", "app:3/tracker/insight"} {
			if _, err := b.tenants.Run(ctx, tenantReq(productdb.Purge, target)); err != nil {
				t.Fatal(err)
			}
		}
		b.tenants.Now = b.clock.Now
		b.shipNow(t)
		before := b.dump(t, 2, 3)
		rep, err := b.svc.Run(ctx, Request{Tenants: []string{"2", "3"}, To: T, Actor: "tester"})
		if err != nil {
			t.Fatalf("%v %+v", err, rep)
		}
		after := b.dump(t, 2, 3)
		if len(after["insight"]) != 0 || len(after["sites"]) != 1 {
			t.Errorf("erased rows came back: insight %q, sites %q", after["insight"], after["sites"])
		}
		sameDump(t, "tenant 2 (purged)", map[string][]string{"sites": filter(before["sites"], "2"), "docs": filter(before["docs"], "2")},
			map[string][]string{"sites": filter(after["sites"], "2"), "docs": filter(after["docs"], "2")})
		var st2, st3 *StepReport
		for _, tr := range rep.Tenants {
			if tr.Tenant == "2" {
				st2 = tr.Products[0]
			} else {
				st3 = tr.Products[0]
			}
		}
		if st2 == nil || st2.Status != "erased" {
			t.Errorf("tenant 2: %+v", st2)
		}
		if st3 == nil || st3.Status != "restored" || !strings.Contains(strings.Join(st3.Notes, " "), "insight") {
			t.Errorf("tenant 3: %+v", st3)
		}
	})
}

func filter(rows []string, tenant string) []string {
	var out []string
	for _, r := range rows {
		if strings.Contains(r, "("+tenant+",") || strings.HasPrefix(r, "integer:"+tenant+"|") {
			out = append(out, r)
		}
	}
	return out
}

// Every refusal changes nothing, and says what is wrong.
func TestRefusalsChangeNothing(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 8)
		T := b.shipNow(t)
		b.april(t, 2)
		b.shipNow(t)
		before := b.dump(t)
		ops, _ := b.store.ListOperations(ctx, state.OpFilter{})
		refuse := func(req Request, code fault.Code, words ...string) {
			t.Helper()
			req.Actor = "tester"
			rep, err := b.svc.Run(ctx, req)
			if err == nil {
				t.Fatalf("%+v: not refused", req)
			}
			if fault.CodeOf(err) != code || fault.ExitStatus(err) != 2 {
				t.Errorf("%+v: code %s, want %s: %v", req, fault.CodeOf(err), code, err)
			}
			for _, w := range words {
				if !strings.Contains(err.Error()+" "+fault.HintOf(err), w) {
					t.Errorf("refusal %q does not say %q", err, w)
				}
			}
			if rep == nil || rep.Status != "refused" {
				t.Errorf("report of a refusal: %+v", rep)
			}
			sameDump(t, "after a refusal", before, b.dump(t))
		}
		refuse(Request{Tenants: []string{"2", "nope", "404"}, To: T}, fault.NotFound, "nope", "404")
		refuse(Request{Tenants: []string{"2"}, To: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)}, fault.Refused, "before the oldest", "window")
		refuse(Request{Tenants: []string{"2"}, To: time.Now().AddDate(1, 0, 0)}, fault.Refused, "after the newest")
		// Changes committed but not shipped yet: "now" is not restorable.
		b.exec(t, `UPDATE sites SET plan = 'unshipped' WHERE id = 8`)
		b.clock.tick()
		before = b.dump(t)
		refuse(Request{Tenants: []string{"8"}, To: b.clock.Now()}, fault.Refused, "known complete only up to", "backup run")
		b.shipNow(t)
		before = b.dump(t)
		refuse(Request{Tenants: []string{"2"}}, fault.Invalid, "--to")
		refuse(Request{Tenants: []string{"app:2/tracker/insight"}, To: T}, fault.Invalid, "tenant keys")
		refuse(Request{Tenants: []string{"2"}, To: T, Policy: "sideways"}, fault.Invalid, "missing-only")
		refuse(Request{Tenants: []string{"2"}, Before: "pos:999999"}, fault.Refused, "after the newest")
		refuse(Request{Tenants: []string{"2"}, Before: "op_doesnotexist"}, fault.NotFound, "op_doesnotexist")

		// A protected table changed since protect: refused. A table of
		// another tool (Litestream adds _litestream_seq) is not drift.
		b.exec(t, `CREATE TABLE _litestream_seq (id INTEGER, seq INTEGER)`)
		b.exec(t, `ALTER TABLE insight ADD COLUMN note TEXT`)
		before = b.dump(t)
		refuse(Request{Tenants: []string{"2"}, To: T}, fault.Refused, "protected tables of tracker changed", "insight")
		b.exec(t, `ALTER TABLE insight DROP COLUMN note`)
		before = b.dump(t)

		// A tenant with an operation running.
		busy := &state.Operation{Action: "delete", Actor: "someone", Steps: []state.Step{{Product: "tracker", Tenant: "2"}}}
		if err := b.store.CreateOperation(ctx, busy, "elsewhere:1", time.Hour); err != nil {
			t.Fatal(err)
		}
		refuse(Request{Tenants: []string{"2", "3"}, To: T}, fault.Conflict, busy.ID)
		if err := b.store.FinishOperation(ctx, busy.ID, state.OpDone, ""); err != nil {
			t.Fatal(err)
		}

		// --into a database that is not empty.
		into := b.dsn
		if e.Name == "sqlite" {
			into = "sqlite:" + b.base + "/product.db"
		}
		refuse(Request{Tenants: []string{"2"}, To: T, Into: into}, fault.Conflict, "not empty")

		// A corrupt object holding tenant 2: refused, nothing changed, no
		// staged rows left; --skip-broken restores the others.
		objs, err := b.repo.Objects(ctx, "tracker")
		if err != nil {
			t.Fatal(err)
		}
		b.corruptTenant(t, objs, "2")
		refuse(Request{Tenants: []string{"2", "3"}, To: b.clock.Now()}, fault.Refused, "cannot be rebuilt", "--skip-broken")
		if n := b.staged(t); n != 0 {
			t.Errorf("a refused restore left %d staged rows", n)
		}
		after, _ := b.store.ListOperations(ctx, state.OpFilter{})
		if len(after) != len(ops)+2 { // the busy one, and the refused restore recorded as failed
			t.Errorf("operations: %d before, %d after", len(ops), len(after))
		}
		rep, err := b.svc.Run(ctx, Request{Tenants: []string{"2", "3"}, To: b.clock.Now(), SkipBroken: true, Actor: "tester"})
		if err == nil || fault.ExitStatus(err) != 1 {
			t.Fatalf("--skip-broken with a broken tenant: %v", err)
		}
		for _, tr := range rep.Tenants {
			want := map[string]string{"2": "skipped", "3": "restored"}[tr.Tenant]
			if got := tr.Products[0].Status; got != want {
				t.Errorf("tenant %s: %s, want %s (%s)", tr.Tenant, got, want, tr.Products[0].Error)
			}
		}

		// A missing object: refused.
		if err := removeFile(b.blobDir, objs[0].Key); err != nil {
			t.Fatal(err)
		}
		refuse(Request{Tenants: []string{"4"}, To: T}, fault.Refused, objs[0].Key)
	})
}

func TestRestoreIntoAnEmptyDatabase(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 6)
		T := b.shipNow(t)
		atT := b.dump(t, 2, 5)
		b.april(t, 2)
		b.shipNow(t)
		before := b.dump(t)
		into, base := "sqlite:drill.db", t.TempDir()
		if e.Name == "postgres" {
			into = pgtest.NewDB(t)
		}
		rep := mustRestore(t, b, Request{Tenants: []string{"2", "5"}, To: T, Into: into, IntoBase: base})
		sameDump(t, "the live product after a restore elsewhere", before, b.dump(t))
		for _, tr := range rep.Tenants {
			if p := tr.Products[0]; p.Status != "loaded" || p.Hash != "verified" || p.Rows == 0 {
				t.Errorf("tenant %s: %+v", tr.Tenant, p)
			}
		}
		sameDump(t, "the tenants loaded elsewhere", atT, dumpDB(t, openTarget(t, e.Name, into, base), e.Name))
		_, err := b.svc.Run(ctx, Request{Tenants: []string{"2"}, To: T, Into: into, IntoBase: base, Actor: "tester"})
		if fault.CodeOf(err) != fault.Conflict || !strings.Contains(err.Error(), "not empty") {
			t.Errorf("a second restore into the same database: %v", err)
		}
	})
}

// A dry run reports what a restore would do, and changes nothing.
func TestDryRunPlansAndChangesNothing(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 4)
		b.exec(t, `UPDATE sites SET plan = 'edited' WHERE id = 1`)
		T := b.shipNow(t)
		b.april(t, 2)
		b.shipNow(t)
		before := b.dump(t)
		rep := mustRestore(t, b, Request{Tenants: []string{"2"}, To: T, DryRun: true})
		sameDump(t, "after a dry run", before, b.dump(t))
		if rep.Status != "planned" || rep.Bytes <= 0 || len(rep.Objects) < 2 || rep.Operation != "" {
			t.Errorf("report: %+v", rep)
		}
		got := map[string]TableReport{}
		for _, tb := range rep.Tenants[0].Products[0].Tables {
			got[tb.Table] = tb
		}
		// The script: 4 comments deleted, and by cascade doc 204 with its
		// other comment and folder 23 with doc 202 and its other comment;
		// docs 201 and 203 overwritten, folder 22 changed, the site
		// changed, an insight row added.
		want := map[string][4]int64{ // inserted, replaced, removed, unchanged
			"sites":    {0, 1, 0, 0},
			"folders":  {1, 1, 0, 1},
			"docs":     {2, 2, 0, 0},
			"comments": {6, 0, 0, 2},
			"insight":  {0, 0, 1, 1},
		}
		for table, w := range want {
			g := got[table]
			if [4]int64{g.Inserted, g.Replaced, g.Removed, g.Unchanged} != w {
				t.Errorf("%s: inserted/replaced/removed/unchanged = %d/%d/%d/%d, want %v", table, g.Inserted, g.Replaced, g.Removed, g.Unchanged, w)
			}
		}
		if ops, _ := b.store.ListOperations(ctx, state.OpFilter{Tenant: "2"}); len(ops) != 0 {
			t.Errorf("a dry run recorded operations: %+v", ops)
		}
	})
}

// The same property with internal/capture as the source (SQLite triggers,
// PostgreSQL logical decoding) and real commit times; then a restore of
// the restore (--before it) brings back what it replaced.
func TestRestoreWithRealCapture(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		const n = 10
		b := setupCapture(t, e, n)
		S, W := []int{2, 8}, []int{4}
		b.exec(t, `UPDATE docs SET body = 'captured edit' WHERE id = 203`)
		T := b.shipNow(t)
		atT := b.dump(t, S...)
		for _, s := range S {
			b.april(t, s)
		}
		b.shipNow(t)
		damaged, beforeOthers := b.dump(t, S...), b.dump(t, others(n, S, W)...)
		stop := b.writers(t, W)
		rep := mustRestore(t, b, Request{Tenants: keys(S...), To: T})
		if _, err := stop(); err != nil {
			t.Errorf("writer: %v", err)
		}
		sameDump(t, "restored with real capture", atT, b.dump(t, S...))
		sameDump(t, "others with real capture", beforeOthers, b.dump(t, others(n, S, W)...))

		b.shipNow(t)
		mustRestore(t, b, Request{Before: rep.Operation})
		sameDump(t, "a restore of the restore", damaged, b.dump(t, S...))
	})
}

// A column added since the moment gets its default (and is left out of the
// hash); a column dropped since refuses, unless --allow-drift says to
// restore without its values.
func TestSchemaChangesSinceTheMoment(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 4)
		T := b.shipNow(t)
		b.exec(t, `ALTER TABLE docs ADD COLUMN extra TEXT DEFAULT 'dflt'`)
		if e.Name == "postgres" {
			// SQLite refuses to drop a column its (capture) triggers name.
			b.exec(t, `ALTER TABLE insight DROP COLUMN label`)
		}
		b.protectAgain(t)
		b.exec(t, `DELETE FROM comments WHERE site_id = 2;
UPDATE docs SET title = 'overwritten', extra = 'kept?' WHERE site_id = 2`)
		b.shipNow(t)
		if e.Name == "postgres" {
			before := b.dump(t)
			_, err := b.svc.Run(ctx, Request{Tenants: []string{"2"}, To: T, Actor: "tester"})
			if fault.CodeOf(err) != fault.Refused || !strings.Contains(err.Error(), "label") || !strings.Contains(fault.HintOf(err), "--allow-drift") {
				t.Fatalf("a column dropped since the moment: %v", err)
			}
			sameDump(t, "after the drift refusal", before, b.dump(t))
		}
		rep := mustRestore(t, b, Request{Tenants: []string{"2"}, To: T, AllowDrift: true})
		var n int
		if err := b.raw.QueryRow(`SELECT count(*) FROM docs WHERE site_id = 2 AND extra = 'dflt' AND title IS DISTINCT FROM 'overwritten'`).Scan(&n); err != nil || n != 4 {
			t.Errorf("%d of 4 docs restored with the new column's default (%v)", n, err)
		}
		if err := b.raw.QueryRow(`SELECT count(*) FROM comments WHERE site_id = 2`).Scan(&n); err != nil || n != 8 {
			t.Errorf("%d of 8 comments restored (%v)", n, err)
		}
		p := rep.Tenants[0].Products[0]
		for _, tb := range p.Tables {
			if tb.Table == "docs" && (len(tb.Partial) != 1 || tb.Partial[0] != "extra") {
				t.Errorf("docs: the added column should be left out of the hash: %+v", tb)
			}
		}
		if e.Name == "postgres" && !strings.Contains(strings.Join(p.Notes, " "), "insight.label") {
			t.Errorf("the dropped column is not reported: %q", p.Notes)
		}
	})
}

// What a restore moved to the trash stays for retention.deleted after it
// finished, like soft-deleted rows, then ExpireTrash removes it for good,
// leaving other operations' trash alone; the restore can then no longer be
// undone.
func TestRestoreTrashExpiresWithRetention(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 6)
		T := b.shipNow(t)
		b.softDelete(t, "site:5")
		b.april(t, 2)
		b.shipNow(t)
		rep := mustRestore(t, b, Request{Tenants: []string{"2"}, To: T})
		// count counts the trash rows matching where, in every table.
		count := func(where string, args ...any) int {
			n := 0
			for _, table := range b.layout.Tables {
				var c int
				if err := b.raw.QueryRow("SELECT count(*) FROM "+b.db.TrashTable(table)+" WHERE "+where, args...).Scan(&c); err != nil {
					t.Fatal(err)
				}
				n += c
			}
			return n
		}
		trash := func(op string) int { return count("lifeline_op IN ($1, $2)", op, op+productdb.InsertedSuffix) }
		kept, deleted := trash(rep.Operation), count("lifeline_tenant = '5'")
		if kept == 0 || deleted == 0 {
			t.Fatalf("the restore kept %d rows in the trash and the delete %d; the test needs both", kept, deleted)
		}

		if n, err := b.svc.ExpireTrash(ctx); err != nil || n != 0 {
			t.Fatalf("within retention: removed %d rows, %v; want none", n, err)
		}
		b.clock.mu.Lock()
		b.clock.now = b.clock.now.Add(b.tenants.Retention + time.Minute)
		b.clock.mu.Unlock()
		n, err := b.svc.ExpireTrash(ctx)
		if err != nil || n != int64(kept) {
			t.Fatalf("after retention: removed %d rows, %v; want the restore's %d", n, err, kept)
		}
		if left := trash(rep.Operation); left != 0 {
			t.Errorf("%d trash rows of the restore left", left)
		}
		after := count("lifeline_tenant = '5'")
		if after != deleted {
			t.Errorf("the deleted tenant's trash went from %d to %d rows; retention of deleted tenants is purge's", deleted, after)
		}
		if _, err := b.svc.Undo(ctx, rep.Operation, "tester", ""); fault.CodeOf(err) != fault.Refused || !strings.Contains(err.Error(), "no longer be undone") {
			t.Errorf("undo after the trash expired: %v", err)
		}
	})
}

// Purging a restored tenant erases what its restore kept in the trash too,
// and the restore's undo cannot bring the tenant back.
func TestPurgeErasesTheRestoreTrash(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		b := setup(t, e, 4)
		T := b.shipNow(t)
		b.april(t, 3)
		b.shipNow(t)
		rep := mustRestore(t, b, Request{Tenants: []string{"3"}, To: T})
		b.softDelete(t, "site:3")
		b.clock.mu.Lock()
		b.clock.now = time.Now().Add(b.tenants.Retention + time.Minute) // the product stamps the delete with its own clock
		b.clock.mu.Unlock()
		if _, err := b.tenants.Run(ctx, tenantReq(productdb.Purge, "site:3")); err != nil {
			t.Fatal(err)
		}
		for _, table := range b.layout.Tables {
			var n int
			if err := b.raw.QueryRow("SELECT count(*) FROM " + b.db.TrashTable(table) + " WHERE lifeline_tenant = '3'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("%d trash rows of the purged tenant left in %s", n, table)
			}
		}
		if _, err := b.svc.Undo(ctx, rep.Operation, "tester", ""); err == nil {
			t.Error("undoing the restore of a tenant purged since succeeded")
		}
		if info, err := b.db.Tenant(ctx, b.layout, "3"); err != nil || info.State != productdb.Purged {
			t.Errorf("after the refused undo: %+v %v", info, err)
		}
	})
}
