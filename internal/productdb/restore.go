package productdb

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"lifeline/internal/change"
	"lifeline/internal/fault"
)

// In-place restore, in two parts, so that a huge tenant never needs one
// giant client transaction and other tenants keep working:
//
//  1. StageRows writes the rebuilt rows in chunks, each in its own short
//     transaction, into a staging table per protected table (SQLite
//     lifeline_stage_<table>, PostgreSQL lifeline.stage_<table>, unlogged):
//     the live columns and types plus lifeline_op and lifeline_tenant.
//     Staged rows are disposable: a crashed restore stages them again.
//  2. Swap makes the tenant's live rows equal to its staged rows in ONE
//     transaction through Unlocked (so the guards let exactly this tenant
//     through for exactly this operation), verifies them by hash against
//     the rebuilt rows, and rolls back on any difference. Only rows that
//     differ are touched: a row already equal to its staged version stays.
//     Every row removed or overwritten is kept in the trash under the
//     restore's operation ID, and a copy of every row put in under
//     OpID+InsertedSuffix, so the restore can be undone exactly (StageUndo).

// InsertedSuffix tags the trash rows that record the keys (other columns
// NULL) of the rows a restore inserted.
const InsertedSuffix = "/inserted"

// Policy says which rows a restore puts back.
type Policy string

const (
	// Replace makes the tenant's rows exactly what they were at the moment.
	Replace Policy = "replace"
	// MissingOnly only inserts rows whose primary key is absent now, so
	// edits made since stay.
	MissingOnly Policy = "missing-only"
)

// RestoreTable is one protected table as a restore writes it.
type RestoreTable struct {
	Name string `json:"name"`
	// Columns are the stored columns a restore writes, in table order;
	// generated columns are left for the database to compute.
	Columns []string `json:"columns"`
	Types   []string `json:"types"`
	Key     []string `json:"key"`        // primary key columns
	KeyCol  string   `json:"tenant_col"` // the column naming the tenant
	// Out are the columns' types' output functions (PostgreSQL): values
	// are read and compared as the text they print, which is what capture
	// records. A cast to text is not the same (boolean casts to "true",
	// its output is "t").
	Out    []string `json:"-"`
	keyIdx []int
}

// KeyIndex returns the positions of the primary key columns in Columns.
func (rt *RestoreTable) KeyIndex() []int {
	if rt.keyIdx == nil {
		for _, k := range rt.Key {
			for i, c := range rt.Columns {
				if c == k {
					rt.keyIdx = append(rt.keyIdx, i)
				}
			}
		}
	}
	return rt.keyIdx
}

// restoreDialect is the engine side of restore.
type restoreDialect interface {
	// stage names a table's staging table, quoted and qualified.
	stage(table string) string
	// stageColumns lists a staging table's columns; none if it is missing.
	stageColumns(ctx context.Context, q queryer, table string) ([]tcol, error)
	// createStage is the DDL of t's staging table.
	createStage(t *Table, live []tcol) []string
	// identical is the SQL condition that column c (whose type prints with
	// output function out, on PostgreSQL) of rows a and b holds the same
	// value, as the hash sees it.
	identical(a, b, c, out string) string
	// overriding is what an INSERT into a live table needs to write
	// identity columns.
	overriding() string
}

func (sqliteDialect) stage(table string) string { return qi("lifeline_stage_" + table) }

func (d sqliteDialect) stageColumns(ctx context.Context, q queryer, table string) ([]tcol, error) {
	return d.columns(ctx, q, "lifeline_stage_"+table, false)
}

// createStage keeps each column's declared type (so affinity converts a
// value exactly as the live table would) and its default (so a column the
// backup does not have gets what the live table would give it).
func (d sqliteDialect) createStage(t *Table, live []tcol) []string {
	var cols []string
	for _, c := range live {
		def := ""
		if col := t.Column(c.name); col != nil && col.Default != "" {
			def = " DEFAULT " + col.Default
		}
		cols = append(cols, strings.TrimSpace(qi(c.name)+" "+d.trashType(c.typ))+def)
	}
	cols = append(cols, "lifeline_op TEXT", "lifeline_tenant TEXT")
	return []string{
		"CREATE TABLE " + d.stage(t.Name) + " (" + strings.Join(cols, ", ") + ")",
		"CREATE INDEX " + qi("lifeline_stidx_"+t.Name) + " ON " + d.stage(t.Name) + " (lifeline_tenant, lifeline_op, " + quoteAll(t.PrimaryKey) + ")",
	}
}

// identical compares storage class and value, byte for byte whatever the
// column's collation.
func (sqliteDialect) identical(a, b, c, _ string) string {
	x, y := a+"."+qi(c), b+"."+qi(c)
	return "(" + x + " IS " + y + " COLLATE BINARY AND typeof(" + x + ") = typeof(" + y + "))"
}

func (sqliteDialect) overriding() string { return "" }

func (pgDialect) stage(table string) string { return "lifeline." + qi(pgName("stage_", table)) }

