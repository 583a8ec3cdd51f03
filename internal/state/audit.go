package state

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"lifeline/internal/fault"
)

// The audit log is a hash chain. Entry n stores
//
//	hash = hex(sha256(prev_hash + canonical))
//
// where prev_hash is entry n-1's hash ("" for entry 1) and canonical is the
// JSON object {"seq","at","actor","action","op_id","detail"} in that key
// order, with at as RFC 3339 UTC with microseconds and detail exactly as
// stored (compact JSON, object keys sorted). Changing, removing or reordering
// any entry breaks the chain at that point, which VerifyAudit reports.
//
// Limits: the chain cannot show that entries were cut off the end of the
// log; compare the count VerifyAudit returns with one recorded elsewhere.

// auditLockKey is the PostgreSQL advisory lock that serialises appends.
var auditLockKey = lockKey("audit")

const auditTimeLayout = "2006-01-02T15:04:05.000000Z"

type canonicalEntry struct {
	Seq    int64           `json:"seq"`
	At     string          `json:"at"`
	Actor  string          `json:"actor"`
	Action string          `json:"action"`
	OpID   string          `json:"op_id"`
	Detail json.RawMessage `json:"detail"`
}

// auditHash computes an entry's hash from its stored fields.
func auditHash(prev string, seq, atMicros int64, actor, action, opID, detail string) (string, error) {
	c, err := json.Marshal(canonicalEntry{
		Seq:    seq,
		At:     FromMicros(atMicros).Format(auditTimeLayout),
		Actor:  actor,
		Action: action,
		OpID:   opID,
		Detail: json.RawMessage(detail),
	})
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write(c)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// lockAppend serialises chain appends (and erasure ids) until tx ends. On
// SQLite the transaction already holds the write lock since BEGIN.
func (s *Store) lockAppend(ctx context.Context, tx *sql.Tx) error {
	if s.engine != EnginePostgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", auditLockKey); err != nil {
		return fmt.Errorf("state: audit lock: %w", err)
	}
	return nil
}

// AppendAudit adds an entry to the end of the chain and returns it with Seq,
// At, PrevHash and Hash filled (At is always the store's clock). An empty
// Actor is taken from WithActor. Appends from any number of goroutines and
// processes form one chain. A missing Action or a Detail that cannot be
// encoded as JSON is fault.Invalid.
func (s *Store) AppendAudit(ctx context.Context, e AuditEntry) (AuditEntry, error) {
	var out AuditEntry
	err := s.write(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.appendAudit(ctx, tx, e)
		return err
	})
	return out, err
}

// AppendAuditTx appends e inside the caller's transaction on this store's
// database, so a change and its audit entry commit together or not at all
// (a plan's status transition). Append last in the transaction, as
// appendAudit explains.
func (s *Store) AppendAuditTx(ctx context.Context, tx *sql.Tx, e AuditEntry) (AuditEntry, error) {
	return s.appendAudit(ctx, tx, e)
}

