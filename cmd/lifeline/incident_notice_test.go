package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lifeline/internal/notify/mailpit"
	"lifeline/internal/status"
	"lifeline/internal/web"
)

// majorFlags fill every part a major incident requires.
var majorFlags = []string{"--impact", "major", "--situation", "A script deleted sites.", "--affected", "product tracker 2",
	"--timeline", "Within the day", "--timeline-confidence", "low", "--fuller-picture-at", "2026-04-05T15:00:00Z",
	"--data-loss", "None expected", "--data-loss-confidence", "medium", "--support", "Reply to this mail",
	"--support-no-login", "Call +1 555 0100", "--known", "Which sites", "--unknown", "Why"}

// TestTargetedNoticeReachesTheContactsOfAPurgedSite runs the 2022 story to
// its end: site 5 is deleted and purged for real, site 6 deleted; an
// incident names them; serve's notice delivery finds their admins in the
// contacts vault and mails each a private link, which opens the site's own
// page on serve's status page.
func TestTargetedNoticeReachesTheContactsOfAPurgedSite(t *testing.T) {
	t.Parallel()
	mp, err := mailpit.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mp.Close)
	c := demoSaaS(t, 8)
	c.editConfig("retention: {deleted: 30d,", "retention: {deleted: 1ms,")
	b, _ := os.ReadFile(c.config)
	cfg := string(b) + "smtp: {host: 127.0.0.1, port: " + strconv.Itoa(mp.SMTPPort) + ", from: status@saas.example, tls: none, rate: 100}\n" +
		"status: {name: SaaS status, public_url: 'https://status.saas.example', tenant_link_ttl: 3d}\n"
	if err := os.WriteFile(c.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c.must("contacts", "sync")
	var five forJSON
	c.jsonOf(&five, "contacts", "for", "site:5")
	if len(five.Contacts) != 2 {
		t.Fatalf("site 5's contacts: %+v", five)
	}
	c.must("tenants", "deactivate", "site:5")
	c.must("tenants", "delete", "site:5", "--reason", "script")
	time.Sleep(5 * time.Millisecond) // retention.deleted is 1ms here
	c.must("tenants", "purge", "site:5", "--reason", "retention passed")
	c.must("tenants", "deactivate", "site:6")
	c.must("tenants", "delete", "site:6", "--reason", "script")
	c.must("contacts", "sync")

	// Bad tenants are refused before anything is written.
	c.refused(append([]string{"incident", "open", "--name", "Sites deleted", "--tenants", "product:5/tracker"}, majorFlags...), "not a tenant key")
	list := filepath.Join(t.TempDir(), "tenants.txt")
	if err := os.WriteFile(list, []byte("# deleted by the script\n6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var inc struct {
		ID      string `json:"id"`
		Tenants int    `json:"tenants"`
	}
	c.jsonOf(&inc, append([]string{"incident", "open", "--name", "Sites deleted", "--tenants", "5"}, majorFlags...)...)
	if inc.Tenants != 1 {
		t.Fatalf("opened with %d tenants, want 1", inc.Tenants)
	}
	c.jsonOf(&inc, "incident", "update", inc.ID, "--carry-over", "--situation", "Restoring.", "--tenants", "@"+list)
	if inc.Tenants != 2 {
		t.Fatalf("updated with %d tenants, want 2", inc.Tenants)
	}

	// serve's delivery, as serve wires it.
	e := &env{ctx: t.Context(), getenv: func(string) string { return "" }, stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, configPath: c.config}
	a, err := openApp(e)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	log := slog.New(slog.DiscardHandler)
	page, err := statusPage(e, a, log)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := startNotices(e, a, page, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	srv := httptest.NewServer((&web.Server{Tenants: a.tenants, Ops: a.store, Auth: a.store, Registry: prometheus.NewRegistry(), Log: log, Status: page}).Handler())
	defer srv.Close()

	// Site 5's two contacts: one notice for the opening (site 5 only)
	// and one for the update; site 6's contacts one, for the update.
	admin := five.Contacts[0].Email
	deadline := time.Now().Add(60 * time.Second)
	for {
		to, err := mp.To()
		if err != nil {
			t.Fatal(err)
		}
		if to[admin] == 2 && to[five.Contacts[1].Email] == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("site 5's contacts did not get both notices: %v", to)
		}
		time.Sleep(100 * time.Millisecond)
	}
	m, ok, err := mp.Newest(admin)
	if err != nil || !ok {
		t.Fatalf("no mail to %s: %v", admin, err)
	}
	if !strings.Contains(m.Subject, "your site 5") || !strings.Contains(m.Text, "admin contact of site 5") || !strings.Contains(m.Text, "Restoring.") {
		t.Errorf("the notice:\nSubject: %s\n%s", m.Subject, m.Text)
	}
	link := regexp.MustCompile(`https://status\.saas\.example(/tenant-status\?t=\S+)`).FindStringSubmatch(m.Text)
	if link == nil {
		t.Fatalf("no private link in:\n%s", m.Text)
	}
	resp, err := http.Get(srv.URL + link[1])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	html := string(body)
	if resp.StatusCode != 200 || !strings.Contains(html, "Site 5") || !strings.Contains(html, "purged") || !strings.Contains(html, "Call &#43;1 555 0100") ||
		!strings.Contains(html, "Restoring.") {
		t.Fatalf("the private page: %d\n%s", resp.StatusCode, html)
	}
	u, _ := url.Parse(link[1])
	forged := strings.Replace(u.Query().Get("t"), ".", ".x", 1)
	if resp, err := http.Get(srv.URL + status.TenantPath + "?t=" + url.QueryEscape(forged)); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a forged link: %v %v", resp, err)
	}

	// Each (update, tenant) notice went to both of the tenant's contacts.
	ns, err := page.Service.TenantNotices(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 3 {
		t.Errorf("%d targeted notices, want 3 (site 5 twice, site 6 once)", len(ns))
	}
	for _, n := range ns {
		if n.Status != status.NoticeQueued || n.Contacts != 2 {
			t.Errorf("targeted notice %+v: want queued to 2 contacts", n)
		}
	}
}

func TestCadenceComesFromTheConfig(t *testing.T) {
	t.Parallel()
	c := statusCLI(t)
	c.editConfig("state: sqlite:state.db\n", "state: sqlite:state.db\nstatus: {cadence: 1000h}\n")
	id := strings.TrimSpace(c.must(append([]string{"incident", "open", "--name", "Sites deleted"}, majorFlags...)...))
	overdue := func() bool {
		var list struct {
			Incidents []struct {
				ID      string `json:"id"`
				Overdue bool   `json:"overdue"`
			} `json:"incidents"`
		}
		c.jsonOf(&list, "incident", "list")
		if len(list.Incidents) != 1 || list.Incidents[0].ID != id {
			t.Fatalf("incidents: %+v", list)
		}
		return list.Incidents[0].Overdue
	}
	if overdue() {
		t.Fatal("overdue with a cadence of 1000h")
	}
	// The last update is older than a microsecond by now.
	c.editConfig("cadence: 1000h", "cadence: 1us")
	if !overdue() {
		t.Fatal("not overdue with a cadence of 1us")
	}
	c.editConfig("cadence: 1us", "cadence: soon")
	c.refused([]string{"incident", "list"}, "not a duration")
}
