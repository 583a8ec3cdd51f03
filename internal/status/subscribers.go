package status

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	"lifeline/internal/fault"
)

// Channel is how a subscriber is told.
type Channel string

const (
	ChannelEmail   Channel = "email"
	ChannelWebhook Channel = "webhook"
)

// ConfirmWithin is how long a double opt-in link stays valid.
const ConfirmWithin = 7 * 24 * time.Hour

// Subscriber is someone (or something) told about incident updates. Email
// subscribers confirm their address; a webhook is confirmed by its owner's
// email, who is also told if it is disabled. Nothing is sent before
// confirmation.
type Subscriber struct {
	ID         string   `json:"id"`
	Channel    Channel  `json:"channel"`
	Address    string   `json:"address"` // email address or webhook URL
	OwnerEmail string   `json:"owner_email,omitempty"`
	Components []string `json:"components"` // component ids; empty means every component
	Lang       Lang     `json:"lang"`
	// Secret signs webhook deliveries (Standard Webhooks, "whsec_…"). It is
	// shown once, when the webhook is subscribed.
	Secret         string    `json:"-"`
	Confirmed      time.Time `json:"confirmed_at,omitzero"`
	Disabled       time.Time `json:"disabled_at,omitzero"`
	DisabledReason string    `json:"disabled_reason,omitempty"`
	Created        time.Time `json:"created_at"`
}

// Active reports whether the subscriber is owed notices.
func (s Subscriber) Active() bool { return !s.Confirmed.IsZero() && s.Disabled.IsZero() }

// SubscribeRequest is a request to subscribe, from the public page or the API.
type SubscribeRequest struct {
	Channel    Channel  `json:"channel"`
	Address    string   `json:"address"`
	OwnerEmail string   `json:"owner_email,omitempty"` // webhooks only
	Components []string `json:"components,omitempty"`  // ids or English names; none means all
	Lang       Lang     `json:"lang,omitempty"`
}

// Pending is the result of Subscribe: what must be mailed to finish the
// double opt-in. Token is empty when the subscriber was already confirmed.
type Pending struct {
	Subscriber Subscriber `json:"subscriber"`
	ConfirmTo  string     `json:"confirm_to,omitempty"` // the address the confirmation goes to
	Token      string     `json:"-"`                    // goes into the confirmation link, never stored in clear
	Secret     string     `json:"secret,omitempty"`     // the webhook signing secret, shown once
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// randomBytes reads n bytes from the service's random source. A failing
// source is a broken installation, not a condition to handle: crypto/rand
// never fails on supported systems.
func (s *Service) randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.rand, b); err != nil {
		panic("status: random source failed: " + err.Error())
	}
	return b
}

// randomToken is n random bytes for a URL.
func (s *Service) randomToken(n int) string {
	return base64.RawURLEncoding.EncodeToString(s.randomBytes(n))
}

func checkEmail(field, addr string) error {
	a, err := mail.ParseAddress(addr)
	if err != nil || a.Address != addr || a.Name != "" {
		return fault.New(fault.Invalid, "give a bare address like name@example.com", "%s %q is not an email address", field, addr)
	}
	return nil
}

