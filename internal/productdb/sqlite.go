package productdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"modernc.org/sqlite"
)

// sqliteDialect is the SQLite side of the seam. Everything it installs must
// run on SQLite 3.37 as linked by any application: no unixepoch(), no ->>,
// no STRICT-only syntax.
type sqliteDialect struct{}

func (sqliteDialect) engine() string { return SQLite }

func (sqliteDialect) live(table string) string  { return qi(table) }
func (sqliteDialect) trash(table string) string { return qi("lifeline_trash_" + table) }

func (d sqliteDialect) inspect(ctx context.Context, q queryer) (*Schema, error) {
	names, err := queryStrings(ctx, q, `SELECT name FROM sqlite_master
		WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' AND name NOT LIKE 'lifeline\_%' ESCAPE '\'
		ORDER BY name`)
	if err != nil {
		return nil, err
	}
	s := &Schema{}
	for _, name := range names {
		t := Table{Name: name}
		rows, err := q.QueryContext(ctx, `SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info($1) ORDER BY cid`, name)
		if err != nil {
			return nil, err
		}
		pk := map[int]string{}
		for rows.Next() {
			var c Column
			var def sql.NullString
			var pos int
			if err := rows.Scan(&c.Name, &c.Type, &c.NotNull, &def, &pos); err != nil {
				rows.Close()
				return nil, err
			}
			c.Default = def.String
			if pos > 0 {
				pk[pos] = c.Name
			}
			t.Columns = append(t.Columns, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for i := 1; i <= len(pk); i++ {
			t.PrimaryKey = append(t.PrimaryKey, pk[i])
		}
		s.Tables = append(s.Tables, t)
	}
	// Foreign keys second: a reference without columns means the parent's
	// primary key, which needs every table read.
	for i := range s.Tables {
		t := &s.Tables[i]
		rows, err := q.QueryContext(ctx, `SELECT id, "table", "from", "to", on_delete FROM pragma_foreign_key_list($1) ORDER BY id, seq`, t.Name)
		if err != nil {
			return nil, err
		}
		byID := map[int]*ForeignKey{}
		var ids []int
		for rows.Next() {
			var id int
			var ref, from, onDelete string
			var to sql.NullString
			if err := rows.Scan(&id, &ref, &from, &to, &onDelete); err != nil {
				rows.Close()
				return nil, err
			}
			fk := byID[id]
			if fk == nil {
				fk = &ForeignKey{RefTable: ref, OnDelete: strings.ToUpper(onDelete)}
				byID[id] = fk
				ids = append(ids, id)
			}
			fk.Columns = append(fk.Columns, from)
			if to.Valid {
				fk.RefColumns = append(fk.RefColumns, to.String)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for _, id := range ids {
			fk := byID[id]
			if len(fk.RefColumns) == 0 {
				if p := s.Table(fk.RefTable); p != nil {
					fk.RefColumns = append([]string(nil), p.PrimaryKey...)
				}
			}
			t.ForeignKeys = append(t.ForeignKeys, *fk)
		}
	}
	return s, nil
}

// columns uses table_info, which leaves out generated columns: they are
// neither kept in the trash nor inserted back (SQLite recomputes them).
func (sqliteDialect) columns(ctx context.Context, q queryer, table string, trash bool) ([]tcol, error) {
	if trash {
		table = "lifeline_trash_" + table
	}
	rows, err := q.QueryContext(ctx, `SELECT name, type FROM pragma_table_info($1) ORDER BY cid`, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []tcol
	for rows.Next() {
		var c tcol
		if err := rows.Scan(&c.name, &c.typ); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func (sqliteDialect) base() []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS lifeline_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS lifeline_tenant_state (
			tenant TEXT NOT NULL,
			app TEXT NOT NULL DEFAULT '',
			state TEXT NOT NULL,
			op_id TEXT NOT NULL DEFAULT '',
			changed_at TEXT NOT NULL,
			PRIMARY KEY (tenant, app))`,
		`CREATE TABLE IF NOT EXISTS lifeline_applied (
			op_id TEXT NOT NULL,
			tenant TEXT NOT NULL,
			app TEXT NOT NULL DEFAULT '',
			action TEXT NOT NULL,
			rows_json TEXT NOT NULL,
			at TEXT NOT NULL,
			PRIMARY KEY (op_id, tenant, app))`,
		// A row exists only inside Lifeline's own write transaction, which
		// SQLite serialises: no other connection ever sees it.
		`CREATE TABLE IF NOT EXISTS lifeline_unlock (tenant TEXT NOT NULL PRIMARY KEY, op_id TEXT NOT NULL)`,
		// Lifeline never commits an unlock row, so one found here was written
		// from outside to get past the guards: it is removed.
		`DELETE FROM lifeline_unlock`,
	}
}

// trashType keeps the declared type, so each trash column has the live
// column's affinity and a value keeps its storage class both ways. The one
// exception is ANY (STRICT tables): outside a STRICT table it would mean
// NUMERIC affinity and turn '42' into 42, so the trash column gets no type.
func (sqliteDialect) trashType(t string) string {
	if strings.EqualFold(strings.TrimSpace(t), "ANY") {
		return ""
	}
	return t
}

func (d sqliteDialect) createTrash(t *Table) []string {
	var cols []string
	for _, c := range t.Columns {
		cols = append(cols, strings.TrimSpace(qi(c.Name)+" "+d.trashType(c.Type)))
	}
	cols = append(cols, "lifeline_op TEXT", "lifeline_tenant TEXT")
	name := "lifeline_trash_" + t.Name
	return []string{
		"CREATE TABLE " + qi(name) + " (" + strings.Join(cols, ", ") + ")",
		"CREATE INDEX IF NOT EXISTS " + qi("lifeline_idx_"+t.Name) + " ON " + qi(name) + " (lifeline_tenant, lifeline_op)",
	}
}

func (d sqliteDialect) addTrashColumn(table string, c tcol) string {
	return "ALTER TABLE " + d.trash(table) + " ADD COLUMN " + strings.TrimSpace(qi(c.name)+" "+d.trashType(c.typ))
}

// guards drops every lifeline_* trigger, replaces the guard's counter table
// and creates the triggers l needs, with the limits written into their text.
func (d sqliteDialect) guards(ctx context.Context, tx *sql.Tx, l *Layout) (string, error) {
	old, err := queryStrings(ctx, tx, `SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'lifeline\_%' ESCAPE '\'`)
	if err != nil {
		return "", err
	}
	var stmts []string
	for _, name := range old {
		stmts = append(stmts, "DROP TRIGGER IF EXISTS "+qi(name))
	}
	stmts = append(stmts, sqliteGuardState...)
	for _, t := range l.Tables {
		if t == l.TenantsTable {
			stmts = append(stmts, sqliteRootTriggers(l)...)
		} else {
			stmts = append(stmts, sqliteMassTrigger(l, t))
		}
	}
	if err := execAll(ctx, tx, stmts...); err != nil {
		return "", err
	}
	return "off: SQLite has no DDL triggers", nil
}

// notUnlocked is the WHEN clause of every guard: the row's tenant has no
// unlock row. Keys compare as text, as Lifeline binds them.
func sqliteNotUnlocked(col string) string {
	return "NOT EXISTS (SELECT 1 FROM lifeline_unlock WHERE tenant = coalesce(CAST(OLD." + qi(col) + " AS TEXT), ''))"
}

// sqliteRootTriggers refuse deleting a tenant's root row, and changing its
// key, unless Lifeline unlocked that tenant. RAISE takes only a literal on
// SQLite 3.37, so the message cannot name the key.
func sqliteRootTriggers(l *Layout) []string {
	root, key := l.TenantsTable, l.KeyColumn
	del := fmt.Sprintf("lifeline: refusing to delete the root row of a tenant from %s (product %s); "+
		"delete tenants with `lifeline tenants delete site:<key>` (after `lifeline tenants deactivate site:<key>`). "+
		"Raw deletes of tenant root rows are blocked by Lifeline's guard.", root, l.Product)
	upd := fmt.Sprintf("lifeline: refusing to change the key %s of a tenant's root row in %s (product %s); "+
		"tenant keys are how Lifeline finds a tenant's rows and never change. Raw key updates are blocked by Lifeline's guard.", key, root, l.Product)
	return []string{
		"CREATE TRIGGER " + qi("lifeline_root_"+root) + " BEFORE DELETE ON " + qi(root) + " FOR EACH ROW WHEN " + sqliteNotUnlocked(key) +
			" BEGIN SELECT RAISE(ABORT, " + lit(del) + "); END",
		"CREATE TRIGGER " + qi("lifeline_rootkey_"+root) + " BEFORE UPDATE OF " + qi(key) + " ON " + qi(root) + " FOR EACH ROW WHEN " +
			"CAST(OLD." + qi(key) + " AS TEXT) IS NOT CAST(NEW." + qi(key) + " AS TEXT) AND " + sqliteNotUnlocked(key) +
			" BEGIN SELECT RAISE(ABORT, " + lit(upd) + "); END",
	}
}

// sqliteGuardState (re)creates, empty, the one-row table in which the
// mass-delete guard (sqliteMassTrigger) counts the statement being executed.
// It holds nothing worth keeping between statements, so protect replaces it
// rather than migrating it. lifeline_guard_tenants held the statement's
// tenants in versions before the list in tenants.
var sqliteGuardState = []string{
	`DROP TABLE IF EXISTS lifeline_guard_tenants`,
	`DROP TABLE IF EXISTS lifeline_guard`,
	`CREATE TABLE lifeline_guard (
		id INTEGER PRIMARY KEY CHECK (id = 1),
		stamp REAL,
		mark INTEGER NOT NULL DEFAULT 0,
		upto INTEGER NOT NULL DEFAULT 0,
		fresh INTEGER NOT NULL DEFAULT 0,
		k TEXT NOT NULL DEFAULT '',
		nrows INTEGER NOT NULL DEFAULT 0,
		ntenants INTEGER NOT NULL DEFAULT 0,
		tenants TEXT NOT NULL DEFAULT '')`,
	`INSERT INTO lifeline_guard (id) VALUES (1)`,
}

// sqliteMassTrigger counts the rows and distinct tenants one DELETE
// statement removes from a protected table and aborts the statement past the
// limits. SQLite has no statement-level triggers, so a row trigger must tell
// "the next row of the same statement" from "the first row of a new one".
// Two facts do it, both checked by the tests against the embedded and the
// system SQLite:
//
//   - julianday('now') is the same for every call within one sqlite3_step,
//     that is within one DELETE (with its triggers and cascades). A different
//     stamp is certainly a new statement. But it has millisecond resolution,
//     so statements in a tight loop share a stamp.
//   - total_changes() (per connection) grows only when a statement
//     completes: by each of the trigger's own writes, by the rows of a
//     finished cascade step, and by the statement's own rows once it ends.
//     mark is its value after the guard's last write; the rows counted since
//     the statement began are not in it yet. As long as total_changes() has
//     grown by less than those rows (it is at most upto), a row of the
//     running statement is still unaccounted, so this row belongs to it; once
//     it has grown by all of them (or shrunk: another connection), the
//     earlier statement is over and this row starts a new one.
//
// Each row adds one row to be accounted and two writes of the guard's own,
// so upto moves by 3 per row; a new statement starts at 1 row, upto = mark.
//
// The statement's tenants are a list in the row, each key hex-encoded
// between commas so that instr finds a key exactly; it never holds more
// than the tenant limit. The trigger is two UPDATEs of the one row (one
// page written): the first decides whether the row starts a new statement
// and encodes its key, the second counts and RAISEs past a limit, which
// aborts the statement with everything the guard wrote. The rows limit is
// named first when a row is past both, whichever order SQLite evaluates the
// columns in. SQLite compiles the trigger into every DELETE prepared against
// the table, so its size is a cost: a shorter body (the limits decided
// inside the UPDATE, the decision stored once) compiles faster.
//
// Known blind spot (documented): rows written by the application's own
// triggers or ON DELETE SET NULL actions during a delete also grow
// total_changes(), which can make a long statement look like several short
// ones, so the guard under-counts rather than blocking a legitimate delete.
//
// Per-transaction limits are not possible on SQLite: nothing runs at
// transaction end, and a row trigger cannot tell one transaction from the
// next. RowsPerTransaction is enforced on PostgreSQL only.
func sqliteMassTrigger(l *Layout, table string) string {
	lim := l.Limits
	rowsMsg := fmt.Sprintf("lifeline: refusing to delete more than %d rows of protected table %s (product %s) in one statement; "+
		"delete whole tenants with `lifeline tenants delete site:<key>` (after deactivate), or delete in batches of at most %d rows. "+
		"Mass deletes are blocked by Lifeline's guard (guard.max_rows_per_statement).", lim.RowsPerStatement, table, l.Product, lim.RowsPerStatement)
	tenantsMsg := fmt.Sprintf("lifeline: refusing to delete rows of more than %d tenants from protected table %s (product %s) in one statement; "+
		"delete whole tenants with `lifeline tenants delete site:<key>` (after deactivate), or delete one tenant's rows at a time. "+
		"Mass deletes are blocked by Lifeline's guard (guard.max_tenants_per_statement).", lim.TenantsPerStatement, table, l.Product)
	rows, tenants := fmt.Sprint(lim.RowsPerStatement), fmt.Sprint(lim.TenantsPerStatement)
	return "CREATE TRIGGER " + qi("lifeline_guard_"+table) + " BEFORE DELETE ON " + qi(table) + " FOR EACH ROW WHEN " + sqliteNotUnlocked(l.TenantColumn) + `
BEGIN
  UPDATE lifeline_guard SET
    fresh = stamp IS NOT julianday('now') OR total_changes() NOT BETWEEN mark AND upto,
    k = ',' || hex(coalesce(CAST(OLD.` + qi(l.TenantColumn) + ` AS TEXT), '')) || ','
  WHERE id = 1;
  UPDATE lifeline_guard SET
    nrows = CASE WHEN fresh THEN 1 WHEN nrows < ` + rows + ` THEN nrows + 1 ELSE RAISE(ABORT, ` + lit(rowsMsg) + `) END,
    ntenants = CASE WHEN fresh THEN 1 WHEN instr(tenants, k) THEN ntenants
      WHEN ntenants < ` + tenants + ` OR nrows >= ` + rows + ` THEN ntenants + 1 ELSE RAISE(ABORT, ` + lit(tenantsMsg) + `) END,
    tenants = CASE WHEN fresh THEN k WHEN instr(tenants, k) THEN tenants ELSE tenants || substr(k, 2) END,
    upto = CASE WHEN fresh THEN total_changes() + 1 ELSE upto + 3 END,
    stamp = julianday('now'),
    mark = total_changes() + 1
  WHERE id = 1;
END`
}

// beginStep defers foreign key checks to commit, so rows of self-referencing
// tables and cycles can move in any order within the step.
func (sqliteDialect) beginStep(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, "PRAGMA defer_foreign_keys = ON")
	return err
}

// forUpdate is empty: the step's BEGIN IMMEDIATE already holds the write lock.
func (sqliteDialect) forUpdate() string { return "" }

func (sqliteDialect) unlock() string {
	return "INSERT INTO lifeline_unlock (tenant, op_id) VALUES ($1, $2)"
}

// move is INSERT…SELECT then DELETE with the same condition; no other writer
// can come in between, because the transaction holds SQLite's write lock.
func (sqliteDialect) move(ctx context.Context, tx execer, m moveSpec) (int64, error) {
	res, err := tx.ExecContext(ctx, "INSERT INTO "+m.dst+" ("+quoteAll(m.dstCols)+") SELECT "+strings.Join(m.sel, ", ")+
		" FROM "+m.src+" WHERE "+m.where, append(append([]any{}, m.whereArgs...), m.selArgs...)...)
	if err != nil {
		return 0, err
	}
	in, _ := res.RowsAffected()
	res, err = tx.ExecContext(ctx, "DELETE FROM "+m.src+" WHERE "+m.where, m.whereArgs...)
	if err != nil {
		return 0, err
	}
	out, _ := res.RowsAffected()
	if in != out {
		return 0, fmt.Errorf("copied %d rows but deleted %d", in, out)
	}
	return in, nil
}

func (sqliteDialect) now() any { return time.Now().UTC().Format("2006-01-02T15:04:05.000000000Z07:00") }

func (sqliteDialect) constraint(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	const constraintTrigger = 1811 // SQLITE_CONSTRAINT_TRIGGER: a RAISE, not a key clash
	return e.Code()&0xff == 19 && e.Code() != constraintTrigger
}

func (sqliteDialect) badKey(error) bool { return false }
