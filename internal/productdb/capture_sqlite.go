package productdb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"lifeline/internal/change"
)

// SQLite capture: AFTER triggers on every protected table append the full row
// image to one change log,
//
//	lifeline_changes(seq INTEGER PRIMARY KEY, tbl, op, ts, c0, c1, …, cN)
//
// with N+1 the widest protected table. The c-columns have no declared type,
// so every value keeps its storage class exactly (an INTEGER stays an
// INTEGER, a REAL keeps all 64 bits, a BLOB stays a BLOB). The tenant key is
// in the image: the reader computes its text from the tenant column's value
// exactly as a trigger would (CAST … AS TEXT of the same stored value), so
// the triggers do not write it. Logs made by earlier versions have a tenant
// column after op, which their triggers wrote; it stays, unused, and every
// pending row in it reads the same.
//
// Each trigger body is one INSERT per logged change, of the row's columns as
// they are: no JSON, no sequence lookup, and the change log has no index but
// its rowid (the reader reads by seq).
//
// seq is the rowid: SQLite gives a new row the largest rowid plus one.
// Writers are serialised and a rolled-back transaction (or statement) takes
// its rows with it, so committed seq values are contiguous and in commit
// order: seq is the change's position in the source. Capture's Ack never
// deletes the newest row, so the numbering never starts over. (AUTOINCREMENT
// would guarantee that too, but it updates sqlite_sequence on every insert,
// which cost a fifth of the application's write rate in bench/capture.) ts is
// julianday('now') of the writing statement: SQLite has no commit time.
//
// Per table:
//
//   - lifeline_cap_i_<t>: AFTER INSERT, op I with NEW;
//   - lifeline_cap_v_<t>: AFTER UPDATE, when the update leaves the primary
//     key as it was: op U with NEW;
//   - lifeline_cap_k_<t>: AFTER UPDATE OF the key columns (and rowid), when
//     the update changes the key: op D with OLD, then op I with NEW, so a
//     replay by key removes the old key;
//   - lifeline_cap_d_<t>: AFTER DELETE, op D with OLD (and the guard's
//     bookkeeping, see sqliteGuardNeutral).
//
// SQLite compiles a table's triggers into every statement prepared against
// it, and most applications prepare each statement anew. UPDATE OF keeps
// the key-change trigger out of every UPDATE that does not assign a key
// column, so an ordinary UPDATE carries one plain INSERT. With one trigger
// for both cases (an INSERT … SELECT … WHERE and a CASE), compiling the
// triggers was a third of what capture cost the writer's CPU in
// bench/capture, split a quarter (docs/benchmarks.md). The rowid names
// are in the OF list because assigning rowid changes an INTEGER PRIMARY KEY
// without naming it. Earlier versions installed lifeline_cap_u_<t> for every
// update instead of v and k; it keeps capturing until the next protect
// replaces it.
//
// The trigger SQL uses nothing newer than SQLite 3.37 offers, so it runs in
// whatever library the application links.

// CaptureEnds holds change-log sequences known to end a transaction: the
// last seq a capture read saw (everything visible to a read is committed).
// Triggers cannot see transaction ends; capture records them here so that a
// restarted reader groups changes into transactions exactly as before.
const CaptureEnds = "lifeline_capture_ends"

// sqliteCaptureTriggers are the suffixes of one table's capture triggers.
var sqliteCaptureTriggers = []string{"i", "v", "k", "d"}

func sqliteTrigger(kind, table string) string { return "lifeline_cap_" + kind + "_" + table }

// sqliteMissingCapture lists the capture triggers of table that are not in
// have (names of existing triggers). An earlier version's single update
// trigger (u) stands in for v and k.
func sqliteMissingCapture(have map[string]bool, table string) []string {
	var missing []string
	for _, k := range sqliteCaptureTriggers {
		legacy := (k == "v" || k == "k") && have[sqliteTrigger("u", table)]
		if !have[sqliteTrigger(k, table)] && !legacy {
			missing = append(missing, sqliteTrigger(k, table))
		}
	}
	return missing
}

// sqliteTriggerNames is the set of trigger names in the database.
func sqliteTriggerNames(ctx context.Context, q queryer) (map[string]bool, error) {
	names, err := queryStrings(ctx, q, `SELECT name FROM sqlite_master WHERE type = 'trigger'`)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, name := range names {
		have[name] = true
	}
	return have, nil
}

