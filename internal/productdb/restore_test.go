package productdb

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"lifeline/internal/change"
	"lifeline/internal/fault"
)

// image is a tenant's rows as a rebuild from the backup would hand them
// over: here read from the live tables at "the moment", through a path
// (LiveRows) independent of the swap's SQL.
type image map[string][][]change.Value

func (x *env) image(t *testing.T, rts []RestoreTable, tenant string) image {
	t.Helper()
	out := image{}
	for i := range rts {
		rt := &rts[i]
		err := x.db.LiveRows(x.ctx, rt, tenant, func(vals []change.Value) error {
			out[rt.Name] = append(out[rt.Name], append([]change.Value(nil), vals...))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// images prepares the restore and takes the tenants' images.
func (x *env) images(t *testing.T, tenants ...string) ([]RestoreTable, map[string]image) {
	t.Helper()
	rts, err := x.db.PrepareRestore(x.ctx, x.l)
	if err != nil {
		t.Fatal(err)
	}
	imgs := map[string]image{}
	for _, k := range tenants {
		imgs[k] = x.image(t, rts, k)
	}
	return rts, imgs
}

// markers checks which tenants op restored (has an applied marker for).
func (x *env) markers(t *testing.T, op string, restored map[string]bool) {
	t.Helper()
	for k, done := range restored {
		if _, err := x.db.RestoreMarker(x.ctx, op, k); (err == nil) != done {
			t.Errorf("tenant %s: applied marker %v, want restored=%v", k, err, done)
		}
	}
}

// stage writes img into staging in chunks of 4 rows and returns its hashes.
func (x *env) stage(t *testing.T, rts []RestoreTable, op, tenant string, img image) map[string]*TableHash {
	t.Helper()
	for i := range rts {
		rt := &rts[i]
		rows := img[rt.Name]
		for start := 0; start < len(rows); start += 4 {
			if err := x.db.StageRows(x.ctx, op, []Batch{{Table: rt, Tenant: tenant, Cols: rt.Columns, Rows: rows[start:min(start+4, len(rows))]}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return x.hashes(rts, img)
}

// hashes are img's hashes per table, as a rebuild computes them.
func (x *env) hashes(rts []RestoreTable, img image) map[string]*TableHash {
	want := map[string]*TableHash{}
	for i := range rts {
		rt := &rts[i]
		h := NewTableHash(x.db.Engine(), rt.Name)
		for _, row := range img[rt.Name] {
			key := make([]change.Value, len(rt.Key))
			for j, k := range rt.KeyIndex() {
				key[j] = row[k]
			}
			h.Add(key, rt.Columns, row, rt.Columns)
		}
		want[rt.Name] = h
	}
	return want
}

// direct is the spec of a direct swap of tenant to img (nothing staged).
func (x *env) direct(rts []RestoreTable, op, tenant string, img image) SwapSpec {
	sp := SwapSpec{OpID: op, Tenant: tenant, Policy: Replace, Tables: rts, Want: x.hashes(rts, img), Rows: []Batch{}}
	for i := range rts {
		if rows := img[rts[i].Name]; len(rows) > 0 {
			sp.Rows = append(sp.Rows, Batch{Table: &rts[i], Tenant: tenant, Cols: rts[i].Columns, Rows: rows})
		}
	}
	return sp
}

func (x *env) restore(t *testing.T, rts []RestoreTable, op, tenant string, p Policy, img image) (SwapResult, error) {
	t.Helper()
	want := x.stage(t, rts, op, tenant, img)
	return x.db.Swap(x.ctx, x.l, SwapSpec{OpID: op, Tenant: tenant, Policy: p, Tables: rts, Want: want})
}

// damage is an "April script" on tenant 2, within the guard limits, plus
// ordinary writes on tenant 3.
func (x *env) damage(t *testing.T) {
	t.Helper()
	x.exec(t, `DELETE FROM comments WHERE site_id = 2 AND id IN (20011, 20012, 20013, 20022);
UPDATE issues SET title = 'overwritten' WHERE site_id = 2 AND id IN (2002, 2003);
UPDATE attachments SET data = NULL WHERE id = 2001;
UPDATE sites SET name = 'renamed', plan = NULL WHERE id = 2;
DELETE FROM insight_links WHERE site_id = 2;
INSERT INTO issues (id, site_id, project_id, title) VALUES (2099, 2, 2001, 'new since');
INSERT INTO comments (id, site_id, issue_id, parent_id, body) VALUES (20991, 2, 2099, NULL, 'on the new issue'), (20992, 2, 2002, 20021, 'a reply since');
UPDATE issues SET title = 'edited by tenant 3' WHERE id = 3001;
INSERT INTO comments (id, site_id, issue_id, parent_id, body) VALUES (30999, 3, 3001, NULL, 'tenant 3 writes on')`)
}

// checkRepaired checks what restoring tenant 2 after damage did per table.
func checkRepaired(t *testing.T, res SwapResult) {
	t.Helper()
	want := map[string]TableResult{
		"sites":         {Rows: 1, Replaced: 1},
		"issues":        {Rows: 6, Replaced: 2, Removed: 1},
		"comments":      {Rows: 18, Inserted: 4, Removed: 2},
		"attachments":   {Rows: 3, Replaced: 1},
		"insight_links": {Rows: 2, Inserted: 2},
	}
	for table, w := range want {
		g := res.Tables[table]
		if g.Rows != w.Rows || g.Inserted != w.Inserted || g.Replaced != w.Replaced || g.Removed != w.Removed || g.Hash == "" {
			t.Errorf("%s: got %+v, want %+v", table, g, w)
		}
	}
}

func TestRestoreSwapExactAndUndoable(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		rts, err := x.db.PrepareRestore(x.ctx, x.l)
		if err != nil {
			t.Fatal(err)
		}
		atT := x.dumpAll(t, "site_id = 2")
		img := x.image(t, rts, "2")
		x.damage(t)
		before2, before3 := x.dumpAll(t, "site_id = 2"), x.dumpAll(t, "site_id = 3")

		res, err := x.restore(t, rts, "op_r1", "2", Replace, img)
		if err != nil {
			t.Fatal(err)
		}
		sameDump(t, "tenant 2 after restore", atT, x.dumpAll(t, "site_id = 2"))
		sameDump(t, "tenant 3 during tenant 2's restore", before3, x.dumpAll(t, "site_id = 3"))
		checkRepaired(t, res)
		if res.State != Active {
			t.Errorf("an active tenant became %s", res.State)
		}
		if n := x.count(t, "SELECT count(*) FROM "+x.db.rd().stage("comments")); n != 0 {
			t.Errorf("%d staged rows left after the swap", n)
		}

		// The same step again is recognised; a new restore to the same
		// moment changes nothing.
		again, err := x.db.Swap(x.ctx, x.l, SwapSpec{OpID: "op_r1", Tenant: "2", Policy: Replace, Tables: rts})
		if err != nil || !again.Already {
			t.Fatalf("repeated step: %+v %v", again, err)
		}
		res2, err := x.restore(t, rts, "op_r2", "2", Replace, img)
		if err != nil {
			t.Fatal(err)
		}
		for table, r := range res2.Tables {
			if r.Inserted+r.Replaced+r.Removed != 0 {
				t.Errorf("restoring an already restored tenant changed %s: %+v", table, r)
			}
		}

		// Undo the first restore: tenant 2 is as the script left it.
		undoTables := rts
		want2, err := x.db.StageUndo(x.ctx, undoTables, "op_r1", "op_u1", "2")
		if err != nil {
			t.Fatal(err)
		}
		u, err := x.db.Swap(x.ctx, x.l, SwapSpec{OpID: "op_u1", Tenant: "2", Policy: Replace, Tables: undoTables, Want: want2,
			States: res.Previous, Action: "restore-undo"})
		if err != nil {
			t.Fatal(err)
		}
		sameDump(t, "tenant 2 after undo", before2, x.dumpAll(t, "site_id = 2"))
		sameDump(t, "tenant 3 after undo", before3, x.dumpAll(t, "site_id = 3"))
		if u.State != Active {
			t.Errorf("after undo the tenant is %s", u.State)
		}
	})
}

func TestRestoreDeletedTenantIsPendingValidation(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		rts, err := x.db.PrepareRestore(x.ctx, x.l)
		if err != nil {
			t.Fatal(err)
		}
		atT := x.dumpAll(t, "site_id = 4")
		img := x.image(t, rts, "4")
		x.remove(t, "4")
		res, err := x.restore(t, rts, "op_r", "4", Replace, img)
		if err != nil {
			t.Fatal(err)
		}
		sameDump(t, "deleted tenant restored", atT, x.dumpAll(t, "site_id = 4"))
		info, err := x.db.Tenant(x.ctx, x.l, "4")
		if err != nil {
			t.Fatal(err)
		}
		if res.State != RestoredPending || info.State != RestoredPending || info.OpID != "op_r" {
			t.Errorf("state after restoring a deleted tenant: %s / %+v", res.State, info)
		}
		if len(res.Previous) == 0 || res.Previous[0].State != Deleted {
			t.Errorf("previous state not recorded: %+v", res.Previous)
		}
	})
}

func TestRestoreMismatchRollsBack(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		rts, err := x.db.PrepareRestore(x.ctx, x.l)
		if err != nil {
			t.Fatal(err)
		}
		img := x.image(t, rts, "2")
		x.damage(t)
		before := x.dumpAll(t, "site_id = 2")
		want := x.stage(t, rts, "op_bad", "2", img)
		// The backup says one comment reads differently from what was staged.
		forged := image{"comments": append([][]change.Value(nil), img["comments"]...)}
		row := append([]change.Value(nil), forged["comments"][0]...)
		row[4] = change.Value{Kind: change.Text, Bytes: []byte("forged")}
		if e.Name == "postgres" {
			row[4].Kind = change.PG
		}
		forged["comments"][0] = row
		h := NewTableHash(x.db.Engine(), "comments")
		rt := &rts[indexOf(rts, "comments")]
		for _, r := range forged["comments"] {
			h.Add([]change.Value{r[0]}, rt.Columns, r, rt.Columns)
		}
		want["comments"] = h
		_, err = x.db.Swap(x.ctx, x.l, SwapSpec{OpID: "op_bad", Tenant: "2", Policy: Replace, Tables: rts, Want: want})
		if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "comments") {
			t.Fatalf("want a mismatch naming comments, got %v", err)
		}
		sameDump(t, "tenant 2 after a failed verification", before, x.dumpAll(t, "site_id = 2"))
		if _, err := x.db.RestoreMarker(x.ctx, "op_bad", "2"); fault.CodeOf(err) != fault.NotFound {
			t.Errorf("a rolled back step left a marker: %v", err)
		}
		if err := x.db.ClearStaging(x.ctx, rts, "op_bad", ""); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRestoreMissingOnlyKeepsNewerEdits(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		rts, err := x.db.PrepareRestore(x.ctx, x.l)
		if err != nil {
			t.Fatal(err)
		}
		img := x.image(t, rts, "2")
		x.damage(t)
		// Another tenant took the key of one of tenant 2's lost links.
		x.exec(t, `INSERT INTO insight_links (id, site_id, object_id, issue_id) VALUES (2001, 3, 3001, 3001)`)
		res, err := x.restore(t, rts, "op_m", "2", MissingOnly, img)
		if err != nil {
			t.Fatal(err)
		}
		if got := x.dump(t, "issues", "id = 2002"); len(got) != 1 || !strings.Contains(got[0], "overwritten") {
			t.Errorf("missing-only overwrote a newer edit: %q", got)
		}
		if n := x.count(t, "SELECT count(*) FROM comments WHERE site_id = 2 AND id IN (20011, 20012, 20013, 20022)"); n != 4 {
			t.Errorf("%d of 4 lost comments came back", n)
		}
		if n := x.count(t, "SELECT count(*) FROM issues WHERE id = 2099"); n != 1 {
			t.Errorf("missing-only removed a row created since")
		}
		if r := res.Tables["insight_links"]; r.Inserted != 1 || r.Conflicts != 1 {
			t.Errorf("insight_links: %+v; want 1 inserted and 1 conflict", r)
		}
		if r := res.Tables["comments"]; r.Inserted != 4 || r.Hash == "" {
			t.Errorf("comments: %+v", r)
		}
	})
}

func TestRestoreKeyTakenByAnotherTenantIsAConflict(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		rts, err := x.db.PrepareRestore(x.ctx, x.l)
		if err != nil {
			t.Fatal(err)
		}
		img := x.image(t, rts, "2")
		x.exec(t, `DELETE FROM insight_links WHERE id = 2001;
INSERT INTO insight_links (id, site_id, object_id, issue_id) VALUES (2001, 3, 3001, 3001)`)
		before := x.dumpAll(t, "site_id IN (2, 3)")
		_, err = x.restore(t, rts, "op_c", "2", Replace, img)
		wantCode(t, err, fault.Conflict, "insight_links", "another tenant")
		sameDump(t, "after a refused swap", before, x.dumpAll(t, "site_id IN (2, 3)"))
		rt := &rts[indexOf(rts, "insight_links")]
		var keys [][]change.Value
		for _, row := range img["insight_links"] {
			keys = append(keys, []change.Value{row[rt.KeyIndex()[0]]})
		}
		n, err := x.db.KeysHeldByOthers(x.ctx, rt, "2", keys)
		if err != nil || n != 1 {
			t.Errorf("KeysHeldByOthers = %d, %v; want 1", n, err)
		}
	})
}

