package productdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"lifeline/internal/change"
)

// errNotSet says a batch cannot, or did not, go through swapSet: SwapAll
// swaps its tenants one savepoint each instead.
var errNotSet = errors.New("batch not swapped as a set")

// setSwappable says whether specs can be swapped as one set: a plain
// restore (replace, no states to put back) of the same operation and
// tables, for more than one tenant.
func setSwappable(specs []SwapSpec) bool {
	if len(specs) < 2 {
		return false
	}
	for _, sp := range specs {
		if sp.Policy != Replace || sp.States != nil || sp.OpID != specs[0].OpID || sp.Action != specs[0].Action ||
			!slices.EqualFunc(sp.Tables, specs[0].Tables, func(a, b RestoreTable) bool { return a.Name == b.Name }) {
			return false
		}
	}
	return true
}

// params numbers the arguments of a statement as it is written.
type params struct{ args []any }

func (p *params) add(v any) string {
	p.args = append(p.args, v)
	return "$" + strconv.Itoa(len(p.args))
}

func (p *params) in(keys []string) string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = p.add(k)
	}
	return "(" + strings.Join(out, ", ") + ")"
}

// swapSet swaps the tenants of specs exactly as swapOne does each of them,
// with one statement per table for all of them instead of one per tenant:
// a batch of small tenants costs about what one does. Every tenant is
// still verified on its own (its rows hashed inside the transaction and
// compared with its rebuilt rows), and only its rows are written. Anything
// out of the ordinary — a tenant with no live root row or a key whose text
// is not canonical, one already applied or purged, a table changed while
// the restore ran, any statement failing, any tenant not verifying — makes
// it return errNotSet (or the error), and the caller rolls the whole set
// back and swaps the tenants one by one, which reports each precisely.
func (db *DB) swapSet(ctx context.Context, tx *sql.Tx, l *Layout, specs []SwapSpec) ([]SwapResult, error) {
	op, action, tables := specs[0].OpID, specs[0].Action, specs[0].Tables
	if action == "" {
		action = "restore"
	}
	keys := make([]string, len(specs))
	byKey := map[string]int{}
	for i, sp := range specs {
		keys[i], byKey[sp.Tenant] = sp.Tenant, i
	}
	// Rows are matched to their tenant by the text of their tenant column:
	// each key must be exactly that text of a live root row.
	var p params
	rows, err := tx.QueryContext(ctx, "SELECT CAST("+qi(l.KeyColumn)+" AS TEXT) FROM "+db.d.live(l.TenantsTable)+" WHERE "+qi(l.KeyColumn)+" IN "+p.in(keys), p.args...)
	if err != nil {
		return nil, err
	}
	found := 0
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return nil, err
		}
		if _, ok := byKey[k]; ok {
			found++
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if found != len(keys) {
		return nil, errNotSet
	}

	results := make([]SwapResult, len(specs))
	wholes := make([]lockedState, len(specs))
	apps := make([][]TenantState, len(specs))
	for i, sp := range specs {
		if _, err := db.txExec(ctx, tx, db.d.unlock(), sp.Tenant, op); err != nil {
			return nil, err
		}
		if wholes[i], err = db.lockState(ctx, tx, sp.Tenant, ""); err != nil {
			return nil, err
		}
		var recorded string
		err := tx.QueryRowContext(ctx, `SELECT rows_json FROM lifeline_applied WHERE op_id = $1 AND tenant = $2 AND app = ''`, op, sp.Tenant).Scan(&recorded)
		if err == nil || !errors.Is(err, sql.ErrNoRows) || wholes[i].state == Purged {
			return nil, errNotSet
		}
		if apps[i], err = db.appStates(ctx, tx, sp.Tenant); err != nil {
			return nil, err
		}
		results[i].Previous = append([]TenantState{{Tenant: sp.Tenant, State: wholes[i].state, OpID: wholes[i].op}}, apps[i]...)
		results[i].Tables = map[string]TableResult{}
	}

	// Per table, the tenants whose rows differ from their rebuilt ones.
	changed := make([][]string, len(tables))
	for ti := range tables {
		rt := &tables[ti]
		live, err := db.hashTenants(ctx, tx, rt, "x", db.d.live(rt.Name)+" x", keys, byKey)
		if err != nil {
			return nil, err
		}
		var staged []string
		for i, sp := range specs {
			want := wantOf(db, sp, rt)
			if len(want.Partial()) == 0 && live[i].Equal(want, rt.Columns) {
				results[i].Tables[rt.Name] = TableResult{Rows: live[i].Rows, Hash: live[i].Digest(rt.Columns, want)}
				continue
			}
			changed[ti] = append(changed[ti], sp.Tenant)
			if want.Rows > 0 {
				staged = append(staged, sp.Tenant)
			}
		}
		if len(staged) > 0 {
			// A table that changed since the restore looked at it has nothing
			// staged to swap in (swapOne says so precisely).
			var p params
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT count(DISTINCT lifeline_tenant) FROM "+db.rd().stage(rt.Name)+" WHERE lifeline_op = "+p.add(op)+
				" AND lifeline_tenant IN "+p.in(staged), p.args...).Scan(&n); err != nil {
				return nil, err
			}
			if n != len(staged) {
				return nil, errNotSet
			}
		}
	}

	// Rows the tenants did not have at the moment go, children first.
	removed := map[string]map[string]int64{}
	for ti := len(tables) - 1; ti >= 0; ti-- {
		rt, set := &tables[ti], changed[ti]
		if len(set) == 0 {
			continue
		}
		ref := qi(rt.Name)
		var p params
		where := ref + "." + qi(rt.KeyCol) + " IN " + p.in(set) + " AND NOT EXISTS (SELECT 1 FROM " + db.rd().stage(rt.Name) + " s WHERE s.lifeline_op = " + p.add(op) +
			" AND s.lifeline_tenant = CAST(" + ref + "." + qi(rt.KeyCol) + " AS TEXT) AND " + pkMatch("s", ref, rt.Key) + ")"
		opArg := "$" + strconv.Itoa(len(p.args)+1) // selArgs follow whereArgs
		if _, err := db.d.move(ctx, cachedTx{db, tx}, moveSpec{
			src: db.d.live(rt.Name), where: where, whereArgs: p.args,
			dst: db.d.trash(rt.Name), dstCols: append(slices.Clone(rt.Columns), "lifeline_op", "lifeline_tenant"),
			// Unqualified: PostgreSQL selects them from the deleted rows.
			sel: append(quoted(rt.Columns), "CAST("+opArg+" AS TEXT)", "CAST("+qi(rt.KeyCol)+" AS TEXT)"), selArgs: []any{op},
		}); err != nil {
			return nil, err
		}
		if removed[rt.Name], err = db.trashCounts(ctx, tx, rt, op, set); err != nil {
			return nil, err
		}
	}

	// Rows put in and rows overwritten, parents first; new rows first.
	inserted := op + InsertedSuffix
	for ti := range tables {
		rt, set := &tables[ti], changed[ti]
		if len(set) == 0 {
			continue
		}
		live, trash, stage := db.d.live(rt.Name), db.d.trash(rt.Name), db.rd().stage(rt.Name)
		var p params
		mine := "s.lifeline_op = " + p.add(op) + " AND s.lifeline_tenant IN " + p.in(set)
		absent := "NOT EXISTS (SELECT 1 FROM " + live + " l WHERE " + pkMatch("l", "s", rt.Key) + " AND l." + qi(rt.KeyCol) + " = s." + qi(rt.KeyCol) + ")"
		ins := p.add(inserted)
		res, err := db.txExec(ctx, tx, "INSERT INTO "+trash+" ("+quoteAll(rt.Key)+", lifeline_op, lifeline_tenant) SELECT "+strings.Join(qualified("s", rt.Key), ", ")+
			", CAST("+ins+" AS TEXT), s.lifeline_tenant FROM "+stage+" s WHERE "+mine+" AND "+absent, p.args...)
		if err != nil {
			return nil, err
		}
		noted, _ := res.RowsAffected()
		res, err = db.txExec(ctx, tx, "INSERT INTO "+live+" ("+quoteAll(rt.Columns)+")"+db.rd().overriding()+" SELECT "+strings.Join(qualified("s", rt.Columns), ", ")+
			" FROM "+stage+" s WHERE "+mine+" AND "+absent, p.args[:len(p.args)-1]...)
		if err != nil {
			return nil, err
		}
		if n, _ := res.RowsAffected(); n != noted {
			return nil, fmt.Errorf("noted %d keys but inserted %d rows", noted, n)
		}
		ins2, err := db.trashCounts(ctx, tx, rt, inserted, set)
		if err != nil {
			return nil, err
		}
		if err := db.updateSet(ctx, tx, rt, op, set); err != nil {
			return nil, err
		}
		all, err := db.trashCounts(ctx, tx, rt, op, set)
		if err != nil {
			return nil, err
		}
		var q params
		if _, err := db.txExec(ctx, tx, "DELETE FROM "+stage+" WHERE lifeline_op = "+q.add(op)+" AND lifeline_tenant IN "+q.in(set), q.args...); err != nil {
			return nil, err
		}
		for _, k := range set {
			results[byKey[k]].Tables[rt.Name] = TableResult{Inserted: ins2[k], Removed: removed[rt.Name][k], Replaced: all[k] - removed[rt.Name][k]}
		}
	}
	// Staged rows of tables found unchanged after all (a repeated restore).
	for ti := range tables {
		var p params
		if _, err := db.txExec(ctx, tx, "DELETE FROM "+db.rd().stage(tables[ti].Name)+" WHERE lifeline_op = "+p.add(op)+" AND lifeline_tenant IN "+p.in(keys), p.args...); err != nil {
			return nil, err
		}
	}

	// Verify: every changed tenant's rows, read back, against its rebuilt ones.
	for ti := range tables {
		rt, set := &tables[ti], changed[ti]
		if len(set) == 0 {
			continue
		}
		got, err := db.hashTenants(ctx, tx, rt, "x", db.d.live(rt.Name)+" x", keys, byKey)
		if err != nil {
			return nil, err
		}
		for _, k := range set {
			i := byKey[k]
			want := wantOf(db, specs[i], rt)
			if !got[i].Equal(want, rt.Columns) {
				return nil, errNotSet
			}
			r := results[i].Tables[rt.Name]
			r.Rows, r.Hash, r.Partial = got[i].Rows, got[i].Digest(rt.Columns, want), want.Partial()
			results[i].Tables[rt.Name] = r
		}
	}

	for i, sp := range specs {
		sp.Action = action
		if results[i].State, err = db.swapStates(ctx, tx, l, sp, wholes[i], apps[i]); err != nil {
			return nil, err
		}
		js, _ := json.Marshal(results[i])
		if _, err := db.txExec(ctx, tx, `INSERT INTO lifeline_applied (op_id, tenant, app, action, rows_json, at) VALUES ($1, $2, '', $3, $4, $5)`,
			op, sp.Tenant, action, string(js), db.d.now()); err != nil {
			return nil, err
		}
		if _, err := db.txExec(ctx, tx, `DELETE FROM lifeline_unlock WHERE tenant = $1 AND op_id = $2`, sp.Tenant, op); err != nil {
			return nil, err
		}
	}
	return results, nil
}

