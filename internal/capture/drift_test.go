package capture

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"lifeline/internal/change"
	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

func hasColumn(ts []change.Table, table, col string) bool {
	for _, t := range ts {
		if t.Name == table {
			return slices.ContainsFunc(t.Columns, func(c change.Column) bool { return c.Name == col })
		}
	}
	return false
}

// TestDrift: a column added after protect never silently loses data. SQLite
// stops (ErrDrift naming the table and column, saying protect fixes it);
// after protect the changes made meanwhile are all still captured, and
// their rows' latest images carry the new column. PostgreSQL follows the
// new shape in the stream and reports it in the batch. A table that gains
// the tenant column stops capture on both until protect captures it.
func TestDrift(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e, 2)
		m, cur := x.snapshot(t, x.src)
		x.exec(t, "INSERT INTO items (site_id, id, title) VALUES ('s000', 1, 'a')")
		cur = x.drain(t, x.src, m, cur)

		x.exec(t, "ALTER TABLE items ADD COLUMN prio {int} DEFAULT 0")
		x.exec(t, "INSERT INTO items (site_id, id, title, prio) VALUES ('s001', 2, 'b', 7)")
		x.exec(t, "UPDATE items SET prio = 9 WHERE id = 1")
		b, err := x.src.Read(x.ctx, cur, 100)
		if e.Name == "sqlite" {
			if !isDrift(err) || fault.CodeOf(err) != fault.Refused {
				t.Fatalf("read after ADD COLUMN: %v, want ErrDrift", err)
			}
			for _, w := range []string{"items", "prio", "lifeline protect"} {
				if !strings.Contains(err.Error()+fault.HintOf(err), w) {
					t.Errorf("drift error lacks %q: %v (hint %q)", w, err, fault.HintOf(err))
				}
			}
			x.protect(t)
			// SQLite refuses to drop a column a trigger names: loud, not lossy.
			if _, err := x.raw.Exec("ALTER TABLE notes DROP COLUMN data"); err == nil {
				t.Fatal("DROP COLUMN of a captured column succeeded")
			}
		} else {
			if err != nil {
				t.Fatal(err)
			}
			checkBatch(t, cur, b)
			if !hasColumn(b.Tables, "items", "prio") {
				t.Fatalf("batch shapes lack the new column: %+v", b.Tables)
			}
			m.batch(t, b)
			cur = b.End
		}
		last := b
		for {
			b, err := x.src.Read(x.ctx, cur, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Changes) == 0 {
				break
			}
			checkBatch(t, cur, b)
			m.batch(t, b)
			cur, last = b.End, b
		}
		if !hasColumn(last.Tables, "items", "prio") {
			t.Fatalf("the last batch's shapes lack the new column: %+v", last.Tables)
		}
		x.same(t, m)

		// A new table with the tenant column is protected by the spec, so
		// capture must not go on without it.
		x.exec(t, "CREATE TABLE labels (id {int} PRIMARY KEY, site_id TEXT NOT NULL, label TEXT)")
		if e.Name == "sqlite" {
			x.exec(t, "INSERT INTO labels VALUES (1, 's000', 'made before protect')")
		}
		x.src.Close() // one reader per slot
		src := x.open(t)
		_, err = src.Read(x.ctx, cur, 100)
		if !isDrift(err) || !strings.Contains(err.Error(), "labels") {
			t.Fatalf("read with an uncaptured table: %v", err)
		}
		src.Close()
		x.protect(t)
		src = x.open(t)
		x.exec(t, "INSERT INTO labels VALUES (2, 's001', 'after')")
		cur = x.drain(t, src, m, cur)
		x.same(t, m)

		if e.Name == "postgres" {
			// A dropped column cannot be described by the recorded shape.
			x.exec(t, "ALTER TABLE notes DROP COLUMN data")
			x.exec(t, "INSERT INTO notes (id, site_id, body) VALUES (1, 's000', 'x')")
			_, err := src.Read(x.ctx, cur, 100)
			if !isDrift(err) || !strings.Contains(err.Error(), "data") {
				t.Fatalf("read after DROP COLUMN: %v", err)
			}
			x.protect(t)
			cur = x.drain(t, src, m, cur)
			x.same(t, m)
		}
	})
}

