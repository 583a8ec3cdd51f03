package productdb

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"

	"lifeline/internal/change"
)

// The direct swap: for a tenant whose rebuilt rows are few (SwapSpec.Rows),
// staging them first costs more than the swap itself: every row written to
// a staging table, read back by set statements that each probe the live
// table again, and deleted. Instead, each table's live rows of the tenant
// are read once inside the swap's transaction and compared with the
// rebuilt rows by primary key in memory; only rows that differ are
// written, each kind in one statement per table. The guarantees are those
// of the staged swap: the same trash records (old versions of rows removed
// or overwritten, keys of rows put in), the same order (removals children
// first, then insertions and overwrites parents first), and the same
// verification by hash of the tenant's live rows before commit.

// DirectMaxRows bounds the rows of one table a direct swap takes; larger
// tenants are staged. A statement writes a table's rows of a kind, and
// SQLite binds at most 32,766 values per statement (PostgreSQL 65,535).
func DirectMaxRows(rt *RestoreTable) int { return min(500, 30000/(len(rt.Columns)+2)) }

// CanSwapDirect reports whether Swap can take b's rows directly (see
// SwapSpec.Rows): replace, every column of the table present.
func (db *DB) CanSwapDirect(policy Policy, b Batch) bool {
	return policy == Replace && len(b.Cols) == len(b.Table.Columns)
}

// tableDiff is what a direct swap writes into one table.
type tableDiff struct {
	rt        *RestoreTable
	gone      [][]change.Value // live rows the tenant did not have
	add       [][]change.Value // rebuilt rows the tenant lacks
	old, upd  [][]change.Value // live and rebuilt versions of rows that differ
	unchanged bool
}

// liveRows are the tenant's live rows of every table of a direct swap, by
// key, and their keys in the order read (removals in a stable order).
type liveRows struct {
	tables []*RestoreTable
	rows   []map[string][]change.Value
	order  [][]string
}

// readLive queues the read of the tenant's live rows of sp.Tables, in one
// statement: on PostgreSQL it goes with the swap's first round trip
// (swapOne), and the rows are in once that is flushed.
func (db *DB) readLive(ctx context.Context, tx *swapTx, sp SwapSpec) (*liveRows, error) {
	lr := &liveRows{tables: make([]*RestoreTable, len(sp.Tables)), rows: make([]map[string][]change.Value, len(sp.Tables)), order: make([][]string, len(sp.Tables))}
	for i := range sp.Tables {
		lr.tables[i], lr.rows[i] = &sp.Tables[i], map[string][]change.Value{}
	}
	var kb []byte
	// Not hashed: comparing every value, by key, is the stronger check.
	return lr, db.readTenant(ctx, tx, lr.tables, sp.Tenant, func(i int, vals []change.Value) error {
		kb = db.appendKey(kb[:0], lr.tables[i], vals)
		k := string(kb)
		lr.rows[i][k] = slices.Clone(vals)
		lr.order[i] = append(lr.order[i], k)
		return nil
	})
}

