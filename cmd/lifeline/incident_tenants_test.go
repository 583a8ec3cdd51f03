package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAffectedTenantsAreLookedUp runs against the real contacts vault and
// products: a key neither knows is refused, named, unless
// --allow-unknown-tenants accepts it; its notice is then uncontactable,
// and once `contacts import` gives the site a contact, serve sends it the
// notice without another update.
func TestAffectedTenantsAreLookedUp(t *testing.T) {
	t.Parallel()
	c, mp := mailedSaaS(t, 3)
	viewer := strings.TrimSpace(c.must("tokens", "create", "--role", "viewer", "--name", "vera"))
	c.refused(append([]string{"incident", "open", "--name", "Sites deleted", "--tenants", "2,77,78"}, majorFlags...),
		`unknown tenants (neither the products nor the contacts vault know them): "77", "78"`, "--allow-unknown-tenants")
	var none struct{ Incidents []any }
	if c.jsonOf(&none, "incident", "list", "--all", "--json"); len(none.Incidents) != 0 {
		t.Fatalf("a refused open left incidents: %v", none)
	}
	base := startServe(t, c)
	var inc struct {
		ID string `json:"id"`
	}
	c.jsonOf(&inc, append([]string{"incident", "open", "--name", "Sites deleted", "--tenants", "2,77", "--allow-unknown-tenants", "--json"}, majorFlags...)...)
	var report struct {
		Notices []struct{ Tenant, Status string }
	}
	notice77 := func() string {
		req, _ := http.NewRequest("GET", base+"/api/v1/incidents/"+inc.ID+"/notices", nil)
		req.Header.Set("Authorization", "Bearer "+viewer)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&report); err != nil {
			t.Fatal(err)
		}
		for _, n := range report.Notices {
			if n.Tenant == "77" {
				return n.Status
			}
		}
		return ""
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: notices %+v", what, report)
			}
		}
	}
	waitFor("site 77's notice uncontactable", func() bool { return notice77() == "uncontactable" })
	csv := filepath.Join(t.TempDir(), "late.csv")
	if err := os.WriteFile(csv, []byte("email,role,tenant\nadmin@site-77.example.test,admin,77\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.must("contacts", "import", csv)
	waitFor("site 77's notice queued", func() bool { return notice77() == "queued" })
	waitFor("the mail to site 77's new admin", func() bool {
		to, err := mp.To()
		if err != nil {
			t.Fatal(err)
		}
		return to["admin@site-77.example.test"] == 1
	})
}