func indexOf(rts []RestoreTable, name string) int {
	for i := range rts {
		if rts[i].Name == name {
			return i
		}
	}
	panic(fmt.Sprint("no table ", name))
}

// Tenants swapped in one transaction fail alone: a verification mismatch
// (tenant 3) is rolled back to its savepoint, and a broken foreign key
// (tenant 4: its projects are not in the backup, its issues still point at
// them) fails at the statement (PostgreSQL) or at commit (SQLite, where
// every tenant is then swapped again on its own); tenants 2 and 5 commit.
func TestSwapAllFailsOnlyTheBadTenants(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		rts, imgs := x.images(t, "2", "3", "4", "5")
		atT := x.dumpAll(t, "site_id = 2")
		x.damage(t)
		before := map[string]map[string][]string{"3": x.dumpAll(t, "site_id = 3"), "4": x.dumpAll(t, "site_id = 4")}
		delete(imgs["4"], "projects")
		var specs []SwapSpec
		for _, k := range []string{"2", "3", "4", "5"} {
			specs = append(specs, SwapSpec{OpID: "op_b", Tenant: k, Policy: Replace, Tables: rts, Want: x.stage(t, rts, "op_b", k, imgs[k])})
		}
		// The backup says tenant 3 has no comments.
		specs[1].Want["comments"] = NewTableHash(x.db.Engine(), "comments")
		errs := map[string]error{}
		if _, err := x.db.SwapAll(x.ctx, x.l, specs, func(i int, _ SwapResult, err error) { errs[specs[i].Tenant] = err }); err != nil {
			t.Fatal(err)
		}
		if len(errs) != 4 || errs["2"] != nil || errs["5"] != nil || !errors.Is(errs["3"], ErrMismatch) || errs["4"] == nil {
			t.Fatalf("outcomes %v; want 2 and 5 restored, 3 a mismatch, 4 failed", errs)
		}
		sameDump(t, "tenant 2, restored", atT, x.dumpAll(t, "site_id = 2"))
		for k, want := range before {
			sameDump(t, "tenant "+k+", failed", want, x.dumpAll(t, "site_id = "+k))
		}
		x.markers(t, "op_b", map[string]bool{"2": true, "3": false, "4": false, "5": true})
	})
}