// TestUnprotect removes guards and capture: triggers, the change log, the
// publication and the replication slot; REPLICA IDENTITY goes back.
func TestUnprotect(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e, 1)
		x.snapshot(t, x.src)
		x.src.Close()
		if err := x.db.Unprotect(x.ctx); err != nil {
			t.Fatal(err)
		}
		count := func(q string, args ...any) int {
			var n int
			if err := x.raw.QueryRow(q, args...).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if e.Name == "sqlite" {
			if n := count(`SELECT count(*) FROM sqlite_master WHERE type = 'trigger' OR name IN ('lifeline_changes', 'lifeline_capture_shapes', 'lifeline_capture_ends')`); n != 0 {
				t.Fatalf("%d capture objects left", n)
			}
		} else {
			name := productdb.CaptureName(x.product)
			if n := count(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, name); n != 0 {
				t.Fatal("replication slot left")
			}
			if n := count(`SELECT count(*) FROM pg_publication WHERE pubname = $1`, name); n != 0 {
				t.Fatal("publication left")
			}
			if n := count(`SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'lifeline%'`); n != 0 {
				t.Fatalf("%d triggers left", n)
			}
			if n := count(`SELECT count(*) FROM pg_class WHERE relname IN ('sites', 'items', 'notes') AND relreplident <> 'd'`); n != 0 {
				t.Fatal("replica identity not restored")
			}
		}
		if _, err := Open(x.ctx, x.db, x.l, Options{}); fault.CodeOf(err) != fault.Refused {
			t.Fatalf("open after unprotect: %v", err)
		}
		// Unprotect twice is fine; protect again works from scratch.
		if err := x.db.Unprotect(x.ctx); err != nil {
			t.Fatal(err)
		}
		x.protect(t)
		src := x.open(t)
		m, cur := x.snapshot(t, src)
		x.exec(t, "INSERT INTO items (site_id, id) VALUES ('s000', 5)")
		x.drain(t, src, m, cur)
		x.same(t, m)
	})
}

// TestAckBacklog: Backlog counts what waits, Ack forgets it (the log rows
// go; the slot's confirmed position moves), and reading behind an Ack is
// refused.
func TestAckBacklog(t *testing.T) {
	each(t, func(t *testing.T, e engine) {
		x := setup(t, e, 1)
		_, cur := x.snapshot(t, x.src)
		for i := range 3 {
			x.exec(t, "INSERT INTO items (site_id, id) VALUES ('s000', $1)", i)
		}
		n, oldest, err := x.src.Backlog(x.ctx, cur)
		if err != nil {
			t.Fatal(err)
		}
		if e.Name == "sqlite" && (n != 3 || time.Since(oldest) > time.Minute) || e.Name == "postgres" && (n != -1 || oldest.IsZero()) {
			t.Fatalf("backlog %d, oldest %v", n, oldest)
		}
		b, err := x.src.Read(x.ctx, cur, 100)
		if err != nil || len(b.Changes) != 3 {
			t.Fatalf("read %d changes, %v", len(b.Changes), err)
		}
		if n, oldest, _ := x.src.Backlog(x.ctx, b.End); e.Name == "postgres" && (n != -1 || oldest != b.Changes[0].Time) {
			t.Fatalf("read but not acknowledged: backlog %d, oldest %v", n, oldest)
		}
		if err := x.src.Ack(x.ctx, b.End); err != nil {
			t.Fatal(err)
		}
		if b2, err := x.src.Read(x.ctx, b.End, 100); err != nil || len(b2.Changes) != 0 {
			t.Fatalf("read after the end: %d changes, %v", len(b2.Changes), err)
		}
		if n, oldest, err := x.src.Backlog(x.ctx, b.End); n != 0 || !oldest.IsZero() || err != nil {
			t.Fatalf("backlog when caught up: %d, %v, %v", n, oldest, err)
		}
		if e.Name == "sqlite" {
			var left int
			if err := x.raw.QueryRow("SELECT count(*) FROM lifeline_changes").Scan(&left); err != nil || left != 1 {
				t.Fatalf("%d log rows left after Ack, %v; the newest stays", left, err)
			}
		} else {
			deadline := time.Now().Add(10 * time.Second)
			for {
				var ok bool
				if err := x.raw.QueryRow("SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = $2",
					lsnText(b.End.Src), productdb.CaptureName(x.product)).Scan(&ok); err != nil {
					t.Fatal(err)
				}
				if ok {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the slot's confirmed position did not reach the acknowledged cursor")
				}
				time.Sleep(50 * time.Millisecond)
			}
			lag, err := x.src.(Lagger).LagBytes(x.ctx)
			if err != nil || lag < 0 {
				t.Fatalf("lag %d, %v", lag, err)
			}
		}
		if _, err := x.src.Read(x.ctx, cur, 100); fault.CodeOf(err) != fault.Refused {
			t.Fatalf("read behind the acknowledgement: %v", err)
		}
		// A new source (a restarted shipper) refuses it too on SQLite, whose
		// log no longer has the rows. PostgreSQL's slot cannot tell an
		// acknowledged position from one confirmed because nothing was
		// pending before it, so a new process trusts the cursor (the
		// repository's, never behind an Ack).
		if e.Name == "sqlite" {
			if _, err := x.open(t).Read(x.ctx, cur, 100); fault.CodeOf(err) != fault.Refused {
				t.Fatalf("new source, read behind the acknowledgement: %v", err)
			}
		}
	})
}

