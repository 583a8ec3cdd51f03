package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// kill -9 of `lifeline plan run` in the middle of a wave, in the middle of
// a tenant; then `lifeline serve` (the real binary) finds the plan
// interrupted, takes it over, finishes the interrupted operation and the
// rest of the plan, with no tenant's step run twice. The plan events the
// killed run recorded reach their webhook through serve.
func TestServeFinishesAPlanKilledMidWave(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 10)
	bin := buildLifeline(t)

	var mu sync.Mutex
	var events []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Event string `json:"event"`
			Plan  struct {
				Phase string `json:"phase"`
			} `json:"plan"`
		}
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			w.WriteHeader(400)
			return
		}
		mu.Lock()
		events = append(events, ev.Event+" "+ev.Plan.Phase)
		mu.Unlock()
	}))
	defer hook.Close()
	f, err := os.OpenFile(c.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("plans: {events: [" + hook.URL + "]}\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var p struct {
		ID       string             `json:"id"`
		Hash     string             `json:"report_hash"`
		Status   string             `json:"status"`
		Wave     int                `json:"wave"`
		Note     string             `json:"note"`
		Progress struct{ Done int } `json:"progress"`
	}
	decodeInto := func(out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	decode := func(out string) { t.Helper(); decodeInto(out, &p) }
	sites := []string{"1", "2", "3", "4", "5", "6", "7", "8"}
	decode(c.must("plan", "create", "--action", "deactivate", "--kind", "site", "--targets", strings.Join(sites, ","),
		"--reason", "crash test", "--waves", "internal,100%", "--bake", "0s", "--json"))
	c.must("plan", "approve", p.ID, "--actor", "carol", "--hash", p.Hash)

	// Sites 1-3 are internal (wave 0): six product steps. The 8th step is
	// site 4's second product, in wave 1.
	run := exec.Command(bin, "--config", c.config, "plan", "run", p.ID, "--actor", "carol")
	run.Env = append(os.Environ(), "LIFELINE_TEST_CRASH_BEFORE_STEP=8")
	out, err := run.CombinedOutput()
	if ws, ok := run.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the run was meant to die by SIGKILL; got %v\n%s", err, out)
	}
	decode(c.must("plan", "show", p.ID, "--json"))
	if p.Status != "running" || p.Wave != 1 || p.Progress.Done != 3 {
		t.Fatalf("after the kill: %s wave %d, %d done", p.Status, p.Wave, p.Progress.Done)
	}
	if tr, wk := c.stateOf("4", "tracker"), c.stateOf("4", "wiki"); tr == wk {
		t.Fatalf("the kill was meant to split site 4: tracker %s, wiki %s", tr, wk)
	}

	serve := exec.Command(bin, "--config", c.config, "serve", "--listen", "127.0.0.1:0")
	serve.Env = append(os.Environ(), "LIFELINE_ACTOR=ops")
	var serveOut syncBuffer
	serve.Stdout, serve.Stderr = &serveOut, &serveOut
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = serve.Process.Signal(syscall.SIGTERM)
		_ = serve.Wait()
	}
	defer stop()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		decode(c.must("plan", "show", p.ID, "--json"))
		mu.Lock()
		delivered := slices.Contains(events, "plan.done ")
		mu.Unlock()
		if p.Status == "done" && delivered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not finish the plan and tell its webhook: %s (%s), events %v\n%s", p.Status, p.Note, events, serveOut.String())
		}
	}
	stop()
	if p.Progress.Done != len(sites) {
		t.Fatalf("%d of %d steps done", p.Progress.Done, len(sites))
	}

	var ops struct {
		Operations []struct {
			Action, Status string
			Targets        []string
		}
	}
	decodeInto(c.must("ops", "list", "--json", "--limit", "100"), &ops)
	per := map[string]int{}
	for _, op := range ops.Operations {
		if op.Action == "deactivate" {
			per[op.Targets[0]]++
			if op.Status != "done" {
				t.Errorf("operation on %v is %s", op.Targets, op.Status)
			}
		}
	}
	for _, s := range sites {
		if per["site:"+s] != 1 {
			t.Errorf("site %s has %d deactivate operations; want exactly one", s, per["site:"+s])
		}
		for _, prod := range []string{"tracker", "wiki"} {
			if st := c.stateOf(s, prod); st != "deactivated" {
				t.Errorf("site %s is %s in %s", s, st, prod)
			}
		}
	}
	// The events the killed run recorded before it died arrived too.
	mu.Lock()
	got := slices.Clone(events)
	mu.Unlock()
	for _, want := range []string{"plan.validated ", "plan.approved ", "plan.running steps", "plan.running gate", "plan.done "} {
		if !slices.Contains(got, want) {
			t.Errorf("event %q not delivered; got %v", want, got)
		}
	}
	entries, err := c.stateStore().ListAudit(context.Background(), "", 10000)
	if err != nil {
		t.Fatal(err)
	}
	took := false
	for _, e := range entries {
		took = took || (e.Action == "plan.takeover" && e.Actor == "lifeline serve")
	}
	if !took {
		t.Error("serve's take-over of the plan is not audited")
	}
	c.must("audit", "verify")
}