// Several tenants swapped in one transaction end exactly as one by one:
// tenant 2 repaired with the same counts, undamaged tenants 4 and 5
// unchanged, tenant 3 untouched, and the trash right for undo.
func TestSwapAllSeveralTenants(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		rts, err := x.db.PrepareRestore(x.ctx, x.l)
		if err != nil {
			t.Fatal(err)
		}
		atT := x.dumpAll(t, "site_id IN (2, 4, 5)")
		imgs := map[string]image{}
		for _, k := range []string{"2", "4", "5"} {
			imgs[k] = x.image(t, rts, k)
		}
		x.damage(t)
		before2, before3 := x.dumpAll(t, "site_id = 2"), x.dumpAll(t, "site_id = 3")
		var specs []SwapSpec
		for _, k := range []string{"2", "4", "5"} {
			specs = append(specs, SwapSpec{OpID: "op_s", Tenant: k, Policy: Replace, Tables: rts, Want: x.stage(t, rts, "op_s", k, imgs[k])})
		}
		results := map[string]SwapResult{}
		_, err = x.db.SwapAll(x.ctx, x.l, specs, func(i int, res SwapResult, err error) {
			if err != nil {
				t.Errorf("tenant %s: %v", specs[i].Tenant, err)
			}
			results[specs[i].Tenant] = res
		})
		if err != nil {
			t.Fatal(err)
		}
		sameDump(t, "tenants 2, 4, 5 after the restore", atT, x.dumpAll(t, "site_id IN (2, 4, 5)"))
		sameDump(t, "tenant 3 during the restore", before3, x.dumpAll(t, "site_id = 3"))
		checkRepaired(t, results["2"])
		for _, k := range []string{"4", "5"} {
			for table, r := range results[k].Tables {
				if r.Inserted+r.Replaced+r.Removed != 0 || r.Hash == "" {
					t.Errorf("tenant %s, undamaged, %s: %+v", k, table, r)
				}
			}
		}
		if n := x.count(t, "SELECT count(*) FROM "+x.db.rd().stage("comments")); n != 0 {
			t.Errorf("%d staged rows left after the swap", n)
		}
		want, err := x.db.StageUndo(x.ctx, rts, "op_s", "op_su", "2")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := x.db.Swap(x.ctx, x.l, SwapSpec{OpID: "op_su", Tenant: "2", Policy: Replace, Tables: rts, Want: want,
			States: results["2"].Previous, Action: "restore-undo"}); err != nil {
			t.Fatal(err)
		}
		sameDump(t, "tenant 2 after undo", before2, x.dumpAll(t, "site_id = 2"))
	})
}