// TestSQLiteCLI: the triggers work in the SQLite the application links, here
// the system's sqlite3 shell: multi-statement transactions, a key change, a
// rollback (no gap in the log), INSERT OR REPLACE and blobs.
func TestSQLiteCLI(t *testing.T) {
	t.Parallel()
	shell, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Skip("no sqlite3 shell")
	}
	x := setup(t, engines[0], 3)
	m, cur := x.snapshot(t, x.src)
	script := `
PRAGMA foreign_keys = ON;
BEGIN;
INSERT INTO items (site_id, id, title, n) VALUES ('s000', 1, 'one', 9223372036854775807), ('s001', 2, 'two', -1);
UPDATE items SET id = 3 WHERE id = 2;
INSERT INTO notes (id, site_id, body, data) VALUES (1, 's002', '', X'00FF00');
COMMIT;
BEGIN;
INSERT INTO items (site_id, id, title) VALUES ('s000', 4, 'rolled back');
ROLLBACK;
INSERT INTO items (site_id, id, title) VALUES ('s002', 5, 'five');
INSERT OR REPLACE INTO items (site_id, id, title) VALUES ('s002', 5, 'replaced');
UPDATE sites SET name = 'renamed ✓' WHERE id = 's001';
DELETE FROM items WHERE id = 1;
`
	cmd := exec.Command(shell, "-bail", filepath.Join(x.base, "product.db"))
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sqlite3: %v\n%s", err, out)
	}
	// The rolled-back insert left no hole in the log's numbering.
	var rows, span int
	if err := x.raw.QueryRow("SELECT count(*), max(seq) - min(seq) + 1 FROM lifeline_changes").Scan(&rows, &span); err != nil || rows != span || rows < 8 {
		t.Fatalf("log has %d rows spanning %d positions, %v", rows, span, err)
	}
	x.drain(t, x.src, m, cur)
	x.same(t, m)
	var n int
	if err := x.raw.QueryRow("SELECT count(*) FROM items").Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d items, %v", n, err)
	}
}

