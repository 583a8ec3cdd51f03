package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// statusCLI is a config with one product and a SQLite state store; the
// incident commands need no product database.
func statusCLI(t *testing.T) *cli {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "lifeline.yaml")
	yaml := "state: sqlite:state.db\nproducts:\n  - name: tracker\n    database: sqlite:tracker.db\n    tenant_column: site_id\n    tenants_table: sites\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return &cli{t: t, config: cfg, env: map[string]string{}}
}

func TestIncidentCommands(t *testing.T) {
	t.Parallel()
	c := statusCLI(t)
	full := []string{"--affected", "product tracker 883", "--timeline", "Most sites within 6 hours", "--timeline-confidence", "medium",
		"--fuller-picture-at", "2026-04-05T15:00:00Z", "--percent-restored", "0", "--percent-confidence", "high",
		"--data-loss", "At most 5 minutes", "--data-loss-confidence", "low", "--support", "Open a ticket",
		"--support-no-login", "Call +1 555 0100", "--known", "Which sites", "--unknown", "Attachments"}

	// Required fields are named, and nothing is written.
	c.refused([]string{"incident", "open", "--name", "Sites deleted", "--impact", "critical", "--situation", "A script deleted sites."},
		"update not published", "percent_restored", "support_no_login")
	if out := c.must("incident", "list", "--json"); !jsonHas(t, out, "incidents", 0) {
		t.Fatalf("a refused open wrote an incident: %s", out)
	}
	c.refused([]string{"incident", "open", "--name", "x", "--impact", "none", "--situation", "y", "--component", "billing=major_outage"}, "no component \"billing\"", "tracker")

	var inc map[string]any
	out := c.must(append([]string{"incident", "open", "--name", "Sites deleted", "--name-zh", "站点被删除", "--impact", "critical",
		"--component", "tracker=major_outage", "--situation", "A script deleted sites.", "--situation-zh", "一个脚本删除了站点。", "--json"}, full...)...)
	if err := json.Unmarshal([]byte(out), &inc); err != nil {
		t.Fatal(err)
	}
	id := inc["id"].(string)
	if inc["status"] != "investigating" || inc["impact"] != "critical" {
		t.Fatalf("opened: %v", inc)
	}

	// Flags may come after the id; --carry-over restates only what changed.
	c.must("incident", "update", id, "--status", "identified", "--carry-over", "--situation", "Restores running.", "--percent-restored", "40")
	c.refused([]string{"incident", "update", id, "--situation", "Restores running."}, "known", "unknown")
	c.refused([]string{"incident", "update", "nope", "--carry-over"}, "no incident \"nope\"")
	c.refused([]string{"incident", "update", id, "--carry-over", "--timeline-confidence", "certain"}, "unknown confidence")

	c.must("incident", "resolve", id, "--carry-over", "--situation", "All sites restored.", "--percent-restored", "100")
	if out := c.must("incident", "list", "--json"); !jsonHas(t, out, "incidents", 0) {
		t.Fatalf("resolved incident still listed as open: %s", out)
	}
	var all struct {
		Incidents []struct {
			Status  string `json:"status"`
			Updates []struct {
				Status string `json:"status"`
				Author string `json:"author"`
			} `json:"incident_updates"`
		} `json:"incidents"`
	}
	if err := json.Unmarshal([]byte(c.must("incident", "list", "--all", "--json")), &all); err != nil {
		t.Fatal(err)
	}
	if len(all.Incidents) != 1 || all.Incidents[0].Status != "resolved" || len(all.Incidents[0].Updates) != 3 ||
		all.Incidents[0].Updates[0].Status != "resolved" || all.Incidents[0].Updates[2].Author != "tester" {
		t.Fatalf("history = %+v", all)
	}
}

// jsonHas reports whether the JSON object in s has n items under key.
func jsonHas(t *testing.T, s, key string, n int) bool {
	t.Helper()
	var m map[string][]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return len(m[key]) == n
}

// TestPageURLIsWhereServeListens: the Statuspage JSON's page.url is the
// address serve bound (--listen, here with a port the OS picks), not the
// config's listen: default; a configured status.public_url wins over both.
func TestPageURLIsWhereServeListens(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 3)
	pageURL := func(base string) string {
		t.Helper()
		resp, err := http.Get(base + "/api/v2/summary.json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var sum struct {
			Page struct {
				URL string `json:"url"`
			} `json:"page"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&sum); err != nil {
			t.Fatal(err)
		}
		return sum.Page.URL
	}
	base := startServe(t, c)
	if got := pageURL(base); got != base {
		t.Errorf("page.url = %q, want the address serve listens on, %q", got, base)
	}
	c.editConfig("products:", "status: {public_url: 'https://status.saas.example/'}\nproducts:")
	if got := pageURL(startServe(t, c)); got != "https://status.saas.example" {
		t.Errorf("page.url = %q, want the configured public_url", got)
	}
}
