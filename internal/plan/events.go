package plan

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Event is what a plan event webhook receives on every change of a plan's
// status, wave or phase, with the plan in its one JSON shape (without its
// report and steps), for the status page and chat.
type Event struct {
	Event string    `json:"event"` // plan.<status>, e.g. plan.running, plan.paused
	At    time.Time `json:"at"`
	Plan  *Plan     `json:"plan"`
}

// Events posts plan events to webhook URLs, in order, from one goroutine
// that Run owns: a slow receiver never holds up a plan's runner. Delivery
// is best effort — three attempts per URL, then the event is logged and
// dropped; the audit log stays the record of what happened.
type Events struct {
	URLs []string
	// HTTP sends them; nil uses a client with a 10s timeout.
	HTTP *http.Client
	Log  *slog.Logger
	// Backoff between attempts (default 1s, then twice as long).
	Backoff time.Duration

	queue chan Event
}

// NewEvents makes an Events with room for 1,000 waiting events.
func NewEvents(urls []string, log *slog.Logger) *Events {
	return &Events{URLs: urls, Log: log, queue: make(chan Event, 1000)}
}

// OnChange is the plan service's OnChange hook: it queues the event, or
// logs it as dropped when the queue is full.
func (e *Events) OnChange(_ context.Context, p *Plan) {
	ev := Event{Event: "plan." + string(p.Status), At: p.Updated, Plan: p}
	select {
	case e.queue <- ev:
	default:
		if e.Log != nil {
			e.Log.Warn("plan event dropped: the webhook queue is full", "plan", p.ID, "event", ev.Event)
		}
	}
}

// Run delivers queued events until ctx ends.
func (e *Events) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-e.queue:
			body, err := json.Marshal(ev)
			if err != nil {
				continue
			}
			for _, u := range e.URLs {
				if err := e.post(ctx, u, body); err != nil && e.Log != nil {
					e.Log.Warn("plan event not delivered", "url", u, "plan", ev.Plan.ID, "event", ev.Event, "err", err)
				}
			}
		}
	}
}

func (e *Events) post(ctx context.Context, url string, body []byte) error {
	client := e.HTTP
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	wait := e.Backoff
	if wait <= 0 {
		wait = time.Second
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
		}
		var req *http.Request
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		var resp *http.Response
		resp, err = client.Do(req)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return nil
		}
		err = fmt.Errorf("answered HTTP %d", resp.StatusCode)
	}
	return err
}