// appendAudit appends e inside tx. Callers append last in their
// transaction: the append lock is then the last lock taken, so transactions
// that wait for each other cannot deadlock.
func (s *Store) appendAudit(ctx context.Context, tx *sql.Tx, e AuditEntry) (AuditEntry, error) {
	if e.Action == "" {
		return e, fault.New(fault.Invalid, "name what happened, e.g. \"operation.start\"", "audit entry without an action")
	}
	if e.Actor == "" {
		e.Actor = actorOf(ctx)
	}
	detail := []byte("{}")
	if len(e.Detail) > 0 {
		var err error
		if detail, err = json.Marshal(e.Detail); err != nil {
			return e, fault.Wrap(err, fault.Invalid, "keep audit detail to plain JSON values", "audit detail of %q cannot be encoded", e.Action)
		}
	}
	if err := s.lockAppend(ctx, tx); err != nil {
		return e, err
	}
	var last int64
	var prev string
	err := tx.QueryRowContext(ctx, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").Scan(&last, &prev)
	if err != nil && !isNoRows(err) {
		return e, fmt.Errorf("state: audit head: %w", err)
	}
	at := s.stamp()
	e.Seq, e.At, e.PrevHash = last+1, at, prev
	e.Hash, err = auditHash(prev, e.Seq, Micros(at), e.Actor, e.Action, e.OpID, string(detail))
	if err != nil {
		return e, err
	}
	_, err = tx.ExecContext(ctx, s.Rebind(
		"INSERT INTO audit_log (seq, at, actor, action, op_id, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
		e.Seq, Micros(at), e.Actor, e.Action, e.OpID, string(detail), e.PrevHash, e.Hash)
	if err != nil {
		return e, fmt.Errorf("state: audit append: %w", err)
	}
	return e, nil
}

const auditColumns = "seq, at, actor, action, op_id, detail, prev_hash, hash"

// auditRow is an entry as stored, before the detail is decoded.
type auditRow struct {
	seq, at                                 int64
	actor, action, opID, detail, prev, hash string
}

func scanAuditRow(rows *sql.Rows) (auditRow, error) {
	var r auditRow
	err := rows.Scan(&r.seq, &r.at, &r.actor, &r.action, &r.opID, &r.detail, &r.prev, &r.hash)
	return r, err
}

func (r auditRow) entry() AuditEntry {
	e := AuditEntry{Seq: r.seq, At: FromMicros(r.at), Actor: r.actor, Action: r.action, OpID: r.opID, PrevHash: r.prev, Hash: r.hash}
	if r.detail != "" && r.detail != "{}" {
		_ = json.Unmarshal([]byte(r.detail), &e.Detail) // VerifyAudit reports a mangled detail
	}
	return e
}

// ListAudit returns audit entries oldest first: all of them, or those of
// one operation when opID is not "". A positive limit keeps the newest
// limit entries (still oldest first).
func (s *Store) ListAudit(ctx context.Context, opID string, limit int) ([]AuditEntry, error) {
	where, args := "", []any{}
	if opID != "" {
		where = " WHERE op_id = ?"
		args = append(args, opID)
	}
	q := "SELECT " + auditColumns + " FROM audit_log" + where + " ORDER BY seq"
	if limit > 0 {
		q = "SELECT " + auditColumns + " FROM (SELECT " + auditColumns + " FROM audit_log" + where +
			" ORDER BY seq DESC LIMIT ?) newest ORDER BY seq"
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, s.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("state: list audit: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		r, err := scanAuditRow(rows)
		if err != nil {
			return nil, fmt.Errorf("state: list audit: %w", err)
		}
		out = append(out, r.entry())
	}
	return out, rows.Err()
}

// VerifyAudit walks the whole chain and returns how many entries it checked.
// The first inconsistency is a fault.Refused error naming the entry's seq
// and what happened to it: edited (its content no longer matches its hash),
// removed (a seq is missing, or an entry does not chain to the one before
// it), or reordered (an entry chains to one that now comes after it).
func (s *Store) VerifyAudit(ctx context.Context) (int64, error) {
	checked, bad, err := s.walkAudit(ctx)
	if err != nil || bad == nil {
		return checked, err
	}
	return checked, s.explainBreak(ctx, *bad)
}

// chainBreak is where the walk stopped.
type chainBreak struct {
	row       auditRow
	wantSeq   int64
	wantPrev  string
	badHash   bool // the row's content does not match its hash
	badDetail error
}

func (s *Store) walkAudit(ctx context.Context) (int64, *chainBreak, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+auditColumns+" FROM audit_log ORDER BY seq")
	if err != nil {
		return 0, nil, fmt.Errorf("state: verify audit: %w", err)
	}
	defer rows.Close()
	var checked int64
	prev := ""
	for rows.Next() {
		r, err := scanAuditRow(rows)
		if err != nil {
			return checked, nil, fmt.Errorf("state: verify audit: %w", err)
		}
		want := checked + 1
		if r.seq != want || r.prev != prev {
			return checked, &chainBreak{row: r, wantSeq: want, wantPrev: prev}, nil
		}
		h, err := auditHash(r.prev, r.seq, r.at, r.actor, r.action, r.opID, r.detail)
		if err != nil || h != r.hash {
			return checked, &chainBreak{row: r, wantSeq: want, wantPrev: prev, badHash: true, badDetail: err}, nil
		}
		prev = r.hash
		checked++
	}
	return checked, nil, rows.Err()
}

// explainBreak turns a chain break into an error that says what happened.
func (s *Store) explainBreak(ctx context.Context, b chainBreak) error {
	const hint = "the audit log was changed outside Lifeline: restore the state store from a backup, and find out who had write access to it"
	r := b.row
	switch {
	case b.badHash && b.badDetail != nil:
		return fault.New(fault.Refused, hint, "audit entry %d was edited: its detail is no longer valid JSON", r.seq)
	case b.badHash:
		return fault.New(fault.Refused, hint, "audit entry %d was edited: its content no longer matches its hash", r.seq)
	case r.seq > b.wantSeq:
		if r.seq == b.wantSeq+1 {
			return fault.New(fault.Refused, hint, "audit entry %d was removed from the middle of the log (the log jumps to %d)", b.wantSeq, r.seq)
		}
		return fault.New(fault.Refused, hint, "audit entries %d to %d were removed from the middle of the log (the log jumps to %d)", b.wantSeq, r.seq-1, r.seq)
	case r.seq < b.wantSeq:
		// Impossible with a primary key on seq; kept for a damaged table.
		return fault.New(fault.Refused, hint, "audit entry %d appears twice", r.seq)
	}
	// The seq is right but the entry does not chain to its predecessor.
	if r.prev == "" {
		return fault.New(fault.Refused, hint, "audit entry %d claims to be the first entry: the entries before it were replaced", r.seq)
	}
	var target int64
	err := s.db.QueryRowContext(ctx, s.Rebind("SELECT seq FROM audit_log WHERE hash = ? ORDER BY seq LIMIT 1"), r.prev).Scan(&target)
	switch {
	case isNoRows(err):
		return fault.New(fault.Refused, hint, "audit entry %d does not follow entry %d: the entry it followed was removed or replaced", r.seq, r.seq-1)
	case err != nil:
		return fmt.Errorf("state: verify audit: %w", err)
	case target >= r.seq:
		return fault.New(fault.Refused, hint, "audit entries were reordered: entry %d follows entry %d, which now comes after it", r.seq, target)
	default:
		return fault.New(fault.Refused, hint, "audit entry %d follows entry %d: the entries between them were removed and the rest renumbered", r.seq, target)
	}
}