// A SQLite swap, and a lifecycle step, commits on a connection of its own
// that does not wait for the disk (the log is synced once, after the write
// lock is given back); that connection goes back to the pool waiting for
// the disk again, so Lifeline's other commits (protect, capture's
// bookkeeping) stay durable.
func TestSwapsAndStepsGiveBackDurableConnections(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		if e.Name != "sqlite" {
			t.Skip("PostgreSQL commits are durable when they return")
		}
		x := setup(t, e)
		x.db.db.SetMaxIdleConns(100) // keep every connection the swap used
		var was int
		if err := x.db.db.QueryRowContext(x.ctx, "PRAGMA synchronous").Scan(&was); err != nil {
			t.Fatal(err)
		}
		rts, err := x.db.PrepareRestore(x.ctx, x.l)
		if err != nil {
			t.Fatal(err)
		}
		img := x.image(t, rts, "2")
		x.damage(t)
		if _, err := x.restore(t, rts, "op_d", "2", Replace, img); err != nil {
			t.Fatal(err)
		}
		x.step(t, "op_l", Deactivate, "3", "", Deactivated)
		open := x.db.db.Stats().OpenConnections
		var conns []*sql.Conn
		for range open {
			c, err := x.db.db.Conn(x.ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns = append(conns, c)
		}
		for i, c := range conns {
			var now int
			if err := c.QueryRowContext(x.ctx, "PRAGMA synchronous").Scan(&now); err != nil {
				t.Fatal(err)
			}
			if now != was {
				t.Errorf("connection %d of %d: synchronous = %d after a swap, was %d", i+1, open, now, was)
			}
		}
	})
}