// Subscribe records an unconfirmed subscriber and returns the token for its
// confirmation link. Subscribing an address again sends a new link; it never
// changes a confirmed subscription without confirmation.
func (s *Service) Subscribe(ctx context.Context, req SubscribeRequest) (*Pending, error) {
	if req.Lang != Chinese {
		req.Lang = English
	}
	confirmTo := req.Address
	switch req.Channel {
	case ChannelEmail:
		if err := checkEmail("address", req.Address); err != nil {
			return nil, err
		}
		req.OwnerEmail = ""
	case ChannelWebhook:
		u, err := url.Parse(req.Address)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fault.New(fault.Invalid, "give an http(s) URL", "webhook address %q is not a URL", req.Address)
		}
		if err := checkEmail("owner_email", req.OwnerEmail); err != nil {
			return nil, err
		}
		confirmTo = req.OwnerEmail
	default:
		return nil, fault.New(fault.Invalid, "use email or webhook", "unknown channel %q", req.Channel)
	}
	var comps []string
	if len(req.Components) > 0 {
		changes := make([]ComponentChange, len(req.Components))
		for i, c := range req.Components {
			changes[i] = ComponentChange{ComponentID: c, Status: Operational}
		}
		resolved, err := s.resolveChanges(ctx, changes)
		if err != nil {
			return nil, err
		}
		for _, c := range resolved {
			comps = append(comps, c.ComponentID)
		}
	}
	compsJSON, _ := json.Marshal(orEmpty(comps))
	now := s.stamp()
	token := s.randomToken(24)
	p := &Pending{ConfirmTo: confirmTo, Token: token}
	err := s.db.write(ctx, func(tx *sql.Tx) error {
		cur, err := s.db.subscriberBy(ctx, tx, "channel = ? AND address = ?", req.Channel, req.Address)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			sub := Subscriber{ID: newID(), Channel: req.Channel, Address: req.Address, OwnerEmail: req.OwnerEmail, Components: orEmpty(comps), Lang: req.Lang, Created: now}
			if req.Channel == ChannelWebhook {
				sub.Secret = "whsec_" + base64.StdEncoding.EncodeToString(s.randomBytes(24))
				p.Secret = sub.Secret
			}
			p.Subscriber = sub
			return storeErr(s.db.exec(ctx, tx, `INSERT INTO status_subscribers (id, channel, address, owner_email, components, lang, secret,
				confirm_hash, confirm_sent_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				sub.ID, sub.Channel, sub.Address, sub.OwnerEmail, string(compsJSON), sub.Lang, sub.Secret, hashToken(token), micros(now), micros(now), micros(now)))
		case err != nil:
			return err
		case cur.Active():
			p.Subscriber, p.Token, p.ConfirmTo = cur, "", ""
			return nil
		}
		// Unconfirmed or unsubscribed: a fresh link; the choices apply once
		// confirmed (nothing is sent before that).
		cur.Components, cur.Lang, cur.Confirmed, cur.Disabled, cur.DisabledReason = orEmpty(comps), req.Lang, time.Time{}, time.Time{}, ""
		if req.Channel == ChannelWebhook {
			cur.OwnerEmail = req.OwnerEmail
		}
		p.Subscriber = cur
		return storeErr(s.db.exec(ctx, tx, `UPDATE status_subscribers SET owner_email = ?, components = ?, lang = ?, confirm_hash = ?, confirm_sent_at = ?,
			confirmed_at = 0, disabled_at = 0, disabled_reason = '', updated_at = ? WHERE id = ?`,
			cur.OwnerEmail, string(compsJSON), cur.Lang, hashToken(token), micros(now), micros(now), cur.ID))
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Confirm completes a double opt-in from the token in the link.
func (s *Service) Confirm(ctx context.Context, token string) (Subscriber, error) {
	var sub Subscriber
	now := s.stamp()
	err := s.db.write(ctx, func(tx *sql.Tx) error {
		var sent int64
		cur, err := s.db.subscriberBy(ctx, tx, "confirm_hash = ? AND confirm_hash <> ''", hashToken(token))
		if errors.Is(err, sql.ErrNoRows) {
			return fault.New(fault.NotFound, "subscribe again to get a new link", "this confirmation link is not valid (already used, or replaced by a newer one)")
		}
		if err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, s.db.q("SELECT confirm_sent_at FROM status_subscribers WHERE id = ?"), cur.ID).Scan(&sent); err != nil {
			return storeErr(err)
		}
		if now.Sub(fromMicros(sent)) > ConfirmWithin {
			return fault.New(fault.Refused, "subscribe again to get a new link", "this confirmation link expired")
		}
		cur.Confirmed = now
		sub = cur
		return storeErr(s.db.exec(ctx, tx, "UPDATE status_subscribers SET confirmed_at = ?, confirm_hash = '', updated_at = ? WHERE id = ?", micros(now), micros(now), cur.ID))
	})
	return sub, err
}

// linkKey returns this installation's key for signing links, making it on
// first use. Every process sharing the state store gets the same key.
func (s *Service) linkKey(ctx context.Context) ([]byte, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if s.key != nil {
		return s.key, nil
	}
	db := s.db.st.DB()
	var secret string
	err := db.QueryRowContext(ctx, s.db.q("SELECT secret FROM status_keys WHERE name = ?"), "links").Scan(&secret)
	if errors.Is(err, sql.ErrNoRows) {
		// Two processes may race here; the primary key keeps the first.
		_, err = db.ExecContext(ctx, s.db.q("INSERT INTO status_keys (name, secret, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"),
			"links", s.randomToken(32), micros(s.stamp()))
		if err == nil {
			err = db.QueryRowContext(ctx, s.db.q("SELECT secret FROM status_keys WHERE name = ?"), "links").Scan(&secret)
		}
	}
	if err != nil {
		return nil, storeErr(err)
	}
	s.key = []byte(secret)
	return s.key, nil
}

func linkMAC(key []byte, purpose, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose + "\x00" + id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}

// UnsubscribeToken returns the token of subscriber id's one-click
// unsubscribe link. It is signed, not stored, and does not expire: an
// unsubscribe link must keep working.
func (s *Service) UnsubscribeToken(ctx context.Context, id string) (string, error) {
	key, err := s.linkKey(ctx)
	if err != nil {
		return "", err
	}
	return id + "." + linkMAC(key, "unsubscribe", id), nil
}

// Unsubscribe stops notices to the subscriber whose signed token this is.
// Doing it twice is not an error.
func (s *Service) Unsubscribe(ctx context.Context, token string) (Subscriber, error) {
	id, mac, ok := strings.Cut(token, ".")
	key, err := s.linkKey(ctx)
	if err != nil {
		return Subscriber{}, err
	}
	if !ok || !hmac.Equal([]byte(mac), []byte(linkMAC(key, "unsubscribe", id))) {
		return Subscriber{}, fault.New(fault.Invalid, "use the link from the latest email", "this unsubscribe link is not valid")
	}
	return s.disable(ctx, id, reasonUnsubscribed)
}

// reasonUnsubscribed is the disabled reason of a subscriber who left.
const reasonUnsubscribed = "unsubscribed"

// DisableSubscriber stops notices to a subscriber, saying why (a webhook
// that kept failing, an operator's decision).
func (s *Service) DisableSubscriber(ctx context.Context, id, reason string) (Subscriber, error) {
	return s.disable(ctx, id, reason)
}

// StopUnconfirmed stops a subscription whose confirmation mail to `to` was
// refused for good: nobody can follow a link that never arrived, and
// mailing the address again would be refused again. The link stops
// working too. It reports whether it stopped it; it leaves alone a
// subscription confirmed or stopped meanwhile, and a webhook whose
// confirmation now goes to another owner (it was subscribed again).
// Subscribing again clears the stop and sends a fresh link.
func (s *Service) StopUnconfirmed(ctx context.Context, id, to, reason string) (bool, error) {
	now := micros(s.stamp())
	var n int64
	err := s.db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.q(`UPDATE status_subscribers SET disabled_at = ?, disabled_reason = ?, confirm_hash = '', updated_at = ?
			WHERE id = ? AND confirmed_at = 0 AND disabled_at = 0 AND (CASE WHEN channel = ? THEN owner_email ELSE address END) = ?`),
			now, reason, now, id, ChannelWebhook, to)
		if err == nil {
			n, err = res.RowsAffected()
		}
		return storeErr(err)
	})
	return n == 1, err
}

func (s *Service) disable(ctx context.Context, id, reason string) (Subscriber, error) {
	var sub Subscriber
	now := s.stamp()
	err := s.db.write(ctx, func(tx *sql.Tx) error {
		cur, err := s.db.subscriberBy(ctx, tx, "id = ?", id)
		if errors.Is(err, sql.ErrNoRows) {
			return fault.New(fault.NotFound, "", "no subscriber %q", id)
		}
		if err != nil {
			return err
		}
		if cur.Disabled.IsZero() {
			cur.Disabled, cur.DisabledReason = now, reason
			if err := s.db.exec(ctx, tx, "UPDATE status_subscribers SET disabled_at = ?, disabled_reason = ?, updated_at = ? WHERE id = ?",
				micros(now), reason, micros(now), id); err != nil {
				return storeErr(err)
			}
		}
		sub = cur
		return nil
	})
	return sub, err
}

// Subscriber returns one subscriber, secret included (delivery signs with it).
func (s *Service) Subscriber(ctx context.Context, id string) (Subscriber, error) {
	sub, err := s.db.subscriberBy(ctx, s.db.st.DB(), "id = ?", id)
	if errors.Is(err, sql.ErrNoRows) {
		return sub, fault.New(fault.NotFound, "", "no subscriber %q", id)
	}
	return sub, err
}

type queryer interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

const subscriberCols = "id, channel, address, owner_email, components, lang, secret, confirmed_at, disabled_at, disabled_reason, created_at"

func (s sqlStore) subscriberBy(ctx context.Context, q queryer, where string, args ...any) (Subscriber, error) {
	return scanSubscriber(q.QueryRowContext(ctx, s.q("SELECT "+subscriberCols+" FROM status_subscribers WHERE "+where), args...))
}

// scanSubscriber reads one row of subscriberCols.
func scanSubscriber(row interface{ Scan(...any) error }) (Subscriber, error) {
	var sub Subscriber
	var comps string
	var conf, dis, cr int64
	err := row.Scan(&sub.ID, &sub.Channel, &sub.Address, &sub.OwnerEmail, &comps, &sub.Lang, &sub.Secret,
		&conf, &dis, &sub.DisabledReason, &cr)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return sub, err
		}
		return sub, storeErr(err)
	}
	if err := json.Unmarshal([]byte(comps), &sub.Components); err != nil {
		return sub, fmt.Errorf("status: subscriber %s components: %w", sub.ID, err)
	}
	sub.Confirmed, sub.Disabled, sub.Created = fromMicros(conf), fromMicros(dis), fromMicros(cr)
	return sub, nil
}

// StoppedSubscribers lists the subscribers delivery stopped (a mailbox
// that refused for good, a webhook that kept failing), newest first, with
// why: the operator's console and the API show them, since nobody is
// mailed about a dead mailbox. Those who unsubscribed are not listed.
func (s *Service) StoppedSubscribers(ctx context.Context) ([]Subscriber, error) {
	rows, err := s.db.st.DB().QueryContext(ctx, s.db.q("SELECT "+subscriberCols+
		" FROM status_subscribers WHERE disabled_at > 0 AND disabled_reason <> ? ORDER BY disabled_at DESC, id"), reasonUnsubscribed)
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	out := []Subscriber{}
	for rows.Next() {
		sub, err := scanSubscriber(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sub)
	}
	return out, storeErr(rows.Err())
}

// enqueueNotices records, in the publishing transaction, a pending notice
// for every active subscriber who follows any of the components (or all of
// them). One statement whatever the number of subscribers; the primary key
// makes it idempotent.
func (s sqlStore) enqueueNotices(ctx context.Context, tx *sql.Tx, u *Update, components []string, now time.Time) error {
	q := `INSERT INTO status_notices (subscriber_id, update_id, incident_id, status, created_at)
		SELECT s.id, ?, ?, 'pending', ? FROM status_subscribers s
		WHERE s.confirmed_at > 0 AND s.disabled_at = 0 AND (s.components = '[]'`
	args := []any{u.ID, u.IncidentID, micros(now)}
	for _, c := range components {
		// Ids are [a-z0-9], so they need no LIKE escaping.
		q += " OR s.components LIKE ?"
		args = append(args, `%"`+c+`"%`)
	}
	q += ") ON CONFLICT (subscriber_id, update_id) DO NOTHING"
	return storeErr(s.exec(ctx, tx, q, args...))
}

// Notice states. A notice is pending from the moment its update is
// published until the delivery side turns it into a job (queued); it ends
// sent, failed (the provider refused it for good, or every retry failed) or
// cancelled (the subscriber left, or the webhook was disabled, first).
const (
	NoticePending   = "pending"
	NoticeQueued    = "queued"
	NoticeSent      = "sent"
	NoticeFailed    = "failed"
	NoticeCancelled = "cancelled"
)

// Notice is one update owed to one subscriber.
type Notice struct {
	SubscriberID string    `json:"subscriber_id"`
	UpdateID     string    `json:"update_id"`
	IncidentID   string    `json:"incident_id"`
	Channel      Channel   `json:"channel"`
	Status       string    `json:"status"` // NoticePending, NoticeQueued, NoticeSent, NoticeFailed, NoticeCancelled
	Attempts     int       `json:"attempts"`
	LastError    string    `json:"last_error,omitempty"`
	Created      time.Time `json:"created_at"`
	Sent         time.Time `json:"sent_at,omitzero"`
}

// Notices lists notices in a status ("" for all), oldest first.
func (s *Service) Notices(ctx context.Context, status string, limit int) ([]Notice, error) {
	var where []string
	var args []any
	if status != "" {
		where, args = append(where, "n.status = ?"), append(args, status)
	}
	return s.notices(ctx, where, args, "n.created_at, n.subscriber_id", limit)
}

// OwedNotices lists pending notices to subscribers of the given channels,
// oldest first: what the delivery side has yet to take on. A channel that
// cannot be delivered (no SMTP server configured) is left out, so its
// notices wait without holding up the others.
func (s *Service) OwedNotices(ctx context.Context, channels []Channel, limit int) ([]Notice, error) {
	if len(channels) == 0 {
		return []Notice{}, nil
	}
	where := []string{"n.status = ?", "s.channel IN (?" + strings.Repeat(", ?", len(channels)-1) + ")"}
	args := []any{NoticePending}
	for _, c := range channels {
		args = append(args, c)
	}
	// Oldest first by the (status, created_at) index alone: a tie-breaker
	// would sort every pending notice of an update on each call.
	return s.notices(ctx, where, args, "n.created_at", limit)
}

func (s *Service) notices(ctx context.Context, where []string, args []any, order string, limit int) ([]Notice, error) {
	if limit <= 0 {
		limit = 1000
	}
	q := `SELECT n.subscriber_id, n.update_id, n.incident_id, s.channel, n.status, n.attempts, n.last_error, n.created_at, n.sent_at
		FROM status_notices n JOIN status_subscribers s ON s.id = n.subscriber_id`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := s.db.st.DB().QueryContext(ctx, s.db.q(q+" ORDER BY "+order+" LIMIT "+strconv.Itoa(limit)), args...)
	if err != nil {
		return nil, storeErr(err)
	}
	defer rows.Close()
	out := []Notice{}
	for rows.Next() {
		var n Notice
		var cr, sent int64
		if err := rows.Scan(&n.SubscriberID, &n.UpdateID, &n.IncidentID, &n.Channel, &n.Status, &n.Attempts, &n.LastError, &cr, &sent); err != nil {
			return nil, storeErr(err)
		}
		n.Created, n.Sent = fromMicros(cr), fromMicros(sent)
		out = append(out, n)
	}
	return out, storeErr(rows.Err())
}

// QueueNotices moves pending notices to queued once the delivery side has
// jobs for them. Notices no longer pending (a fast worker may have sent one
// already) are left alone, so running it twice, or from two processes, is
// harmless.
func (s *Service) QueueNotices(ctx context.Context, ns []Notice) error {
	// Grouped by update, so each statement looks rows up by primary key
	// (subscriber_id IN …, update_id =) rather than scanning every pending
	// notice.
	byUpdate := map[string][]string{}
	var order []string
	for _, n := range ns {
		if _, ok := byUpdate[n.UpdateID]; !ok {
			order = append(order, n.UpdateID)
		}
		byUpdate[n.UpdateID] = append(byUpdate[n.UpdateID], n.SubscriberID)
	}
	const chunk = 500
	for _, u := range order {
		subs := byUpdate[u]
		for len(subs) > 0 {
			part := subs[:min(chunk, len(subs))]
			subs = subs[len(part):]
			args := []any{NoticeQueued, u, NoticePending}
			for _, id := range part {
				args = append(args, id)
			}
			q := "UPDATE status_notices SET status = ? WHERE update_id = ? AND status = ? AND subscriber_id IN (?" + strings.Repeat(", ?", len(part)-1) + ")"
			if _, err := s.db.st.DB().ExecContext(ctx, s.db.q(q), args...); err != nil {
				return storeErr(err)
			}
		}
	}
	return nil
}

// NoticeDone records how a notice ended: NoticeSent, NoticeFailed or
// NoticeCancelled, after attempts tries, with the last error if any. It
// also puts a notice back to NoticeQueued when a delivery recorded sent
// was refused after all.
func (s *Service) NoticeDone(ctx context.Context, subscriberID, updateID, status string, attempts int, lastErr string) error {
	return s.NoticeDoneTx(ctx, nil, subscriberID, updateID, status, attempts, lastErr)
}

// NoticeDoneTx is NoticeDone inside the caller's transaction on the state
// store (nil: its own), so delivery can mark a notice sent in the same
// commit as its own record of the send.
func (s *Service) NoticeDoneTx(ctx context.Context, tx *sql.Tx, subscriberID, updateID, status string, attempts int, lastErr string) error {
	sent := int64(0)
	if status == NoticeSent {
		sent = micros(s.stamp())
	}
	q, args := s.db.q("UPDATE status_notices SET status = ?, attempts = ?, last_error = ?, sent_at = ? WHERE subscriber_id = ? AND update_id = ?"),
		[]any{status, attempts, lastErr, sent, subscriberID, updateID}
	var err error
	if tx != nil {
		_, err = tx.ExecContext(ctx, q, args...)
	} else {
		_, err = s.db.st.DB().ExecContext(ctx, q, args...)
	}
	return storeErr(err)
}
