package plan

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/state"
)

// Event is what a plan event webhook receives on every change of a plan's
// status, wave or phase, with the plan in its one JSON shape (without its
// report, steps and gates), for the status page and chat. ID is the same
// on every attempt (also sent as the webhook-id header), so a receiver
// drops a repeat.
type Event struct {
	ID    string    `json:"id"`
	Event string    `json:"event"` // plan.<status>, e.g. plan.running, plan.paused
	At    time.Time `json:"at"`
	Plan  *Plan     `json:"plan"`
}

// Event delivery: an event is a row per webhook URL in plan_events, written
// in the transaction that made the change, so it survives any crash or
// restart; `lifeline serve` delivers them (DeliverEvents) with retries.
const (
	eventPending = "pending"
	eventSent    = "sent"
	eventFailed  = "failed" // gave up after maxEventAttempts

	maxEventAttempts = 20
	maxEventBackoff  = time.Hour
	// eventClaim is how long a delivering process holds an event: one that
	// died mid-delivery leaves it to another process (or its own restart)
	// after this. Delivery is at least once.
	eventClaim = time.Minute
)

// recordEvent writes the plan's current state, as tx sees it, as one
// pending event per configured webhook URL.
func (s *Service) recordEvent(ctx context.Context, tx *sql.Tx, id string) error {
	if len(s.Config.Events) == 0 {
		return nil
	}
	p, err := s.headIn(ctx, tx, id)
	if err != nil {
		return err
	}
	steps, err := s.stepsIn(ctx, tx, id)
	if err != nil {
		return err
	}
	p.Progress = progressOf(steps)
	now := s.now()
	ev := Event{ID: "pev_" + strings.TrimPrefix(state.NewOperationID(now), "op_"), Event: "plan." + string(p.Status), At: p.Updated, Plan: p}
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	for _, u := range s.Config.Events {
		_, err := tx.ExecContext(ctx, s.store().Rebind(`INSERT INTO plan_events (id, url, plan_id, event, body, state, attempts, next_at,
			claimed_by, claim_until, last_error, created) VALUES (?, ?, ?, ?, ?, ?, 0, ?, '', 0, '', ?)`),
			ev.ID, u, id, ev.Event, string(body), eventPending, micros(now), micros(now))
		if err != nil {
			return fmt.Errorf("plan: record event: %w", err)
		}
	}
	return nil
}

