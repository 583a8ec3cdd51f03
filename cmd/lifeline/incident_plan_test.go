package main

import (
	"slices"
	"strings"
	"testing"
)

// TestPlanLinkedIncidentFollowsThePlan links an incident to a real plan
// that deactivated three sites: the incident gets the plan's sites as its
// tenants, its affected groups per product and 0% restored; after the
// plan's rollback, the next update says 100%, from the plan's records.
func TestPlanLinkedIncidentFollowsThePlan(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 12)
	c.must("backup", "run")
	var p struct {
		ID         string `json:"id"`
		Status     string `json:"status"`
		ReportHash string `json:"report_hash"`
	}
	c.jsonOf(&p, "plan", "create", "--action", "deactivate", "--kind", "site", "--targets", "7,8,9", "--reason", "INC-9 cleanup",
		"--waves", "100%", "--bake", "0s")
	c.must("plan", "approve", p.ID, "--actor", "carol", "--hash", p.ReportHash)
	if c.jsonOf(&p, "plan", "run", p.ID, "--actor", "carol"); p.Status != "done" {
		t.Fatalf("plan run: %+v", p)
	}

	type incident struct {
		ID      string `json:"id"`
		Tenants int    `json:"tenants"`
		Updates []struct {
			Body struct {
				Groups []struct {
					Kind, Name string
					Count      int
				} `json:"affected_groups"`
				Percent *float64 `json:"percent_restored"`
				Source  string   `json:"percent_source"`
			} `json:"body"`
		} `json:"incident_updates"`
	}
	flags := slices.Clone(majorFlags)
	i := slices.Index(flags, "--affected")
	flags = slices.Delete(flags, i, i+2) // the plan gives the groups
	c.refused(append([]string{"incident", "open", "--name", "Sites deactivated", "--link", "plan:plan_nope"}, flags...), "plan_nope")
	var inc incident
	c.jsonOf(&inc, append([]string{"incident", "open", "--name", "Sites deactivated", "--link", "plan:" + p.ID}, flags...)...)
	b := inc.Updates[0].Body
	if inc.Tenants != 3 || b.Percent == nil || *b.Percent != 0 || b.Source != "verified_restores" {
		t.Fatalf("opened: tenants %d, percent %v from %q", inc.Tenants, b.Percent, b.Source)
	}
	var groups []string
	for _, g := range b.Groups {
		groups = append(groups, g.Kind+" "+g.Name+" "+strings.Repeat("I", g.Count))
	}
	if !slices.Equal(groups, []string{"product tracker III", "product wiki III"}) {
		t.Fatalf("affected groups: %v", groups)
	}

	c.must("plan", "rollback", p.ID, "--actor", "carol")
	c.jsonOf(&inc, "incident", "update", inc.ID, "--carry-over", "--situation", "Rolled back.")
	if b := inc.Updates[0].Body; b.Percent == nil || *b.Percent != 100 || inc.Tenants != 3 {
		t.Fatalf("after the rollback: tenants %d, percent %v", inc.Tenants, b.Percent)
	}
}

// TestRunningRestorePlanFillsProgress: an incident linked to a restore plan
// that is still running (its manual gate waits after the first wave) shows
// the share its first wave restored and verified; once the plan is
// promoted and done, the next update says 100%.
func TestRunningRestorePlanFillsProgress(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 12)
	c.must("backup", "run")
	before := moment()
	for _, k := range []string{"site:7", "site:8"} {
		c.must("tenants", "deactivate", k)
		c.must("tenants", "delete", k, "--reason", "script")
	}
	c.must("backup", "run")
	var p struct {
		ID         string `json:"id"`
		Status     string `json:"status"`
		Phase      string `json:"phase"`
		ReportHash string `json:"report_hash"`
	}
	c.jsonOf(&p, "plan", "create", "--action", "restore", "--kind", "site", "--targets", "7,8", "--to", before, "--reason", "INC-9 restore",
		"--waves", "1,100%", "--bake", "0s", "--manual")
	c.must("plan", "approve", p.ID, "--actor", "carol", "--hash", p.ReportHash)
	if c.jsonOf(&p, "plan", "run", p.ID, "--actor", "carol"); p.Status != "running" || p.Phase != "promote" {
		t.Fatalf("plan after its first wave: %+v", p)
	}

	var inc struct {
		ID      string `json:"id"`
		Tenants int    `json:"tenants"`
		Updates []struct {
			Body struct {
				Percent *float64 `json:"percent_restored"`
			} `json:"body"`
		} `json:"incident_updates"`
	}
	c.jsonOf(&inc, append([]string{"incident", "open", "--name", "Sites deleted", "--link", "plan:" + p.ID}, majorFlags...)...)
	if pc := inc.Updates[0].Body.Percent; inc.Tenants != 2 || pc == nil || *pc != 50 {
		t.Fatalf("while the plan runs: %d tenants, %v%% restored; want 2 and 50", inc.Tenants, pc)
	}
	// Promoting runs the rest.
	if c.jsonOf(&p, "plan", "promote", p.ID, "--actor", "carol"); p.Status != "done" {
		t.Fatalf("plan after promotion: %+v", p)
	}
	c.jsonOf(&inc, "incident", "update", inc.ID, "--carry-over", "--situation", "Both sites restored.")
	if pc := inc.Updates[0].Body.Percent; pc == nil || *pc != 100 {
		t.Fatalf("after the plan: %v%% restored; want 100", pc)
	}
}
