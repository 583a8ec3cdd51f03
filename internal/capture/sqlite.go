package capture

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"lifeline/internal/change"
	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

// sqliteSource reads the change log that protect's triggers write
// (productdb/capture_sqlite.go). The log's seq is contiguous in commit order,
// so a change's position is cur.Pos + (seq - cur.Src).
//
// Transactions: a trigger cannot see where a transaction ends, but a reader
// can: everything visible in a read snapshot is committed, so the highest
// seq a read sees ends a transaction. Read, Backlog and Snapshot record each
// such end in lifeline_capture_ends (Read and Backlog only if SQLite's
// write lock is free within milliseconds), and a batch ends on a recorded
// one. The changes
// between two recorded ends form a commit group, one or more whole
// transactions, which a batch carries as one transaction (Tx = the group's
// last seq, TxEnd on it). Ends are recorded above every end already known,
// so re-reading a range groups it exactly as before, in any process. In
// steady shipping each read sees what was committed since the last one, so
// groups are about one shipping interval. A backlog that built up while
// nobody read (Lifeline stopped) has no recorded ends inside it: if none is
// known within 4×max changes, Read cuts at max and the batch ends with TxEnd
// false, the group (same Tx) continuing in the next batch; restore must
// treat such a batch end as inside a transaction.
type sqliteSource struct {
	db     *productdb.DB
	layout *productdb.Layout
	opts   Options

	mu      sync.Mutex // held by every method but Ack's deletes
	ackMu   sync.Mutex // one Ack at a time
	checked int64      // PRAGMA schema_version last verified; -1 none
	hist    *history   // the shapes as of checked
	acked   uint64
}

func openSQLite(db *productdb.DB, layout *productdb.Layout, opts Options) *sqliteSource {
	return &sqliteSource{db: db, layout: layout, opts: opts, checked: -1}
}

// begin opens a read transaction: BEGIN DEFERRED, so it takes no write lock
// and its snapshot starts at its first statement.
func (s *sqliteSource) begin(ctx context.Context) (*sql.Tx, error) {
	tx, err := s.db.SQL().BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, s.unavailable(err)
	}
	return tx, nil
}

func (s *sqliteSource) unavailable(err error) error {
	var fe *fault.Error
	if errors.As(err, &fe) {
		return err
	}
	return fault.Wrap(err, fault.Unavailable, "check that the product database is reachable", "capture of product %s", s.layout.Product)
}

// verify returns the shape history after checking, in tx's snapshot, that
// the tables still have the shapes their triggers were built for. The check
// is skipped while PRAGMA schema_version is the one last verified: any DDL
// changes it.
func (s *sqliteSource) verify(ctx context.Context, tx *sql.Tx) (*history, error) {
	var ver int64
	if err := tx.QueryRowContext(ctx, "PRAGMA schema_version").Scan(&ver); err != nil {
		return nil, s.unavailable(err)
	}
	if ver == s.checked && s.hist != nil {
		return s.hist, nil
	}
	shapes, err := s.db.CapturedShapes(ctx, tx)
	if err != nil {
		return nil, err
	}
	h := newHistory(shapes)
	if err := checkCapture(ctx, s.db, tx, s.layout, h.current(), true); err != nil {
		return nil, s.unavailable(err)
	}
	s.checked, s.hist = ver, h
	return h, nil
}

// How top records the end it finds.
type endRecording int

const (
	tryRecord  endRecording = iota // Read, Backlog: if the write lock comes at once
	waitRecord                     // Snapshot: wait for the lock as any writer does
)

// top is the last seq assigned, as of tx's snapshot (the newest log row is
// never deleted): the end of the last committed transaction. It is recorded
// as a transaction end unless a later one is known already; ok is false if
// it is neither recorded nor known, and known is then the last end that is.
// Recording goes through another connection (tx only reads). Read only
// tries for a few milliseconds: a reader must not queue behind the
// application's writers (under a steady 2,000 writes/s that wait took
// seconds, all of it shipping lag; bench/shipping).
func (s *sqliteSource) top(ctx context.Context, tx *sql.Tx, rec endRecording) (top, known uint64, ok bool, err error) {
	var t, k int64
	err = tx.QueryRowContext(ctx, "SELECT (SELECT coalesce(max(seq), 0) FROM "+productdb.ChangeLog+"), (SELECT coalesce(max(seq), 0) FROM "+
		productdb.CaptureEnds+")").Scan(&t, &k)
	if err != nil {
		return 0, 0, false, s.unavailable(err)
	}
	top, known = uint64(t), uint64(k)
	if top <= known || top <= s.acked {
		return top, known, true, nil
	}
	switch rec {
	case tryRecord:
		ok = s.recordEnd(ctx, t, 5)
	case waitRecord:
		ok = s.recordEnd(ctx, t, -1)
	}
	return top, known, ok, nil
}