// A direct swap that fails part way through its writes fails alone, in
// the middle of a transaction of several tenants: tenant 2's rows of
// insight_links cannot go back (another tenant holds one of their keys
// now), after its removals, overwrites and other inserts and before its
// read-back, which on PostgreSQL are all sent together (pipeline.go). The
// error names the table; tenant 2 is as it was; tenant 4 before it and
// tenant 3 after it are restored, with their markers.
func TestSwapAllDirectFailsPartWayAlone(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e)
		rts, imgs := x.images(t, "2", "3", "4")
		atT := x.dumpAll(t, "site_id IN (3, 4)")
		x.damage(t)
		x.exec(t, `UPDATE issues SET title = 'edited by tenant 4' WHERE site_id = 4;
INSERT INTO insight_links (id, site_id, object_id, issue_id) VALUES (2001, 3, 3001, 3001)`)
		before2 := x.dumpAll(t, "site_id = 2")
		var specs []SwapSpec
		for _, k := range []string{"4", "2", "3"} {
			specs = append(specs, x.direct(rts, "op_d", k, imgs[k]))
		}
		errs := map[string]error{}
		if _, err := x.db.SwapAll(x.ctx, x.l, specs, func(i int, _ SwapResult, err error) { errs[specs[i].Tenant] = err }); err != nil {
			t.Fatal(err)
		}
		if len(errs) != 3 || errs["4"] != nil || errs["3"] != nil {
			t.Fatalf("outcomes %v; want 4 and 3 restored", errs)
		}
		wantCode(t, errs["2"], fault.Conflict, "tenant 2", "inserting its rows of insight_links", "another tenant")
		sameDump(t, "tenant 2, failed", before2, x.dumpAll(t, "site_id = 2"))
		sameDump(t, "tenants 3 and 4, restored", atT, x.dumpAll(t, "site_id IN (3, 4)"))
		x.markers(t, "op_d", map[string]bool{"4": true, "2": false, "3": true})
	})
}