// swapDirect is swapRows for sp.Rows (replace), from the live rows
// readLive read.
func (db *DB) swapDirect(ctx context.Context, tx *swapTx, l *Layout, sp SwapSpec, lr *liveRows, out map[string]TableResult) error {
	rebuilt := map[string][][]change.Value{}
	for _, b := range sp.Rows {
		if !db.CanSwapDirect(sp.Policy, b) {
			return fmt.Errorf("rows of %s cannot be swapped directly", b.Table.Name)
		}
		rebuilt[b.Table.Name] = append(rebuilt[b.Table.Name], b.Rows...)
	}
	diffs := make([]*tableDiff, len(sp.Tables))
	for i, rt := range lr.tables {
		diffs[i] = db.diffTable(rt, lr.rows[i], lr.order[i], rebuilt[rt.Name])
	}
	for i := len(diffs) - 1; i >= 0; i-- {
		d := diffs[i]
		if d.unchanged || len(d.gone) == 0 {
			continue
		}
		if err := db.keepThen(ctx, tx, l, sp, d.rt, d.gone, d.gone, "moving its current rows to the trash", func(p *params, rows [][]change.Value) (string, error) {
			return db.deleteSQL(p, d.rt, rows, sp.Tenant)
		}); err != nil {
			return err
		}
	}
	for _, d := range diffs {
		rt := d.rt
		if d.unchanged {
			continue
		}
		note := []string{sp.OpID + InsertedSuffix, sp.Tenant}
		switch {
		case len(d.add) == 0:
		case db.d.engine() == Postgres:
			if err := db.insertNoted(ctx, tx, l, sp, rt, note, d.add); err != nil {
				return err
			}
		default:
			if err := db.insertValues(ctx, tx.tx, db.d.trash(rt.Name), rt, true, note, d.add); err != nil {
				return db.swapError(err, l, sp, rt, "noting the keys of the rows it inserts")
			}
			if err := db.insertValues(ctx, tx.tx, db.d.live(rt.Name), rt, false, nil, d.add); err != nil {
				return db.swapError(err, l, sp, rt, "inserting its rows")
			}
		}
		if len(d.upd) > 0 {
			if err := db.keepThen(ctx, tx, l, sp, rt, d.old, d.upd, "updating the rows that differ", func(p *params, rows [][]change.Value) (string, error) {
				return db.updateSQL(p, rt, rows)
			}); err != nil {
				return err
			}
		}
	}
	// The written tables read back and hashed, in one statement.
	var written []*RestoreTable
	var hashes []*TableHash
	for _, d := range diffs {
		if !d.unchanged {
			written = append(written, d.rt)
			hashes = append(hashes, NewTableHash(db.d.engine(), d.rt.Name))
		}
	}
	key := []change.Value{}
	if err := db.readTenant(ctx, tx, written, sp.Tenant, func(i int, vals []change.Value) error {
		rt := written[i]
		key = key[:0]
		for _, k := range rt.KeyIndex() {
			key = append(key, vals[k])
		}
		hashes[i].Add(key, rt.Columns, vals, rt.Columns)
		return nil
	}); err != nil {
		return err
	}
	if err := db.flush(ctx, tx); err != nil {
		return err
	}
	for _, d := range diffs {
		rt := d.rt
		want := sp.Want[rt.Name]
		if want == nil {
			want = NewTableHash(db.d.engine(), rt.Name)
		}
		got := want // unchanged: every live row equals its rebuilt one
		if !d.unchanged {
			got = hashes[slices.Index(written, rt)]
			if err := checkHash(l, sp, rt, got); err != nil {
				return err
			}
		}
		out[rt.Name] = TableResult{Rows: got.Rows, Inserted: int64(len(d.add)), Replaced: int64(len(d.upd)), Removed: int64(len(d.gone)),
			Hash: got.Digest(rt.Columns, want)}
	}
	return nil
}

// readTenant reads the tenant's live rows of every table in rts with one
// UNION ALL statement (a round trip per table adds up, on PostgreSQL
// most of all), handing each row to fn with its table's index in rts;
// values as scanQuery reads them. fn must not keep vals. Through
// queryLater: on PostgreSQL inside SwapAll the rows are in after flush.
func (db *DB) readTenant(ctx context.Context, tx *swapTx, rts []*RestoreTable, tenant string, fn func(i int, vals []change.Value) error) error {
	if len(rts) == 0 {
		return nil
	}
	width := 0
	for _, rt := range rts {
		width = max(width, len(rt.Columns))
	}
	p := &params{db: db}
	parts := make([]string, len(rts))
	for i, rt := range rts {
		// The tenant is bound once per table: on PostgreSQL each key
		// column may have its own type.
		parts[i] = fmt.Sprintf("SELECT %d, %s%s FROM %s x WHERE x.%s = %s", i, db.selectList("x", rt),
			strings.Repeat(", NULL", width-len(rt.Columns)), db.d.live(rt.Name), qi(rt.KeyCol), p.add(tenant, ""))
	}
	query := strings.Join(parts, " UNION ALL ")
	var table int
	raw := make([]any, width)
	ptrs := append([]any{&table}, make([]any, width)...)
	for i := range raw {
		ptrs[i+1] = &raw[i]
	}
	vals := make([]change.Value, width)
	// "abc" for an integer key: no rows.
	return db.queryLater(ctx, tx, func(err error) error { return db.internal(err, "read the tenant's rows") }, func(scan func(...any) error) error {
		if err := scan(ptrs...); err != nil {
			return db.internal(err, "read the tenant's rows")
		}
		if table < 0 || table >= len(rts) {
			return db.internal(fmt.Errorf("row of table %d", table), "read the tenant's rows")
		}
		n := len(rts[table].Columns)
		for i := range n {
			var err error
			if vals[i], err = db.scanValue(raw[i]); err != nil {
				return db.internal(err, "read rows of "+rts[table].Name)
			}
		}
		return fn(table, vals[:n])
	}, query, p.args...)
}

