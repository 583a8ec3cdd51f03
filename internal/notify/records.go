package notify

import (
	"context"
	"errors"
	"strconv"
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
}

func (r records) q(q string) string { return r.st.Rebind(q) }

func (r records) stamp() int64 { return r.now().UnixMicro() }

func dbErr(err error) error {
	if err == nil {
		return nil
	}
	return fault.Wrap(err, fault.Unavailable, "check the state store (`state:` in lifeline.yaml)", "delivery records")
}

// begin records an attempt at d and returns the record's state before it:
// StateSent means the message already went and must not go again.
func (r records) begin(ctx context.Context, d Delivery) (string, error) {
	now := r.stamp()
	var state string
	err := r.st.DB().QueryRowContext(ctx, r.q(`INSERT INTO notify_deliveries
		(key, kind, channel, recipient, provider, message_id, state, attempts, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, 'pending', 1, ?, ?)
		ON CONFLICT (key) DO UPDATE SET attempts = notify_deliveries.attempts + 1, updated_at = excluded.updated_at,
			state = CASE WHEN notify_deliveries.state = 'sent' THEN 'sent' ELSE 'pending' END
		RETURNING state`),
		d.Key, d.Kind, d.Channel, d.Recipient, d.Provider, d.MessageID, now, now).Scan(&state)
	return state, dbErr(err)
}

// commit marks key sent unless it already is (errAlreadySent).
func (r records) commit(ctx context.Context, key string) error {
	now := r.stamp()
	res, err := r.st.DB().ExecContext(ctx, r.q("UPDATE notify_deliveries SET state = 'sent', sent_at = ?, updated_at = ?, last_error = '' WHERE key = ? AND state <> 'sent'"),
		now, now, key)
	if err != nil {
		return dbErr(err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return dbErr(err)
	} else if n != 1 {
		return errAlreadySent
	}
	return nil
}

// finish records the outcome of an attempt that did not end sent: state is
// StatePending (to be retried), StateFailed or StateCancelled. It also
// undoes a commit whose message the provider then refused.
func (r records) finish(ctx context.Context, key, state string, cause error) error {
	msg := ""
	if cause != nil {
		msg = truncate(cause.Error(), 1000)
	}
	_, err := r.st.DB().ExecContext(ctx, r.q("UPDATE notify_deliveries SET state = ?, sent_at = 0, last_error = ?, updated_at = ? WHERE key = ?"),
		state, msg, r.stamp(), key)
	return dbErr(err)
}

// endpointFailed counts a failed delivery to a webhook and returns the
// length of the current run of failures and when it began. Failures from
// before the subscriber's latest confirmation do not count: a re-confirmed
// webhook starts afresh.
func (r records) endpointFailed(ctx context.Context, subscriberID string, confirmed time.Time, cause error) (int, time.Time, error) {
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
func (r records) endpointOK(ctx context.Context, subscriberID string) error {
	_, err := r.st.DB().ExecContext(ctx, r.q("DELETE FROM notify_endpoints WHERE subscriber_id = ?"), subscriberID)
	return dbErr(err)
}

func (r records) list(ctx context.Context, state string, limit int) ([]Delivery, error) {
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

func (r records) count(ctx context.Context, state string) (int, error) {
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