// recordEnd records seq as a transaction end, waiting at most waitMS for
// SQLite's write lock (negative: the connection's busy timeout).
func (s *sqliteSource) recordEnd(ctx context.Context, seq int64, waitMS int) bool {
	conn, err := s.db.SQL().Conn(ctx)
	if err != nil {
		return false
	}
	defer conn.Close()
	if waitMS >= 0 {
		var was int
		if err := conn.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&was); err != nil {
			return false
		}
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", waitMS)); err != nil {
			return false
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), fmt.Sprintf("PRAGMA busy_timeout = %d", was))
	}
	if _, err := conn.ExecContext(ctx, "INSERT OR IGNORE INTO "+productdb.CaptureEnds+" (seq) VALUES ($1)", seq); err != nil {
		s.opts.Log.Debug("a transaction end was not recorded: the write lock was busy", "product", s.layout.Product, "err", err)
		return false
	}
	return true
}

func (s *sqliteSource) checkCursor(cur Cursor, top uint64) error {
	switch {
	case cur.Src < s.acked:
		return fault.New(fault.Refused, "continue from the repository's cursor",
			"product %s: reading from change-log position %d, but everything up to %d was acknowledged and forgotten", s.layout.Product, cur.Src, s.acked)
	case cur.Src > top:
		return fault.New(fault.Refused,
			"the change log was recreated (unprotect, or a restored database file?): take a new snapshot into a fresh repository",
			"product %s: the repository has shipped up to change-log position %d, but the log ends at %d", s.layout.Product, cur.Src, top)
	}
	return nil
}

// ends returns the known transaction ends in (from, top], ascending: those
// recorded, the shape boundaries, and top itself.
func (s *sqliteSource) ends(ctx context.Context, tx *sql.Tx, from, top uint64, h *history) ([]uint64, error) {
	rows, err := tx.QueryContext(ctx, "SELECT seq FROM "+productdb.CaptureEnds+" WHERE seq > $1 AND seq < $2 ORDER BY seq", int64(from), int64(top))
	if err != nil {
		return nil, s.unavailable(err)
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq); err != nil {
			return nil, s.unavailable(err)
		}
		out = append(out, uint64(seq))
	}
	if err := rows.Err(); err != nil {
		return nil, s.unavailable(err)
	}
	for _, b := range h.bounds() {
		if b > from && b < top {
			out = append(out, b)
		}
	}
	out = append(out, top)
	slices.Sort(out)
	return slices.Compact(out), nil
}

// cut chooses where a batch from `from` ends: not past the next shape
// boundary, at the first known end at or after from+max if it comes within
// 4×max, else at the last known end before it; ok is false when no end is
// known and the batch is cut at from+max.
func cut(from, top, max uint64, ends, shapeBounds []uint64) (end uint64, ok bool) {
	limit := top
	for _, b := range shapeBounds {
		if b > from && b < limit {
			limit = b
		}
	}
	want := from + max
	if limit <= want {
		return limit, true
	}
	best := uint64(0)
	for _, b := range ends {
		if b > limit {
			break
		}
		if b >= want {
			if b <= from+4*max {
				return b, true
			}
			break
		}
		best = b
	}
	if best > from {
		return best, true
	}
	return want, false
}