// keepThen copies old, live rows of rt, to the trash under the swap's
// operation, then writes rows with the statements write builds (deleteSQL
// or updateSQL), which must change exactly len(old) rows. On PostgreSQL
// both are one statement (the copy in a data-modifying WITH).
func (db *DB) keepThen(ctx context.Context, tx *swapTx, l *Layout, sp SwapSpec, rt *RestoreTable, old, rows [][]change.Value, doing string,
	write func(p *params, rows [][]change.Value) (string, error)) error {
	keep := []string{sp.OpID, sp.Tenant}
	var changed int64
	if db.d.engine() == Postgres {
		// Through later: checked when the swap reads the rows back.
		p := &params{db: db}
		trash, err := db.insertSQL(p, db.d.trash(rt.Name), rt, false, keep, old)
		if err != nil {
			return db.swapError(err, l, sp, rt, doing)
		}
		stmt, err := write(p, rows)
		if err != nil {
			return db.swapError(err, l, sp, rt, doing)
		}
		return db.later(ctx, tx, func(err error) error { return db.swapError(err, l, sp, rt, doing) }, func(changed int64) error {
			return db.keptChanged(rt, doing, len(old), changed)
		}, "WITH kept AS ("+trash+") "+stmt, p.args...)
	} else {
		if err := db.insertValues(ctx, tx.tx, db.d.trash(rt.Name), rt, false, keep, old); err != nil {
			return db.swapError(err, l, sp, rt, doing)
		}
		for _, n := range db.chunks(len(rows), 30000/len(rt.Columns)) {
			p := &params{db: db}
			stmt, err := write(p, rows[:n])
			var res sql.Result
			if err == nil {
				res, err = db.txExec(ctx, tx.tx, stmt, p.args...)
			}
			if err != nil {
				return db.swapError(err, l, sp, rt, doing)
			}
			m, _ := res.RowsAffected()
			changed += m
			rows = rows[n:]
		}
	}
	return db.keptChanged(rt, doing, len(old), changed)
}

// keptChanged checks that keepThen changed as many rows as it kept.
func (db *DB) keptChanged(rt *RestoreTable, doing string, kept int, changed int64) error {
	if changed != int64(kept) {
		return db.internal(fmt.Errorf("kept %d old rows but changed %d", kept, changed), rt.Name+": "+doing)
	}
	return nil
}

// diffTable compares the tenant's live rows of rt (by key, and their keys
// in the order read) with the rebuilt rows.
func (db *DB) diffTable(rt *RestoreTable, live map[string][]change.Value, order []string, rebuilt [][]change.Value) *tableDiff {
	d := &tableDiff{rt: rt}
	var kb []byte
	for _, row := range rebuilt {
		kb = db.appendKey(kb[:0], rt, row)
		cur, ok := live[string(kb)]
		switch {
		case !ok:
			d.add = append(d.add, row)
		case !db.sameRow(cur, row):
			d.old, d.upd = append(d.old, cur), append(d.upd, row)
		}
		delete(live, string(kb))
	}
	for _, k := range order {
		if row, ok := live[k]; ok {
			d.gone = append(d.gone, row)
		}
	}
	d.unchanged = len(d.add)+len(d.upd)+len(d.gone) == 0
	return d
}

// appendKey appends the canonical encoding of row's primary key values.
func (db *DB) appendKey(b []byte, rt *RestoreTable, row []change.Value) []byte {
	for _, i := range rt.KeyIndex() {
		b = AppendValue(db.d.engine(), b, row[i])
	}
	return b
}

// sameRow reports whether two rows hold the same values as the hash sees
// them.
func (db *DB) sameRow(a, b []change.Value) bool {
	var x, y []byte
	for i := range a {
		x = AppendValue(db.d.engine(), x[:0], a[i])
		y = AppendValue(db.d.engine(), y[:0], b[i])
		if string(x) != string(y) {
			return false
		}
	}
	return true
}

// The statements below write many rows each. On SQLite a statement takes
// a power-of-two number of rows (a table's 100 rows go as 64, 32 and 4),
// so that a handful of shapes, each prepared once and reused (txExec),
// serve every tenant: no statement is parsed per tenant. Splitting a
// table's rows over several statements can break a foreign key part way;
// SwapAll then swaps the tenant again with them deferred. On PostgreSQL a
// statement takes all of a kind's rows, bound as one text array per column
// (rowSet): its non-deferrable foreign keys are checked per statement, and
// its text is the same whatever the number of rows, so each connection
// prepares it once (pgx keeps it) and the server may keep a generic plan
// of it, where a VALUES list of each length was a statement of its own,
// parsed, described and planned afresh.

