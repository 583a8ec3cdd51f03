package main

import (
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"lifeline/internal/notify"
	"lifeline/internal/notify/mailpit"
)

// TestBouncedContactIsMarkedAndSkipped: mailpit refuses site 2's addresses
// for good (550 at RCPT TO). serve's delivery marks each of site 2's
// contacts bounced in the contacts vault, as a versioned change; the next
// update's notice skips them, and the incident's delivery report says so,
// while site 3's contacts get both notices.
func TestBouncedContactIsMarkedAndSkipped(t *testing.T) {
	t.Parallel()
	c, mp := mailedSaaS(t, 6, "--smtp-allowed-recipients", `@site-[13-9]\.example\.test$`)
	viewer := strings.TrimSpace(c.must("tokens", "create", "--role", "viewer", "--name", "vera"))
	var two, three forJSON
	c.jsonOf(&two, "contacts", "for", "site:2")
	c.jsonOf(&three, "contacts", "for", "site:3")
	var told2, told3 []string // the contacts notices go to
	for _, x := range []struct {
		f   forJSON
		out *[]string
	}{{two, &told2}, {three, &told3}} {
		for _, ct := range x.f.Contacts {
			if slices.Contains(notify.NoticeRoles, ct.Role) {
				*x.out = append(*x.out, ct.Email)
			}
		}
	}
	if len(told2) == 0 || len(told3) == 0 {
		t.Fatalf("the demo gives sites 2 and 3 no contacts to tell: %+v %+v", two, three)
	}
	base := startServe(t, c)

	var inc struct {
		ID string `json:"id"`
	}
	c.jsonOf(&inc, append([]string{"incident", "open", "--name", "Sites deleted", "--tenants", "2,3"}, majorFlags...)...)
	type lookup struct {
		Contacts []struct {
			BouncedAt    time.Time `json:"bounced_at"`
			BounceReason string    `json:"bounce_reason"`
		} `json:"contacts"`
		History []struct {
			Action, Source string
			Version        int64
		} `json:"history"`
	}
	for _, addr := range told2 {
		var l lookup
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if c.jsonOf(&l, "contacts", "lookup", addr); len(l.Contacts) == 1 && !l.Contacts[0].BouncedAt.IsZero() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s was refused but is not marked bounced: %+v", addr, l)
			}
		}
		last := l.History[len(l.History)-1]
		if !strings.HasPrefix(l.Contacts[0].BounceReason, "550") || strings.Contains(l.Contacts[0].BounceReason, "@") ||
			last.Action != "bounce" || last.Source != "notify" || last.Version < 2 {
			t.Fatalf("%s: reason %q, last change %+v; want the 550 as a new version by notify", addr, l.Contacts[0].BounceReason, last)
		}
	}

	c.must("incident", "update", inc.ID, "--carry-over", "--situation", "Restoring.")
	type notice struct {
		UpdateID string   `json:"update_id"`
		Tenant   string   `json:"tenant"`
		Status   string   `json:"status"`
		Contacts int      `json:"contacts"`
		Skipped  []string `json:"skipped"`
	}
	var report struct{ Notices []notice }
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest("GET", base+"/api/v1/incidents/"+inc.ID+"/notices", nil)
		req.Header.Set("Authorization", "Bearer "+viewer)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&report)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(report.Notices) == 4 && !slices.ContainsFunc(report.Notices, func(n notice) bool { return n.Status == "pending" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery report: %+v", report)
		}
	}
	// First the opening's two notices, then the update's.
	first2, later2, later3 := report.Notices[0], report.Notices[2], report.Notices[3]
	if first2.Tenant != "2" || first2.Status != "queued" || first2.Contacts != len(told2) || len(first2.Skipped) != 0 {
		t.Errorf("the opening's notice to site 2: %+v; want queued to all %d", first2, len(told2))
	}
	if later2.Tenant != "2" || later2.Status != "uncontactable" || later2.Contacts != 0 || len(later2.Skipped) != len(told2) ||
		!strings.Contains(later2.Skipped[0], "the address bounced") || !strings.Contains(later2.Skipped[0], "550") {
		t.Errorf("the update's notice to site 2: %+v; want every contact skipped as bounced", later2)
	}
	if later3.Tenant != "3" || later3.Status != "queued" || later3.Contacts != len(told3) {
		t.Errorf("the update's notice to site 3: %+v", later3)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		to, err := mp.To()
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, a := range told3 {
			got += min(to[a], 2)
		}
		if got == 2*len(told3) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("site 3's contacts got %v; want both notices each", to)
		}
	}
}

// mailedSaaS is the demo SaaS with n tenants, its contacts synced into the
// vault, and its mail going to a fresh mailpit started with flags.
func mailedSaaS(t *testing.T, n int, flags ...string) (*cli, *mailpit.Server) {
	t.Helper()
	mp, err := mailpit.Start(t.TempDir(), flags...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mp.Close)
	c := demoSaaS(t, n)
	b, _ := os.ReadFile(c.config)
	cfg := string(b) + "smtp: {host: 127.0.0.1, port: " + strconv.Itoa(mp.SMTPPort) + ", from: status@saas.example, tls: none, rate: 100}\n"
	if err := os.WriteFile(c.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c.must("contacts", "sync")
	return c, mp
}
