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

	"lifeline/internal/change"
	"lifeline/internal/fault"
)

// PostgreSQL capture is logical decoding: the publication lifeline_<product>
// lists the protected tables, and capture reads the replication slot of the
// same name with the pgoutput plugin. Nothing runs in the writers'
// transactions.
//
// Every protected table gets REPLICA IDENTITY FULL. With the default identity
// (the primary key) a DELETE is decoded with the key columns only, which
// lacks the tenant column (so the change could not be filed under its
// tenant) and the old row (the repository keeps a delete's full image), and
// an UPDATE leaves unchanged TOASTed columns out with nothing to fill them
// from. FULL logs the whole old row, detoasted. The price is WAL volume on
// UPDATE and DELETE; the benchmark reports it.

func (pgDialect) captureBefore(context.Context, *sql.Tx, *Layout) (captureState, error) {
	return captureState{}, nil
}

// pgPartitions returns table and, for a partitioned table, every partition
// below it: REPLICA IDENTITY is per relation, and changes are decoded on the
// partitions (the publication maps them to the root).
const pgPartitions = `SELECT format('%I.%I', n.nspname, c.relname), c.relreplident,
		coalesce((SELECT format('%I', ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
			WHERE i.indrelid = c.oid AND i.indisreplident), '')
	FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind = 'r' AND (c.oid = to_regclass($1) OR c.oid IN (SELECT relid FROM pg_partition_tree(to_regclass($1))))`