// wantOf is the hash of sp's rebuilt rows of rt (empty if it had none).
func wantOf(db *DB, sp SwapSpec, rt *RestoreTable) *TableHash {
	if w := sp.Want[rt.Name]; w != nil {
		return w
	}
	return NewTableHash(db.d.engine(), rt.Name)
}

// hashTenants hashes the live rows of rt of every tenant in keys at once,
// one hash per tenant (in keys' order), routed by the text of the tenant
// column. A row whose tenant text is not one of keys is errNotSet.
func (db *DB) hashTenants(ctx context.Context, tx *sql.Tx, rt *RestoreTable, alias, from string, keys []string, byKey map[string]int) ([]*TableHash, error) {
	out := make([]*TableHash, len(keys))
	for i := range out {
		out[i] = NewTableHash(db.d.engine(), rt.Name)
	}
	ki := slices.Index(rt.Columns, rt.KeyCol)
	var p params
	err := db.scanRows(ctx, tx, rt, "SELECT "+db.selectList(alias, rt)+" FROM "+from+" WHERE "+alias+"."+qi(rt.KeyCol)+" IN "+p.in(keys), func(key, vals []change.Value) error {
		i, ok := byKey[tenantText(vals[ki])]
		if !ok {
			return errNotSet
		}
		out[i].Add(key, rt.Columns, vals, rt.Columns)
		return nil
	}, p.args...)
	return out, err
}

