package web

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeline/internal/status"
)

// TestStatuspageClientReadsEveryEndpoint runs a published third-party
// Statuspage client (the npm package statuspage.io, pinned in
// compat/statuspage) against this server on loopback. The script checks each
// response against the types the client itself declares. It never skips: a
// machine without node or the package fails with the way to get them.
func TestStatuspageClientReadsEveryEndpoint(t *testing.T) {
	t.Parallel()
	dir, err := filepath.Abs("../../compat/statuspage")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: run .ci/run, which installs Node.js and runs `npm ci --prefix compat/statuspage`")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "statuspage.io", "package.json")); err != nil {
		t.Fatal("the statuspage.io client is not installed: run `npm ci --prefix compat/statuspage` (.ci/run does)")
	}

	b := setupStatus(t)
	inc := b.openCritical(t)
	// A resolved incident, a maintenance in progress and one to come, so
	// every list the client reads has something in it.
	old, err := b.svc.OpenIncident(b.ctx, status.NewIncident{Name: status.Text{En: "Slow search"}, Draft: status.Draft{Impact: status.ImpactMinor,
		Body: status.Body{Situation: status.Text{En: "Search was slow."}, Support: status.Text{En: "Ticket."}, Known: status.Text{En: "Cause."}, Unknown: status.Text{En: "Nothing."}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Resolve(b.ctx, old.ID, status.Draft{CarryOver: true}); err != nil {
		t.Fatal(err)
	}
	now := b.clock.Now()
	for _, w := range [][2]time.Time{{now.Add(-time.Minute), now.Add(time.Hour)}, {now.Add(24 * time.Hour), now.Add(25 * time.Hour)}} {
		if _, err := b.svc.ScheduleMaintenance(b.ctx, status.NewMaintenance{Name: status.Text{En: "Upgrade"}, ScheduledFor: w[0], ScheduledUntil: w[1],
			Components: []string{"wiki"}, Draft: status.Draft{Body: status.Body{Situation: status.Text{En: "Read-only."}}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.page.Refresh(b.ctx); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(t.Context(), node, "check.mjs", b.srv.URL)
	cmd.Dir = dir
	out, err := cmd.Output()
	var res struct {
		Problems []string       `json:"problems"`
		Counts   map[string]int `json:"counts"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("check.mjs: %v %v\n%s\n%s", err, jerr, out, stderr)
	}
	if len(res.Problems) > 0 || err != nil {
		t.Fatalf("the client found problems (%v):\n%s", err, strings.Join(res.Problems, "\n"))
	}
	for call, want := range map[string]int{
		"getSummary.incidents": 1, "getSummary.components": 3, "getSummary.scheduled_maintenances": 2,
		"incidents.getAll.incidents": 2, "incidents.getUnresolved.incidents": 1, "getComponents.components": 3,
		// statuspage.io 3.3.8 reads upcoming.json for getAll, getActive and
		// getUpcoming alike (a bug in the client), so each sees the one
		// upcoming window; check.mjs reads the other two directly.
		"scheduledMaintenances.getAll.scheduled_maintenances": 1, "scheduledMaintenances.getUpcoming.scheduled_maintenances": 1,
		"scheduledMaintenances.getActive.scheduled_maintenances": 1,
		"get scheduled-maintenances.json.scheduled_maintenances": 2, "get scheduled-maintenances/active.json.scheduled_maintenances": 1,
	} {
		if got := res.Counts[call]; got != want {
			t.Errorf("%s: %d items, want %d", call, got, want)
		}
	}
	t.Logf("statuspage.io read incident %s and every list without a problem: %v", inc.ID, res.Counts)
}