// TestDirectSwapRoundTrips: on PostgreSQL a small tenant's direct swap is
// three round trips (pipeline.go): its checks with the read of its rows,
// its writes with the read-back, and its last statements with the
// savepoint's release. A statement text new to the connection costs pgx
// one more (it prepares it), so the count is taken on a second tenant; and
// the second tenant, with fewer rows to write, needs no statement the
// first did not prepare (rowSet: a statement's text does not depend on its
// number of rows).
func TestDirectSwapRoundTrips(t *testing.T) {
	x := setup(t, engines[1])
	rts, imgs := x.images(t, "2", "3")
	// Tenant 3 has half as many rows to overwrite as tenant 2.
	x.exec(t, `UPDATE issues SET title = 'damaged' WHERE site_id = 2 OR (site_id = 3 AND id % 2 = 0)`)
	tx, end, err := x.db.beginPipelined(x.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer end()
	defer tx.tx.Rollback()
	prepared := func() (n int) {
		if err := tx.tx.QueryRowContext(x.ctx, "SELECT count(*) FROM pg_prepared_statements").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var after2 int
	for _, k := range []string{"2", "3"} {
		before := tx.sends
		if err := x.db.later(x.ctx, tx, func(err error) error { return err }, nil, "SAVEPOINT lifeline_tenant"); err != nil {
			t.Fatal(err)
		}
		res, err := x.db.swapOne(x.ctx, tx, x.l, x.direct(rts, "op_rt", k, imgs[k]))
		if err != nil {
			t.Fatal(err)
		}
		if res.Tables["issues"].Replaced == 0 {
			t.Fatalf("tenant %s: nothing replaced in issues: %+v", k, res.Tables)
		}
		if err := x.db.later(x.ctx, tx, func(err error) error { return err }, nil, "RELEASE SAVEPOINT lifeline_tenant"); err != nil {
			t.Fatal(err)
		}
		if err := x.db.flush(x.ctx, tx); err != nil {
			t.Fatal(err)
		}
		if n := tx.sends - before; k == "3" && n != 3 {
			t.Errorf("tenant %s swapped in %d round trips, want 3", k, n)
		}
		// The connection prepared every statement of a swap with tenant
		// 2: their texts do not depend on the number of rows.
		if k == "2" {
			after2 = prepared()
		} else if n := prepared(); n != after2 {
			t.Errorf("tenant 3's swap prepared %d statements more than tenant 2's: a statement's text depends on its rows", n-after2)
		}
	}
}