func (d pgDialect) installCapture(ctx context.Context, tx *sql.Tx, l *Layout, shapes []change.Table, before captureState) (rebuilt []string, err error) {
	// A captured table missing from the publication was dropped and made
	// anew (a migration rebuilt it): its changes since were not published.
	published, err := queryStrings(ctx, tx, "SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public'", CaptureName(l.Product))
	if err != nil {
		return nil, err
	}
	for _, t := range l.Tables {
		if before.latest[t] != nil && !slices.Contains(published, t) {
			rebuilt = append(rebuilt, t)
		}
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM lifeline_capture_shapes"); err != nil {
		return nil, err
	}
	for i := range shapes {
		if err := recordShape(ctx, tx, shapes[i].Name, 0, &shapes[i]); err != nil {
			return nil, err
		}
	}
	// The identity each relation had before Lifeline, so Unprotect can put
	// it back; recorded once.
	orig := map[string]string{}
	var js string
	err = tx.QueryRowContext(ctx, "SELECT value FROM lifeline_meta WHERE key = 'replica_identity'").Scan(&js)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	if js != "" {
		if err := json.Unmarshal([]byte(js), &orig); err != nil {
			return nil, err
		}
	}
	var stmts, rels []string
	for _, t := range l.Tables {
		rels = append(rels, d.live(t))
		rows, err := tx.QueryContext(ctx, pgPartitions, d.live(t))
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var rel, ident, index string
			if err := rows.Scan(&rel, &ident, &index); err != nil {
				rows.Close()
				return nil, err
			}
			if _, ok := orig[rel]; !ok {
				orig[rel] = map[string]string{"d": "DEFAULT", "n": "NOTHING", "f": "FULL", "i": "USING INDEX " + index}[ident]
			}
			if ident != "f" {
				stmts = append(stmts, "ALTER TABLE "+rel+" REPLICA IDENTITY FULL")
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	b, _ := json.Marshal(orig)
	stmts = append(stmts, `INSERT INTO lifeline_meta (key, value) VALUES ('replica_identity', `+lit(string(b))+`)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`)

	pub := qi(CaptureName(l.Product))
	var exists bool
	if err := tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", CaptureName(l.Product)).Scan(&exists); err != nil {
		return nil, err
	}
	// TRUNCATE is published so that one slipping past the guard stops
	// capture loudly instead of leaving rows in the repository that are gone.
	with := " (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)"
	if exists {
		stmts = append(stmts, "ALTER PUBLICATION "+pub+" SET TABLE "+strings.Join(rels, ", "), "ALTER PUBLICATION "+pub+" SET"+with)
	} else {
		stmts = append(stmts, "CREATE PUBLICATION "+pub+" FOR TABLE "+strings.Join(rels, ", ")+" WITH"+with)
	}
	return rebuilt, execAll(ctx, tx, stmts...)
}

func (d pgDialect) captureProblems(ctx context.Context, q queryer, product string, tables []string) ([]string, error) {
	published, err := queryStrings(ctx, q, "SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public'", CaptureName(product))
	if err != nil {
		return nil, err
	}
	in := map[string]bool{}
	for _, t := range published {
		in[t] = true
	}
	var out []string
	for _, t := range tables {
		if !in[t] {
			out = append(out, fmt.Sprintf("table %s is not in publication %s", t, CaptureName(product)))
		}
		rows, err := q.QueryContext(ctx, pgPartitions, d.live(t))
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var rel, ident, index string
			if err := rows.Scan(&rel, &ident, &index); err != nil {
				rows.Close()
				return nil, err
			}
			if ident != "f" {
				out = append(out, fmt.Sprintf("table %s: REPLICA IDENTITY of %s is not FULL (deletes would lose the tenant and the old row)", t, rel))
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// uninstall drops the slot first (outside a transaction; it must not be in
// use), then everything else in one transaction.
func (d pgDialect) uninstall(ctx context.Context, db *DB, product string) error {
	if product != "" {
		if err := dropSlot(ctx, db, CaptureName(product)); err != nil {
			return err
		}
	}
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return db.unavailable(err)
	}
	defer tx.Rollback()
	stmts, err := queryStrings(ctx, tx, `SELECT format('DROP TRIGGER IF EXISTS %I ON public.%I', t.tgname, c.relname)
		FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
		WHERE NOT t.tgisinternal AND t.tgname LIKE 'lifeline\_%' AND c.relnamespace = 'public'::regnamespace`)
	if err != nil {
		return err
	}
	fns, err := queryStrings(ctx, tx, `SELECT format('DROP FUNCTION IF EXISTS lifeline.%I()', p.proname)
		FROM pg_proc p WHERE p.pronamespace = to_regnamespace('lifeline')
		AND (p.proname LIKE 'mass\_%' OR p.proname LIKE 'root\_%' OR p.proname = 'refuse_truncate')`)
	if err != nil {
		return err
	}
	stmts = append(stmts, fns...)
	stmts = append(stmts, "DROP EVENT TRIGGER IF EXISTS lifeline_drop_guard", "DROP FUNCTION IF EXISTS lifeline.refuse_drop()")
	if product != "" {
		stmts = append(stmts, "DROP PUBLICATION IF EXISTS "+qi(CaptureName(product)))
	}
	var js string
	err = tx.QueryRowContext(ctx, "SELECT value FROM lifeline_meta WHERE key = 'replica_identity'").Scan(&js)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	orig := map[string]string{}
	if js != "" {
		if err := json.Unmarshal([]byte(js), &orig); err != nil {
			return err
		}
	}
	for rel, ident := range orig {
		var ok bool
		if err := tx.QueryRowContext(ctx, "SELECT to_regclass($1) IS NOT NULL", rel).Scan(&ok); err != nil {
			return err
		}
		if ok && ident != "" && ident != "FULL" && ident != "USING INDEX " {
			stmts = append(stmts, "ALTER TABLE "+rel+" REPLICA IDENTITY "+ident)
		}
	}
	stmts = append(stmts, "DROP TABLE IF EXISTS lifeline_capture_shapes", unprotectMeta)
	if err := execAll(ctx, tx, stmts...); err != nil {
		return err
	}
	return tx.Commit()
}

// dropSlot drops a replication slot of this database. A slot whose reader
// just disconnected stays active for a moment, so "active" is retried
// briefly before it is reported.
func dropSlot(ctx context.Context, db *DB, slot string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var active bool
		var dbname string
		err := db.db.QueryRowContext(ctx, "SELECT active, coalesce(database, '') FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active, &dbname)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return db.unavailable(err)
		}
		var cur string
		if err := db.db.QueryRowContext(ctx, "SELECT current_database()").Scan(&cur); err != nil {
			return db.unavailable(err)
		}
		if dbname != cur {
			return fault.New(fault.Conflict, "two products with the same name share this PostgreSQL cluster; rename one in lifeline.yaml",
				"replication slot %s belongs to database %s, not to %s", slot, dbname, cur)
		}
		if !active {
			_, err = db.db.ExecContext(ctx, "SELECT pg_drop_replication_slot($1)", slot)
			if err == nil || pgCode(err) == "42704" { // undefined_object: dropped meanwhile
				return nil
			}
			if pgCode(err) != "55006" { // object_in_use
				return db.unavailable(err)
			}
		}
		if time.Now().After(deadline) {
			return fault.New(fault.Conflict, "stop `lifeline serve` (it reads the slot), then try again",
				"replication slot %s of product database %s is in use", slot, db.name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DropSlot drops the product's replication slot if it exists (see dropSlot);
// capture's Snapshot uses it before creating a fresh one.
func (db *DB) DropSlot(ctx context.Context, product string) error {
	return dropSlot(ctx, db, CaptureName(product))
}
