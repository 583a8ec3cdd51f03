package productdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"lifeline/internal/fault"
)

// schemaVersion is the version of the objects Protect installs.
const schemaVersion = "1"

// Protect installs Lifeline's objects inside the product database, in one
// transaction, idempotently (running it twice gives the same result, and
// running it after the limits or the schema changed updates everything):
//
//   - lifeline_tenant_state: per tenant (and app) lifecycle state; no row
//     means active. The application may read it to block tenants.
//   - a trash table per protected table (same columns and declared types,
//     plus lifeline_op and lifeline_tenant) that soft-deleted rows move to;
//   - lifeline_applied: one marker per committed step, so Apply is
//     idempotent;
//   - lifeline_unlock and the guards: triggers that make the database itself
//     refuse a raw delete of a tenant's root row and raw mass deletes, unless
//     Lifeline unlocked exactly that tenant inside its own transaction;
//   - change capture (capture.go): the SQLite change log and its triggers,
//     or the PostgreSQL publication with REPLICA IDENTITY FULL.
//
// A layout that no longer fits the current schema is refused: resolve it
// again.
func (db *DB) Protect(ctx context.Context, l *Layout) error {
	s, err := db.Inspect(ctx)
	if err != nil {
		return err
	}
	fresh, err := Resolve(l.Spec, s)
	if err != nil {
		return err
	}
	if fresh.KeyColumn != l.KeyColumn || !sameSet(fresh.Tables, l.Tables) {
		return fault.New(fault.Refused, "run `lifeline protect` again; it resolves the layout against the current schema",
			"product %s: the schema changed since its layout was resolved (tables now %s)", l.Product, strings.Join(fresh.Tables, ", "))
	}
	lc := *l
	lc.Limits = withDefaults(l.Limits)
	l = &lc

	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return db.unavailable(err)
	}
	defer tx.Rollback()
	if err := execAll(ctx, tx, db.d.base()...); err != nil {
		return db.internal(err, "install Lifeline's tables")
	}
	for _, name := range l.Tables {
		if err := db.syncTrash(ctx, tx, s.Table(name)); err != nil {
			return err
		}
	}
	capture, err := db.captureBefore(ctx, tx, l)
	if err != nil {
		return err
	}
	dropGuard, err := db.d.guards(ctx, tx, l)
	if err != nil {
		return db.internal(err, "install the guards")
	}
	if err := db.installCapture(ctx, tx, l, capture); err != nil {
		return err
	}
	tables, _ := json.Marshal(l.Tables)
	limits, _ := json.Marshal(l.Limits)
	meta := [][2]string{
		{"version", schemaVersion},
		{"product", l.Product},
		{"fingerprint", Fingerprint(s)},
		{"tables", string(tables)},
		{"limits", string(limits)},
		{"drop_guard", dropGuard},
		{"protected_at", time.Now().UTC().Format(time.RFC3339Nano)},
	}
	for _, kv := range meta {
		if _, err := tx.ExecContext(ctx, `INSERT INTO lifeline_meta (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, kv[0], kv[1]); err != nil {
			return db.internal(err, "record protect metadata")
		}
	}
	if err := tx.Commit(); err != nil {
		return db.internal(err, "commit protect")
	}
	db.protected.Store(true)
	return nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// syncTrash makes the trash table of t hold every live column with the same
// declared type. New live columns are added. A changed type is fixed by
// recreating the trash when it is empty; with rows in it, it is refused,
// because converting soft-deleted rows could change them.
func (db *DB) syncTrash(ctx context.Context, tx *sql.Tx, t *Table) error {
	have, err := db.d.columns(ctx, tx, t.Name, true)
	if err != nil {
		return db.internal(err, "read trash of "+t.Name)
	}
	if len(have) == 0 {
		if err := execAll(ctx, tx, db.d.createTrash(t)...); err != nil {
			return db.internal(err, "create trash of "+t.Name)
		}
		return nil
	}
	live, err := db.d.columns(ctx, tx, t.Name, false)
	if err != nil {
		return db.internal(err, "read columns of "+t.Name)
	}
	byName := map[string]tcol{}
	for _, c := range have {
		byName[c.name] = c
	}
	var changed []string
	for _, c := range live {
		h, ok := byName[c.name]
		if !ok {
			if _, err := tx.ExecContext(ctx, db.d.addTrashColumn(t.Name, c)); err != nil {
				return db.internal(err, "add column "+c.name+" to trash of "+t.Name)
			}
			continue
		}
		if !strings.EqualFold(h.typ, db.d.trashType(c.typ)) {
			changed = append(changed, fmt.Sprintf("%s (%s, now %s)", c.name, orNone(h.typ), orNone(c.typ)))
		}
	}
	if len(changed) == 0 {
		return nil
	}
	var n int64
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+db.d.trash(t.Name)).Scan(&n); err != nil {
		return db.internal(err, "count trash of "+t.Name)
	}
	if n > 0 {
		return fault.New(fault.Refused,
			"undelete or purge the soft-deleted tenants of this table first (`lifeline tenants list`), or change the column back; then run `lifeline protect` again",
			"product %s: column types of table %s changed (%s) while its trash holds %d soft-deleted rows of the old types",
			db.name, t.Name, strings.Join(changed, ", "), n)
	}
	stmts := append([]string{"DROP TABLE " + db.d.trash(t.Name)}, db.d.createTrash(t)...)
	if err := execAll(ctx, tx, stmts...); err != nil {
		return db.internal(err, "recreate trash of "+t.Name)
	}
	return nil
}

// DropGuard says whether DROP TABLE of a protected table is refused inside
// the database. It is true only on PostgreSQL where protect could install an
// event trigger, which needs a superuser; SQLite has no DDL triggers. Callers
// report false so operators know that guard is missing.
func (db *DB) DropGuard(ctx context.Context) (bool, error) {
	var v string
	err := db.db.QueryRowContext(ctx, "SELECT value FROM lifeline_meta WHERE key = 'drop_guard'").Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, db.notProtected(err)
	}
	return v == "on", nil
}

// Meta returns what protect recorded (version, fingerprint, tables, limits,
// drop_guard, protected_at); empty when the product was never protected.
func (db *DB) Meta(ctx context.Context) (map[string]string, error) {
	rows, err := db.db.QueryContext(ctx, "SELECT key, value FROM lifeline_meta")
	if err != nil {
		if db.missingTable(ctx) {
			return map[string]string{}, nil
		}
		return nil, db.unavailable(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, db.unavailable(err)
		}
		out[k] = v
	}
	return out, rows.Err()
}

// requireProtected refuses to act on a product Lifeline has not protected:
// without its tables there is no trash to move rows to.
func (db *DB) requireProtected(ctx context.Context) error {
	if db.protected.Load() {
		return nil
	}
	var v string
	if err := db.db.QueryRowContext(ctx, "SELECT value FROM lifeline_meta WHERE key = 'version'").Scan(&v); err != nil {
		return db.notProtected(err)
	}
	db.protected.Store(true)
	return nil
}

func (db *DB) notProtected(err error) error {
	if db.missingTable(context.Background()) {
		return fault.New(fault.Refused, "run `lifeline protect` first; it installs the tenant-state table, the trash and the guards",
			"product database %s is not protected by Lifeline yet", db.name)
	}
	return db.unavailable(err)
}

// missingTable says whether lifeline_meta is absent (never protected).
func (db *DB) missingTable(ctx context.Context) bool {
	cols, err := db.d.columns(ctx, db.db, "lifeline_meta", false)
	return err == nil && len(cols) == 0
}

func (db *DB) unavailable(err error) error {
	return fault.Wrap(err, fault.Unavailable, "check that the product database is reachable", "product database %s", db.name)
}

func (db *DB) internal(err error, what string) error {
	return fault.Wrap(err, fault.Internal, "", "product database %s: %s", db.name, what)
}
