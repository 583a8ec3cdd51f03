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