// chunks splits n rows into the row counts of the statements that write
// them, at most limit each.
func (db *DB) chunks(n, limit int) []int {
	var out []int
	if db.d.engine() != SQLite {
		for ; n > 0; n -= min(n, limit) {
			out = append(out, min(n, limit))
		}
		return out
	}
	top := 1
	for top*2 <= limit {
		top *= 2
	}
	for n > 0 {
		c := top
		for c > n {
			c /= 2
		}
		out = append(out, c)
		n -= c
	}
	return out
}

// params builds a statement's placeholders and their arguments: SQLite's
// plain ?, each value bound with its storage class; PostgreSQL's $n, cast
// to the column's type, each value bound as the text capture recorded
// (the type's input function reads it, as COPY's does).
type params struct {
	db   *DB
	args []any
}

// appendMark appends the placeholder of the value bound last.
func (p *params) appendMark(b []byte, typ string) []byte {
	if p.db.d.engine() == SQLite {
		return append(b, '?')
	}
	b = strconv.AppendInt(append(b, '$'), int64(len(p.args)), 10)
	if typ != "" {
		b = append(append(b, "::"...), typ...)
	}
	return b
}

// add binds a value; typ is its column's type ("" to let the server infer
// it).
func (p *params) add(v any, typ string) string {
	p.args = append(p.args, v)
	return string(p.appendMark(nil, typ))
}

// rowSet binds rows' values at idx (of types) and returns a query that
// yields them, its columns named column1, column2… On SQLite it is
// "VALUES (…), (…)", a placeholder per value. On PostgreSQL it is one
// text[] parameter per column, unnested and each element cast to its
// column's type ("SELECT u.c1::bigint AS column1, … FROM unnest($1::text[],
// …) AS u(c1, …)"): every value still goes through its type's input
// function, as COPY's do.
func (p *params) rowSet(rows [][]change.Value, idx []int, types []string) (string, error) {
	if p.db.d.engine() == SQLite {
		values, err := p.tuples(rows, idx)
		return "VALUES " + values, err
	}
	var sel, arrays, names []byte
	for j, i := range idx {
		col := make([]pgtype.Text, len(rows))
		for r, row := range rows {
			text, null := PGText(row[i])
			col[r] = pgtype.Text{String: string(text), Valid: !null}
		}
		p.args = append(p.args, col)
		if j > 0 {
			sel, arrays, names = append(sel, ", "...), append(arrays, ", "...), append(names, ", "...)
		}
		c := "c" + strconv.Itoa(j+1)
		sel = append(append(sel, "u."...), c...)
		if types[i] != "" {
			sel = append(append(sel, "::"...), types[i]...)
		}
		sel = strconv.AppendInt(append(sel, " AS column"...), int64(j+1), 10)
		arrays = p.appendMark(arrays, "text[]")
		names = append(names, c...)
	}
	return "SELECT " + string(sel) + " FROM unnest(" + string(arrays) + ") AS u(" + string(names) + ")", nil
}

// tuples binds rows' values at idx as SQLite's "(?, ?), (?, ?)", each with
// its storage class. A swap binds thousands of values per tenant: the text
// is built in one buffer.
func (p *params) tuples(rows [][]change.Value, idx []int) (string, error) {
	p.args = slices.Grow(p.args, len(rows)*len(idx))
	b := make([]byte, 0, len(rows)*len(idx)*12)
	for r, row := range rows {
		if r > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '(')
		for j, i := range idx {
			if j > 0 {
				b = append(b, ", "...)
			}
			a, err := sqliteArg(row[i])
			if err != nil {
				return "", err
			}
			p.args = append(p.args, a)
			b = append(b, '?')
		}
		b = append(b, ')')
	}
	return string(b), nil
}