// TestSQLiteKeyAssignments: the key-change trigger fires for every way an
// UPDATE can change a key, including assigning rowid (or oid, _rowid_) to
// an INTEGER PRIMARY KEY table, which changes the key without naming it,
// and an upsert's DO UPDATE; an update assigning the key its own value
// stays one U change.
func TestSQLiteKeyAssignments(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0], 1)
	x.exec(t, `CREATE TABLE docs (id INTEGER PRIMARY KEY, site_id TEXT NOT NULL, v TEXT)`)
	x.protect(t)
	src := x.open(t)
	m, cur := x.snapshot(t, src)
	x.exec(t, `INSERT INTO docs (id, site_id, v) VALUES (1, 's000', 'a'), (2, 's000', 'b'), (3, 's000', 'c'), (4, 's000', 'd');
UPDATE docs SET rowid = 10 WHERE id = 1;
UPDATE docs SET oid = 20, v = 'b2' WHERE id = 2;
UPDATE docs SET _rowid_ = 30 WHERE id = 3;
UPDATE docs SET "ID" = 40 WHERE id = 4;
UPDATE docs SET id = id, v = 'same key' WHERE id = 40;
INSERT INTO docs (id, site_id, v) VALUES (10, 's000', 'upsert') ON CONFLICT (id) DO UPDATE SET id = 50`)
	b, err := src.Read(x.ctx, cur, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, c := range b.Changes {
		ops = append(ops, string(c.Op))
	}
	if got, want := strings.Join(ops, ""), "IIII"+"DI"+"DI"+"DI"+"DI"+"U"+"DI"; got != want {
		t.Fatalf("ops %s, want %s", got, want)
	}
	x.drain(t, src, m, cur)
	x.same(t, m)
}

// TestSQLiteGroups: a backlog nobody read has no known transaction ends, so
// batches are cut at max with TxEnd false and one Tx across them; once reads
// interleave with writes, every batch ends at a recorded end.
func TestSQLiteGroups(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0], 1)
	m, cur := x.snapshot(t, x.src)
	for i := range 100 {
		x.exec(t, "INSERT INTO items (site_id, id) VALUES ('s000', $1)", i)
	}
	var txs []uint64
	for {
		b, err := x.src.Read(x.ctx, cur, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Changes) == 0 {
			break
		}
		checkBatch(t, cur, b)
		// Cut at max until the one known end (the log's top when first
		// read) comes within 4×max.
		last := b.Changes[len(b.Changes)-1]
		final := len(txs)+len(b.Changes) == 100
		if last.TxEnd != final || !final && len(b.Changes) != 10 || final && len(b.Changes) != 40 {
			t.Fatalf("batch of %d after %d ending with TxEnd %v", len(b.Changes), len(txs), last.TxEnd)
		}
		for _, c := range b.Changes {
			txs = append(txs, c.Tx)
		}
		m.batch(t, b)
		cur = b.End
	}
	if groups := slices.Compact(slices.Clone(txs)); len(txs) != 100 || len(groups) != 1 || groups[0] != cur.Src {
		t.Fatalf("one commit group expected, got Tx %v", groups)
	}
	// Interleaved: each read sees whole transactions and records their end.
	for i := range 5 {
		x.exec(t, "INSERT INTO items (site_id, id) VALUES ('s000', $1), ('s000', $2)", 1000+2*i, 1001+2*i)
		x.exec(t, "INSERT INTO items (site_id, id) VALUES ('s000', $1)", 2000+i)
		if _, _, err := x.src.Backlog(x.ctx, cur); err != nil {
			t.Fatal(err)
		}
	}
	b, err := x.src.Read(x.ctx, cur, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Changes) != 3 || !b.Changes[2].TxEnd || b.Changes[0].TxEnd {
		t.Fatalf("first group: %d changes", len(b.Changes))
	}
	x.drain(t, x.src, m, b.End)
	m.batch(t, b)
	x.same(t, m)
}

func TestCut(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		from, top, max uint64
		ends, shapes   []uint64
		end            uint64
		ok             bool
	}{
		{0, 5, 10, []uint64{5}, nil, 5, true},                    // everything fits
		{0, 100, 10, []uint64{100}, nil, 10, false},              // no end known: cut
		{0, 30, 10, []uint64{30}, nil, 30, true},                 // the next end within 4×max
		{0, 100, 10, []uint64{7, 12, 100}, nil, 12, true},        // first end after max
		{0, 100, 10, []uint64{7, 60, 100}, nil, 7, true},         // next end too far: the last before
		{0, 100, 10, []uint64{7, 12, 100}, []uint64{5}, 5, true}, // never past a shape change
		{5, 100, 10, []uint64{12, 100}, []uint64{5}, 12, true},   // shape change behind
	} {
		end, ok := cut(c.from, c.top, c.max, c.ends, c.shapes)
		if end != c.end || ok != c.ok {
			t.Errorf("cut(%d, %d, %d, %v, %v) = %d, %v; want %d, %v", c.from, c.top, c.max, c.ends, c.shapes, end, ok, c.end, c.ok)
		}
	}
}

