package capture

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/stdlib"

	"lifeline/internal/change"
	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

// pgSource reads the product's logical replication slot with pgoutput
// (protocol 1, text values). Logical decoding emits whole transactions in
// commit order, after they commit, so a transaction that began early and
// commits late simply comes later: there is no sequence gap to wait for (the
// outbox problem of trigger-based capture; see docs/capture.md).
//
// Positions: a transaction's source position is the end LSN of its commit
// record. The slot's exported snapshot sees exactly the transactions whose
// commit ends at or before the slot's consistent point, and the stream
// brings every later one, so the snapshot cursor's Src is that point. The
// slot re-sends from its confirmed position after a reconnect; transactions
// ending at or before the cursor are skipped.
//
// Values are PostgreSQL's text output, with the output settings pinned on
// both the replication connection and the snapshot transaction
// (pgTextSettings), so the stream and the snapshot print a value the same
// way.
type pgSource struct {
	db     *productdb.DB
	layout *productdb.Layout
	opts   Options
	slot   string // the slot and publication name

	mu        sync.Mutex
	base      map[string]*change.Table // shapes protect recorded
	latest    map[string]*change.Table // the newest shape seen per table
	conn      *pgconn.PgConn           // the replication stream; nil when closed
	expect    uint64                   // the cursor Src with which the stream continues
	start     uint64                   // where this stream session started
	rels      map[uint32]*change.Table // relation id -> shape, this session
	inTx      *pgTxn                   // a transaction being received
	pending   *pgTxn                   // received, waiting for the next batch
	seenData  uint64                   // the last commit with changes seen this session
	progress  uint64                   // how far the server has decoded, as this session last heard
	acked     uint64                   // acknowledged by Ack (or the snapshot) in this process
	safe      uint64                   // confirmable: nothing unacknowledged before it
	unacked   []pgDelivered            // returned by Read, not yet acknowledged
	idleSince time.Time                // when a Read last found the stream drained; zero if not
	since     time.Time                // the last moment everything was known read
	status    time.Time                // when progress was last reported
	checked   time.Time                // when the capture objects were last checked
	types     map[[2]int64]string
}

type pgDelivered struct {
	end uint64
	at  time.Time
}

// pgTxn is one decoded transaction.
type pgTxn struct {
	commit, end uint64
	at          time.Time
	changes     []change.Change
	shapes      map[string]*change.Table
}

// pgTextSettings pin how values print: ISO dates, exact floats, hex bytea,
// UTC, UTF-8. Restore must write values back with the same settings.
var pgTextSettings = map[string]string{
	"DateStyle":          "ISO, MDY",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
	"TimeZone":           "UTC",
	"client_encoding":    "UTF8",
}

func openPostgres(db *productdb.DB, layout *productdb.Layout, opts Options, shapes []productdb.CapturedShape) *pgSource {
	s := &pgSource{db: db, layout: layout, opts: opts, slot: productdb.CaptureName(layout.Product),
		latest: map[string]*change.Table{}, types: map[[2]int64]string{}, since: opts.Now()}
	s.setBase(shapes)
	return s
}

func (s *pgSource) setBase(shapes []productdb.CapturedShape) {
	s.base = map[string]*change.Table{}
	for _, sh := range shapes {
		if sh.Table != nil {
			s.base[sh.Name] = sh.Table
		}
	}
}

func (s *pgSource) unavailable(err error) error {
	var fe *fault.Error
	if errors.As(err, &fe) {
		return err
	}
	return fault.Wrap(err, fault.Unavailable, "check that the product database is reachable", "capture of product %s", s.layout.Product)
}