func allColumns(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// insertValues inserts rows of rt (values of rt.Columns, or of its key
// when keysOnly) into target; extra are the values of lifeline_op and
// lifeline_tenant for a trash table, none for the live table.
func (db *DB) insertValues(ctx context.Context, tx *sql.Tx, target string, rt *RestoreTable, keysOnly bool, extra []string, rows [][]change.Value) error {
	width := len(rt.Columns)
	if keysOnly {
		width = len(rt.Key)
	}
	for _, n := range db.chunks(len(rows), 30000/(width+1)) {
		p := &params{db: db}
		query, err := db.insertSQL(p, target, rt, keysOnly, extra, rows[:n])
		if err != nil {
			return err
		}
		if _, err := db.txExec(ctx, tx, query, p.args...); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// insertSQL is one INSERT of insertValues, its values bound in p.
func (db *DB) insertSQL(p *params, target string, rt *RestoreTable, keysOnly bool, extra []string, rows [][]change.Value) (string, error) {
	cols, idx := rt.Columns, allColumns(len(rt.Columns))
	if keysOnly {
		cols, idx = rt.Key, rt.KeyIndex()
	}
	names := quoteAll(cols)
	if len(extra) > 0 {
		names += ", lifeline_op, lifeline_tenant"
	}
	query := "INSERT INTO " + target + " (" + names + ")"
	if len(extra) > 0 {
		query += " SELECT v.*"
		for _, e := range extra {
			query += ", " + p.add(e, "text")
		}
		query += " FROM ("
	} else {
		query += db.rd().overriding() + " "
	}
	set, err := p.rowSet(rows, idx, rt.Types)
	if err != nil {
		return "", err
	}
	query += set
	if len(extra) > 0 {
		query += ") AS v"
	}
	return query, nil
}

// insertNoted inserts rows into rt's live table and notes their keys in
// its trash under note (lifeline_op, lifeline_tenant), in one PostgreSQL
// statement (a round trip saved per table), through later: checked, when
// the swap reads the rows back, to have noted every row.
func (db *DB) insertNoted(ctx context.Context, tx *swapTx, l *Layout, sp SwapSpec, rt *RestoreTable, note []string, rows [][]change.Value) error {
	fail := func(err error) error { return db.swapError(err, l, sp, rt, "inserting its rows") }
	p := &params{db: db}
	set, err := p.rowSet(rows, allColumns(len(rt.Columns)), rt.Types)
	if err != nil {
		return fail(err)
	}
	query := "WITH ins AS (INSERT INTO " + db.d.live(rt.Name) + " (" + quoteAll(rt.Columns) + ")" + db.rd().overriding() + " " + set +
		" RETURNING " + quoteAll(rt.Key) + ") INSERT INTO " + db.d.trash(rt.Name) + " (" + quoteAll(rt.Key) + ", lifeline_op, lifeline_tenant) SELECT ins.*, " +
		p.add(note[0], "text") + ", " + p.add(note[1], "text") + " FROM ins"
	return db.later(ctx, tx, fail, func(n int64) error {
		if n != int64(len(rows)) {
			return db.internal(fmt.Errorf("inserted %d rows but noted %d", len(rows), n), rt.Name+": inserting its rows")
		}
		return nil
	}, query, p.args...)
}

// deleteSQL deletes the tenant's live rows of rt with the keys of rows.
func (db *DB) deleteSQL(p *params, rt *RestoreTable, rows [][]change.Value, tenant string) (string, error) {
	lhs := "(" + quoteAll(rt.Key) + ")"
	if len(rt.Key) == 1 {
		lhs = qi(rt.Key[0])
	}
	query := "DELETE FROM " + db.d.live(rt.Name) + " WHERE " + qi(rt.KeyCol) + " = " + p.add(tenant, "") + " AND " + lhs + " IN ("
	set, err := p.rowSet(rows, rt.KeyIndex(), rt.Types)
	return query + set + ")", err
}

// updateSQL overwrites the rows of rt with the keys of rows with their
// values, with UPDATE … FROM (rowSet). (A table whose every column is
// key has no rows to overwrite: equal keys, equal rows.)
func (db *DB) updateSQL(p *params, rt *RestoreTable, rows [][]change.Value) (string, error) {
	var set, match []string
	for i, c := range rt.Columns {
		ref := fmt.Sprintf("v.column%d", i+1)
		if contains(rt.Key, c) {
			match = append(match, qi(rt.Name)+"."+qi(c)+" = "+ref)
		} else {
			set = append(set, qi(c)+" = "+ref)
		}
	}
	values, err := p.rowSet(rows, allColumns(len(rt.Columns)), rt.Types)
	return "UPDATE " + db.d.live(rt.Name) + " SET " + strings.Join(set, ", ") + " FROM (" + values +
		") AS v WHERE " + strings.Join(match, " AND "), err
}
