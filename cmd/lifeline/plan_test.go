package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

// Plans end to end through the command line: the April mistake refused,
// two people, a token's role against the caps, a run, a freeze, a
// rollback.
func TestPlansThroughTheCLI(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 30)
	c.must("backup", "run")
	c.refused([]string{"plan", "create", "--action", "delete", "--kind", "app", "--targets", "1,2,3", "--reason", "remove insight"},
		"`1` is a site, not an app: this plan would delete whole sites", "for an app removal give KEY/PRODUCT/APP keys")

	var p struct {
		ID         string `json:"id"`
		Status     string `json:"status"`
		ReportHash string `json:"report_hash"`
		Note       string `json:"note"`
		Progress   struct {
			Done       int `json:"done"`
			RolledBack int `json:"rolled_back"`
		}
		Report struct {
			Waves []struct{ Size int }
		}
	}
	decode := func(out string) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	decode(c.must("plan", "create", "--action", "deactivate", "--kind", "app", "--targets", "1/tracker/insight,2/tracker/insight,4/tracker/insight,5/tracker/insight",
		"--reason", "remove insight", "--waves", "internal,50%,100%", "--bake", "0s", "--json"))
	if p.Status != "validated" || len(p.Report.Waves) != 3 || p.Report.Waves[0].Size != 2 {
		t.Fatalf("created: %+v", p)
	}
	c.refused([]string{"plan", "approve", p.ID}, "tester requested plan", "cannot also approve it")
	secret := strings.TrimSpace(c.must("tokens", "create", "--name", "bob", "--role", "approver"))
	c.refused([]string{"plan", "approve", p.ID, "--token", secret}, "needs approval by the admin role", "bob has the approver role")
	c.refused([]string{"plan", "approve", p.ID, "--actor", "carol", "--hash", "ffff"}, "not the ffff you reviewed")
	c.must("plan", "approve", p.ID, "--actor", "carol", "--hash", p.ReportHash)

	c.must("freeze", "on", "--reason", "INC-1", "--actor", "ic")
	c.refused([]string{"plan", "run", p.ID, "--actor", "carol"}, "frozen", "INC-1")
	if out := c.must("freeze", "status"); !strings.Contains(out, "FROZEN") {
		t.Fatalf("freeze status: %s", out)
	}
	c.must("freeze", "off", "--actor", "ic")

	decode(c.must("plan", "run", p.ID, "--actor", "carol", "--json"))
	if p.Status != "done" || p.Progress.Done != 4 {
		t.Fatalf("run: %+v", p)
	}
	if out := c.must("plan", "show", p.ID); !strings.Contains(out, "gate after wave 0") || !strings.Contains(out, "Beta Robotics 1 (internal)") {
		t.Fatalf("show:\n%s", out)
	}
	decode(c.must("plan", "rollback", p.ID, "--actor", "carol", "--json"))
	if p.Status != "rolled_back" || p.Progress.RolledBack != 4 {
		t.Fatalf("rollback: %+v", p)
	}
	if out := c.must("plan", "list"); !strings.Contains(out, p.ID) || !strings.Contains(out, "rolled_back") {
		t.Fatalf("list:\n%s", out)
	}
}

// The plan step of `lifeline demo` runs through on the demo SaaS.
func TestDemoPlanStep(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 60)
	c.must("backup", "run")
	var out, errb syncBuffer
	e := &env{ctx: context.Background(), getenv: func(string) string { return "" }, stdout: &out, stderr: &errb, configPath: c.config}
	a, err := openApp(e)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	say := func(f string, args ...any) { fmt.Fprintf(&out, f+"\n", args...) }
	if err := demoPlans(e, a, []string{"15", "30", "45", "60"}, say); err != nil {
		t.Fatalf("%v\n%s\n%s", err, out.String(), errb.String())
	}
	for _, want := range []string{"`1` is a site, not an app: this plan would delete whole sites", "cannot also approve", "7 of 7 sites are back byte for byte"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo does not say %q:\n%s", want, out.String())
		}
	}
}

// lifeline.yaml's plans: section takes effect in every command: a lower
// cap raises a plan's approval to admin, a smaller handful refuses the
// next lifecycle command outside plans, and a bad value stops every
// command with the key named.
func TestPlansConfigTakesEffect(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 10)
	base, err := os.ReadFile(c.config)
	if err != nil {
		t.Fatal(err)
	}
	configure := func(plans string) {
		t.Helper()
		if err := os.WriteFile(c.config, append(append([]byte{}, base...), plans...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	role := func() string {
		t.Helper()
		var p struct {
			RequiredRole string `json:"required_role"`
		}
		out := c.must("plan", "create", "--action", "deactivate", "--kind", "site", "--targets", "4,5,6", "--reason", "caps", "--json")
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return p.RequiredRole
	}
	configure("plans: {caps: {share: 100%}}\n")
	if r := role(); r != "approver" {
		t.Fatalf("3 of 10 tenants under a 100%% share cap and the default 50-tenant cap need %s; want approver", r)
	}
	configure("plans: {caps: {share: 100%, tenants: 2}, handful: 1}\n")
	if r := role(); r != "admin" {
		t.Fatalf("3 tenants over a 2-tenant cap need %s; want admin", r)
	}
	c.must("tenants", "deactivate", "site:7", "--reason", "one")
	c.refused([]string{"tenants", "deactivate", "site:8", "--reason", "two"}, "more than the 1 allowed", "lifeline plan create")

	configure("plans: {waves: [internal, 50%]}\n")
	c.refused([]string{"plan", "list"}, "config key plans.waves", "internal,50%", "last wave must be 100%")
}
