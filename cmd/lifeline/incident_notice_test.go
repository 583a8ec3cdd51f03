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
// its end: site 5 is deleted and purged for real, site 6 deleted and then
// restored; an incident names site 5 (and 7) and links site 6's restore;
// serve's notice delivery finds their contacts in the contacts vault and
// mails each a private link, which opens the site's own page on serve's
// status page, with the restore's verified progress for site 6.
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
	var five, six forJSON
	c.jsonOf(&five, "contacts", "for", "site:5")
	c.jsonOf(&six, "contacts", "for", "site:6")
	if len(five.Contacts) != 2 || len(six.Contacts) != 2 {
		t.Fatalf("contacts: site 5 %+v, site 6 %+v", five, six)
	}
	c.must("backup", "run")
	before := moment()
	c.must("tenants", "deactivate", "site:5")
	c.must("tenants", "delete", "site:5", "--reason", "script")
	time.Sleep(5 * time.Millisecond) // retention.deleted is 1ms here
	c.must("tenants", "purge", "site:5", "--reason", "retention passed")
	c.must("tenants", "deactivate", "site:6")
	c.must("tenants", "delete", "site:6", "--reason", "script")
	c.must("backup", "run")
	c.must("contacts", "sync")
	// Site 6 is restored; the incident links that restore.
	restored := c.restoreJSON("--tenants", "6", "--to", before)
	if restored.Status != "done" || restored.Operation == "" {
		t.Fatalf("restore of site 6: %+v", restored)
	}

	// Bad tenants are refused before anything is written.
	c.refused(append([]string{"incident", "open", "--name", "Sites deleted", "--tenants", "product:5/tracker"}, majorFlags...), "not tenant keys", "product:5/tracker")
	list := filepath.Join(t.TempDir(), "tenants.txt")
	if err := os.WriteFile(list, []byte("# also affected\n7\n"), 0o644); err != nil {
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
	c.jsonOf(&inc, "incident", "update", inc.ID, "--carry-over", "--situation", "Restoring.", "--tenants", "@"+list, "--link", "restore:"+restored.Operation)
	if inc.Tenants != 3 {
		t.Fatalf("updated with %d tenants, want 3 (5 and 7 listed, 6 from the restore)", inc.Tenants)
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
	// and one for the update; sites 6 and 7's contacts one, for the update.
	admin := five.Contacts[0].Email
	want := map[string]int{admin: 2, five.Contacts[1].Email: 2, six.Contacts[0].Email: 1, six.Contacts[1].Email: 1}
	deadline := time.Now().Add(60 * time.Second)
	for {
		to, err := mp.To()
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for addr, n := range want {
			if to[addr] == n {
				got++
			}
		}
		if got == len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mail received %v; want at least %v", to, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The update's notice: the two were delivered in parallel, in any order.
	m := mailWith(t, mp, admin, "Restoring.")
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
	// Site 6's page shows its restore, verified, from the restore records.
	m6 := mailWith(t, mp, six.Contacts[0].Email, "Restoring.")
	link6 := regexp.MustCompile(`https://status\.saas\.example(/tenant-status\?t=\S+)`).FindStringSubmatch(m6.Text)
	if link6 == nil {
		t.Fatalf("no private link in:\n%s", m6.Text)
	}
	if resp, err = http.Get(srv.URL + link6[1]); err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if page6 := string(body); resp.StatusCode != 200 || !strings.Contains(page6, "Site 6") || !strings.Contains(page6, "2 of 2 products restored and verified") ||
		!strings.Contains(page6, "restored, awaiting validation") {
		t.Fatalf("site 6's page: %d\n%s", resp.StatusCode, page6)
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
	if len(ns) != 4 {
		t.Errorf("%d targeted notices, want 4 (site 5 twice, sites 6 and 7 once)", len(ns))
	}
	for _, n := range ns {
		if n.Status != status.NoticeQueued || n.Contacts != 2 {
			t.Errorf("targeted notice %+v: want queued to 2 contacts", n)
		}
	}
}

// mailWith returns the message to addr whose text contains want.
func mailWith(t *testing.T, mp *mailpit.Server, addr, want string) mailpit.Message {
	t.Helper()
	list, err := mp.Messages()
	if err != nil {
		t.Fatal(err)
	}
	for _, sum := range list {
		for _, to := range sum.To {
			if to.Address != addr {
				continue
			}
			m, err := mp.Message(sum.ID)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(m.Text, want) {
				return m
			}
		}
	}
	t.Fatalf("no mail to %s says %q", addr, want)
	return mailpit.Message{}
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
