package productdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"lifeline/internal/fault"
)

// Apply runs one lifecycle step for one tenant (or one app of it) in one
// transaction: everything or nothing.
//
// The tenant's state is read and locked inside the transaction (SQLite:
// BEGIN IMMEDIATE; PostgreSQL: the state row is locked FOR UPDATE), so two
// processes cannot both pass the From check. A state outside st.From is a
// fault.Conflict saying what the tenant needs first.
//
// A step that already committed (same OpID, tenant and app) is not applied
// again: Apply returns Already with the rows it recorded then, so an
// interrupted operation can simply be resumed.
//
//   - Deactivate, Reactivate: the state changes; no row is touched.
//   - Delete: the tenant is unlocked for this transaction only, and its rows
//     move to the trash tagged with OpID, children first so no ON DELETE
//     CASCADE fires unseen; the root row goes last. App steps move only the
//     app's tables.
//   - Undelete: the rows of the delete named by the state's op_id move back,
//     parents first.
//   - Purge: that delete's trash rows are removed for good; the state keeps
//     the delete's op_id.
func (db *DB) Apply(ctx context.Context, l *Layout, st Step) (Result, error) {
	if err := checkStep(l, st); err != nil {
		return Result{}, err
	}
	if err := db.requireProtected(ctx); err != nil {
		return Result{}, err
	}
	tx, release, err := db.beginStep(ctx)
	if err != nil {
		return Result{}, err
	}
	defer release()
	defer tx.Rollback()
	// Every step of a tenant locks its product-level state first, then the
	// app's, so steps of one tenant never interleave and never deadlock.
	whole, err := db.lockState(ctx, runNow(tx), st.Tenant, "")
	if err != nil {
		return Result{}, err
	}
	cur := whole
	if st.App != "" {
		if cur, err = db.lockState(ctx, runNow(tx), st.Tenant, st.App); err != nil {
			return Result{}, err
		}
	}

	var recorded string
	err = tx.QueryRowContext(ctx, `SELECT rows_json FROM lifeline_applied WHERE op_id = $1 AND tenant = $2 AND app = $3`,
		st.OpID, st.Tenant, st.App).Scan(&recorded)
	if err == nil {
		res := Result{Already: true, Rows: map[string]int64{}}
		if err := json.Unmarshal([]byte(recorded), &res.Rows); err != nil {
			return Result{}, db.internal(err, "read applied marker")
		}
		return res, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return Result{}, db.internal(err, "read applied marker")
	}

	if whole.state == Active {
		if err := db.requireRoot(ctx, tx, l, st.Tenant); err != nil {
			return Result{}, err
		}
	}
	if len(st.From) > 0 && !slices.Contains(st.From, cur.state) {
		return Result{}, conflict(l, st, cur.state)
	}
	if st.App != "" && (st.Action == Delete || st.Action == Undelete) && (whole.state == Deleted || whole.state == Purged) {
		return Result{}, fault.New(fault.Conflict, fmt.Sprintf("undelete the tenant first: `lifeline tenants undelete site:%s`", st.Tenant),
			"tenant %s is %s in %s; its app %s cannot be %sd on its own", st.Tenant, whole.state, l.Product, st.App, st.Action)
	}

	rows := map[string]int64{}
	opID := st.OpID
	switch st.Action {
	case Delete:
		if _, err := tx.ExecContext(ctx, db.d.unlock(), st.Tenant, st.OpID); err != nil {
			return Result{}, db.internal(err, "unlock tenant")
		}
		tables := stepTables(l, st.App)
		for i := len(tables) - 1; i >= 0; i-- {
			n, err := db.toTrash(ctx, tx, l, tables[i], st)
			if err != nil {
				return Result{}, err
			}
			rows[tables[i]] = n
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM lifeline_unlock WHERE tenant = $1 AND op_id = $2`, st.Tenant, st.OpID); err != nil {
			return Result{}, db.internal(err, "relock tenant")
		}
	case Undelete:
		if cur.op == "" {
			return Result{}, fault.New(fault.Conflict, fmt.Sprintf("see `lifeline tenants show site:%s`", st.Tenant),
				"tenant %s%s in %s is %s but no delete operation is recorded for it: nothing to undelete", st.Tenant, appPart(st.App), l.Product, cur.state)
		}
		for _, t := range stepTables(l, st.App) {
			n, err := db.fromTrash(ctx, tx, l, t, st, cur.op)
			if err != nil {
				return Result{}, err
			}
			rows[t] = n
		}
	case Purge:
		opID = cur.op // the state keeps naming the delete whose rows are gone
		for _, t := range stepTables(l, st.App) {
			cols, err := db.d.columns(ctx, tx, t, true)
			if err != nil {
				return Result{}, db.internal(err, "read trash of "+t)
			}
			if len(cols) == 0 || cur.op == "" {
				rows[t] = 0
				continue
			}
			// Every trash row of the tenant goes, not only the delete's:
			// what restores of it kept (older versions of its rows) is its
			// data too, and must not outlive the erasure.
			res, err := tx.ExecContext(ctx, "DELETE FROM "+db.d.trash(t)+" WHERE lifeline_tenant = $1", st.Tenant)
			if err != nil {
				return Result{}, db.internal(err, "purge trash of "+t)
			}
			rows[t], _ = res.RowsAffected()
		}
	}

	if err := db.setState(ctx, runNow(tx), st.Tenant, st.App, st.To, opID); err != nil {
		return Result{}, err
	}
	if st.App != "" && whole.state == Active {
		if err := db.setState(ctx, runNow(tx), st.Tenant, "", Active, ""); err != nil { // drop the lock placeholder
			return Result{}, err
		}
	}
	js, _ := json.Marshal(rows)
	if _, err := tx.ExecContext(ctx, `INSERT INTO lifeline_applied (op_id, tenant, app, action, rows_json, at) VALUES ($1, $2, $3, $4, $5, $6)`,
		st.OpID, st.Tenant, st.App, string(st.Action), string(js), db.d.now()); err != nil {
		return Result{}, db.internal(err, "record applied marker")
	}
	if err := tx.Commit(); err != nil {
		return Result{}, db.internal(err, "commit step")
	}
	if err := db.SyncLog(); err != nil {
		return Result{}, err
	}
	return Result{Rows: rows}, nil
}

func checkStep(l *Layout, st Step) error {
	var bad []string
	if st.OpID == "" {
		bad = append(bad, "no operation ID")
	}
	if st.Tenant == "" {
		bad = append(bad, "no tenant key")
	}
	switch st.Action {
	case Deactivate, Reactivate, Delete, Undelete, Purge:
	default:
		bad = append(bad, fmt.Sprintf("unknown action %q", st.Action))
	}
	if st.To == "" {
		bad = append(bad, "no target state")
	}
	if st.App != "" {
		if _, ok := l.Apps[st.App]; !ok {
			apps := make([]string, 0, len(l.Apps))
			for a := range l.Apps {
				apps = append(apps, a)
			}
			slices.Sort(apps)
			return fault.New(fault.NotFound, "apps of "+l.Product+": "+orNone(strings.Join(apps, ", ")),
				"product %s has no app %q", l.Product, st.App)
		}
	}
	if len(bad) > 0 {
		return fault.New(fault.Invalid, "", "bad lifecycle step for product %s: %s", l.Product, strings.Join(bad, "; "))
	}
	return nil
}

// stepTables are the tables a step moves, parents first.
func stepTables(l *Layout, app string) []string {
	if app == "" {
		return l.Tables
	}
	return l.AppTables(app, false)
}

func appPart(app string) string {
	if app == "" {
		return ""
	}
	return " app " + app
}

func target(l *Layout, st Step) string {
	if st.App == "" {
		return "site:" + st.Tenant
	}
	return "app:" + st.Tenant + "/" + l.Product + "/" + st.App
}

func conflict(l *Layout, st Step, state State) error {
	need := make([]string, len(st.From))
	for i, s := range st.From {
		need[i] = string(s)
	}
	hint := fmt.Sprintf("see its state with `lifeline tenants show %s`", target(l, st))
	switch {
	case state == Active && slices.Contains(st.From, Deactivated):
		hint = fmt.Sprintf("deactivate it first: `lifeline tenants deactivate %s`", target(l, st))
	case state == Purged:
		hint = "a purged tenant's data is gone; restore it from backups (`lifeline restore`) if it must come back"
	}
	return fault.New(fault.Conflict, hint, "tenant %s%s in %s is %s; %s needs %s",
		st.Tenant, appPart(st.App), l.Product, state, st.Action, strings.Join(need, " or "))
}

type lockedState struct {
	state State
	op    string
}

// lockState reads (tenant, app)'s state and locks it until the transaction
// ends. A missing row is active; a placeholder row is inserted so there is
// something to lock (it is removed again if the state ends up active).
func (db *DB) lockState(ctx context.Context, tx *swapTx, tenant, app string) (lockedState, error) {
	var s lockedState
	if err := db.lockStateLater(ctx, tx, tenant, app, &s); err != nil {
		return lockedState{}, err
	}
	if err := db.flush(ctx, tx); err != nil {
		return lockedState{}, err
	}
	return s, s.check(db)
}

// lockStateLater is lockState through later: s is filled once the
// statements have run (then check it).
func (db *DB) lockStateLater(ctx context.Context, tx *swapTx, tenant, app string, s *lockedState) error {
	fail := func(err error) error { return db.internal(err, "lock tenant state") }
	if err := db.later(ctx, tx, fail, nil, `INSERT INTO lifeline_tenant_state (tenant, app, state, op_id, changed_at)
		VALUES ($1, $2, 'active', '', $3) ON CONFLICT (tenant, app) DO NOTHING`, tenant, app, db.d.now()); err != nil {
		return err
	}
	return db.queryLater(ctx, tx, fail, func(scan func(...any) error) error {
		var state string
		err := scan(&state, &s.op)
		s.state = State(state)
		return err
	}, `SELECT state, op_id FROM lifeline_tenant_state WHERE tenant = $1 AND app = $2`+db.d.forUpdate(), tenant, app)
}

// check reports a state row that lockStateLater did not find.
func (s lockedState) check(db *DB) error {
	if s.state == "" {
		return db.internal(sql.ErrNoRows, "lock tenant state")
	}
	return nil
}

// setState records the new state; active is the absence of a row. It runs
// through later.
func (db *DB) setState(ctx context.Context, tx *swapTx, tenant, app string, to State, opID string) error {
	fail := func(err error) error { return db.internal(err, "set tenant state") }
	if to == Active {
		return db.later(ctx, tx, fail, nil, `DELETE FROM lifeline_tenant_state WHERE tenant = $1 AND app = $2`, tenant, app)
	}
	return db.later(ctx, tx, fail, nil, `UPDATE lifeline_tenant_state SET state = $3, op_id = $4, changed_at = $5 WHERE tenant = $1 AND app = $2`,
		tenant, app, string(to), opID, db.d.now())
}

// requireRoot refuses a step for a tenant the product does not know: no
// state row and no live root row.
func (db *DB) requireRoot(ctx context.Context, q queryer, l *Layout, tenant string) error {
	var one int
	err := q.QueryRowContext(ctx, "SELECT 1 FROM "+db.d.live(l.TenantsTable)+" WHERE "+qi(l.KeyColumn)+" = $1", tenant).Scan(&one)
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) || db.d.badKey(err) {
		return notFound(l, tenant)
	}
	return db.internal(err, "find tenant "+tenant)
}

func notFound(l *Layout, tenant string) error {
	return fault.New(fault.NotFound, "list the tenants with `lifeline tenants list`",
		"no tenant %q in product %s (no row in %s, its trash or the tenant states)", tenant, l.Product, l.TenantsTable)
}

// keyColumn is the column that names a table's tenant: the key itself in
// the tenants table, the tenant column elsewhere.
func keyColumn(l *Layout, table string) string {
	if table == l.TenantsTable {
		return l.KeyColumn
	}
	return l.TenantColumn
}

// toTrash moves the tenant's rows of one table into its trash.
func (db *DB) toTrash(ctx context.Context, tx *sql.Tx, l *Layout, table string, st Step) (int64, error) {
	live, trash, err := db.columnPair(ctx, tx, l, table)
	if err != nil {
		return 0, err
	}
	var names, sel []string
	for _, c := range live {
		if !trash[c.name] {
			return 0, drift(l, table, "column "+c.name+" is not in its trash")
		}
		names = append(names, c.name)
		sel = append(sel, qi(c.name))
	}
	n, err := db.d.move(ctx, tx, moveSpec{
		src: db.d.live(table), where: qi(keyColumn(l, table)) + " = $1", whereArgs: []any{st.Tenant},
		dst: db.d.trash(table), dstCols: append(names, "lifeline_op", "lifeline_tenant"),
		sel: append(sel, "CAST($2 AS TEXT)", "CAST($3 AS TEXT)"), selArgs: []any{st.OpID, st.Tenant},
	})
	if err != nil {
		if db.d.constraint(err) {
			return 0, fault.Wrap(err, fault.Conflict,
				"rows outside this tenant reference its rows; find them with the foreign keys of "+table+" and fix or delete them first",
				"cannot delete tenant %s%s in %s: moving its rows of %s to the trash would break a reference", st.Tenant, appPart(st.App), l.Product, table)
		}
		return 0, db.internal(err, "move rows of "+table+" to the trash")
	}
	return n, nil
}

// fromTrash moves a delete's rows of one table back to the live table. A
// column the database computes (generated) is left for it to compute.
func (db *DB) fromTrash(ctx context.Context, tx *sql.Tx, l *Layout, table string, st Step, delOp string) (int64, error) {
	live, trash, err := db.columnPair(ctx, tx, l, table)
	if err != nil {
		return 0, err
	}
	if len(trash) == 0 {
		return 0, nil
	}
	var names, sel []string
	for _, c := range live {
		if c.generated {
			continue
		}
		if !trash[c.name] {
			return 0, drift(l, table, "column "+c.name+" is not in its trash")
		}
		names = append(names, c.name)
		sel = append(sel, qi(c.name))
	}
	n, err := db.d.move(ctx, tx, moveSpec{
		src: db.d.trash(table), where: "lifeline_tenant = $1 AND lifeline_op = $2", whereArgs: []any{st.Tenant, delOp},
		dst: db.d.live(table), dstCols: names, sel: sel, intoLive: true,
	})
	if err != nil {
		if db.d.constraint(err) {
			return 0, fault.Wrap(err, fault.Conflict,
				"a row with the same key was created since the delete, or a row it references is gone; remove the clash and undelete again",
				"cannot undelete tenant %s%s in %s: rows of %s clash with the live table", st.Tenant, appPart(st.App), l.Product, table)
		}
		return 0, db.internal(err, "move rows of "+table+" back from the trash")
	}
	return n, nil
}

func (db *DB) columnPair(ctx context.Context, tx *sql.Tx, l *Layout, table string) ([]tcol, map[string]bool, error) {
	live, err := db.d.columns(ctx, tx, table, false)
	if err != nil {
		return nil, nil, db.internal(err, "read columns of "+table)
	}
	if len(live) == 0 {
		return nil, nil, drift(l, table, "the table no longer exists")
	}
	tc, err := db.d.columns(ctx, tx, table, true)
	if err != nil {
		return nil, nil, db.internal(err, "read trash columns of "+table)
	}
	trash := map[string]bool{}
	for _, c := range tc {
		trash[c.name] = true
	}
	return live, trash, nil
}

func drift(l *Layout, table, what string) error {
	return fault.New(fault.Refused, "run `lifeline protect` to bring the trash and guards up to date with the schema",
		"product %s: table %s changed since protect (%s)", l.Product, table, what)
}

// Unlocked runs fn in one transaction in which tenant's rows may be deleted
// past the guards, for operations other than the lifecycle steps (an
// in-place restore replacing a tenant's rows, for instance). The unlock row
// is inserted first and deleted before commit, so no other transaction ever
// sees it. fn must not commit or roll back tx.
func (db *DB) Unlocked(ctx context.Context, tenant, opID string, fn func(tx *sql.Tx) error) error {
	if err := db.requireProtected(ctx); err != nil {
		return err
	}
	tx, release, err := db.beginStep(ctx)
	if err != nil {
		return err
	}
	defer release()
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, db.d.unlock(), tenant, opID); err != nil {
		return db.internal(err, "unlock tenant")
	}
	if err := fn(tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM lifeline_unlock WHERE tenant = $1 AND op_id = $2`, tenant, opID); err != nil {
		return db.internal(err, "relock tenant")
	}
	if err := tx.Commit(); err != nil {
		return db.internal(err, "commit")
	}
	return db.SyncLog()
}

// beginStep starts a step's transaction, its foreign keys checked at
// commit (see the dialects' beginStep), on a connection whose commit does
// not wait for the disk under SQLite's write lock (lazyConn): the caller
// calls SyncLog after a commit, before the step is reported done, and
// release once the transaction is over.
func (db *DB) beginStep(ctx context.Context) (tx *sql.Tx, release func(), err error) {
	conn, release, err := db.lazyConn(ctx)
	if err != nil {
		return nil, nil, err
	}
	if tx, err = conn.BeginTx(ctx, nil); err != nil {
		release()
		return nil, nil, db.unavailable(err)
	}
	if err := db.d.beginStep(ctx, tx); err != nil {
		_ = tx.Rollback()
		release()
		return nil, nil, db.internal(err, "begin")
	}
	return tx, release, nil
}

// LiveTable and TrashTable name a product table and its trash table as SQL
// for this engine (quoted, schema-qualified on PostgreSQL).
func (db *DB) LiveTable(table string) string  { return db.d.live(table) }
func (db *DB) TrashTable(table string) string { return db.d.trash(table) }