// DeliverEvents posts pending plan events to their webhooks until ctx
// ends, oldest first, polling every second, and once an hour deletes the
// events delivered more than a week ago. A delivery that fails (no
// answer within 10s, or not 2xx) is tried again after EventBackoff,
// doubling up to an hour, 20 times in all, then given up and logged. Any
// number of processes may run it: each event is claimed by one at a time.
func (s *Service) DeliverEvents(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for round := 0; ; round++ {
		if round%3600 == 0 {
			if err := s.pruneEvents(ctx); err != nil && ctx.Err() == nil && s.Log != nil {
				s.Log.Warn("plan events: pruning delivered events failed", "err", err)
			}
		}
		for {
			n, err := s.deliverDue(ctx)
			if err != nil && ctx.Err() == nil && s.Log != nil {
				s.Log.Warn("plan events: delivery round failed", "err", err)
			}
			if n == 0 || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// keepSent is how long a delivered event stays in plan_events (for a look
// at what was sent); given-up ones stay until a person retries them
// (RetryEvents, `lifeline plan events retry`).
const keepSent = 7 * 24 * time.Hour

// pruneEvents deletes events delivered more than keepSent ago.
func (s *Service) pruneEvents(ctx context.Context) error {
	_, err := s.exec(ctx, "DELETE FROM plan_events WHERE state = ? AND created < ?", eventSent, micros(s.now().Add(-keepSent)))
	return err
}

type dueEvent struct {
	id, url, plan, event, body string
	attempts                   int
}

// deliverDue delivers up to 100 due events and returns how many it tried.
func (s *Service) deliverDue(ctx context.Context) (int, error) {
	now := micros(s.now())
	rows, err := s.store().DB().QueryContext(ctx, s.store().Rebind(`SELECT id, url, plan_id, event, body, attempts FROM plan_events
		WHERE state = ? AND next_at <= ? AND claim_until < ? ORDER BY created, id, url LIMIT 100`), eventPending, now, now)
	if err != nil {
		return 0, fmt.Errorf("plan: due events: %w", err)
	}
	var due []dueEvent
	for rows.Next() {
		var d dueEvent
		if err := rows.Scan(&d.id, &d.url, &d.plan, &d.event, &d.body, &d.attempts); err != nil {
			rows.Close()
			return 0, err
		}
		due = append(due, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	tried := 0
	for _, d := range due {
		if ctx.Err() != nil {
			return tried, ctx.Err()
		}
		claimed, err := s.exec(ctx, "UPDATE plan_events SET claimed_by = ?, claim_until = ? WHERE id = ? AND url = ? AND state = ? AND claim_until < ?",
			s.owner(), micros(s.now().Add(eventClaim)), d.id, d.url, eventPending, micros(s.now()))
		if err != nil {
			return tried, err
		}
		if claimed != 1 {
			continue // another process has it
		}
		tried++
		if err := s.settle(ctx, d, s.postEvent(ctx, d)); err != nil {
			return tried, err
		}
	}
	return tried, nil
}

// settle records a delivery attempt's outcome.
func (s *Service) settle(ctx context.Context, d dueEvent, postErr error) error {
	bg := context.WithoutCancel(ctx)
	attempts := d.attempts + 1
	if postErr == nil {
		_, err := s.exec(bg, "UPDATE plan_events SET state = ?, attempts = ?, claimed_by = '', claim_until = 0, last_error = '' WHERE id = ? AND url = ?",
			eventSent, attempts, d.id, d.url)
		return err
	}
	st, next := eventPending, s.now().Add(s.eventBackoff(attempts))
	if attempts >= maxEventAttempts {
		st = eventFailed
		if s.Log != nil {
			s.Log.Warn("plan event given up; `lifeline plan events retry ID` tries it again", "id", d.id, "url", d.url, "plan", d.plan, "event", d.event,
				"attempts", attempts, "err", postErr)
		}
	}
	_, err := s.exec(bg, "UPDATE plan_events SET state = ?, attempts = ?, next_at = ?, claimed_by = '', claim_until = 0, last_error = ? WHERE id = ? AND url = ?",
		st, attempts, micros(next), truncate(postErr.Error(), 500), d.id, d.url)
	return err
}

// eventBackoff is the wait after the nth failed attempt.
func (s *Service) eventBackoff(n int) time.Duration {
	d := s.EventBackoff
	if d <= 0 {
		d = time.Second
	}
	for i := 1; i < n && d < maxEventBackoff; i++ {
		d *= 2
	}
	return min(d, maxEventBackoff)
}

func (s *Service) postEvent(ctx context.Context, d dueEvent) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader([]byte(d.body)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", d.id)
	client := s.HTTP
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// EventRecord is one event owed to one webhook URL, as plan_events keeps
// it: for `lifeline plan events`, to see what was delivered and what was
// given up.
type EventRecord struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Plan      string    `json:"plan"`
	Event     string    `json:"event"`
	State     string    `json:"state"` // pending, sent, failed (given up)
	Attempts  int       `json:"attempts"`
	NextAt    time.Time `json:"next_at,omitzero"` // a pending event's next attempt
	LastError string    `json:"last_error,omitempty"`
	Created   time.Time `json:"created"`
}

// Events lists plan events, newest first (at most 1000): one plan's
// (planID, "" for every plan's), only those given up with failed.
func (s *Service) Events(ctx context.Context, planID string, failed bool) ([]EventRecord, error) {
	where, args := []string{"1 = 1"}, []any{}
	if planID != "" {
		where, args = append(where, "plan_id = ?"), append(args, planID)
	}
	if failed {
		where, args = append(where, "state = ?"), append(args, eventFailed)
	}
	rows, err := s.store().DB().QueryContext(ctx, s.store().Rebind(`SELECT id, url, plan_id, event, state, attempts, next_at, last_error, created
		FROM plan_events WHERE `+strings.Join(where, " AND ")+` ORDER BY created DESC, id, url LIMIT 1000`), args...)
	if err != nil {
		return nil, fmt.Errorf("plan: events: %w", err)
	}
	defer rows.Close()
	out := []EventRecord{}
	for rows.Next() {
		var e EventRecord
		var next, created int64
		if err := rows.Scan(&e.ID, &e.URL, &e.Plan, &e.Event, &e.State, &e.Attempts, &next, &e.LastError, &created); err != nil {
			return nil, fmt.Errorf("plan: events: %w", err)
		}
		if e.State == eventPending {
			e.NextAt = fromMicros(next)
		}
		e.Created = fromMicros(created)
		out = append(out, e)
	}
	return out, rows.Err()
}

// RetryEvents gives events that were given up a fresh run of delivery
// attempts, due now: every URL of event id, or every failed event when id
// is "". It is audited (plan.events_retry) with the retry, and returns how
// many were put back. An id naming no event is fault.NotFound; one whose
// event was not given up is fault.Conflict, saying its state.
func (s *Service) RetryEvents(ctx context.Context, id, actor string) (int, error) {
	q, args := "UPDATE plan_events SET state = ?, attempts = 0, next_at = ?, claimed_by = '', claim_until = 0 WHERE state = ?",
		[]any{eventPending, micros(s.now()), eventFailed}
	if id != "" {
		q, args = q+" AND id = ?", append(args, id)
	}
	n, err := s.execAudited(ctx, state.AuditEntry{Actor: actor, Action: "plan.events_retry", Detail: map[string]any{"event": orAll(id)}}, q, args...)
	if err != nil || n > 0 || id == "" {
		return int(n), err
	}
	var st string
	err = s.store().DB().QueryRowContext(ctx, s.store().Rebind("SELECT state FROM plan_events WHERE id = ? ORDER BY state LIMIT 1"), id).Scan(&st)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fault.New(fault.NotFound, "`lifeline plan events --failed` lists the events given up", "no plan event %q", id)
	}
	if err != nil {
		return 0, fmt.Errorf("plan: events: %w", err)
	}
	return 0, fault.New(fault.Conflict, "only events given up (state failed) are retried; `lifeline plan events` shows each one's state",
		"plan event %s is %s, not failed", id, st)
}

func orAll(id string) string {
	if id == "" {
		return "all failed"
	}
	return id
}