func (s *sqliteSource) Read(ctx context.Context, cur Cursor, max int) (Batch, error) {
	max = atLeastOne(max)
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.begin(ctx)
	if err != nil {
		return Batch{}, err
	}
	defer tx.Rollback()
	h, err := s.verify(ctx, tx)
	if err != nil {
		return Batch{}, err
	}
	top, known, recorded, err := s.top(ctx, tx, tryRecord)
	if err != nil {
		return Batch{}, err
	}
	if err := s.checkCursor(cur, top); err != nil {
		return Batch{}, err
	}
	if !recorded {
		// A batch ends on a recorded end, so that a range read again groups
		// exactly as before: the changes after the last one wait for the
		// next read.
		top = cur.Src
		if known > top {
			top = known
		}
	}
	if top == cur.Src {
		return Batch{End: cur, Behind: !recorded}, nil
	}
	ends, err := s.ends(ctx, tx, cur.Src, top, h)
	if err != nil {
		return Batch{}, err
	}
	end, _ := cut(cur.Src, top, uint64(max), ends, h.bounds())

	w := h.width()
	cols := []string{"seq", "tbl", "op", sqliteLogTenant(h, end), "ts"}
	for i := range w {
		cols = append(cols, productdb.LogColumn(i))
	}
	rows, err := tx.QueryContext(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM "+productdb.ChangeLog+
		" WHERE seq > $1 AND seq <= $2 ORDER BY seq", int64(cur.Src), int64(end))
	if err != nil {
		return Batch{}, s.unavailable(err)
	}
	defer rows.Close()
	b := Batch{Changes: make([]change.Change, 0, end-cur.Src)}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	want, e := cur.Src+1, 0
	for rows.Next() {
		var seq int64
		var tbl, op string
		var tenant sql.NullString
		var ts float64
		ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4] = &seq, &tbl, &op, &tenant, &ts
		if err := rows.Scan(ptrs...); err != nil {
			return Batch{}, s.unavailable(err)
		}
		if uint64(seq) != want {
			return Batch{}, s.gap(cur, want)
		}
		t := h.at(tbl, want)
		if t == nil {
			return Batch{}, fault.New(fault.Internal, "", "product %s: change-log row %d of table %s has no recorded shape", s.layout.Product, seq, tbl)
		}
		for ends[e] < want {
			e++
		}
		c := change.Change{
			Pos: cur.Pos + (want - cur.Src), Tx: ends[e], TxEnd: ends[e] == want,
			Time: julian(ts), Tenant: tenant.String, Table: tbl, Op: change.Op(op[0]),
			Row: make([]change.Value, len(t.Columns)),
		}
		for i := range c.Row {
			if c.Row[i], err = sqliteValue(vals[5+i]); err != nil {
				return Batch{}, err
			}
		}
		b.Changes = append(b.Changes, c)
		want++
	}
	if err := rows.Err(); err != nil {
		return Batch{}, s.unavailable(err)
	}
	if want != end+1 {
		return Batch{}, s.gap(cur, want)
	}
	for _, n := range h.names {
		if t := h.at(n, end); t != nil {
			b.Tables = append(b.Tables, *t)
		}
	}
	// Nothing leaves that a power cut could still take from the database.
	if err := s.db.SyncLog(); err != nil {
		return Batch{}, err
	}
	b.End = Cursor{Pos: cur.Pos + (end - cur.Src), Src: end}
	b.Behind = !recorded
	return b, nil
}

// sqliteLogTenant selects a log row's tenant text: the tenant column's value
// of the row's table, CAST to TEXT as the snapshot does (the triggers do not
// write it). A batch never crosses a shape boundary, so each table's shape
// as of the batch's end places the column.
func sqliteLogTenant(h *history, end uint64) string {
	q := "CASE tbl"
	for _, n := range h.names {
		if t := h.at(n, end); t != nil {
			q += " WHEN '" + strings.ReplaceAll(n, "'", "''") + "' THEN CAST(" + productdb.LogColumn(t.Tenant) + " AS TEXT)"
		}
	}
	return q + " END"
}

// gap reports a change-log row missing where the cursor needs it.
func (s *sqliteSource) gap(cur Cursor, seq uint64) error {
	return fault.New(fault.Refused,
		"if the cursor is older than the last acknowledgement, continue from the repository's cursor; otherwise the log was edited outside Lifeline: take a new snapshot into a fresh repository",
		"product %s: change-log row %d is missing (reading after %d)", s.layout.Product, seq, cur.Src)
}

// julian converts julianday('now') to a time, to the millisecond SQLite
// keeps.
func julian(jd float64) time.Time {
	return time.UnixMilli(int64(math.Round((jd - 2440587.5) * 86400000))).UTC()
}

func atLeastOne(n int) int {
	if n <= 0 {
		return 1
	}
	return n
}

// ackChunk is how many log rows one Ack statement deletes: short write
// transactions, so application writers wait milliseconds at most.
const ackChunk = 1000

func (s *sqliteSource) Ack(ctx context.Context, cur Cursor) error {
	// Deleting waits for the product's write lock, which busy application
	// writers hold most of the time: Read and Backlog (s.mu) go on
	// meanwhile. They read after cursors not older than cur, so they never
	// see the rows being deleted.
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	// One write transaction per chunk; the last chunk also forgets the
	// shapes and transaction ends, so steady shipping takes the product's
	// write lock once per Ack, not once per statement.
	for {
		done, err := s.ackChunk(ctx, cur)
		if err != nil {
			return s.unavailable(err)
		}
		if done {
			break
		}
	}
	s.mu.Lock()
	s.acked = max(s.acked, cur.Src)
	s.mu.Unlock()
	return nil
}