func (d pgDialect) stageColumns(ctx context.Context, q queryer, table string) ([]tcol, error) {
	rows, err := q.QueryContext(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), false
		FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, d.stage(table))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []tcol
	for rows.Next() {
		var c tcol
		if err := rows.Scan(&c.name, &c.typ, &c.generated); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// createStage copies the live columns with their types, NOT NULL and
// defaults (LIKE … INCLUDING DEFAULTS; identity and generation are not
// copied), drops the generated ones, and is UNLOGGED: staged rows are
// rebuilt after a crash anyway, and logical decoding never sees them.
func (d pgDialect) createStage(t *Table, live []tcol) []string {
	st := d.stage(t.Name)
	stmts := []string{"CREATE UNLOGGED TABLE " + st + " (LIKE " + d.live(t.Name) + " INCLUDING DEFAULTS)"}
	for _, c := range t.Columns {
		if strings.HasPrefix(c.Default, "GENERATED ALWAYS AS (") {
			stmts = append(stmts, "ALTER TABLE "+st+" DROP COLUMN "+qi(c.Name))
		}
	}
	return append(stmts,
		"ALTER TABLE "+st+" ADD COLUMN lifeline_op text, ADD COLUMN lifeline_tenant text",
		"CREATE INDEX "+qi(pgName("stidx_", t.Name))+" ON "+st+" (lifeline_tenant, lifeline_op, "+quoteAll(t.PrimaryKey)+")")
}

// identical compares text output: two numerics 1.0 and 1.00 are equal as
// numbers but not as stored values, and not every type has equality.
func (pgDialect) identical(a, b, c, out string) string {
	return "(" + pgOut(a, c, out) + " IS NOT DISTINCT FROM " + pgOut(b, c, out) + ")"
}

// pgOut is column c of row alias as its type's output function prints it.
func pgOut(alias, c, out string) string { return out + "(" + alias + "." + qi(c) + ")::text" }

func (pgDialect) overriding() string { return " OVERRIDING SYSTEM VALUE" }

func (db *DB) rd() restoreDialect { return db.d.(restoreDialect) }

// RestoreTables returns l's tables as a restore writes them, in l's order
// (parents first), and the schema they were read from. A table that is
// gone, or whose primary key or tenant column is no longer a stored column,
// is a drift refusal. It only reads.
func (db *DB) RestoreTables(ctx context.Context, l *Layout) ([]RestoreTable, *Schema, error) {
	s, err := db.Inspect(ctx)
	if err != nil {
		return nil, nil, err
	}
	var out []RestoreTable
	for _, name := range l.Tables {
		st := s.Table(name)
		if st == nil {
			return nil, nil, drift(l, name, "the table no longer exists")
		}
		all, err := db.d.columns(ctx, db.db, name, false)
		if err != nil {
			return nil, nil, db.internal(err, "read columns of "+name)
		}
		rt := RestoreTable{Name: name, Key: st.PrimaryKey, KeyCol: keyColumn(l, name)}
		for _, c := range all {
			if !c.generated {
				rt.Columns = append(rt.Columns, c.name)
				rt.Types = append(rt.Types, c.typ)
			}
		}
		if len(rt.Key) == 0 || len(rt.KeyIndex()) != len(rt.Key) || !contains(rt.Columns, rt.KeyCol) {
			return nil, nil, drift(l, name, "its primary key or tenant column is not a stored column any more")
		}
		if db.d.engine() == Postgres {
			if rt.Out, err = db.outputFunctions(ctx, name, rt.Columns); err != nil {
				return nil, nil, err
			}
		}
		out = append(out, rt)
	}
	return out, s, nil
}

// outputFunctions returns the output function of each column's type.
func (db *DB) outputFunctions(ctx context.Context, table string, cols []string) ([]string, error) {
	rows, err := db.db.QueryContext(ctx, `SELECT a.attname, t.typoutput::regproc::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, db.d.live(table))
	if err != nil {
		return nil, db.internal(err, "read the column types of "+table)
	}
	defer rows.Close()
	byName := map[string]string{}
	for rows.Next() {
		var c, fn string
		if err := rows.Scan(&c, &fn); err != nil {
			return nil, db.internal(err, "read the column types of "+table)
		}
		byName[c] = fn
	}
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = byName[c]
	}
	return out, rows.Err()
}

// PrepareRestore makes sure each table of l has a staging table that fits
// its current columns (creating it, or recreating it when the table
// changed: staged rows are disposable), and returns RestoreTables.
func (db *DB) PrepareRestore(ctx context.Context, l *Layout) ([]RestoreTable, error) {
	if err := db.requireProtected(ctx); err != nil {
		return nil, err
	}
	rts, s, err := db.RestoreTables(ctx, l)
	if err != nil {
		return nil, err
	}
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, db.unavailable(err)
	}
	defer tx.Rollback()
	if db.d.engine() == Postgres {
		// Two restores preparing at once would race on CREATE TABLE.
		if err := execAll(ctx, tx, `SELECT pg_advisory_xact_lock(4242424243)`, `CREATE SCHEMA IF NOT EXISTS lifeline`); err != nil {
			return nil, db.internal(err, "prepare staging")
		}
	}
	for _, rt := range rts {
		live := make([]tcol, len(rt.Columns))
		for i := range rt.Columns {
			live[i] = tcol{name: rt.Columns[i], typ: rt.Types[i]}
		}
		have, err := db.rd().stageColumns(ctx, tx, rt.Name)
		if err != nil {
			return nil, db.internal(err, "read staging columns of "+rt.Name)
		}
		if !stageFits(db.d, have, live) {
			var stmts []string
			if len(have) > 0 {
				stmts = append(stmts, "DROP TABLE "+db.rd().stage(rt.Name))
			}
			if err := execAll(ctx, tx, append(stmts, db.rd().createStage(s.Table(rt.Name), live)...)...); err != nil {
				return nil, db.internal(err, "create staging table of "+rt.Name)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, db.internal(err, "commit staging tables")
	}
	return rts, nil
}

func stageFits(d dialect, have, live []tcol) bool {
	var cols []tcol
	for _, c := range have {
		if c.name != "lifeline_op" && c.name != "lifeline_tenant" {
			cols = append(cols, c)
		}
	}
	if len(cols) != len(live) || len(have) != len(cols)+2 {
		return false
	}
	for i, c := range live {
		if cols[i].name != c.name || !strings.EqualFold(cols[i].typ, d.trashType(c.typ)) {
			return false
		}
	}
	return true
}

// ClearStaging removes what op staged for tenant (all tenants if tenant is
// "") in every table of rts: the leftovers of an interrupted or refused
// restore.
func (db *DB) ClearStaging(ctx context.Context, rts []RestoreTable, opID, tenant string) error {
	for _, rt := range rts {
		q, args := "DELETE FROM "+db.rd().stage(rt.Name)+" WHERE lifeline_op = $1", []any{opID}
		if tenant != "" {
			q, args = q+" AND lifeline_tenant = $2", append(args, tenant)
		}
		if _, err := db.db.ExecContext(ctx, q, args...); err != nil {
			return db.internal(err, "clear staging of "+rt.Name)
		}
	}
	return nil
}

// Batch is rows of one table that have the same columns: Cols (a subset
// of Table.Columns, in its order: a column added since the restored moment
// is left to its default), and each row's values in that order. Tenant is
// whose rows they are, when they are staged.
type Batch struct {
	Table  *RestoreTable
	Tenant string
	Cols   []string
	Rows   [][]change.Value
}

// StageRows writes batches of rows, rebuilt for operation opID, into the
// staging tables, in one transaction of their own (several small tenants
// share one). It commits
// without waiting for the disk (SQLite synchronous=NORMAL, PostgreSQL
// synchronous_commit off): staged rows are disposable, and a crash only
// means staging them again.
func (db *DB) StageRows(ctx context.Context, opID string, batches []Batch) error {
	conn, release, err := db.lazyConn(ctx)
	if err != nil {
		return err
	}
	defer release()
	extraCols := []string{"lifeline_op", "lifeline_tenant"}
	if db.d.engine() == Postgres {
		if err := execAll(ctx, conn, "BEGIN", "SET LOCAL synchronous_commit = off"); err != nil {
			return db.unavailable(err)
		}
		for _, b := range batches {
			if err := db.copyRows(ctx, conn, db.rd().stage(b.Table.Name), b.Cols, extraCols, []string{opID, b.Tenant}, b.Rows); err != nil {
				_, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
				return err
			}
		}
		if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
			return db.internal(err, "commit staged rows")
		}
		return nil
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return db.unavailable(err)
	}
	for _, b := range batches {
		if err := db.insertRows(ctx, conn, db.rd().stage(b.Table.Name), b.Cols, extraCols, []string{opID, b.Tenant}, b.Rows); err != nil {
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
			return err
		}
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return db.internal(err, "commit staged rows")
	}
	return nil
}

// insertRows writes rows into target with multi-row INSERTs on SQLite,
// binding each value with its storage class. extra columns get the same
// text on every row, written as literals. Plain ? placeholders: SQLite
// looks numbered ones up by name, which grows with the square of their
// number.
func (db *DB) insertRows(ctx context.Context, q queryer, target string, cols, extraCols, extra []string, rows [][]change.Value) error {
	names := quoteAll(append(append([]string{}, cols...), extraCols...))
	per := min(500, 30000/(len(cols)+1))
	marks := make([]string, 0, len(cols)+len(extra))
	for range cols {
		marks = append(marks, "?")
	}
	for _, e := range extra {
		marks = append(marks, lit(e))
	}
	tuple := "(" + strings.Join(marks, ", ") + ")"
	var stmt *sql.Stmt
	for start := 0; start < len(rows); start += per {
		batch := rows[start:min(start+per, len(rows))]
		args := make([]any, 0, len(batch)*len(cols))
		for _, row := range batch {
			for _, v := range row {
				a, err := sqliteArg(v)
				if err != nil {
					return fault.Wrap(err, fault.Refused, "restore a PostgreSQL backup into a PostgreSQL database", "cannot write into %s", target)
				}
				args = append(args, a)
			}
		}
		query := "INSERT INTO " + target + " (" + names + ") VALUES " + strings.TrimSuffix(strings.Repeat(tuple+", ", len(batch)), ", ")
		var err error
		if len(batch) == per && stmt == nil && len(rows) > per {
			if p, ok := q.(interface {
				PrepareContext(context.Context, string) (*sql.Stmt, error)
			}); ok {
				if stmt, err = p.PrepareContext(ctx, query); err != nil {
					return db.internal(err, "prepare insert into "+target)
				}
				defer stmt.Close()
			}
		}
		if stmt != nil && len(batch) == per {
			_, err = stmt.ExecContext(ctx, args...)
		} else {
			_, err = q.ExecContext(ctx, query, args...)
		}
		if err != nil {
			return db.internal(err, "insert rows into "+target)
		}
	}
	return nil
}

// copyRows writes rows into target with COPY in PostgreSQL's text format on
// conn: every value goes through its column type's input function, exactly
// as the text it was captured as.
func (db *DB) copyRows(ctx context.Context, conn *sql.Conn, target string, cols, extraCols, extra []string, rows [][]change.Value) error {
	var buf bytes.Buffer
	var tail []byte
	for _, e := range extra {
		tail = append(tail, '\t')
		tail = appendCopyText(tail, []byte(e))
	}
	tail = append(tail, '\n')
	for _, row := range rows {
		for i, v := range row {
			if i > 0 {
				buf.WriteByte('\t')
			}
			text, null := PGText(v)
			if null {
				buf.WriteString(`\N`)
			} else {
				buf.Write(appendCopyText(nil, text))
			}
		}
		buf.Write(tail)
	}
	stmt := "COPY " + target + " (" + quoteAll(append(append([]string{}, cols...), extraCols...)) + ") FROM STDIN"
	err := conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		_, err := sc.Conn().PgConn().CopyFrom(ctx, &buf, stmt)
		return err
	})
	if err != nil {
		if db.d.badKey(err) {
			return fault.Wrap(err, fault.Refused, "the backup holds values the column's type no longer accepts; check the column types against the moment restored",
				"cannot write rows into %s", target)
		}
		return db.internal(err, "copy rows into "+target)
	}
	return nil
}

// appendCopyText escapes text for COPY's text format.
func appendCopyText(b, text []byte) []byte {
	for _, c := range text {
		switch c {
		case '\\':
			b = append(b, '\\', '\\')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, c)
		}
	}
	return b
}

// SwapSpec asks Swap to make one tenant's live rows equal to what the
// restore op staged for it.
type SwapSpec struct {
	OpID   string
	Tenant string
	Policy Policy
	// Tables are the tables restored, parents first, as PrepareRestore
	// returned them; the tenant's rows of other tables are not touched.
	Tables []RestoreTable
	// Want holds the hash of each table's rebuilt rows (a table without an
	// entry had none).
	Want map[string]*TableHash
	// States, when set, are the tenant (and app) states to set instead of
	// the rule below: an undo puts back what the restore replaced.
	States []TenantState
	// Action names the step in its applied marker ("restore" by default).
	Action string
	// Rows, when set, are the tenant's rebuilt rows themselves, nothing
	// staged: a small tenant is swapped directly (see swapdirect.go). Every
	// batch must pass CanSwapDirect and hold at most DirectMaxRows rows of
	// its table.
	Rows []Batch
}

// TableResult is what a restore did to one table of one tenant.
type TableResult struct {
	// Rows the tenant has in the table now that it is restored.
	Rows     int64 `json:"rows"`
	Inserted int64 `json:"inserted"`
	Replaced int64 `json:"replaced"`
	Removed  int64 `json:"removed"`
	// Conflicts counts rows whose key another tenant holds now: missing-only
	// leaves them out (replace fails on them).
	Conflicts int64 `json:"conflicts,omitempty"`
	// Hash is the verified digest of the restored rows (see hash.go).
	Hash string `json:"hash"`
	// Partial lists columns left out of the hash: the backup did not have
	// them for every row (added since), so they hold their defaults.
	Partial []string `json:"partial,omitempty"`
}

// SwapResult is what Swap did.
type SwapResult struct {
	Tables  map[string]TableResult `json:"tables"`
	Already bool                   `json:"already,omitempty"` // committed by an earlier run (resume)
	State   State                  `json:"state"`             // the tenant's state afterwards
	// Previous are the states the restore replaced, for Undo.
	Previous []TenantState `json:"previous"`
}

// Locked is when a SQLite swap batch held the database's write lock, from
// its BEGIN IMMEDIATE to its commit: the application's writers wait for
// it then, and only then (SwapAll checkpoints and syncs the log after it).
// The restore paces its batches by it. Zero on PostgreSQL, whose swaps
// hold only their tenants' rows.
type Locked struct{ From, To time.Time }

// ErrMismatch is wrapped by the error Swap returns when the restored rows
// did not hash to the rebuilt ones; the tenant was rolled back.
var ErrMismatch = errors.New("restored rows differ from the backup")

// Swap replaces (or, with MissingOnly, completes) one tenant's live rows
// with the rows op staged for it, in one transaction unlocked for that
// tenant and that operation only, then verifies them by hash against
// sp.Want and commits — or rolls back everything with ErrMismatch.
//
// Replace: the tenant's rows whose key is not staged move to the trash
// (children first, so no ON DELETE CASCADE fires unseen); staged rows whose
// key the tenant lacks are inserted and rows that differ are overwritten in
// place (their old version kept in the trash), parents first. A row whose
// key another tenant holds now, or a reference that cannot be satisfied in
// that order, is a fault.Conflict. MissingOnly: staged rows whose key is
// absent now are inserted; nothing is removed or overwritten.
//
// The tenant's state becomes restored-pending-validation if it was
// deactivated, deleted or already pending (an active tenant stays active),
// and so do app states that were not active; a purged tenant is a
// fault.Conflict (its erasure stands). A step that already committed (same
// op and tenant) returns its recorded result with Already set.
func (db *DB) Swap(ctx context.Context, l *Layout, sp SwapSpec) (SwapResult, error) {
	var res SwapResult
	var serr error
	_, err := db.SwapAll(ctx, l, []SwapSpec{sp}, func(_ int, r SwapResult, err error) { res, serr = r, err })
	if err == nil {
		err = serr
	}
	if err != nil {
		return SwapResult{}, err
	}
	return res, nil
}

// SwapAll swaps several tenants, each exactly as Swap does, in one
// transaction: one commit (and one wait for the disk) for many small
// tenants instead of one each. Each tenant runs in its own savepoint, so
// one that fails (a mismatch, a conflict) is rolled back alone and the
// others commit. done is called once per spec, in order, after the commit.
// If the commit itself fails (a deferred foreign key of one tenant), every
// tenant is swapped again in its own transaction, so the others still
// commit. The error returned is one that stopped the batch as a whole
// (the database unavailable); done is then not called. held says when the
// batch held SQLite's write lock.
func (db *DB) SwapAll(ctx context.Context, l *Layout, specs []SwapSpec, done func(i int, res SwapResult, err error)) (held Locked, err error) {
	if err := db.requireProtected(ctx); err != nil {
		return held, err
	}
	results := make([]SwapResult, len(specs))
	errs := make([]error, len(specs))
	// On SQLite the foreign keys are checked per statement at first, and
	// deferred to commit (beginStep) only once a tenant needs it: a
	// self-reference or cycle whose rows a swap writes in several
	// statements, a row moved away from a parent the swap removes. The
	// pragma that defers them makes SQLite recompile every prepared
	// statement of the connection, at a cost near a small tenant's swap.
	//
	// A SQLite batch commits without waiting for the disk and is made
	// durable after the write lock is given back (lazyCommits, SyncLog):
	// nobody learns that a swap is done before it is durable. Its
	// connection checkpoints the log after the commit, not inside it
	// (wal_autocheckpoint=0): SQLite runs its automatic checkpoint within
	// the commit that takes the log past 1,000 pages, after giving the
	// lock back but before the commit returns, so the batch would seem to
	// hold the lock longer than it does, and the checkpoint would come
	// before the pause the restore leaves the application's writers instead
	// of in it (restore.Service.applyPaced). The checkpoint is SQLite's
	// own, PASSIVE: it waits for no reader or writer.
	var ckpt *sql.Conn
	var tx *swapTx
	deferred := db.d.engine() != SQLite
	if db.d.engine() == Postgres {
		// Pipelined (see pipeline.go): a small tenant's swap takes three
		// round trips. Foreign keys deferred as beginStep does.
		var end func()
		if tx, end, err = db.beginPipelined(ctx); err != nil {
			return held, err
		}
		defer end()
		err = db.later(ctx, tx, func(err error) error { return db.internal(err, "begin") }, nil, "SET CONSTRAINTS ALL DEFERRED")
	} else {
		conn, release, cerr := db.ConnWith(ctx, lazyCommits, Setting{Name: "wal_autocheckpoint", Value: "0"})
		if cerr != nil {
			return held, cerr
		}
		defer release()
		ckpt = conn
		var sqlTx *sql.Tx
		if sqlTx, err = conn.BeginTx(ctx, nil); err != nil {
			return held, db.unavailable(err)
		}
		tx = runNow(sqlTx)
		held.From = time.Now()
	}
	if err != nil {
		return held, err
	}
	defer tx.tx.Rollback()
	savepoint := func(stmt, what string) error {
		return db.later(ctx, tx, func(err error) error { return db.internal(err, what) }, nil, stmt)
	}
	for i, sp := range specs {
		if err := savepoint("SAVEPOINT lifeline_tenant", "savepoint"); err != nil {
			return held, err
		}
		results[i], errs[i] = db.swapOne(ctx, tx, l, sp)
		if errs[i] != nil && !deferred && db.d.constraint(errs[i]) {
			if _, err := db.txExec(ctx, tx.tx, "ROLLBACK TO SAVEPOINT lifeline_tenant"); err != nil {
				return held, db.internal(err, "roll back tenant "+sp.Tenant)
			}
			if err := db.d.beginStep(ctx, tx.tx); err != nil {
				return held, db.internal(err, "defer foreign keys")
			}
			deferred = true
			results[i], errs[i] = db.swapOne(ctx, tx, l, sp)
		}
		if errs[i] == nil && !results[i].Already {
			// The tenant's last statements, queued by swapOne, go with the
			// release of its savepoint.
			if errs[i] = savepoint("RELEASE SAVEPOINT lifeline_tenant", "release savepoint"); errs[i] == nil {
				errs[i] = db.flush(ctx, tx)
			}
			if errs[i] == nil {
				continue
			}
		}
		// Not pipelined: the transaction may be aborted, where PostgreSQL
		// would refuse to prepare them.
		tx.discard()
		if _, err := db.txExec(ctx, tx.tx, "ROLLBACK TO SAVEPOINT lifeline_tenant"); err != nil {
			return held, db.internal(err, "roll back tenant "+sp.Tenant)
		}
		if _, err := db.txExec(ctx, tx.tx, "RELEASE SAVEPOINT lifeline_tenant"); err != nil {
			return held, db.internal(err, "release savepoint")
		}
	}
	err = tx.tx.Commit()
	if ckpt != nil {
		held.To = time.Now()
	}
	if err != nil {
		if len(specs) == 1 {
			return held, db.internal(err, "commit")
		}
		for i, sp := range specs {
			var res SwapResult
			var serr error
			alone, err := db.SwapAll(ctx, l, []SwapSpec{sp}, func(_ int, r SwapResult, err error) { res, serr = r, err })
			if err != nil {
				serr = err
			}
			if !alone.To.IsZero() {
				held.To = alone.To
			}
			done(i, res, serr)
		}
		return held, nil
	}
	if ckpt != nil {
		// Its failure leaves the pages in the log for the next one, as
		// the automatic checkpoint's would.
		_, _ = ckpt.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
	}
	if err := db.SyncLog(); err != nil {
		return held, err
	}
	for i := range specs {
		done(i, results[i], errs[i])
	}
	return held, nil
}

// swapOne is one tenant of SwapAll, inside its savepoint: the guard is
// unlocked for exactly that tenant and operation, and locked again.
func (db *DB) swapOne(ctx context.Context, tx *swapTx, l *Layout, sp SwapSpec) (SwapResult, error) {
	if sp.OpID == "" || sp.Tenant == "" {
		return SwapResult{}, fault.New(fault.Invalid, "this is a bug in the caller of Swap", "swap without an operation or tenant")
	}
	if sp.Action == "" {
		sp.Action = "restore"
	}
	// Unlock, lock the states, look for a marker, read the app states and,
	// for a direct swap, the live rows: one round trip on PostgreSQL.
	internal := func(what string) func(error) error { return func(err error) error { return db.internal(err, what) } }
	if err := db.later(ctx, tx, internal("unlock tenant"), nil, db.d.unlock(), sp.Tenant, sp.OpID); err != nil {
		return SwapResult{}, err
	}
	var res SwapResult
	var whole lockedState
	if err := db.lockStateLater(ctx, tx, sp.Tenant, "", &whole); err != nil {
		return SwapResult{}, err
	}
	var recorded *string
	if err := db.queryLater(ctx, tx, internal("read applied marker"), func(scan func(...any) error) error {
		recorded = new(string)
		return scan(recorded)
	}, `SELECT rows_json FROM lifeline_applied WHERE op_id = $1 AND tenant = $2 AND app = ''`, sp.OpID, sp.Tenant); err != nil {
		return SwapResult{}, err
	}
	var apps []TenantState
	if err := db.appStates(ctx, tx, sp.Tenant, &apps); err != nil {
		return SwapResult{}, err
	}
	var live *liveRows
	if sp.Rows != nil {
		var err error
		if live, err = db.readLive(ctx, tx, sp); err != nil {
			return SwapResult{}, err
		}
	}
	if err := db.flush(ctx, tx); err != nil {
		return SwapResult{}, err
	}
	if err := whole.check(db); err != nil {
		return SwapResult{}, err
	}
	if recorded != nil {
		if err := json.Unmarshal([]byte(*recorded), &res); err != nil {
			return SwapResult{}, db.internal(err, "read applied marker")
		}
		res.Already = true
		return res, nil // the caller rolls the savepoint back: nothing to do
	}
	if whole.state == Purged { // an undo too: purged since the restore
		return SwapResult{}, fault.New(fault.Conflict, "a purged tenant's data stays erased (see the erasure ledger); restore it out of place with --into if it must be inspected",
			"tenant %s was purged from %s", sp.Tenant, l.Product)
	}
	res.Previous = append([]TenantState{{Tenant: sp.Tenant, State: whole.state, OpID: whole.op}}, apps...)
	res.Tables = map[string]TableResult{}
	if err := db.swapRows(ctx, tx, l, sp, live, res.Tables); err != nil {
		return SwapResult{}, err
	}
	state, err := db.swapStates(ctx, tx, l, sp, whole, apps)
	if err != nil {
		return SwapResult{}, err
	}
	res.State = state
	// The marker and the relock go to the server (on PostgreSQL) with the
	// states and the savepoint's release, when SwapAll flushes.
	js, _ := json.Marshal(res)
	if err := db.later(ctx, tx, internal("record applied marker"), nil, `INSERT INTO lifeline_applied (op_id, tenant, app, action, rows_json, at) VALUES ($1, $2, '', $3, $4, $5)`,
		sp.OpID, sp.Tenant, sp.Action, string(js), db.d.now()); err != nil {
		return SwapResult{}, err
	}
	if err := db.later(ctx, tx, internal("relock tenant"), nil, `DELETE FROM lifeline_unlock WHERE tenant = $1 AND op_id = $2`, sp.Tenant, sp.OpID); err != nil {
		return SwapResult{}, err
	}
	return res, nil
}

// appStates reads the tenant's app states that are not active into out,
// through queryLater.
func (db *DB) appStates(ctx context.Context, tx *swapTx, tenant string, out *[]TenantState) error {
	return db.queryLater(ctx, tx, func(err error) error { return db.internal(err, "read app states") }, func(scan func(...any) error) error {
		s := TenantState{Tenant: tenant}
		var state string
		if err := scan(&s.App, &state, &s.OpID); err != nil {
			return db.internal(err, "read app states")
		}
		s.State = State(state)
		*out = append(*out, s)
		return nil
	}, `SELECT app, state, op_id FROM lifeline_tenant_state WHERE tenant = $1 AND app <> '' AND state <> 'active' ORDER BY app`+db.d.forUpdate(), tenant)
}

// swapStates sets the states after the rows are in: sp.States if given,
// else restored-pending-validation for whatever was not active.
func (db *DB) swapStates(ctx context.Context, tx *swapTx, l *Layout, sp SwapSpec, whole lockedState, apps []TenantState) (State, error) {
	if sp.States != nil {
		after := Active
		for _, s := range sp.States {
			if s.App != "" {
				if _, err := db.lockState(ctx, tx, sp.Tenant, s.App); err != nil { // flushes: an undo's app states are few
					return "", err
				}
			} else {
				after = s.State
			}
			if err := db.setState(ctx, tx, sp.Tenant, s.App, s.State, s.OpID); err != nil {
				return "", err
			}
		}
		for _, a := range apps {
			if !hasApp(sp.States, a.App) {
				if err := db.setState(ctx, tx, sp.Tenant, a.App, Active, ""); err != nil {
					return "", err
				}
			}
		}
		if !hasApp(sp.States, "") {
			return after, db.setState(ctx, tx, sp.Tenant, "", Active, "")
		}
		return after, nil
	}
	restored := map[string]bool{}
	for _, rt := range sp.Tables {
		restored[rt.Name] = true
	}
	for _, a := range apps {
		touched := false
		for _, t := range l.Apps[a.App] {
			touched = touched || restored[t]
		}
		if touched {
			if err := db.setState(ctx, tx, sp.Tenant, a.App, RestoredPending, sp.OpID); err != nil {
				return "", err
			}
		}
	}
	if whole.state == Active {
		return Active, db.setState(ctx, tx, sp.Tenant, "", Active, "") // drop the lock placeholder
	}
	return RestoredPending, db.setState(ctx, tx, sp.Tenant, "", RestoredPending, sp.OpID)
}

func hasApp(states []TenantState, app string) bool {
	for _, s := range states {
		if s.App == app {
			return true
		}
	}
	return false
}

// swapRows moves rows between the live, staging and trash tables of the
// tenant, then verifies and clears the staging rows. Rows that differ from
// their staged version are updated in place rather than removed and
// inserted: removing a row, even briefly, would fire ON DELETE CASCADE or
// SET NULL on its unchanged children, and PostgreSQL checks non-deferrable
// foreign keys at each statement.
func (db *DB) swapRows(ctx context.Context, tx *swapTx, l *Layout, sp SwapSpec, live *liveRows, out map[string]TableResult) error {
	if sp.Rows != nil {
		return db.swapDirect(ctx, tx, l, sp, live, out)
	}
	return db.swapStaged(ctx, tx.tx, l, sp, out)
}

// swapStaged is swapRows from the staging tables, each statement run
// when it is made (nothing is queued for tx when it starts).
func (db *DB) swapStaged(ctx context.Context, tx *sql.Tx, l *Layout, sp SwapSpec, out map[string]TableResult) error {
	rd := db.rd()
	inserted := sp.OpID + InsertedSuffix
	// $1 the tenant as the key column's type sees it, $2 as text, $3 the op.
	args := []any{sp.Tenant, sp.Tenant, sp.OpID}
	mine := "s.lifeline_tenant = $2 AND s.lifeline_op = $3"
	if sp.Policy == MissingOnly {
		// What is put in comes from the staged rows: check them first.
		for i := range sp.Tables {
			rt := &sp.Tables[i]
			staged, err := db.hashQuery(ctx, tx, rt, "SELECT "+db.selectList("s", rt)+" FROM "+rd.stage(rt.Name)+
				" s WHERE s.lifeline_tenant = $1 AND s.lifeline_op = $2", nil, sp.Tenant, sp.OpID)
			if err != nil {
				return err
			}
			if err := checkHash(l, sp, rt, staged); err != nil {
				return err
			}
		}
	}
	// A table whose rows already hash to the rebuilt ones (most of a
	// damaged tenant's tables, and all of a repeated restore's) is left
	// alone: reading it back once inside the transaction is its
	// verification. Not when the backup lacks a column the table has now:
	// that column must still get its default.
	unchanged := map[string]bool{}
	if sp.Policy == Replace {
		for i := range sp.Tables {
			rt := &sp.Tables[i]
			want := sp.Want[rt.Name]
			if want != nil && len(want.Partial()) > 0 {
				continue
			}
			if want == nil {
				want = NewTableHash(db.d.engine(), rt.Name)
			}
			before, err := db.HashLive(ctx, tx, rt, sp.Tenant)
			if err != nil {
				return err
			}
			if before.Equal(want, rt.Columns) {
				unchanged[rt.Name] = true
				out[rt.Name] = TableResult{Rows: before.Rows, Hash: before.Digest(rt.Columns, want)}
				continue
			}
			// The restore stages only tables that differed when it looked; one
			// that changed since has nothing staged to swap in.
			var staged int
			if want.Rows > 0 {
				if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM (SELECT 1 FROM "+rd.stage(rt.Name)+" s WHERE s.lifeline_tenant = $1 AND s.lifeline_op = $2 LIMIT 1) x",
					sp.Tenant, sp.OpID).Scan(&staged); err != nil {
					return db.internal(err, "read staging of "+rt.Name)
				}
				if staged == 0 {
					return fault.New(fault.Conflict, "run the same restore command again: it stages the tenant afresh",
						"tenant %s in %s: table %s changed while the restore was running", sp.Tenant, l.Product, rt.Name)
				}
			}
		}
	}
	if sp.Policy == Replace {
		// Rows the tenant did not have at the moment go, children first.
		for i := len(sp.Tables) - 1; i >= 0; i-- {
			rt := &sp.Tables[i]
			if unchanged[rt.Name] {
				continue
			}
			ref := qi(rt.Name)
			n, err := db.d.move(ctx, cachedTx{db, tx}, moveSpec{
				src:       db.d.live(rt.Name),
				where:     ref + "." + qi(rt.KeyCol) + " = $1 AND NOT EXISTS (SELECT 1 FROM " + rd.stage(rt.Name) + " s WHERE " + mine + " AND " + pkMatch("s", ref, rt.Key) + ")",
				whereArgs: args,
				dst:       db.d.trash(rt.Name), dstCols: append(append([]string{}, rt.Columns...), "lifeline_op", "lifeline_tenant"),
				// Unqualified: PostgreSQL selects them from the deleted rows.
				sel: append(quoted(rt.Columns), "CAST($4 AS TEXT)", "CAST($5 AS TEXT)"), selArgs: []any{sp.OpID, sp.Tenant},
			})
			if err != nil {
				return db.swapError(err, l, sp, rt, "moving its current rows to the trash")
			}
			r := out[rt.Name]
			r.Removed = n
			out[rt.Name] = r
		}
	}
	// Rows put in and rows overwritten, parents first; within a table new
	// rows first, so an updated row may point at one.
	for i := range sp.Tables {
		rt := &sp.Tables[i]
		r := out[rt.Name]
		live, trash, stage := db.d.live(rt.Name), db.d.trash(rt.Name), rd.stage(rt.Name)
		if unchanged[rt.Name] {
			if sp.Want[rt.Name] != nil {
				if _, err := db.txExec(ctx, tx, "DELETE FROM "+stage+" WHERE lifeline_tenant = $1 AND lifeline_op = $2", sp.Tenant, sp.OpID); err != nil {
					return db.internal(err, "clear staging of "+rt.Name)
				}
			}
			continue
		}
		absent := "NOT EXISTS (SELECT 1 FROM " + live + " l WHERE " + pkMatch("l", "s", rt.Key) + " AND l." + qi(rt.KeyCol) + " = $1)"
		if sp.Policy == MissingOnly {
			absent = "NOT EXISTS (SELECT 1 FROM " + live + " l WHERE " + pkMatch("l", "s", rt.Key) + ") AND CAST($1 AS TEXT) IS NOT NULL"
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+stage+" s WHERE "+mine+" AND EXISTS (SELECT 1 FROM "+live+" l WHERE "+
				pkMatch("l", "s", rt.Key)+" AND CAST(l."+qi(rt.KeyCol)+" AS TEXT) IS DISTINCT FROM $1)", args...).Scan(&r.Conflicts); err != nil {
				return db.internal(err, "look for conflicting keys in "+rt.Name)
			}
		}
		var wantIns *TableHash
		if sp.Policy == MissingOnly {
			var err error
			if wantIns, err = db.hashQuery(ctx, tx, rt, "SELECT "+db.selectList("s", rt)+" FROM "+stage+" s WHERE "+mine+" AND "+absent, nil, args...); err != nil {
				return err
			}
		}
		// The keys of the rows put in go to the trash under op/inserted, so
		// an undo knows exactly which rows to take out again.
		res, err := db.txExec(ctx, tx, "INSERT INTO "+trash+" ("+quoteAll(rt.Key)+", lifeline_op, lifeline_tenant) SELECT "+strings.Join(qualified("s", rt.Key), ", ")+
			", CAST($4 AS TEXT), CAST($5 AS TEXT) FROM "+stage+" s WHERE "+mine+" AND "+absent, append(args, inserted, sp.Tenant)...)
		if err != nil {
			return db.swapError(err, l, sp, rt, "noting the keys of the rows it inserts")
		}
		n, _ := res.RowsAffected()
		res, err = db.txExec(ctx, tx, "INSERT INTO "+live+" ("+quoteAll(rt.Columns)+")"+rd.overriding()+" SELECT "+strings.Join(qualified("s", rt.Columns), ", ")+
			" FROM "+stage+" s WHERE "+mine+" AND "+absent, args...)
		if err != nil {
			return db.swapError(err, l, sp, rt, "inserting its rows")
		}
		if m, _ := res.RowsAffected(); m != n {
			return db.internal(fmt.Errorf("noted %d keys but inserted %d rows", n, m), "insert rows of "+rt.Name)
		}
		if wantIns != nil {
			// The rows put in, as now live, against the staged rows.
			x := db.d.trash(rt.Name)
			got, err := db.hashQuery(ctx, tx, rt, "SELECT "+db.selectList("l", rt)+" FROM "+x+" x JOIN "+live+" l ON "+pkMatch("l", "x", rt.Key)+
				" WHERE x.lifeline_tenant = $1 AND x.lifeline_op = $2", nil, sp.Tenant, inserted)
			if err != nil {
				return err
			}
			if !got.Equal(wantIns, rt.Columns) {
				return mismatch(l, sp, rt, got.Rows, wantIns.Rows)
			}
			r.Rows, r.Hash = got.Rows, got.Digest(rt.Columns, wantIns)
		}
		r.Inserted = n
		// When every staged row was new, none can differ: skip the scan.
		if want := sp.Want[rt.Name]; sp.Policy == Replace && (want == nil || want.Rows != n) {
			if r.Replaced, err = db.updateRows(ctx, tx, sp, rt, args); err != nil {
				return db.swapError(err, l, sp, rt, "updating the rows that differ")
			}
		}
		if _, err := db.txExec(ctx, tx, "DELETE FROM "+stage+" WHERE lifeline_tenant = $1 AND lifeline_op = $2", sp.Tenant, sp.OpID); err != nil {
			return db.internal(err, "clear staging of "+rt.Name)
		}
		out[rt.Name] = r
	}
	for i := range sp.Tables {
		rt := &sp.Tables[i]
		r := out[rt.Name]
		if sp.Policy == Replace && !unchanged[rt.Name] {
			got, err := db.HashLive(ctx, tx, rt, sp.Tenant)
			if err != nil {
				return err
			}
			if err := checkHash(l, sp, rt, got); err != nil {
				return err
			}
			want := sp.Want[rt.Name]
			if want == nil {
				want = NewTableHash(db.d.engine(), rt.Name)
			}
			r.Rows, r.Hash, r.Partial = got.Rows, got.Digest(rt.Columns, want), want.Partial()
		}
		out[rt.Name] = r
	}
	return nil
}

// updateRows overwrites, in place, the tenant's rows whose staged version
// differs, after copying the current version to the trash.
func (db *DB) updateRows(ctx context.Context, tx *sql.Tx, sp SwapSpec, rt *RestoreTable, args []any) (int64, error) {
	var set []string
	for _, c := range rt.Columns {
		if !contains(rt.Key, c) {
			set = append(set, qi(c)+" = s."+qi(c))
		}
	}
	if len(set) == 0 {
		return 0, nil // every column is key: equal keys, equal rows
	}
	rd, ref := db.rd(), qi(rt.Name)
	differs := "s.lifeline_tenant = $2 AND s.lifeline_op = $3 AND " + pkMatch("s", ref, rt.Key) + " AND NOT " + identicalAll(rd, "s", ref, rt)
	res, err := db.txExec(ctx, tx, "INSERT INTO "+db.d.trash(rt.Name)+" ("+quoteAll(rt.Columns)+", lifeline_op, lifeline_tenant) SELECT "+
		strings.Join(qualified(ref, rt.Columns), ", ")+", CAST($4 AS TEXT), CAST($5 AS TEXT) FROM "+db.d.live(rt.Name)+" WHERE "+ref+"."+qi(rt.KeyCol)+
		" = $1 AND EXISTS (SELECT 1 FROM "+rd.stage(rt.Name)+" s WHERE "+differs+")", append(args, sp.OpID, sp.Tenant)...)
	if err != nil {
		return 0, err
	}
	copied, _ := res.RowsAffected()
	res, err = db.txExec(ctx, tx, "UPDATE "+db.d.live(rt.Name)+" SET "+strings.Join(set, ", ")+" FROM "+rd.stage(rt.Name)+" s WHERE "+
		ref+"."+qi(rt.KeyCol)+" = $1 AND "+differs, args...)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	if n != copied {
		return 0, fmt.Errorf("kept %d old rows but updated %d", copied, n)
	}
	return n, nil
}

// execer runs a statement: a transaction, or cachedTx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// cachedTx runs statements in tx through the DB's prepared statements
// (txExec): a restore moves rows with the same statements for every tenant.
type cachedTx struct {
	db *DB
	tx *sql.Tx
}

func (c cachedTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return c.db.txExec(ctx, c.tx, query, args...)
}

// txExec runs query in tx. On SQLite the statement is prepared once per
// DB and reused: a restore runs the same statements for every tenant, and
// parsing them is otherwise much of a small tenant's cost. (PostgreSQL
// parses on the server, and a staging table recreated by PrepareRestore
// would invalidate its cached plans.)
func (db *DB) txExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	st, err := db.txStmt(ctx, tx, query)
	if err != nil || st == nil {
		if err != nil {
			return nil, err
		}
		return tx.ExecContext(ctx, query, args...)
	}
	defer st.Close()
	return st.ExecContext(ctx, args...)
}

// txScan runs a query of one row in tx, as txExec does, into dest.
func (db *DB) txScan(ctx context.Context, tx *sql.Tx, query string, args []any, dest ...any) error {
	st, err := db.txStmt(ctx, tx, query)
	if err != nil {
		return err
	}
	if st == nil {
		return tx.QueryRowContext(ctx, query, args...).Scan(dest...)
	}
	defer st.Close()
	return st.QueryRowContext(ctx, args...).Scan(dest...)
}

func (db *DB) txStmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	if db.d.engine() != SQLite {
		return nil, nil
	}
	v, ok := db.stmts.Load(query)
	if !ok {
		st, err := db.db.PrepareContext(ctx, query)
		if err != nil {
			return nil, err
		}
		if v, ok = db.stmts.LoadOrStore(query, st); ok {
			st.Close()
		} else {
			v = st
		}
	}
	return tx.StmtContext(ctx, v.(*sql.Stmt)), nil
}

// checkHash compares rows read back with the rebuilt rows of rt.
func checkHash(l *Layout, sp SwapSpec, rt *RestoreTable, got *TableHash) error {
	want := sp.Want[rt.Name]
	if want == nil {
		want = &TableHash{Table: rt.Name}
	}
	if !got.Equal(want, rt.Columns) {
		return mismatch(l, sp, rt, got.Rows, want.Rows)
	}
	return nil
}

func mismatch(l *Layout, sp SwapSpec, rt *RestoreTable, got, want int64) error {
	return &fault.Error{Code: fault.Internal, Err: ErrMismatch,
		Hint: "the tenant was rolled back and is as it was before; run the restore again (rows written to it meanwhile cause this), or report it if it repeats",
		Msg:  fmt.Sprintf("tenant %s in %s: table %s holds %d rows that do not hash to the %d rebuilt ones", sp.Tenant, l.Product, rt.Name, got, want)}
}

// swapError explains a failed statement of a swap.
func (db *DB) swapError(err error, l *Layout, sp SwapSpec, rt *RestoreTable, doing string) error {
	var fe *fault.Error
	if errors.As(err, &fe) {
		return err
	}
	if db.d.constraint(err) {
		return fault.Wrap(err, fault.Conflict,
			"a row with the same key now belongs to another tenant, a row outside the tenant references it, or a foreign-key cycle cannot be ordered (make that foreign key DEFERRABLE); find it with the keys of "+rt.Name+", fix it, and run the restore again",
			"cannot restore tenant %s in %s: %s of %s breaks a key or reference", sp.Tenant, l.Product, doing, rt.Name)
	}
	return db.internal(err, "restore "+rt.Name+": "+doing)
}

// HashLive hashes the tenant's live rows of rt through q (a transaction, or
// the pool when q is nil).
func (db *DB) HashLive(ctx context.Context, q queryer, rt *RestoreTable, tenant string) (*TableHash, error) {
	if q == nil {
		q = db.db
	}
	return db.hashQuery(ctx, q, rt, "SELECT "+db.selectList("x", rt)+" FROM "+db.d.live(rt.Name)+" x WHERE x."+qi(rt.KeyCol)+" = $1", nil, tenant)
}

// LiveRows streams the tenant's live rows of rt, values in rt.Columns
// order. fn must not keep vals.
func (db *DB) LiveRows(ctx context.Context, rt *RestoreTable, tenant string, fn func(vals []change.Value) error) error {
	return db.scanQuery(ctx, db.db, rt, "SELECT "+db.selectList("x", rt)+" FROM "+db.d.live(rt.Name)+" x WHERE x."+qi(rt.KeyCol)+" = $1", nil, fn, tenant)
}

// hashQuery runs a query selecting rt.Columns (through selectList), hashes
// every row, and hands each to each if it is not nil.
func (db *DB) hashQuery(ctx context.Context, q queryer, rt *RestoreTable, query string, each func([]change.Value) error, args ...any) (*TableHash, error) {
	h := NewTableHash(db.d.engine(), rt.Name)
	if err := db.scanQuery(ctx, q, rt, query, h, each, args...); err != nil {
		return nil, err
	}
	return h, nil
}

// scanQuery runs a query selecting rt.Columns (through selectList), adds
// every row to h unless h is nil, and hands each to each if it is not nil.
func (db *DB) scanQuery(ctx context.Context, q queryer, rt *RestoreTable, query string, h *TableHash, each func([]change.Value) error, args ...any) error {
	var rows *sql.Rows
	var err error
	if tx, ok := q.(*sql.Tx); ok {
		var st *sql.Stmt
		if st, err = db.txStmt(ctx, tx, query); st != nil {
			defer st.Close()
			rows, err = st.QueryContext(ctx, args...)
		}
	}
	if rows == nil && err == nil {
		rows, err = q.QueryContext(ctx, query, args...)
	}
	if err != nil {
		if db.d.badKey(err) {
			return nil // "abc" for an integer key: no rows
		}
		return db.internal(err, "read rows of "+rt.Name)
	}
	defer rows.Close()
	raw := make([]any, len(rt.Columns))
	ptrs := make([]any, len(raw))
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	vals := make([]change.Value, len(raw))
	key := make([]change.Value, len(rt.Key))
	idx := rt.KeyIndex()
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return db.internal(err, "read rows of "+rt.Name)
		}
		for i, v := range raw {
			if vals[i], err = db.scanValue(v); err != nil {
				return db.internal(err, "read rows of "+rt.Name)
			}
		}
		for i, k := range idx {
			key[i] = vals[k]
		}
		if h != nil {
			h.Add(key, rt.Columns, vals, rt.Columns)
		}
		if each != nil {
			if err := each(vals); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return db.internal(err, "read rows of "+rt.Name)
	}
	return nil
}

// selectList reads rt's columns of row alias as Values: on SQLite the
// stored value itself (+col has no declared type, so the driver does not
// turn DATETIME text into a time), on PostgreSQL the text its type's output
// function prints.
func (db *DB) selectList(alias string, rt *RestoreTable) string {
	out := make([]string, len(rt.Columns))
	for i, c := range rt.Columns {
		if db.d.engine() == Postgres {
			out[i] = pgOut(alias, c, rt.Out[i])
		} else {
			out[i] = "+" + alias + "." + qi(c)
		}
	}
	return strings.Join(out, ", ")
}

func pkMatch(a, b string, key []string) string {
	out := make([]string, len(key))
	for i, k := range key {
		out[i] = a + "." + qi(k) + " = " + b + "." + qi(k)
	}
	return strings.Join(out, " AND ")
}

func identicalAll(rd restoreDialect, a, b string, rt *RestoreTable) string {
	out := make([]string, len(rt.Columns))
	for i, c := range rt.Columns {
		fn := ""
		if rt.Out != nil {
			fn = rt.Out[i]
		}
		out[i] = rd.identical(a, b, c, fn)
	}
	return "(" + strings.Join(out, " AND ") + ")"
}

func quoted(cols []string) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = qi(c)
	}
	return out
}

func qualified(alias string, cols []string) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = alias + "." + qi(c)
	}
	return out
}

// KeysHeldByOthers counts how many of keys (primary key values in rt.Key
// order) belong to live rows of tenants other than tenant: rows a restore
// of tenant could not put back.
func (db *DB) KeysHeldByOthers(ctx context.Context, rt *RestoreTable, tenant string, keys [][]change.Value) (int64, error) {
	var total int64
	const batch = 300
	for start := 0; start < len(keys); start += batch {
		part := keys[start:min(start+batch, len(keys))]
		args := []any{tenant}
		tuples := make([]string, len(part))
		for i, k := range part {
			marks := make([]string, len(k))
			for j, v := range k {
				args = append(args, db.keyArg(v))
				marks[j] = fmt.Sprintf("$%d", len(args))
			}
			tuples[i] = "(" + strings.Join(marks, ", ") + ")"
		}
		lhs := make([]string, len(rt.Key))
		for i, k := range rt.Key {
			lhs[i] = "l." + qi(k)
			if db.d.engine() == Postgres {
				lhs[i] = pgOut("l", k, rt.Out[rt.KeyIndex()[i]])
			}
		}
		var in string
		if len(rt.Key) == 1 {
			in = lhs[0] + " IN (" + strings.Join(trimParens(tuples), ", ") + ")"
		} else if db.d.engine() == Postgres {
			in = "(" + strings.Join(lhs, ", ") + ") IN (" + strings.Join(tuples, ", ") + ")"
		} else {
			in = "(" + strings.Join(lhs, ", ") + ") IN (VALUES " + strings.Join(tuples, ", ") + ")"
		}
		var n int64
		err := db.db.QueryRowContext(ctx, "SELECT count(*) FROM "+db.d.live(rt.Name)+" l WHERE CAST(l."+qi(rt.KeyCol)+" AS TEXT) IS DISTINCT FROM $1 AND "+in, args...).Scan(&n)
		if err != nil {
			return 0, db.internal(err, "look for keys of "+rt.Name+" held by other tenants")
		}
		total += n
	}
	return total, nil
}

func trimParens(tuples []string) []string {
	out := make([]string, len(tuples))
	for i, t := range tuples {
		out[i] = strings.TrimSuffix(strings.TrimPrefix(t, "("), ")")
	}
	return out
}

func (db *DB) keyArg(v change.Value) any {
	if db.d.engine() == Postgres {
		text, null := PGText(v)
		if null {
			return nil
		}
		return string(text)
	}
	a, _ := sqliteArg(v)
	return a
}

// RestoreMarker returns what the restore op recorded for tenant, or
// fault.NotFound if it did not restore that tenant here.
func (db *DB) RestoreMarker(ctx context.Context, opID, tenant string) (SwapResult, error) {
	var js, action string
	err := db.db.QueryRowContext(ctx, `SELECT rows_json, action FROM lifeline_applied WHERE op_id = $1 AND tenant = $2 AND app = ''`, opID, tenant).Scan(&js, &action)
	if errors.Is(err, sql.ErrNoRows) {
		return SwapResult{}, fault.New(fault.NotFound, "see the operation's steps with `lifeline ops show "+opID+"`",
			"operation %s did not restore tenant %s in %s", opID, tenant, db.name)
	}
	if err != nil {
		return SwapResult{}, db.unavailable(err)
	}
	return restoreMarker(opID, js, action)
}

// RestoreMarkers returns what the restore op recorded for each tenant it
// restored here, by tenant, in one query (a resumed restore looks up every
// tenant's).
func (db *DB) RestoreMarkers(ctx context.Context, opID string) (map[string]SwapResult, error) {
	rows, err := db.db.QueryContext(ctx, `SELECT tenant, rows_json, action FROM lifeline_applied WHERE op_id = $1 AND app = ''`, opID)
	if err != nil {
		return nil, db.unavailable(err)
	}
	defer rows.Close()
	out := map[string]SwapResult{}
	for rows.Next() {
		var tenant, js, action string
		if err := rows.Scan(&tenant, &js, &action); err != nil {
			return nil, db.unavailable(err)
		}
		if out[tenant], err = restoreMarker(opID, js, action); err != nil {
			return nil, err
		}
	}
	if err := rows.Err(); err != nil {
		return nil, db.unavailable(err)
	}
	return out, nil
}

func restoreMarker(opID, js, action string) (SwapResult, error) {
	var res SwapResult
	if err := json.Unmarshal([]byte(js), &res); err != nil || action != "restore" {
		return SwapResult{}, fault.New(fault.Invalid, "name a restore operation", "operation %s is a %s, not a restore", opID, action)
	}
	return res, nil
}

// StageUndo stages, under undoOp, the rows that undo restore op for tenant
// in the tables it restored: the tenant's live rows the restore did not
// touch, plus the rows it removed or overwrote (from its trash); the rows
// it inserted are left out. It returns the staged rows' hashes, for Swap.
func (db *DB) StageUndo(ctx context.Context, rts []RestoreTable, opID, undoOp, tenant string) (map[string]*TableHash, error) {
	want := map[string]*TableHash{}
	for i := range rts {
		rt := &rts[i]
		stage, trash, ref := db.rd().stage(rt.Name), db.d.trash(rt.Name), qi(rt.Name)
		cols := quoteAll(append(append([]string{}, rt.Columns...), "lifeline_op", "lifeline_tenant"))
		stmts := []string{
			"INSERT INTO " + stage + " (" + cols + ") SELECT " + strings.Join(qualified(ref, rt.Columns), ", ") + ", CAST($2 AS TEXT), CAST($3 AS TEXT) FROM " + db.d.live(rt.Name) +
				" WHERE " + ref + "." + qi(rt.KeyCol) + " = $1 AND NOT EXISTS (SELECT 1 FROM " + trash + " x WHERE x.lifeline_tenant = $3 AND x.lifeline_op IN ($4, $5) AND " + pkMatch("x", ref, rt.Key) + ")",
			"INSERT INTO " + stage + " (" + cols + ") SELECT " + strings.Join(qualified("x", rt.Columns), ", ") + ", CAST($2 AS TEXT), CAST($3 AS TEXT) FROM " + trash +
				" x WHERE x.lifeline_tenant = $3 AND x.lifeline_op = $4 AND CAST($1 AS TEXT) IS NOT NULL AND CAST($5 AS TEXT) IS NOT NULL",
		}
		for _, s := range stmts {
			if _, err := db.db.ExecContext(ctx, s, tenant, undoOp, tenant, opID, opID+InsertedSuffix); err != nil {
				return nil, db.internal(err, "stage the undo of "+rt.Name)
			}
		}
		h, err := db.hashQuery(ctx, db.db, rt, "SELECT "+db.selectList("s", rt)+" FROM "+stage+" s WHERE s.lifeline_tenant = $1 AND s.lifeline_op = $2", nil, tenant, undoOp)
		if err != nil {
			return nil, err
		}
		want[rt.Name] = h
	}
	return want, nil
}

// OpenTarget opens the database an out-of-place restore loads into: dsn as
// for Open, except that a SQLite file that does not exist yet is created
// (empty), since a fresh file is what such a restore wants.
func OpenTarget(ctx context.Context, dsn, baseDir string) (*DB, error) {
	if path, ok := strings.CutPrefix(dsn, "sqlite:"); ok && path != "" {
		path = strings.TrimPrefix(path, "//")
		if !filepath.IsAbs(path) {
			path = filepath.Join(baseDir, path)
		}
		// An empty file is an empty SQLite database.
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err == nil {
			err = f.Close()
		}
		if err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fault.Wrap(err, fault.Unavailable, "check that the folder exists and is writable", "cannot create %s", dsn)
		}
	}
	return Open(ctx, dsn, baseDir)
}

// Tables lists every table of the database (Lifeline's own included; on
// PostgreSQL those of the public and lifeline schemas): an out-of-place
// restore refuses a target that has any.
func (db *DB) Tables(ctx context.Context) ([]string, error) {
	q := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`
	if db.d.engine() == Postgres {
		q = `SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname IN ('public', 'lifeline') AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1`
	}
	out, err := queryStrings(ctx, db.db, q)
	if err != nil {
		return nil, db.unavailable(err)
	}
	return out, nil
}

// Load is one transaction loading restored tenants into an empty database
// (out of place): all of them or, after a failure, none.
type Load struct {
	db   *DB
	conn *sql.Conn
	done bool
}

// BeginLoad starts a load into db.
func (db *DB) BeginLoad(ctx context.Context) (*Load, error) {
	conn, err := db.db.Conn(ctx)
	if err != nil {
		return nil, db.unavailable(err)
	}
	begin := "BEGIN"
	if db.d.engine() == SQLite {
		begin = "BEGIN IMMEDIATE"
	}
	if _, err := conn.ExecContext(ctx, begin); err != nil {
		conn.Close()
		return nil, db.unavailable(err)
	}
	return &Load{db: db, conn: conn}, nil
}

// CreateTable creates a table like t (from the source product's schema):
// its stored columns with their types and NOT NULL, and its primary key,
// plus an index on the tenant column. Defaults, generated and identity
// properties, foreign keys and other indexes are not copied: the target is
// for reading and comparing.
func (ld *Load) CreateTable(ctx context.Context, t *Table, rt *RestoreTable) error {
	var cols []string
	for i, c := range rt.Columns {
		typ := rt.Types[i]
		if col := t.Column(c); col != nil && col.Type != "" {
			typ = col.Type
		}
		def := strings.TrimSpace(qi(c) + " " + typ)
		if col := t.Column(c); col != nil && col.NotNull {
			def += " NOT NULL"
		}
		cols = append(cols, def)
	}
	cols = append(cols, "PRIMARY KEY ("+quoteAll(rt.Key)+")")
	name := ld.db.d.live(rt.Name)
	stmts := []string{"CREATE TABLE " + name + " (" + strings.Join(cols, ", ") + ")"}
	if !(len(rt.Key) == 1 && rt.Key[0] == rt.KeyCol) {
		idx := "tenant_" + rt.Name
		if ld.db.d.engine() == Postgres {
			idx = pgName("tenant_", rt.Name)
		}
		stmts = append(stmts, "CREATE INDEX "+qi(idx)+" ON "+name+" ("+qi(rt.KeyCol)+")")
	}
	if err := execAll(ctx, ld.conn, stmts...); err != nil {
		return ld.db.internal(err, "create table "+rt.Name)
	}
	return nil
}

// Rows writes rows (values in cols order) into table.
func (ld *Load) Rows(ctx context.Context, table string, cols []string, rows [][]change.Value) error {
	if len(rows) == 0 {
		return nil
	}
	if ld.db.d.engine() == Postgres {
		return ld.db.copyRows(ctx, ld.conn, ld.db.d.live(table), cols, nil, nil, rows)
	}
	return ld.db.insertRows(ctx, ld.conn, ld.db.d.live(table), cols, nil, nil, rows)
}

// DeleteTenant removes tenant's loaded rows of rt (a tenant whose backup
// turned out unreadable halfway).
func (ld *Load) DeleteTenant(ctx context.Context, rt *RestoreTable, tenant string) error {
	_, err := ld.conn.ExecContext(ctx, "DELETE FROM "+ld.db.d.live(rt.Name)+" WHERE "+qi(rt.KeyCol)+" = $1", tenant)
	return ld.db.internal(err, "remove a half-loaded tenant from "+rt.Name)
}

// Hash hashes the loaded rows of tenant in rt.
func (ld *Load) Hash(ctx context.Context, rt *RestoreTable, tenant string) (*TableHash, error) {
	return ld.db.hashQuery(ctx, ld.conn, rt, "SELECT "+ld.db.selectList("x", rt)+" FROM "+ld.db.d.live(rt.Name)+" x WHERE x."+qi(rt.KeyCol)+" = $1", nil, tenant)
}

// Commit makes the load visible.
func (ld *Load) Commit(ctx context.Context) error {
	ld.done = true
	defer ld.conn.Close()
	if _, err := ld.conn.ExecContext(ctx, "COMMIT"); err != nil {
		return ld.db.internal(err, "commit the load")
	}
	return nil
}

// Rollback abandons the load (a no-op after Commit).
func (ld *Load) Rollback() {
	if ld.done {
		return
	}
	ld.done = true
	_, _ = ld.conn.ExecContext(context.Background(), "ROLLBACK")
	ld.conn.Close()
}

// TrashOps lists the operations whose rows the product's trash tables
// keep ("op_…/inserted" notes count as their op's).
func (db *DB) TrashOps(ctx context.Context, l *Layout) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, t := range l.Tables {
		rows, err := db.db.QueryContext(ctx, "SELECT DISTINCT lifeline_op FROM "+db.d.trash(t))
		if err != nil {
			return nil, db.internal(err, "read trash of "+t)
		}
		for rows.Next() {
			var op string
			if err := rows.Scan(&op); err != nil {
				rows.Close()
				return nil, db.internal(err, "read trash of "+t)
			}
			op = strings.TrimSuffix(op, InsertedSuffix)
			if !seen[op] {
				seen[op] = true
				out = append(out, op)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, db.internal(err, "read trash of "+t)
		}
	}
	return out, nil
}

// DropTrash removes for good, in one transaction, every trash row kept
// under opID (and its opID/inserted notes), and returns how many.
func (db *DB) DropTrash(ctx context.Context, l *Layout, opID string) (int64, error) {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, db.unavailable(err)
	}
	defer tx.Rollback()
	var n int64
	for _, t := range l.Tables {
		res, err := tx.ExecContext(ctx, "DELETE FROM "+db.d.trash(t)+" WHERE lifeline_op IN ($1, $2)", opID, opID+InsertedSuffix)
		if err != nil {
			return 0, db.internal(err, "clean trash of "+t)
		}
		m, _ := res.RowsAffected()
		n += m
	}
	if err := tx.Commit(); err != nil {
		return 0, db.internal(err, "commit")
	}
	return n, nil
}
