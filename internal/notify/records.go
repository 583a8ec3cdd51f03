package notify

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"sync"
	"time"

	"lifeline/internal/fault"
)

// Delivery states.
const (
	StatePending   = "pending"
	StateSent      = "sent"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// Delivery is the record of one message: every send is recorded.
type Delivery struct {
	Key       string    `json:"key"`
	Kind      string    `json:"kind"` // notice, confirm, disabled
	Channel   string    `json:"channel"`
	Recipient string    `json:"recipient"`
	Provider  string    `json:"provider"`
	MessageID string    `json:"message_id"`
	State     string    `json:"state"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
	Created   time.Time `json:"created_at"`
	Updated   time.Time `json:"updated_at"`
	Sent      time.Time `json:"sent_at,omitzero"`
}

// errAlreadySent is commit's answer when the record is already sent: a
// second worker (a rescued job whose first run was only slow) lost the race
// and must withdraw its copy.
var errAlreadySent = errors.New("already sent")

// records is the SQL of notify's own tables.
type records struct {
	st  Store
	now func() time.Time

	// The two statements every delivery runs are prepared once: parsing
	// them again each time cost a third of the delivery path's CPU.
	prepMu          sync.Mutex
	stateQ, commitQ *sql.Stmt
}

const (
	stateSQL  = "SELECT state FROM notify_deliveries WHERE key = ?"
	commitSQL = `INSERT INTO notify_deliveries
		(key, kind, channel, recipient, provider, message_id, state, attempts, created_at, updated_at, sent_at)
		VALUES (?, ?, ?, ?, ?, ?, 'sent', 1, ?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET state = 'sent', attempts = notify_deliveries.attempts + 1, last_error = '',
			sent_at = excluded.sent_at, updated_at = excluded.updated_at
		WHERE notify_deliveries.state <> 'sent'`
)

// prepared returns the prepared statements, preparing them on first use.
func (r *records) prepared(ctx context.Context) (state, commit *sql.Stmt, err error) {
	r.prepMu.Lock()
	defer r.prepMu.Unlock()
	if r.stateQ == nil {
		if r.stateQ, err = r.st.DB().PrepareContext(ctx, r.q(stateSQL)); err != nil {
			return nil, nil, dbErr(err)
		}
	}
	if r.commitQ == nil {
		if r.commitQ, err = r.st.DB().PrepareContext(ctx, r.q(commitSQL)); err != nil {
			return nil, nil, dbErr(err)
		}
	}
	return r.stateQ, r.commitQ, nil
}

// close releases the prepared statements.
func (r *records) close() {
	r.prepMu.Lock()
	defer r.prepMu.Unlock()
	for _, st := range []*sql.Stmt{r.stateQ, r.commitQ} {
		if st != nil {
			_ = st.Close()
		}
	}
	r.stateQ, r.commitQ = nil, nil
}

func (r *records) q(q string) string { return r.st.Rebind(q) }

func (r *records) stamp() int64 { return r.now().UnixMicro() }

func dbErr(err error) error {
	if err == nil {
		return nil
	}
	return fault.Wrap(err, fault.Unavailable, "check the state store (`state:` in lifeline.yaml)", "delivery records")
}

// state returns the record of key's state ("" if there is none yet):
// StateSent means the message already went and must not go again.
func (r *records) state(ctx context.Context, key string) (string, error) {
	stmt, _, err := r.prepared(ctx)
	if err != nil {
		return "", err
	}
	var state string
	err = stmt.QueryRowContext(ctx, key).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return state, dbErr(err)
}

// commit records d sent, counting the attempt, unless it already is
// (errAlreadySent). also, if set, runs in the same transaction: the notice
// is marked sent in the same commit as the record.
func (r *records) commit(ctx context.Context, d Delivery, also func(*sql.Tx) error) error {
	_, stmt, err := r.prepared(ctx)
	if err != nil {
		return err
	}
	tx, err := r.st.DB().BeginTx(ctx, nil)
	if err != nil {
		return dbErr(err)
	}
	defer func() { _ = tx.Rollback() }()
	now := r.stamp()
	res, err := tx.StmtContext(ctx, stmt).ExecContext(ctx, d.Key, d.Kind, d.Channel, d.Recipient, d.Provider, d.MessageID, now, now, now)
	if err != nil {
		return dbErr(err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return dbErr(err)
	} else if n != 1 {
		return errAlreadySent
	}
	if also != nil {
		if err := also(tx); err != nil {
			return err
		}
	}
	return dbErr(tx.Commit())
}

// finish records an attempt that did not end sent: state is StatePending
// (to be retried), StateFailed or StateCancelled. With revert it undoes a
// commit whose message the provider then refused (the attempt was counted
// by the commit); without, it counts the attempt and leaves a record that
// another runner marked sent alone.
func (r *records) finish(ctx context.Context, d Delivery, state string, cause error, revert bool) error {
	msg := ""
	if cause != nil {
		msg = truncate(cause.Error(), 1000)
	}
	now := r.stamp()
	var err error
	if revert {
		_, err = r.st.DB().ExecContext(ctx, r.q("UPDATE notify_deliveries SET state = ?, sent_at = 0, last_error = ?, updated_at = ? WHERE key = ?"),
			state, msg, now, d.Key)
	} else {
		_, err = r.st.DB().ExecContext(ctx, r.q(`INSERT INTO notify_deliveries
			(key, kind, channel, recipient, provider, message_id, state, attempts, last_error, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET state = excluded.state, attempts = notify_deliveries.attempts + 1,
				last_error = excluded.last_error, updated_at = excluded.updated_at
			WHERE notify_deliveries.state <> 'sent'`),
			d.Key, d.Kind, d.Channel, d.Recipient, d.Provider, d.MessageID, state, msg, now, now)
	}
	return dbErr(err)
}

// endpointFailed counts a failed delivery to a webhook and returns the
// length of the current run of failures and when it began. Failures from
// before the subscriber's latest confirmation do not count: a re-confirmed
// webhook starts afresh.
func (r *records) endpointFailed(ctx context.Context, subscriberID string, confirmed time.Time, cause error) (int, time.Time, error) {
	now, conf := r.stamp(), confirmed.UnixMicro()
	var n int
	var since int64
	err := r.st.DB().QueryRowContext(ctx, r.q(`INSERT INTO notify_endpoints (subscriber_id, failures, since, last_error, updated_at)
		VALUES (?, 1, ?, ?, ?)
		ON CONFLICT (subscriber_id) DO UPDATE SET
			failures = CASE WHEN notify_endpoints.since < ? THEN 1 ELSE notify_endpoints.failures + 1 END,
			since = CASE WHEN notify_endpoints.since < ? THEN excluded.since ELSE notify_endpoints.since END,
			last_error = excluded.last_error, updated_at = excluded.updated_at
		RETURNING failures, since`),
		subscriberID, now, truncate(cause.Error(), 1000), now, conf, conf).Scan(&n, &since)
	return n, time.UnixMicro(since).UTC(), dbErr(err)
}

// endpointOK ends a webhook's run of failures.
func (r *records) endpointOK(ctx context.Context, subscriberID string) error {
	_, err := r.st.DB().ExecContext(ctx, r.q("DELETE FROM notify_endpoints WHERE subscriber_id = ?"), subscriberID)
	return dbErr(err)
}

func (r *records) list(ctx context.Context, state string, limit int) ([]Delivery, error) {
	if limit <= 0 {
		limit = 1000
	}
	q, args := `SELECT key, kind, channel, recipient, provider, message_id, state, attempts, last_error, created_at, updated_at, sent_at
		FROM notify_deliveries`, []any{}
	if state != "" {
		q, args = q+" WHERE state = ?", append(args, state)
	}
	rows, err := r.st.DB().QueryContext(ctx, r.q(q+" ORDER BY created_at, key LIMIT "+strconv.Itoa(limit)), args...)
	if err != nil {
		return nil, dbErr(err)
	}
	defer rows.Close()
	out := []Delivery{}
	for rows.Next() {
		var d Delivery
		var cr, up, sent int64
		if err := rows.Scan(&d.Key, &d.Kind, &d.Channel, &d.Recipient, &d.Provider, &d.MessageID, &d.State, &d.Attempts, &d.LastError, &cr, &up, &sent); err != nil {
			return nil, dbErr(err)
		}
		d.Created, d.Updated = time.UnixMicro(cr).UTC(), time.UnixMicro(up).UTC()
		if sent != 0 {
			d.Sent = time.UnixMicro(sent).UTC()
		}
		out = append(out, d)
	}
	return out, dbErr(rows.Err())
}

func (r *records) count(ctx context.Context, state string) (int, error) {
	var n int
	err := r.st.DB().QueryRowContext(ctx, r.q("SELECT COUNT(*) FROM notify_deliveries WHERE state = ?"), state).Scan(&n)
	return n, dbErr(err)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