// ackChunk deletes up to ackChunk acknowledged log rows in one transaction;
// when fewer were left (done) it also deletes what they made obsolete.
func (s *sqliteSource) ackChunk(ctx context.Context, cur Cursor) (done bool, err error) {
	tx, err := s.db.SQL().BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	// The newest row stays: the next seq is the largest plus one.
	res, err := tx.ExecContext(ctx, "DELETE FROM "+productdb.ChangeLog+" WHERE seq IN (SELECT seq FROM "+productdb.ChangeLog+
		" WHERE seq <= $1 AND seq < (SELECT max(seq) FROM "+productdb.ChangeLog+") ORDER BY seq LIMIT $2)", int64(cur.Src), ackChunk)
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n < ackChunk {
		done = true
		// A shape superseded by one in force since cur.Src+1 describes no
		// pending row any more.
		if _, err := tx.ExecContext(ctx, `DELETE FROM lifeline_capture_shapes WHERE EXISTS (SELECT 1 FROM lifeline_capture_shapes n
			WHERE n.tbl = lifeline_capture_shapes.tbl AND n.from_seq > lifeline_capture_shapes.from_seq AND n.from_seq <= $1)`, int64(cur.Src)+1); err != nil {
			return false, err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+productdb.CaptureEnds+" WHERE seq <= $1", int64(cur.Src)); err != nil {
			return false, err
		}
	}
	return done, tx.Commit()
}

func (s *sqliteSource) Backlog(ctx context.Context, cur Cursor) (int64, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.begin(ctx)
	if err != nil {
		return 0, time.Time{}, err
	}
	defer tx.Rollback()
	top, _, _, err := s.top(ctx, tx, tryRecord)
	if err != nil || top <= cur.Src {
		return 0, time.Time{}, err
	}
	var ts sql.NullFloat64
	err = tx.QueryRowContext(ctx, "SELECT ts FROM "+productdb.ChangeLog+" WHERE seq > $1 ORDER BY seq LIMIT 1", int64(cur.Src)).Scan(&ts)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, time.Time{}, s.unavailable(err)
	}
	var oldest time.Time
	if ts.Valid {
		oldest = julian(ts.Float64)
	}
	return int64(top - cur.Src), oldest, nil
}

// Snapshot reads every protected table in one read transaction. The cursor
// is the last seq assigned as of that transaction's snapshot: every change
// up to it is in the rows, every later one is in the log after it.
//
// Each table's query sorts its rows by tenant text, which no index gives, so
// SQLite sorts the whole table, spilling to temp files. The product's
// connections keep temp files in memory (productdb, for restores), which
// here would hold the largest table in RAM; the snapshot reads on a
// connection of its own with temp files on disk (in $TMPDIR), given back
// with the setting as it was (productdb.ConnWith).
func (s *sqliteSource) Snapshot(ctx context.Context) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	conn, release, err := s.db.ConnWith(ctx, productdb.Setting{Name: "temp_store", Value: "FILE"})
	if err != nil {
		return nil, err
	}
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		release()
		return nil, s.unavailable(err)
	}
	end := func() error {
		err := tx.Rollback()
		release()
		return err
	}
	h, err := s.verify(ctx, tx)
	if err != nil {
		end()
		return nil, err
	}
	top, _, _, err := s.top(ctx, tx, waitRecord)
	if err != nil {
		end()
		return nil, err
	}
	return &snapshot{
		cur:    Cursor{Pos: top, Src: top},
		tables: h.current(),
		at:     s.opts.Now().UTC(),
		conv:   sqliteValue,
		done:   end,
		open: func(ctx context.Context, t *change.Table) (chunker, error) {
			rows, err := tx.QueryContext(ctx, sqliteSnapshotQuery(t))
			if err != nil {
				return nil, err
			}
			return &rowsChunker{rows: rows, w: len(t.Columns) + 1}, nil
		},
	}, nil
}

// sqliteSnapshotQuery selects t's rows in snapshot order. The tenant text is
// computed as the triggers compute it; keys order by storage class, then
// BINARY (numbers numerically, text and blobs bytewise), whatever the
// column's collation. Each value is selected as +col, which SQLite returns
// unchanged but without a declared type, so the driver hands over the stored
// value (it would parse text in a DATETIME column into a time).
func sqliteSnapshotQuery(t *change.Table) string {
	tenant := "coalesce(CAST(x." + quote(t.Columns[t.Tenant].Name) + " AS TEXT), '')"
	sel := []string{tenant}
	for _, c := range t.Columns {
		sel = append(sel, "+x."+quote(c.Name))
	}
	order := []string{tenant + " COLLATE BINARY"}
	for _, i := range t.PrimaryKey {
		k := "x." + quote(t.Columns[i].Name)
		order = append(order, "CASE typeof("+k+") WHEN 'null' THEN 0 WHEN 'integer' THEN 1 WHEN 'real' THEN 2 WHEN 'text' THEN 3 ELSE 4 END", k+" COLLATE BINARY")
	}
	return "SELECT " + strings.Join(sel, ", ") + " FROM " + quote(t.Name) + " AS x ORDER BY " + strings.Join(order, ", ")
}

// quote quotes an identifier for both engines.
func quote(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }

func (s *sqliteSource) Close() error { return nil }