// makeLegacyCapture turns x's installed SQLite capture into what earlier
// versions installed: one update trigger per table (lifeline_cap_u, an
// INSERT … SELECT … WHERE for the old key and a CASE for the op) instead of
// lifeline_cap_v and lifeline_cap_k; with tenant, also the version before
// that, whose change log had a tenant column after op that every trigger
// wrote. Pending log rows are kept, with their tenant.
func (x *env) makeLegacyCapture(t *testing.T, tenant bool) {
	t.Helper()
	type trig struct{ name, sql string }
	triggers := func() []trig {
		var out []trig
		rows, err := x.raw.Query(`SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'lifeline\_cap\_%' ESCAPE '\'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var tr trig
			if err := rows.Scan(&tr.name, &tr.sql); err != nil {
				t.Fatal(err)
			}
			out = append(out, tr)
		}
		return out
	}
	keyChange := regexp.MustCompile(`^CREATE TRIGGER "lifeline_cap_k_(\w+)" AFTER UPDATE OF .*? ON (\S+) FOR EACH ROW WHEN NOT \((.*)\) BEGIN ` +
		`(INSERT INTO \S+ \([^)]*\)) VALUES \(('\w+'), 'D', (.*?)\); (INSERT INTO \S+ \([^)]*\)) VALUES \(('\w+'), 'I', (.*)\); END$`)
	for _, tr := range triggers() {
		switch {
		case strings.HasPrefix(tr.name, "lifeline_cap_v_"):
			x.exec(t, "DROP TRIGGER "+tr.name)
		case strings.HasPrefix(tr.name, "lifeline_cap_k_"):
			g := keyChange.FindStringSubmatch(tr.sql)
			if g == nil {
				t.Fatalf("trigger %s does not look as expected:\n%s", tr.name, tr.sql)
			}
			x.exec(t, "DROP TRIGGER "+tr.name)
			x.exec(t, `CREATE TRIGGER "lifeline_cap_u_`+g[1]+`" AFTER UPDATE ON `+g[2]+` FOR EACH ROW BEGIN `+
				g[4]+` SELECT `+g[5]+`, 'D', `+g[6]+` WHERE NOT (`+g[3]+`); `+
				g[7]+` VALUES (`+g[8]+`, CASE WHEN `+g[3]+` THEN 'U' ELSE 'I' END, `+g[9]+`); END`)
		}
	}
	if !tenant {
		return
	}
	trigs := triggers()
	tenantOf := map[string]string{"sites": `"id"`, "items": `"site_id"`, "notes": `"site_id"`}
	// The update trigger's first insert is INSERT … SELECT … WHERE, its op
	// a CASE: match the op as anything up to the time.
	values := regexp.MustCompile(`(VALUES \(|SELECT )'(\w+)', (.*?), julianday\('now'\), (NEW|OLD)\.`)
	for _, tr := range trigs {
		x.exec(t, "DROP TRIGGER "+tr.name)
	}
	x.exec(t, `CREATE TABLE lifeline_changes_v1 (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, op TEXT NOT NULL, tenant TEXT, ts REAL NOT NULL, c0, c1, c2, c3, c4);
INSERT INTO lifeline_changes_v1 (seq, tbl, op, tenant, ts, c0, c1, c2, c3, c4)
  SELECT seq, tbl, op, CASE tbl WHEN 'notes' THEN CAST(c1 AS TEXT) ELSE CAST(c0 AS TEXT) END, ts, c0, c1, c2, c3, c4 FROM lifeline_changes;
DROP TABLE lifeline_changes;
ALTER TABLE lifeline_changes_v1 RENAME TO lifeline_changes`)
	for _, tr := range trigs {
		legacy := strings.ReplaceAll(tr.sql, "(tbl, op, ts, ", "(tbl, op, tenant, ts, ")
		legacy = values.ReplaceAllStringFunc(legacy, func(m string) string {
			g := values.FindStringSubmatch(m)
			return g[1] + "'" + g[2] + "', " + g[3] + ", CAST(" + g[4] + "." + tenantOf[g[2]] + " AS TEXT), julianday('now'), " + g[4] + "."
		})
		if legacy == tr.sql {
			t.Fatalf("trigger %s: the legacy rewrite changed nothing:\n%s", tr.name, tr.sql)
		}
		x.exec(t, legacy)
	}
}

// TestSQLiteLegacyCapture: a product protected by an earlier version (one
// update trigger per table; before that also a log with a tenant column its
// triggers wrote). Capture goes on as it is (key changes included); protect
// moves it to the current triggers without losing or re-imaging a pending
// change, keeps an old tenant column (unused), and is idempotent; every
// change reads with its tenant key, before and after.
func TestSQLiteLegacyCapture(t *testing.T) {
	t.Parallel()
	for _, tenant := range []bool{false, true} {
		t.Run(fmt.Sprintf("tenant_column=%v", tenant), func(t *testing.T) {
			t.Parallel()
			testSQLiteLegacyCapture(t, tenant)
		})
	}
}

func testSQLiteLegacyCapture(t *testing.T, tenant bool) {
	x := setup(t, engines[0], 3)
	m, cur := x.snapshot(t, x.src)
	x.exec(t, "INSERT INTO items (site_id, id, title) VALUES ('s000', 7, 'pending before')")
	x.makeLegacyCapture(t, tenant)
	src := x.open(t)
	if p, err := x.db.CaptureProblems(x.ctx, nil, x.product, x.l.Tables); err != nil || len(p) != 0 {
		t.Fatalf("legacy capture: problems %q, %v", p, err)
	}
	x.exec(t, `INSERT INTO items (site_id, id, title) VALUES ('s000', 1, 'a'), ('s001', 2, 'b');
UPDATE items SET title = 'a2' WHERE id = 1;
UPDATE items SET id = 3 WHERE id = 2;
INSERT INTO notes (id, site_id, body) VALUES (1, 's002', 'n');
UPDATE sites SET name = 'renamed' WHERE id = 's002'`)
	cur = x.drain(t, src, m, cur)
	x.same(t, m)

	// Pending when protect runs: written by the legacy triggers, unread.
	x.exec(t, `UPDATE items SET title = 'pending' WHERE id = 1;
DELETE FROM notes WHERE id = 1;
UPDATE items SET id = 4 WHERE id = 3`)
	before, _, err := src.Backlog(x.ctx, cur)
	if err != nil || before != 4 {
		t.Fatalf("backlog %d, %v; want 4", before, err)
	}
	src.Close()
	logColumns := func() int {
		var n int
		if err := x.raw.QueryRow("SELECT count(*) FROM pragma_table_info('lifeline_changes')").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	wantColumns := logColumns()
	for range 2 {
		x.protect(t)
		var old, current int
		if err := x.raw.QueryRow(`SELECT count(*) FILTER (WHERE name LIKE 'lifeline\_cap\_u\_%' ESCAPE '\' OR sql LIKE '%tenant%'),
			count(*) FILTER (WHERE name LIKE 'lifeline\_cap\_v\_%' ESCAPE '\' OR name LIKE 'lifeline\_cap\_k\_%' ESCAPE '\')
			FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'lifeline\_cap\_%' ESCAPE '\'`).Scan(&old, &current); err != nil || old != 0 || current != 6 {
			t.Fatalf("after protect %d legacy capture triggers are left and %d of the 6 update triggers are there, %v", old, current, err)
		}
		if n := logColumns(); n != wantColumns {
			t.Fatalf("after protect the log has %d columns, want the %d it had", n, wantColumns)
		}
		src = x.open(t)
		if after, _, err := src.Backlog(x.ctx, cur); err != nil || after != before {
			t.Fatalf("protect over the legacy capture changed the backlog from %d to %d (%v)", before, after, err)
		}
		src.Close()
	}
	src = x.open(t)
	x.exec(t, `UPDATE items SET id = 5 WHERE id = 4;
INSERT INTO notes (id, site_id, body, data) VALUES (2, 's001', '', X'00')`)
	if tenant {
		var nullTenants int
		if err := x.raw.QueryRow("SELECT count(*) FROM lifeline_changes WHERE tenant IS NULL").Scan(&nullTenants); err != nil || nullTenants != 3 {
			t.Fatalf("%d log rows without the old tenant column, %v; want the 3 the current triggers wrote", nullTenants, err)
		}
	}
	cur = x.drain(t, src, m, cur)
	x.same(t, m)
}

// A read does not queue behind the application's writers to record where a
// transaction ends: while another connection holds SQLite's write lock, a
// batch stops at the last end already recorded, and the changes after it
// come with the next read, grouped as a read of the whole range groups
// them afterwards.
func TestSQLiteReadDoesNotWaitForTheWriteLock(t *testing.T) {
	t.Parallel()
	x := setup(t, engines[0], 1)
	m, cur := x.snapshot(t, x.src)
	start := cur
	x.exec(t, "INSERT INTO items (site_id, id) VALUES ('s000', 1), ('s000', 2)")
	if _, _, err := x.src.Backlog(x.ctx, cur); err != nil { // records the end of the first transaction
		t.Fatal(err)
	}
	x.exec(t, "INSERT INTO items (site_id, id) VALUES ('s000', 3)")

	conn, err := x.raw.Conn(x.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(x.ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	b, err := x.src.Read(x.ctx, cur, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(x.ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if len(b.Changes) != 2 || !b.Changes[1].TxEnd || !b.Behind {
		t.Fatalf("with the write lock held: %d changes (behind: %v), want the 2 of the recorded transaction and the rest said to be left behind", len(b.Changes), b.Behind)
	}
	var txs []uint64
	for _, c := range b.Changes {
		txs = append(txs, c.Tx)
	}
	next, err := x.src.Read(x.ctx, b.End, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(next.Changes) != 1 || !next.Changes[0].TxEnd || next.Behind {
		t.Fatalf("once the lock is free: %d changes (behind: %v), want the last transaction and nothing left behind", len(next.Changes), next.Behind)
	}
	txs = append(txs, next.Changes[0].Tx)
	again, err := x.src.Read(x.ctx, start, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Changes) != 3 {
		t.Fatalf("read again: %d changes, want 3", len(again.Changes))
	}
	for i, c := range again.Changes {
		if c.Tx != txs[i] {
			t.Fatalf("read again, change %d is in group %d, first read in %d", i, c.Tx, txs[i])
		}
	}
	m.batch(t, again)
	x.same(t, m)
}

// A PostgreSQL read returns once it has every transaction committed before
// it began, even when the stream never pauses (steady writes): before, it
// waited for a pause of Options.Idle and, under a writer that never paused,
// read on to max, holding every change back for as long.
func TestPostgresReadStopsAtItsStartUnderSteadyWrites(t *testing.T) {
	t.Parallel()
	e := engines[1]
	if e.Name != "postgres" {
		t.Fatalf("engines[1] is %s", e.Name)
	}
	x := setup(t, e, 1)
	x.src.Close()
	src, err := Open(x.ctx, x.db, x.l, Options{Idle: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, cur := x.snapshot(t, src)
	for i := range 5 {
		x.exec(t, "INSERT INTO items (site_id, id) VALUES ('s000', $1)", i)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 5; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := x.raw.ExecContext(x.ctx, "INSERT INTO items (site_id, id) VALUES ('s000', $1)", i); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	ctx, cancel := context.WithTimeout(x.ctx, 30*time.Second)
	defer cancel()
	b, err := src.Read(ctx, cur, 1<<30)
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("read under steady writes: %v (a read that waits for a pause in the stream never returns)", err)
	}
	if len(b.Changes) < 5 {
		t.Fatalf("read %d changes, want at least the 5 committed before it", len(b.Changes))
	}
}