// tenantText is a tenant column's value as the key it stands for.
func tenantText(v change.Value) string {
	if v.Kind == change.Int {
		return strconv.FormatInt(v.Int, 10)
	}
	return string(v.Bytes)
}

// trashCounts counts, per tenant of set, rt's trash rows kept under op.
func (db *DB) trashCounts(ctx context.Context, tx *sql.Tx, rt *RestoreTable, op string, set []string) (map[string]int64, error) {
	var p params
	rows, err := tx.QueryContext(ctx, "SELECT lifeline_tenant, count(*) FROM "+db.d.trash(rt.Name)+" WHERE lifeline_op = "+p.add(op)+
		" AND lifeline_tenant IN "+p.in(set)+" GROUP BY lifeline_tenant", p.args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var k string
		var n int64
		if err := rows.Scan(&k, &n); err != nil {
			return nil, err
		}
		out[k] = n
	}
	return out, rows.Err()
}

// updateSet overwrites in place the rows of the tenants of set whose staged
// version differs, after copying the current version to the trash, as
// updateRows does for one tenant.
func (db *DB) updateSet(ctx context.Context, tx *sql.Tx, rt *RestoreTable, op string, set []string) error {
	var cols []string
	for _, c := range rt.Columns {
		if !contains(rt.Key, c) {
			cols = append(cols, qi(c)+" = s."+qi(c))
		}
	}
	if len(cols) == 0 {
		return nil
	}
	ref := qi(rt.Name)
	var p params
	scope := ref + "." + qi(rt.KeyCol) + " IN " + p.in(set)
	differs := "s.lifeline_op = " + p.add(op) + " AND s.lifeline_tenant = CAST(" + ref + "." + qi(rt.KeyCol) + " AS TEXT) AND " + pkMatch("s", ref, rt.Key) +
		" AND NOT " + identicalAll(db.rd(), "s", ref, rt)
	res, err := db.txExec(ctx, tx, "INSERT INTO "+db.d.trash(rt.Name)+" ("+quoteAll(rt.Columns)+", lifeline_op, lifeline_tenant) SELECT "+
		strings.Join(qualified(ref, rt.Columns), ", ")+", CAST("+p.add(op)+" AS TEXT), CAST("+ref+"."+qi(rt.KeyCol)+" AS TEXT) FROM "+db.d.live(rt.Name)+
		" WHERE "+scope+" AND EXISTS (SELECT 1 FROM "+db.rd().stage(rt.Name)+" s WHERE "+differs+")", p.args...)
	if err != nil {
		return err
	}
	copied, _ := res.RowsAffected()
	res, err = db.txExec(ctx, tx, "UPDATE "+db.d.live(rt.Name)+" SET "+strings.Join(cols, ", ")+" FROM "+db.rd().stage(rt.Name)+" s WHERE "+scope+" AND "+differs,
		p.args[:len(p.args)-1]...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != copied {
		return fmt.Errorf("kept %d old rows but updated %d", copied, n)
	}
	return nil
}
