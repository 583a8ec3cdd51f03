package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lifeline/internal/notify/mailpit"
	"lifeline/internal/status"
	"lifeline/internal/web"
)

// jsonOf runs a command that must succeed and decodes its --json output.
func (c *cli) jsonOf(v any, args ...string) {
	c.t.Helper()
	out := c.must(append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("lifeline %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// editConfig replaces old with new in the config file.
func (c *cli) editConfig(old, new string) {
	c.t.Helper()
	b, err := os.ReadFile(c.config)
	if err != nil {
		c.t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		c.t.Fatalf("config has no %q", old)
	}
	if err := os.WriteFile(c.config, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

type forJSON struct {
	Tenant struct {
		Key    string            `json:"key"`
		States map[string]string `json:"states"`
	} `json:"tenant"`
	Contacts []struct {
		Email string `json:"email"`
		Role  string `json:"role"`
	} `json:"contacts"`
}

func (f forJSON) emails() []string {
	var out []string
	for _, c := range f.Contacts {
		out = append(out, c.Email)
	}
	return out
}

type lookupJSON struct {
	Contacts []struct{ Email string } `json:"contacts"`
	Tenants  []struct {
		Key    string            `json:"key"`
		States map[string]string `json:"states"`
	} `json:"tenants"`
}

// removeVault deletes the vault's SQLite file, as a lost disk would.
func (c *cli) removeVault() {
	c.t.Helper()
	for _, s := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(filepath.Join(filepath.Dir(c.config), "contacts.db") + s); err != nil && !os.IsNotExist(err) {
			c.t.Fatal(err)
		}
	}
}

// TestContactsSurviveTheirTenant runs the 2022 story through the CLI: a
// site is deactivated, deleted and purged for real, and its admins are
// still found by email and by site; then the vault itself is lost and
// rebuilt from its backup, and an erasure survives that.
func TestContactsSurviveTheirTenant(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 12)
	c.editConfig("retention: {deleted: 30d,", "retention: {deleted: 1ms,")

	var sync struct{ Sources []map[string]any }
	c.jsonOf(&sync, "contacts", "sync")
	if n := sync.Sources[0]["contacts_added"].(float64); n < 12 {
		t.Fatalf("first sync added %v contacts", n)
	}
	var before forJSON
	c.jsonOf(&before, "contacts", "for", "site:5")
	if len(before.Contacts) == 0 || before.Contacts[0].Role != "admin" {
		t.Fatalf("contacts for site:5: %+v", before)
	}

	c.must("tenants", "deactivate", "site:5")
	c.must("tenants", "delete", "site:5", "--reason", "customer left")
	c.jsonOf(&sync, "contacts", "sync")
	if sync.Sources[0]["links_removed"].(float64) != 0 || sync.Sources[0]["links_held"].(float64) == 0 {
		t.Fatalf("sync after the delete: %v; want the links held, none removed", sync.Sources[0])
	}
	time.Sleep(5 * time.Millisecond) // retention.deleted is 1ms here
	c.must("tenants", "purge", "site:5", "--reason", "retention passed")
	c.must("contacts", "sync")

	var after forJSON
	c.jsonOf(&after, "contacts", "for", "site:5")
	if !slices.Equal(after.emails(), before.emails()) || after.Tenant.States["tracker"] != "purged" {
		t.Fatalf("contacts for the purged site:5: %+v; want %v", after, before.emails())
	}
	admin := before.Contacts[0].Email
	var lk lookupJSON
	c.jsonOf(&lk, "contacts", "lookup", strings.ToUpper(admin))
	if len(lk.Tenants) == 0 || lk.Tenants[0].Key != "5" || lk.Tenants[0].States["wiki"] != "purged" {
		t.Fatalf("lookup of site 5's admin: %+v", lk)
	}
	c.refused([]string{"contacts", "for", "app:5/tracker/insight"}, "site:5")
	c.refused([]string{"contacts", "for", "5"}, "bare key")

	// The product database is lost: the vault still answers.
	tracker := filepath.Join(filepath.Dir(c.config), "tracker.db")
	if err := os.Rename(tracker, tracker+".lost"); err != nil {
		t.Fatal(err)
	}
	r := c.run("contacts", "for", "site:5", "--json")
	if r.code != 0 || !strings.Contains(r.out, admin) || !strings.Contains(r.err, "recorded") {
		t.Fatalf("contacts for site:5 without the product database: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	if err := os.Rename(tracker+".lost", tracker); err != nil {
		t.Fatal(err)
	}

	// A broken query must not empty the vault.
	c.editConfig("FROM site_admins", "FROM site_admins WHERE 1 = 0")
	c.refused([]string{"contacts", "sync"}, "returned no contacts", "--confirm")
	c.editConfig("FROM site_admins WHERE 1 = 0", "FROM site_admins")
	c.must("contacts", "lookup", admin) // the refused sync changed nothing

	// Export, erase one person, lose the vault, restore the older export.
	var exports struct{ Exports []struct{ Key string } }
	c.jsonOf(&exports, "contacts", "restore", "--list")
	if len(exports.Exports) == 0 {
		t.Fatal("no vault exports in the backup repository")
	}
	old := exports.Exports[len(exports.Exports)-1].Key
	var three forJSON
	c.jsonOf(&three, "contacts", "for", "site:3")
	victim := three.Contacts[0].Email // still in the product database
	c.refused([]string{"contacts", "erase", victim}, "--reason")
	c.must("contacts", "erase", victim, "--reason", "GDPR request 7")
	c.refused([]string{"contacts", "lookup", victim}, "no contact")

	c.removeVault()
	c.refused([]string{"contacts", "sync"}, "contacts restore")
	var res map[string]any
	c.jsonOf(&res, "contacts", "restore", "--from", old)
	if res["erasures_reapplied"].(float64) != 1 || res["contacts"].(float64) < 12 {
		t.Fatalf("restore: %v", res)
	}
	c.refused([]string{"contacts", "lookup", victim}, "no contact")
	var restored forJSON
	c.jsonOf(&restored, "contacts", "for", "site:5")
	if !slices.Equal(restored.emails(), before.emails()) {
		t.Errorf("after the restore, site:5 has %v, want %v", restored.emails(), before.emails())
	}
	c.jsonOf(&restored, "contacts", "for", "site:3")
	if slices.Contains(restored.emails(), victim) {
		t.Errorf("after the restore, site:3 still lists the erased %s", victim)
	}
	c.refused([]string{"contacts", "restore"}, "not empty")
	// The erased person is still in the product: sync keeps them out.
	c.jsonOf(&sync, "contacts", "sync")
	if sync.Sources[0]["skipped_erased"].(float64) != 1 {
		t.Errorf("sync after restore: %v", sync.Sources[0])
	}
}

func TestContactsImportDryRunAndReport(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 6)
	c.must("contacts", "sync")
	csv := filepath.Join(t.TempDir(), "billing.csv")
	if err := os.WriteFile(csv, []byte("email,name,role,tenant,account,account_name\nfinance@acme.example,Fin Ance,billing,1;2,acme,Acme Corp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var exports struct{ Exports []any }
	c.jsonOf(&exports, "contacts", "restore", "--list")
	n := len(exports.Exports)
	var dry map[string]any
	c.jsonOf(&dry, "contacts", "import", csv, "--dry-run")
	if dry["contacts_added"].(float64) != 1 || dry["links_added"].(float64) != 2 || dry["dry_run"] != true {
		t.Fatalf("dry run: %v", dry)
	}
	c.refused([]string{"contacts", "lookup", "finance@acme.example"}, "no contact")
	if c.jsonOf(&exports, "contacts", "restore", "--list"); len(exports.Exports) != n {
		t.Error("a dry run exported the vault")
	}
	c.must("contacts", "import", csv)
	var lk lookupJSON
	c.jsonOf(&lk, "contacts", "lookup", "@ACME.example")
	if len(lk.Contacts) != 1 || len(lk.Tenants) != 2 {
		t.Errorf("after the import: %+v", lk)
	}
	bad := filepath.Join(t.TempDir(), "bad.csv")
	if err := os.WriteFile(bad, []byte("email,role,tenant\nnot-an-address,admin,1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.refused([]string{"contacts", "import", bad}, "line 2")

	var rep struct {
		Tenants         int     `json:"tenants"`
		Reachable       int     `json:"reachable"`
		Share           float64 `json:"reachable_share"`
		NoVerifiedAdmin []any   `json:"no_verified_admin"`
	}
	c.jsonOf(&rep, "contacts", "report")
	if rep.Tenants != 6 || rep.Reachable != 6 || rep.Share != 1 || len(rep.NoVerifiedAdmin) != 6 {
		t.Errorf("report: %+v", rep)
	}
	if out := c.must("audit", "verify"); !strings.Contains(out, "intact") {
		t.Errorf("audit verify after contacts reads: %s", out)
	}
}

// TestContactsVerifyThroughMailpit sends the verification emails through
// the real SMTP path (notify's sender) to a real mailpit server.
func TestContactsVerifyThroughMailpit(t *testing.T) {
	t.Parallel()
	mp, err := mailpit.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mp.Close)
	c := demoSaaS(t, 4)
	c.refused([]string{"contacts", "verify", "--stale"}, "smtp:")
	b, _ := os.ReadFile(c.config)
	cfg := string(b) + "smtp: {host: 127.0.0.1, port: " + strconv.Itoa(mp.SMTPPort) + ", from: lifeline@saas.example, tls: none, rate: 100}\n" +
		"vault: {public_url: 'https://lifeline.saas.example'}\n"
	if err := os.WriteFile(c.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c.must("contacts", "sync")
	var res struct {
		Sent    []string `json:"sent"`
		Pending int      `json:"pending"`
	}
	c.jsonOf(&res, "contacts", "verify", "--stale")
	count, err := mp.Count()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Sent) == 0 || count != len(res.Sent) {
		t.Fatalf("sent %d, mailpit holds %d", len(res.Sent), count)
	}
	for _, s := range res.Sent {
		if !strings.Contains(s, "***@") {
			t.Errorf("output shows %q unmasked", s)
		}
	}
	var lk lookupJSON
	c.jsonOf(&lk, "contacts", "for", "site:1")
	m, ok, err := mp.Newest(lk.Contacts[0].Email)
	if err != nil || !ok {
		t.Fatalf("no mail to %s: %v", lk.Contacts[0].Email, err)
	}
	if !strings.Contains(m.Text, "https://lifeline.saas.example/contacts/verify?t=c_") {
		t.Errorf("the mail has no signed link:\n%s", m.Text)
	}
	c.jsonOf(&res, "contacts", "verify", "--stale")
	if len(res.Sent) != 0 || res.Pending == 0 {
		t.Errorf("a second run resent: %+v", res)
	}

	// The link, followed on the server `serve` builds (startContacts).
	e := &env{ctx: t.Context(), getenv: func(string) string { return "" }, stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, configPath: c.config}
	a, err := openApp(e)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	limits, err := status.New(e.ctx, status.Config{Store: a.store})
	if err != nil {
		t.Fatal(err)
	}
	cw, stop, err := startContacts(e, a, limits, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer((&web.Server{Tenants: a.tenants, Ops: a.store, Auth: a.store, Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler), Contacts: cw}).Handler())
	defer srv.Close()
	link := regexp.MustCompile(`https://lifeline\.saas\.example(/contacts/verify\?t=\S+)`).FindStringSubmatch(m.Text)
	if link == nil {
		t.Fatalf("no link in:\n%s", m.Text)
	}
	// Count the exports before the verification: the one carrying it may be
	// written at once or when serve stops.
	var exports struct{ Exports []any }
	c.jsonOf(&exports, "contacts", "restore", "--list")
	n := len(exports.Exports)
	u, _ := url.Parse(srv.URL + link[1])
	resp, err := http.PostForm(srv.URL+"/contacts/verify", url.Values{"t": {u.Query().Get("t")}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("confirming the link: %d", resp.StatusCode)
	}
	stop() // serve stops: its last export carries the verification
	var ver struct {
		Contacts []struct {
			VerifiedAt string `json:"verified_at"`
		} `json:"contacts"`
	}
	c.jsonOf(&ver, "contacts", "lookup", lk.Contacts[0].Email)
	if ver.Contacts[0].VerifiedAt == "" {
		t.Error("following the link did not set verified_at")
	}
	// At least one export after the verification.
	if c.jsonOf(&exports, "contacts", "restore", "--list"); len(exports.Exports) < n+1 {
		t.Errorf("serve did not export the verification: %d exports, had %d", len(exports.Exports), n)
	}
}
