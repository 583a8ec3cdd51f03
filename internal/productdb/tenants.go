package productdb

import (
	"context"
	"database/sql"
	"sort"
	"strconv"
)

// States lists every row of lifeline_tenant_state: the tenants (and apps)
// that are not active, sorted by tenant key and app.
func (db *DB) States(ctx context.Context) ([]TenantState, error) {
	if err := db.requireProtected(ctx); err != nil {
		return nil, err
	}
	return db.states(ctx, "", false)
}

func (db *DB) states(ctx context.Context, tenant string, one bool) ([]TenantState, error) {
	q := `SELECT tenant, app, state, op_id, changed_at FROM lifeline_tenant_state`
	var args []any
	if one {
		q += ` WHERE tenant = $1`
		args = append(args, tenant)
	}
	rows, err := db.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, db.unavailable(err)
	}
	defer rows.Close()
	var out []TenantState
	for rows.Next() {
		var s TenantState
		var at any
		if err := rows.Scan(&s.Tenant, &s.App, &s.State, &s.OpID, &at); err != nil {
			return nil, db.unavailable(err)
		}
		s.Changed = parseTime(at)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, db.unavailable(err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Tenant != out[j].Tenant {
			return keyLess(out[i].Tenant, out[j].Tenant)
		}
		return out[i].App < out[j].App
	})
	return out, nil
}

// keyLess orders tenant keys: integers numerically (and before other keys),
// the rest as strings.
func keyLess(a, b string) bool {
	ai, aerr := strconv.ParseInt(a, 10, 64)
	bi, berr := strconv.ParseInt(b, 10, 64)
	switch {
	case aerr == nil && berr == nil:
		return ai < bi
	case aerr == nil:
		return true
	case berr == nil:
		return false
	}
	return a < b
}

// Tenants lists every tenant key the product knows: in the tenants table,
// in its trash, or in the tenant states. Name comes from the root row (live,
// or soft-deleted); State is the product-level state and Apps the app states
// that are not active. Sorted by key, numeric keys numerically.
func (db *DB) Tenants(ctx context.Context, l *Layout) ([]TenantInfo, error) {
	if err := db.requireProtected(ctx); err != nil {
		return nil, err
	}
	states, err := db.states(ctx, "", false)
	if err != nil {
		return nil, err
	}
	byKey := map[string]*TenantInfo{}
	get := func(k string) *TenantInfo {
		t := byKey[k]
		if t == nil {
			t = &TenantInfo{Key: k, State: Active}
			byKey[k] = t
		}
		return t
	}
	names, err := db.rootNames(ctx, l, "", false)
	if err != nil {
		return nil, err
	}
	for k, n := range names {
		get(k).Name = n
	}
	for _, s := range states {
		addState(get(s.Tenant), s)
	}
	out := make([]TenantInfo, 0, len(byKey))
	for _, t := range byKey {
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return keyLess(out[i].Key, out[j].Key) })
	return out, nil
}

func addState(t *TenantInfo, s TenantState) {
	if s.App == "" {
		t.State, t.Since, t.OpID = s.State, s.Changed, s.OpID
		return
	}
	if s.State != Active {
		t.Apps = append(t.Apps, s)
	}
}

// rootNames maps tenant keys to names from the root rows, live ones taking
// precedence over soft-deleted ones. With one set, only key is read.
func (db *DB) rootNames(ctx context.Context, l *Layout, key string, one bool) (map[string]string, error) {
	name := "''"
	if l.NameColumn != "" {
		name = "CAST(" + qi(l.NameColumn) + " AS TEXT)"
	}
	out := map[string]string{}
	read := func(query string, args ...any) error {
		rows, err := db.db.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k string
			var n sql.NullString
			if err := rows.Scan(&k, &n); err != nil {
				return err
			}
			if _, seen := out[k]; !seen {
				out[k] = n.String
			}
		}
		return rows.Err()
	}
	live := "SELECT CAST(" + qi(l.KeyColumn) + " AS TEXT), " + name + " FROM " + db.d.live(l.TenantsTable)
	trash := "SELECT lifeline_tenant, " + name + " FROM " + db.d.trash(l.TenantsTable)
	var err error
	if one {
		err = read(live+" WHERE "+qi(l.KeyColumn)+" = $1", key)
		if err != nil && db.d.badKey(err) {
			err = nil // "abc" for an integer key: not live, maybe in the states
		}
		if err == nil {
			err = read(trash+" WHERE lifeline_tenant = $1", key)
		}
	} else if err = read(live); err == nil {
		err = read(trash)
	}
	if err != nil {
		return nil, db.unavailable(err)
	}
	return out, nil
}

// Tenant is what the product knows of one tenant, with its live and trash
// row counts per table. A key found nowhere is a fault.NotFound.
func (db *DB) Tenant(ctx context.Context, l *Layout, key string) (*TenantInfo, error) {
	if err := db.requireProtected(ctx); err != nil {
		return nil, err
	}
	names, err := db.rootNames(ctx, l, key, true)
	if err != nil {
		return nil, err
	}
	states, err := db.states(ctx, key, true)
	if err != nil {
		return nil, err
	}
	name, known := names[key]
	if !known && len(states) == 0 {
		return nil, notFound(l, key)
	}
	t := &TenantInfo{Key: key, Name: name, State: Active, Rows: map[string]int64{}, Trash: map[string]int64{}}
	for _, s := range states {
		addState(t, s)
	}
	for _, table := range l.Tables {
		var n int64
		err := db.db.QueryRowContext(ctx, "SELECT count(*) FROM "+db.d.live(table)+" WHERE "+qi(keyColumn(l, table))+" = $1", key).Scan(&n)
		if err != nil && !db.d.badKey(err) {
			return nil, db.unavailable(err)
		}
		t.Rows[table] = n
		err = db.db.QueryRowContext(ctx, "SELECT count(*) FROM "+db.d.trash(table)+" WHERE lifeline_tenant = $1", key).Scan(&n)
		if err != nil {
			if cols, cerr := db.d.columns(ctx, db.db, table, true); cerr == nil && len(cols) == 0 {
				continue // protected after this tenant's delete: no trash yet
			}
			return nil, db.unavailable(err)
		}
		if n > 0 {
			t.Trash[table] = n
		}
	}
	return t, nil
}