// slotState reads the slot: its confirmed position, and whether it exists.
func (s *pgSource) slotState(ctx context.Context) (confirmed uint64, ok bool, err error) {
	var lsn sql.NullString
	err = s.db.SQL().QueryRowContext(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots
		WHERE slot_name = $1 AND database = current_database()`, s.slot).Scan(&lsn)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil || !lsn.Valid {
		return 0, err == nil, s.unavailable(err)
	}
	l, err := pglogrepl.ParseLSN(lsn.String)
	return uint64(l), true, err
}

// startStream opens the replication connection and starts streaming after
// from.
func (s *pgSource) startStream(ctx context.Context, from uint64) error {
	_, ok, err := s.slotState(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return fault.New(fault.Refused, "the first snapshot creates it: run `lifeline backup run`; if the repository already has this product, it needs a new snapshot",
			"product %s: replication slot %s does not exist", s.layout.Product, s.slot)
	}
	// The slot may have confirmed more than this process saw acknowledged:
	// an earlier process, or positions confirmed because nothing
	// unacknowledged lay before them (see markSafe). Streaming from before
	// it is fine: the server starts at its confirmed position, and the
	// repository's cursor is never behind an Ack, since Ack follows
	// durability. Within one process a cursor behind an Ack is refused
	// (Read).
	if from < s.acked {
		return s.behind(from)
	}
	// Protect may have recorded new shapes since the last session.
	shapes, err := s.db.CapturedShapes(ctx, nil)
	if err != nil {
		return err
	}
	s.setBase(shapes)
	if err := s.check(ctx); err != nil {
		return err
	}
	// A slot stays active for a moment after its last reader closed its
	// connection (the server's walsender exits on its own time), so a
	// source reopened at once (a restart, a new round) tries again for a
	// few seconds before it says the slot is another reader's.
	var conn *pgconn.PgConn
	for wait := 50 * time.Millisecond; ; wait *= 2 {
		if conn, err = s.db.ReplicationConn(ctx, pgTextSettings); err != nil {
			return err
		}
		err = pglogrepl.StartReplication(ctx, conn, s.slot, pglogrepl.LSN(from), pglogrepl.StartReplicationOptions{
			Mode:       pglogrepl.LogicalReplication,
			PluginArgs: []string{"proto_version '1'", "publication_names '" + s.slot + "'"},
		})
		if err == nil {
			break
		}
		conn.Close(context.Background())
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "55006" {
			return s.unavailable(err)
		}
		if wait > 2*time.Second {
			return fault.Wrap(err, fault.Conflict, "only one `lifeline serve` may ship a product; stop the other one",
				"product %s: replication slot %s is in use", s.layout.Product, s.slot)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	s.conn, s.expect, s.start = conn, from, from
	s.rels, s.inTx, s.pending, s.seenData, s.safe, s.progress = map[uint32]*change.Table{}, nil, nil, 0, 0, 0
	return s.report(ctx, false)
}

func (s *pgSource) behind(from uint64) error {
	return fault.New(fault.Refused, "continue from the repository's cursor",
		"product %s: reading from LSN %s, but the slot has confirmed everything up to %s as shipped and forgotten it",
		s.layout.Product, pglogrepl.LSN(from), pglogrepl.LSN(s.acked))
}

// check verifies the capture objects (publication membership, replica
// identity, the protected table set) at most every 30 s; column changes
// arrive in the stream as relation messages.
func (s *pgSource) check(ctx context.Context) error {
	if now := s.opts.Now(); now.Sub(s.checked) >= 30*time.Second {
		var base []change.Table
		for _, n := range slices.Sorted(mapKeys(s.base)) {
			base = append(base, *s.base[n])
		}
		if err := checkCapture(ctx, s.db, nil, s.layout, base, false); err != nil {
			return s.unavailable(err)
		}
		s.checked = now
	}
	return nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (s *pgSource) closeStream() {
	if s.conn != nil {
		_ = s.report(context.Background(), false)
	}
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.conn.Close(ctx)
		cancel()
		s.conn = nil
	}
	s.inTx, s.pending = nil, nil
}

// walEnd is the server's current WAL insert position: past every commit
// record so far, even an asynchronous commit not yet written out.
func (s *pgSource) walEnd(ctx context.Context) (uint64, error) {
	var lsn string
	if err := s.db.SQL().QueryRowContext(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn); err != nil {
		return 0, s.unavailable(err)
	}
	l, err := pglogrepl.ParseLSN(lsn)
	return uint64(l), err
}

// report sends a standby status update confirming what may be forgotten:
// what was acknowledged, or a later position if nothing unacknowledged lies
// before it.
func (s *pgSource) report(ctx context.Context, reply bool) error {
	if s.conn == nil {
		return nil
	}
	lsn := pglogrepl.LSN(max(s.acked, s.safe))
	s.status = s.opts.Now()
	err := pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn, WALFlushPosition: lsn, WALApplyPosition: lsn, ReplyRequested: reply})
	if err != nil {
		s.conn.Close(context.Background())
		s.conn = nil
		return s.unavailable(err)
	}
	return nil
}

// markSafe records that everything before lsn that carries changes was
// acknowledged, so the slot may be confirmed up to it (an idle product then
// does not hold WAL that other databases write).
func (s *pgSource) markSafe(lsn uint64, batchEmpty bool) {
	if batchEmpty && s.inTx == nil && s.pending == nil && len(s.unacked) == 0 &&
		s.acked >= s.start && s.acked >= s.seenData {
		s.safe = max(s.safe, lsn)
	}
}

func (s *pgSource) Read(ctx context.Context, cur Cursor, max int) (Batch, error) {
	max = atLeastOne(max)
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur.Src < s.acked {
		return Batch{}, s.behind(cur.Src)
	}
	if s.conn != nil && s.expect != cur.Src {
		s.closeStream()
	}
	if s.conn == nil {
		if err := s.startStream(ctx, cur.Src); err != nil {
			return Batch{}, err
		}
	} else if err := s.check(ctx); err != nil {
		return Batch{}, err
	}
	var txs []*pgTxn
	n := 0
	shapes := map[string]*change.Table{}
	fits := func(t *pgTxn) bool {
		for name, sh := range t.shapes {
			if have, ok := shapes[name]; ok && !productdb.SameShape(have, sh) {
				return false
			}
		}
		return true
	}
	add := func(t *pgTxn) {
		txs = append(txs, t)
		n += len(t.changes)
		for name, sh := range t.shapes {
			shapes[name] = sh
		}
	}
	if s.pending != nil {
		add(s.pending)
		s.pending = nil
	}
	// Everything committed before this Read is in WAL before target; an
	// empty batch is returned only once the stream has passed it, so it
	// means nothing was pending.
	target, err := s.walEnd(ctx)
	if err != nil {
		return Batch{}, err
	}
	giveUp := s.opts.Now().Add(s.opts.Status)
	idle := false
	for n < max || s.inTx != nil {
		if s.opts.Now().Sub(s.status) >= s.opts.Status {
			if err := s.report(ctx, false); err != nil {
				return Batch{}, err
			}
		}
		wait := s.opts.Idle
		if s.inTx != nil {
			wait = s.opts.Status
		}
		msg, err := s.receive(ctx, wait)
		if err != nil {
			s.closeStream()
			return Batch{}, err
		}
		if msg == nil {
			if s.inTx != nil {
				continue
			}
			// Not before the stream has passed target, changes or not:
			// a transaction committed before this Read may still be on
			// its way from a busy server.
			if s.progress >= target || s.opts.Now().After(giveUp) {
				idle = s.progress >= target
				break
			}
			// Ask where the server's decoding is: it answers with a
			// keepalive carrying its position.
			if err := s.report(ctx, true); err != nil {
				return Batch{}, err
			}
			continue
		}
		t, err := s.handle(ctx, msg, cur.Src, n == 0)
		if err != nil {
			s.closeStream()
			return Batch{}, err
		}
		if t == nil {
			continue
		}
		if !fits(t) {
			s.pending = t
			break
		}
		add(t)
		// Every transaction committed before this Read is in: the rest
		// waits for the next one. Under steady writes the stream may never
		// pause for Idle, and the read would run on to max.
		if t.end >= target {
			break
		}
	}

	if n == 0 {
		if idle && s.inTx == nil {
			if s.idleSince.IsZero() {
				s.idleSince = s.opts.Now()
			}
			s.since = s.opts.Now()
		}
		s.expect = cur.Src
		return Batch{End: cur}, nil
	}
	s.idleSince = time.Time{}
	b := Batch{Changes: make([]change.Change, 0, n)}
	pos := cur.Pos
	for _, t := range txs {
		for i := range t.changes {
			pos++
			c := &t.changes[i]
			c.Pos, c.Tx, c.Time, c.TxEnd = pos, t.commit, t.at, i == len(t.changes)-1
			b.Changes = append(b.Changes, *c)
		}
		s.unacked = append(s.unacked, pgDelivered{end: t.end, at: t.at})
	}
	for _, name := range slices.Sorted(mapKeys(s.base)) {
		switch {
		case shapes[name] != nil:
			b.Tables = append(b.Tables, *shapes[name])
		case s.latest[name] != nil:
			b.Tables = append(b.Tables, *s.latest[name])
		default:
			b.Tables = append(b.Tables, *s.base[name])
		}
	}
	b.End = Cursor{Pos: pos, Src: txs[len(txs)-1].end}
	s.expect = b.End.Src
	return b, nil
}

// receive waits up to wait for the next message; nil on timeout.
func (s *pgSource) receive(ctx context.Context, wait time.Duration) (pgproto3.BackendMessage, error) {
	rctx, cancel := context.WithTimeout(ctx, wait)
	msg, err := s.conn.ReceiveMessage(rctx)
	cancel()
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case pgconn.Timeout(err):
		return nil, nil
	default:
		return nil, s.unavailable(err)
	}
	if e, ok := msg.(*pgproto3.ErrorResponse); ok {
		return nil, s.unavailable(pgconn.ErrorResponseToPgError(e))
	}
	return msg, nil
}

// handle processes one stream message and returns a transaction when its
// commit completes one that carries changes after from.
func (s *pgSource) handle(ctx context.Context, msg pgproto3.BackendMessage, from uint64, batchEmpty bool) (*pgTxn, error) {
	cd, ok := msg.(*pgproto3.CopyData)
	if !ok || len(cd.Data) == 0 {
		return nil, nil
	}
	switch cd.Data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
		if err != nil {
			return nil, s.unavailable(err)
		}
		s.progress = max(s.progress, uint64(k.ServerWALEnd))
		s.markSafe(uint64(k.ServerWALEnd), batchEmpty)
		if k.ReplyRequested {
			return nil, s.report(ctx, false)
		}
		return nil, nil
	case pglogrepl.XLogDataByteID:
	default:
		return nil, nil
	}
	x, err := pglogrepl.ParseXLogData(cd.Data[1:])
	if err != nil {
		return nil, s.unavailable(err)
	}
	lm, err := pglogrepl.Parse(x.WALData)
	if err != nil {
		return nil, s.unavailable(err)
	}
	switch m := lm.(type) {
	case *pglogrepl.RelationMessage:
		t, err := s.relation(ctx, m)
		if err != nil {
			return nil, err
		}
		s.rels[m.RelationID] = t
		s.latest[t.Name] = t
	case *pglogrepl.BeginMessage:
		s.inTx = &pgTxn{commit: uint64(m.FinalLSN), at: m.CommitTime.UTC(), shapes: map[string]*change.Table{}}
	case *pglogrepl.InsertMessage:
		return nil, s.row(m.RelationID, change.Insert, m.Tuple, nil)
	case *pglogrepl.UpdateMessage:
		return nil, s.update(m)
	case *pglogrepl.DeleteMessage:
		if m.OldTupleType != pglogrepl.DeleteMessageTupleTypeOld {
			return nil, s.notFull(m.RelationID)
		}
		return nil, s.row(m.RelationID, change.Delete, m.OldTuple, nil)
	case *pglogrepl.TruncateMessage:
		var names []string
		for _, id := range m.RelationIDs {
			if t := s.rels[id]; t != nil {
				names = append(names, t.Name)
			}
		}
		return nil, fault.New(fault.Refused,
			"rows removed by TRUNCATE are not captured row by row: take a new snapshot into a fresh repository, and keep Lifeline's TRUNCATE guard in place",
			"product %s: table %s was truncated past the guard", s.layout.Product, strings.Join(names, ", "))
	case *pglogrepl.CommitMessage:
		t := s.inTx
		s.inTx = nil
		if t == nil {
			return nil, nil
		}
		t.end = uint64(m.TransactionEndLSN)
		s.progress = max(s.progress, t.end)
		if len(t.changes) > 0 {
			s.seenData = max(s.seenData, t.end)
		}
		if t.end <= from || len(t.changes) == 0 {
			s.markSafe(t.end, batchEmpty)
			return nil, nil
		}
		return t, nil
	}
	return nil, nil
}

func (s *pgSource) notFull(rel uint32) error {
	name := "?"
	if t := s.rels[rel]; t != nil {
		name = t.Name
	}
	return drift(s.layout.Product, []string{fmt.Sprintf(
		"table %s: a change arrived without its old row (REPLICA IDENTITY is not FULL); after protect restores it, changes made meanwhile still lack it and need a new snapshot", name)})
}

// relation turns a relation message into the shape the following rows
// have. The same columns as protect recorded give the recorded shape; added
// columns, reordered ones or changed types give a new shape that the batch
// reports; a column gone (dropped or renamed) is ErrDrift, because rows
// could no longer be described by the shape the repository knows.
func (s *pgSource) relation(ctx context.Context, m *pglogrepl.RelationMessage) (*change.Table, error) {
	base := s.base[m.RelationName]
	if base == nil {
		shapes, err := s.db.CapturedShapes(ctx, nil)
		if err != nil {
			return nil, err
		}
		s.setBase(shapes)
		if base = s.base[m.RelationName]; base == nil {
			return nil, drift(s.layout.Product, []string{fmt.Sprintf("table %s.%s is published but capture has no shape for it", m.Namespace, m.RelationName)})
		}
	}
	t := &change.Table{Name: m.RelationName, Tenant: -1}
	for _, c := range m.Columns {
		typ, err := s.typeName(ctx, c.DataType, c.TypeModifier)
		if err != nil {
			return nil, err
		}
		if base.Columns[base.Tenant].Name == c.Name {
			t.Tenant = len(t.Columns)
		}
		t.Columns = append(t.Columns, change.Column{Name: c.Name, Type: typ})
	}
	for _, i := range base.PrimaryKey {
		name := base.Columns[i].Name
		t.PrimaryKey = append(t.PrimaryKey, slices.IndexFunc(t.Columns, func(x change.Column) bool { return x.Name == name }))
	}
	if gone := lines(diffShape(base, t), true); len(gone) > 0 {
		return nil, drift(s.layout.Product, gone)
	}
	if productdb.SameShape(base, t) {
		return base, nil
	}
	if old := s.latest[t.Name]; old == nil || !productdb.SameShape(old, t) {
		s.opts.Log.Info("capture follows a changed table", "product", s.layout.Product, "changes", strings.Join(lines(diffShape(base, t), false), "; "))
	}
	return t, nil
}

// typeName is format_type of a column type, as protect records types.
func (s *pgSource) typeName(ctx context.Context, oid uint32, mod int32) (string, error) {
	k := [2]int64{int64(oid), int64(mod)}
	if n, ok := s.types[k]; ok {
		return n, nil
	}
	var n string
	if err := s.db.SQL().QueryRowContext(ctx, "SELECT format_type($1::oid, $2::int)", int64(oid), int64(mod)).Scan(&n); err != nil {
		return "", s.unavailable(err)
	}
	s.types[k] = n
	return n, nil
}

// update records an UPDATE; one that changes the primary key is recorded as
// a delete of the old row and an insert of the new, so a replay by key
// removes the old key.
func (s *pgSource) update(m *pglogrepl.UpdateMessage) error {
	var old *pglogrepl.TupleData
	if m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld {
		old = m.OldTuple
	}
	t := s.rels[m.RelationID]
	if old != nil && t != nil {
		for _, i := range t.PrimaryKey {
			if i < len(old.Columns) && i < len(m.NewTuple.Columns) {
				a, b := old.Columns[i], m.NewTuple.Columns[i]
				if b.DataType != pglogrepl.TupleDataTypeToast && (a.DataType != b.DataType || string(a.Data) != string(b.Data)) {
					if err := s.row(m.RelationID, change.Delete, old, nil); err != nil {
						return err
					}
					return s.row(m.RelationID, change.Insert, m.NewTuple, old)
				}
			}
		}
	}
	if m.OldTupleType == pglogrepl.UpdateMessageTupleTypeKey {
		return s.notFull(m.RelationID)
	}
	return s.row(m.RelationID, change.Update, m.NewTuple, old)
}

// row appends one change to the transaction being received. An unchanged
// TOASTed value ('u') comes from the old row, which REPLICA IDENTITY FULL
// logs detoasted.
func (s *pgSource) row(rel uint32, op change.Op, tup, old *pglogrepl.TupleData) error {
	t := s.rels[rel]
	if s.inTx == nil || t == nil || tup == nil {
		return fault.New(fault.Internal, "", "product %s: replication stream out of order (change outside a transaction or before its relation)", s.layout.Product)
	}
	if len(tup.Columns) != len(t.Columns) {
		return fault.New(fault.Internal, "", "product %s: table %s: %d values for %d columns", s.layout.Product, t.Name, len(tup.Columns), len(t.Columns))
	}
	row := make([]change.Value, len(tup.Columns))
	for i, c := range tup.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
		case pglogrepl.TupleDataTypeText:
			row[i] = change.Value{Kind: change.PG, Bytes: c.Data}
		case pglogrepl.TupleDataTypeToast:
			if old == nil || i >= len(old.Columns) || old.Columns[i].DataType == pglogrepl.TupleDataTypeToast {
				return s.notFull(rel)
			}
			if old.Columns[i].DataType == pglogrepl.TupleDataTypeText {
				row[i] = change.Value{Kind: change.PG, Bytes: old.Columns[i].Data}
			}
		default:
			return fault.New(fault.Internal, "", "product %s: table %s: unexpected value format %q", s.layout.Product, t.Name, c.DataType)
		}
	}
	tenant := ""
	if t.Tenant >= 0 {
		tenant = string(row[t.Tenant].Bytes)
	}
	s.inTx.changes = append(s.inTx.changes, change.Change{Tenant: tenant, Table: t.Name, Op: op, Row: row})
	if have := s.inTx.shapes[t.Name]; have != nil && !productdb.SameShape(have, t) {
		return fault.New(fault.Refused, "take a new snapshot into a fresh repository, or split such migrations from data changes",
			"product %s: one transaction changed rows of table %s under two shapes (DDL in the middle of it); a batch can describe only one", s.layout.Product, t.Name)
	}
	s.inTx.shapes[t.Name] = t
	return nil
}

func (s *pgSource) Ack(ctx context.Context, cur Cursor) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur.Src <= s.acked {
		return nil
	}
	s.acked = cur.Src
	i := 0
	for i < len(s.unacked) && s.unacked[i].end <= cur.Src {
		i++
	}
	s.unacked = slices.Delete(s.unacked, 0, i)
	if s.conn != nil {
		return s.report(ctx, false)
	}
	// No stream open: move the slot directly (it never moves backwards, and
	// never past what the server has flushed).
	confirmed, ok, err := s.slotState(ctx)
	if err != nil || !ok || cur.Src <= confirmed {
		return err
	}
	if _, err := s.db.SQL().ExecContext(ctx, "SELECT pg_replication_slot_advance($1, $2::pg_lsn)", s.slot, pglogrepl.LSN(cur.Src).String()); err != nil {
		return s.unavailable(err)
	}
	return nil
}

func (s *pgSource) LagBytes(ctx context.Context) (int64, error) {
	var lag sql.NullInt64
	err := s.db.SQL().QueryRowContext(ctx, `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots
		WHERE slot_name = $1 AND database = current_database()`, s.slot).Scan(&lag)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fault.New(fault.Refused, "the first snapshot creates it: run `lifeline backup run`", "product %s: replication slot %s does not exist", s.layout.Product, s.slot)
	}
	if err != nil {
		return 0, s.unavailable(err)
	}
	return max(lag.Int64, 0), nil
}

func (s *pgSource) Backlog(ctx context.Context, cur Cursor) (int64, time.Time, error) {
	lag, err := s.LagBytes(ctx)
	if err != nil {
		return 0, time.Time{}, err
	}
	if lag > s.opts.LagWarn {
		s.opts.Log.Warn("replication slot lag is high: the product database keeps WAL until Lifeline ships it",
			"product", s.layout.Product, "slot", s.slot, "lag_bytes", lag)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(s.unacked) > 0:
		return -1, s.unacked[0].at, nil
	case !s.idleSince.IsZero() && s.acked >= cur.Src:
		return 0, time.Time{}, nil
	}
	return -1, s.since, nil
}

// Snapshot (re)creates the slot with EXPORT_SNAPSHOT and reads every table
// in a REPEATABLE READ transaction that imports that snapshot: the rows are
// exactly the database at the slot's consistent point, where the stream
// starts. Each table is a server-side cursor fetched in chunks, because one
// connection cannot interleave open queries.
func (s *pgSource) Snapshot(ctx context.Context) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeStream()
	shapes, err := s.db.CapturedShapes(ctx, nil)
	if err != nil {
		return nil, err
	}
	s.setBase(shapes)
	if err := s.db.DropSlot(ctx, s.layout.Product); err != nil {
		return nil, err
	}
	rc, err := s.db.ReplicationConn(ctx, pgTextSettings)
	if err != nil {
		return nil, err
	}
	defer rc.Close(context.Background())
	res, err := pglogrepl.CreateReplicationSlot(ctx, rc, s.slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return nil, s.unavailable(err)
	}
	snap, err := s.readSnapshot(ctx, res)
	if err != nil {
		_ = s.db.DropSlot(context.Background(), s.layout.Product)
		return nil, err
	}
	return snap, nil
}

func (s *pgSource) readSnapshot(ctx context.Context, res pglogrepl.CreateReplicationSlotResult) (*snapshot, error) {
	at, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return nil, s.unavailable(err)
	}
	conn, err := s.db.SQL().Conn(ctx)
	if err != nil {
		return nil, s.unavailable(err)
	}
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		conn.Close()
		return nil, s.unavailable(err)
	}
	fail := func(err error) (*snapshot, error) {
		tx.Rollback()
		conn.Close()
		return nil, s.unavailable(err)
	}
	stmts := []string{"SET TRANSACTION SNAPSHOT '" + strings.ReplaceAll(res.SnapshotName, "'", "''") + "'"}
	for _, k := range slices.Sorted(mapKeys(pgTextSettings)) {
		stmts = append(stmts, "SET LOCAL "+k+" = '"+pgTextSettings[k]+"'")
	}
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fail(err)
		}
	}
	var base []change.Table
	for _, n := range slices.Sorted(mapKeys(s.base)) {
		base = append(base, *s.base[n])
	}
	if err := checkCapture(ctx, s.db, tx, s.layout, base, false); err != nil {
		return fail(err)
	}
	l := *s.layout
	l.Tables = slices.Sorted(mapKeys(s.base))
	live, err := s.db.LiveShapes(ctx, tx, &l)
	if err != nil {
		return fail(err)
	}
	var gone []string
	for i := range live {
		gone = append(gone, lines(diffShape(&base[i], &live[i]), true)...)
	}
	if len(gone) > 0 {
		return fail(drift(s.layout.Product, gone))
	}
	s.acked, s.unacked, s.since = uint64(at), nil, s.opts.Now()
	n := 0
	return &snapshot{
		cur:    Cursor{Src: uint64(at)},
		tables: live,
		at:     s.opts.Now().UTC(),
		conv:   pgValue,
		done: func() error {
			err := tx.Rollback()
			conn.Close()
			return err
		},
		open: func(ctx context.Context, t *change.Table) (chunker, error) {
			n++
			name := fmt.Sprintf("lifeline_snapshot_%d", n)
			if _, err := tx.ExecContext(ctx, "DECLARE "+name+" NO SCROLL CURSOR FOR "+pgSnapshotQuery(t)); err != nil {
				return nil, err
			}
			return &cursorChunker{conn: conn, name: name, w: len(t.Columns) + 1}, nil
		},
	}, nil
}

// pgSnapshotQuery selects t's rows in snapshot order: tenants, then each
// key column, in the byte order of their text (COLLATE "C"), as the
// repository compares PostgreSQL values. format('%s', v) is v's output
// function, which is what logical decoding sends; a cast to text is not
// always (boolean prints true, bpchar loses its padding). The values
// themselves are fetched in text format, which is that output too.
func pgSnapshotQuery(t *change.Table) string {
	tenant := "format('%s', x." + quote(t.Columns[t.Tenant].Name) + ")"
	sel := []string{tenant}
	for _, c := range t.Columns {
		sel = append(sel, "x."+quote(c.Name))
	}
	order := []string{tenant + ` COLLATE "C"`}
	for _, i := range t.PrimaryKey {
		order = append(order, "format('%s', x."+quote(t.Columns[i].Name)+`) COLLATE "C"`)
	}
	return "SELECT " + strings.Join(sel, ", ") + " FROM public." + quote(t.Name) + " AS x ORDER BY " + strings.Join(order, ", ")
}

// cursorChunker fetches one server-side cursor through the connection's
// pgconn, which hands over each value's text as the server sent it (the
// database/sql driver would turn it into Go types).
type cursorChunker struct {
	conn *sql.Conn
	name string
	w    int
}

func (c *cursorChunker) chunk(ctx context.Context, n int, dst [][]any) ([][]any, error) {
	var rows [][][]byte
	err := c.conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		res, err := sc.Conn().PgConn().Exec(ctx, fmt.Sprintf("FETCH FORWARD %d FROM %s", n, c.name)).ReadAll()
		if err != nil {
			return err
		}
		if len(res) != 1 {
			return fmt.Errorf("FETCH returned %d results", len(res))
		}
		rows = res[0].Rows
		return nil
	})
	if err != nil {
		return nil, err
	}
	dst = dst[:0]
	for _, r := range rows {
		if len(r) != c.w {
			return nil, fmt.Errorf("FETCH returned %d columns, want %d", len(r), c.w)
		}
		vals := make([]any, c.w)
		for i, v := range r {
			if v != nil {
				vals[i] = v
			}
		}
		dst = append(dst, vals)
	}
	return dst, nil
}

func (c *cursorChunker) close() error { return nil }

func (s *pgSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeStream()
	return nil
}
