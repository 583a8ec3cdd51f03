package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"lifeline/internal/config"
	"lifeline/internal/state"
)

// TestPlanEventsCommands: `plan events` lists a plan's events (--failed:
// those given up), `plan events retry` puts one back or every failed one,
// and bad uses are refused with exit 2, naming what was wrong.
func TestPlanEventsCommands(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 3)
	f, err := os.OpenFile(c.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("plans: {events: [\"http://127.0.0.1:1/hook\"]}\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var p struct{ ID string }
	c.jsonOf(&p, "plan", "create", "--action", "deactivate", "--kind", "site", "--targets", "1,2", "--reason", "test", "--json")
	c.must("plan", "approve", p.ID, "--actor", "carol")

	// Twenty failed deliveries are what gives an event up; here the rows
	// are set so directly (internal/plan tests the delivery itself).
	if _, err := c.stateStore().DB().Exec("UPDATE plan_events SET state = 'failed', attempts = 20, last_error = 'answered HTTP 503'"); err != nil {
		t.Fatal(err)
	}
	type events struct {
		Events []struct {
			ID, Plan, Event, State, LastError string
			Attempts                          int
		}
	}
	var all events
	c.jsonOf(&all, "plan", "events", p.ID, "--failed", "--json")
	if len(all.Events) != 2 || all.Events[0].Event != "plan.approved" || all.Events[0].Attempts != 20 || all.Events[0].Plan != p.ID {
		t.Fatalf("failed events: %+v", all)
	}
	if out := c.must("plan", "events", "--failed"); !strings.Contains(out, all.Events[1].ID) || !strings.Contains(out, "answered HTTP 503") {
		t.Fatalf("plan events --failed:\n%s", out)
	}
	c.refused([]string{"plan", "events", "plan_nope"}, "plan_nope")
	c.refused([]string{"plan", "events", "retry"}, "usage: lifeline plan events retry EVENT-ID")
	c.refused([]string{"plan", "events", "retry", all.Events[0].ID, "--all-failed"}, "usage: lifeline plan events retry EVENT-ID")
	c.refused([]string{"plan", "events", "retry", "pev_nope"}, `no plan event "pev_nope"`, "lifeline plan events --failed")

	if out := c.must("plan", "events", "retry", all.Events[0].ID, "--actor", "ops"); !strings.Contains(out, "1 events put back") {
		t.Fatalf("retry one: %s", out)
	}
	c.refused([]string{"plan", "events", "retry", all.Events[0].ID}, "is pending, not failed")
	var retried struct{ Retried int }
	c.jsonOf(&retried, "plan", "events", "retry", "--all-failed", "--json")
	if retried.Retried != 1 {
		t.Fatalf("retry --all-failed put back %d; want 1", retried.Retried)
	}
	c.jsonOf(&all, "plan", "events", p.ID, "--json")
	if len(all.Events) != 2 || all.Events[0].State != "pending" || all.Events[1].State != "pending" || all.Events[0].Attempts != 0 {
		t.Fatalf("after the retries: %+v", all)
	}
}

// stateStore opens the state store the config names, closed at the test's
// end: for what a test reads or sets up below the commands.
func (c *cli) stateStore() *state.Store {
	c.t.Helper()
	cfg, err := config.Load(c.config)
	if err != nil {
		c.t.Fatal(err)
	}
	st, err := state.Open(context.Background(), cfg.State, cfg.Dir, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { st.Close() })
	return st
}
