package plan

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

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
// at what was sent); given-up ones stay until a person deletes them.
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
			s.Log.Warn("plan event given up", "url", d.url, "plan", d.plan, "event", d.event, "attempts", attempts, "err", postErr)
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