func (sqliteDialect) captureBefore(ctx context.Context, tx *sql.Tx, l *Layout) (captureState, error) {
	st := captureState{intact: map[string]bool{}}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1`, ChangeLog).Scan(&n); err != nil {
		return st, err
	}
	st.hasLog = n > 0
	have, err := sqliteTriggerNames(ctx, tx)
	if err != nil {
		return st, err
	}
	for _, t := range l.Tables {
		st.intact[t] = len(sqliteMissingCapture(have, t)) == 0
	}
	return st, nil
}

func (d sqliteDialect) captureProblems(ctx context.Context, q queryer, _ string, tables []string) ([]string, error) {
	have, err := sqliteTriggerNames(ctx, q)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range tables {
		if missing := sqliteMissingCapture(have, t); len(missing) > 0 {
			out = append(out, fmt.Sprintf("table %s: capture triggers %s are missing (was the table rebuilt by a migration?)", t, strings.Join(missing, ", ")))
		}
	}
	return out, nil
}

// installCapture creates or widens the change log, records each table's
// shape and (re)creates its triggers. Protect's guards step has just dropped
// every lifeline_* trigger, so the triggers are always created afresh.
//
// Where capture may have missed something, the current rows go into the log
// so the repository ends up exact:
//
//   - a table newly protected while the log already exists: all its rows
//     (the repository's snapshot does not have them);
//   - a table whose capture triggers were missing (rebuilt by a migration):
//     all its rows. Rows deleted while it had no triggers cannot be seen,
//     so it is returned as rebuilt and the shipper takes a fresh snapshot;
//   - a table whose shape changed (a column added): the rows that pending
//     log entries touched, because those entries were written by the old
//     triggers without the new column. Capture stopped (ErrDrift) as soon as
//     the schema changed, so none of them has been shipped yet.
func (d sqliteDialect) installCapture(ctx context.Context, tx *sql.Tx, l *Layout, shapes []change.Table, before captureState) (rebuilt []string, err error) {
	width := 1
	for _, t := range shapes {
		width = max(width, len(t.Columns))
	}
	if !before.hasLog {
		cols := []string{"seq INTEGER PRIMARY KEY", "tbl TEXT NOT NULL", "op TEXT NOT NULL", "ts REAL NOT NULL"}
		for i := range width {
			cols = append(cols, LogColumn(i))
		}
		if _, err := tx.ExecContext(ctx, "CREATE TABLE "+ChangeLog+" ("+strings.Join(cols, ", ")+")"); err != nil {
			return nil, err
		}
	} else {
		have, err := d.columns(ctx, tx, ChangeLog, false)
		if err != nil {
			return nil, err
		}
		n := 0 // value columns: the log may still have the tenant column
		for _, c := range have {
			if c.name == LogColumn(n) {
				n++
			}
		}
		for i := n; i < width; i++ {
			if _, err := tx.ExecContext(ctx, "ALTER TABLE "+ChangeLog+" ADD COLUMN "+LogColumn(i)); err != nil {
				return nil, err
			}
		}
	}
	if _, err := tx.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+CaptureEnds+" (seq INTEGER PRIMARY KEY)"); err != nil {
		return nil, err
	}
	var next int64
	if err := tx.QueryRowContext(ctx, "SELECT coalesce(max(seq), 0) + 1 FROM "+ChangeLog).Scan(&next); err != nil {
		return nil, err
	}
	protected := map[string]bool{}
	for i := range shapes {
		t := &shapes[i]
		protected[t.Name] = true
		prev := before.latest[t.Name]
		if !SameShape(prev, t) {
			if err := recordShape(ctx, tx, t.Name, next, t); err != nil {
				return nil, err
			}
		}
		var stmts []string
		switch {
		case prev != nil && !before.intact[t.Name]:
			rebuilt = append(rebuilt, t.Name)
			fallthrough
		case prev == nil && before.hasLog:
			stmts = append(stmts, sqliteImage(t, ""))
		case prev != nil && !SameShape(prev, t):
			stmts = append(stmts, sqliteImage(t, sqliteTouched(prev, t, next)))
		}
		stmts = append(stmts, sqliteCaptureDDL(t)...)
		if err := execAll(ctx, tx, stmts...); err != nil {
			return nil, err
		}
	}
	for name, t := range before.latest {
		if t != nil && !protected[name] {
			if err := recordShape(ctx, tx, name, next, nil); err != nil {
				return nil, err
			}
		}
	}
	return rebuilt, nil
}

// sqliteLogInsert appends one log row, op, for row r of t.
func sqliteLogInsert(t *change.Table, op, r string) string {
	cols := []string{"tbl", "op", "ts"}
	vals := []string{lit(t.Name), lit(op), "julianday('now')"}
	for i, c := range t.Columns {
		cols = append(cols, LogColumn(i))
		vals = append(vals, r+"."+qi(c.Name))
	}
	return "INSERT INTO " + ChangeLog + " (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(vals, ", ") + ");"
}

// sqliteKeySame is true when an UPDATE leaves the primary key exactly as it
// was: the same storage class and the same bytes (BINARY, whatever the
// column's collation), which is how the repository compares keys.
func sqliteKeySame(t *change.Table) string {
	var conds []string
	for _, i := range t.PrimaryKey {
		c := qi(t.Columns[i].Name)
		conds = append(conds, "OLD."+c+" IS NEW."+c+" COLLATE BINARY AND typeof(OLD."+c+") = typeof(NEW."+c+")")
	}
	return strings.Join(conds, " AND ")
}

func sqliteCaptureDDL(t *change.Table) []string {
	on := " ON " + qi(t.Name) + " FOR EACH ROW"
	same := sqliteKeySame(t)
	var keyCols []string
	for _, i := range t.PrimaryKey {
		keyCols = append(keyCols, qi(t.Columns[i].Name))
	}
	keyCols = append(keyCols, "rowid", "oid", "_rowid_")
	return []string{
		"CREATE TRIGGER " + qi(sqliteTrigger("i", t.Name)) + " AFTER INSERT" + on + " BEGIN " + sqliteLogInsert(t, "I", "NEW") + " END",
		"CREATE TRIGGER " + qi(sqliteTrigger("v", t.Name)) + " AFTER UPDATE" + on + " WHEN " + same + " BEGIN " + sqliteLogInsert(t, "U", "NEW") + " END",
		"CREATE TRIGGER " + qi(sqliteTrigger("k", t.Name)) + " AFTER UPDATE OF " + strings.Join(keyCols, ", ") + on + " WHEN NOT (" + same + ") BEGIN " +
			sqliteLogInsert(t, "D", "OLD") + " " + sqliteLogInsert(t, "I", "NEW") + " END",
		"CREATE TRIGGER " + qi(sqliteTrigger("d", t.Name)) + " AFTER DELETE" + on + " BEGIN " + sqliteLogInsert(t, "D", "OLD") + " " + sqliteGuardNeutral + " END",
	}
}

// sqliteGuardNeutral keeps the delete trigger invisible to the mass-delete
// guard (sqliteMassTrigger), which tells statements apart by how much
// total_changes() grew between two deleted rows: the log insert and this
// update grow it by 2, so the guard's mark and upto move by 2 too.
const sqliteGuardNeutral = "UPDATE lifeline_guard SET mark = mark + 2, upto = upto + 2 WHERE id = 1;"

// sqliteImage logs the current image (op U) of the rows of t matching where
// ("" for all).
func sqliteImage(t *change.Table, where string) string {
	cols := []string{"tbl", "op", "ts"}
	vals := []string{lit(t.Name), "'U'", "julianday('now')"}
	for i, c := range t.Columns {
		cols = append(cols, LogColumn(i))
		vals = append(vals, "x."+qi(c.Name))
	}
	q := "INSERT INTO " + ChangeLog + " (" + strings.Join(cols, ", ") + ") SELECT " + strings.Join(vals, ", ") + " FROM " + qi(t.Name) + " AS x"
	if where != "" {
		q += " WHERE " + where
	}
	return q
}

// sqliteTouched matches the rows of t (alias x) whose key appears in a log
// row written under the old shape prev.
func sqliteTouched(prev, t *change.Table, next int64) string {
	var lhs, rhs []string
	for _, i := range t.PrimaryKey {
		name := t.Columns[i].Name
		j := -1
		for k, c := range prev.Columns {
			if c.Name == name {
				j = k
			}
		}
		if j < 0 {
			return "" // the key changed shape: re-image everything
		}
		lhs = append(lhs, "x."+qi(name))
		rhs = append(rhs, LogColumn(j))
	}
	return "(" + strings.Join(lhs, ", ") + ") IN (SELECT " + strings.Join(rhs, ", ") + " FROM " + ChangeLog +
		" WHERE tbl = " + lit(t.Name) + fmt.Sprintf(" AND seq < %d)", next)
}

func (sqliteDialect) uninstall(ctx context.Context, db *DB, _ string) error {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return db.unavailable(err)
	}
	defer tx.Rollback()
	names, err := queryStrings(ctx, tx, `SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'lifeline\_%' ESCAPE '\'`)
	if err != nil {
		return err
	}
	var stmts []string
	for _, n := range names {
		stmts = append(stmts, "DROP TRIGGER IF EXISTS "+qi(n))
	}
	stmts = append(stmts,
		"DROP TABLE IF EXISTS "+ChangeLog,
		"DROP TABLE IF EXISTS "+CaptureEnds,
		"DROP TABLE IF EXISTS lifeline_capture_shapes",
		"DROP TABLE IF EXISTS lifeline_guard",
		"DROP TABLE IF EXISTS lifeline_guard_tenants", // earlier versions' guards, never re-protected
		unprotectMeta)
	if err := execAll(ctx, tx, stmts...); err != nil {
		return err
	}
	return tx.Commit()
}
