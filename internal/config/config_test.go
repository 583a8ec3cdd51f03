package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lifeline/internal/fault"
)

const good = `
state: sqlite:state.db
products:
  - name: tracker
    database: sqlite:tracker.db
    tenant_column: site_id
    tenants_table: sites
    apps: {insight: [insight_objects, insight_links]}
    guard: {max_rows_per_statement: 50}
`

func TestParseAppliesDefaults(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(good), "/etc/lifeline")
	if err != nil {
		t.Fatal(err)
	}
	if c.Backups != "file:backups" || c.Listen != DefaultListen {
		t.Errorf("defaults not applied: backups=%q listen=%q", c.Backups, c.Listen)
	}
	if c.Retention.Deleted.D() != 30*24*time.Hour {
		t.Errorf("retention.deleted = %v", c.Retention.Deleted.D())
	}
	g := c.Products[0].Guard
	if g.MaxRowsPerStatement != 50 || g.MaxRowsPerTransaction != DefaultMaxRowsPerTransaction || g.MaxTenantsPerStatement != DefaultMaxTenantsPerStatement {
		t.Errorf("product guard = %+v: the override must stay and the rest come from the defaults", g)
	}
	if got := c.ResolvePath("tracker.db"); got != "/etc/lifeline/tracker.db" {
		t.Errorf("ResolvePath = %q", got)
	}
}

func TestTemplateIsValid(t *testing.T) {
	t.Parallel()
	if _, err := Parse(Template, "/tmp"); err != nil {
		t.Fatalf("the init template must load: %v", err)
	}
}

// Every config error must name the key path, the bad value and a fix, and be
// an Invalid fault (exit status 2).
func TestParseErrorsNameKeyValueAndFix(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yaml string
		want       []string // substrings of message or hint
	}{
		{"unknown top key", "stat: sqlite:x.db\n" + good[1:], []string{"stat", "did you mean state"}},
		{"typo in product", strings.Replace(good, "tenant_column", "tenant_colum", 1), []string{"products[0].tenant_colum", "did you mean tenant_column"}},
		{"bad state dsn", strings.Replace(good, "sqlite:state.db", "mysql://x", 1), []string{"state", "mysql://x", "sqlite:"}},
		{"bad duration", good + "retention: {deleted: 30 days}\n", []string{"30 days", "30d"}},
		{"no products", "state: sqlite:x.db\n", []string{"products", "list at least one"}},
		{"bad product name", strings.Replace(good, "name: tracker", "name: Tracker!", 1), []string{"products[0].name", "Tracker!"}},
		{"tenants table in app", strings.Replace(good, "insight_links]", "sites]", 1), []string{"products[0].apps.insight[1]", "sites", "whole product"}},
		{"negative limit", strings.Replace(good, "max_rows_per_statement: 50", "max_rows_per_statement: -1", 1), []string{"products[0].guard.max_rows_per_statement", "-1", "positive"}},
		{"not yaml", "products: [", []string{"YAML"}},
		{"wrong type", strings.Replace(good, "tables: []", "", 1) + "listen: [1,2]\n", []string{"wrong type"}},
		{"contacts unknown product", good + "contacts:\n  - {product: wiki, query: SELECT 1}\n", []string{"contacts[0].product", "wiki"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantRefused(t, tc.yaml, tc.want...)
		})
	}
}

// wantRefused parses yaml and wants an Invalid error (exit 2) whose
// message or hint says each of want.
func wantRefused(t *testing.T, yaml string, want ...string) {
	t.Helper()
	_, err := Parse([]byte(yaml), "/tmp")
	if err == nil {
		t.Fatal("accepted a bad config")
	}
	if fault.CodeOf(err) != fault.Invalid || fault.ExitStatus(err) != 2 {
		t.Errorf("code %v, exit %d; want invalid, 2", fault.CodeOf(err), fault.ExitStatus(err))
	}
	text := err.Error() + " | " + fault.HintOf(err)
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("error %q lacks %q", text, w)
		}
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"30d": 720 * time.Hour, "36h": 36 * time.Hour, "0d": 0} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"-1d", "xd", "soon", "-5m"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

func TestLoadKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hexKey := strings.Repeat("ab", 32)
	if err := os.WriteFile(filepath.Join(dir, "raw.key"), []byte(strings.Repeat("k", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KEY": hexKey, "SHORT": "abcd"}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		enc     Encryption
		wantLen int
		wantErr string
	}{
		{Encryption{}, 0, ""},
		{Encryption{KeyFile: "raw.key"}, 32, ""},
		{Encryption{KeyEnv: "KEY"}, 32, ""},
		{Encryption{KeyEnv: "SHORT"}, 0, "4 bytes"},
		{Encryption{KeyEnv: "UNSET"}, 0, "not set"},
		{Encryption{KeyFile: "missing.key"}, 0, "cannot be read"},
	} {
		k, err := (&Config{Dir: dir, Encryption: tc.enc}).LoadKey(getenv)
		wantSecret(t, tc.enc, k, err, tc.wantLen, tc.wantErr)
	}
	if _, err := Parse([]byte(good+"encryption: {key_file: a, key_env: B}\n"), dir); err == nil {
		t.Error("both key_file and key_env accepted")
	}
}

func TestStatusAndSMTP(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(good), "/tmp")
	if err != nil {
		t.Fatal(err)
	}
	if c.Status.Name != "Status" || c.Status.PublicURL != "http://"+DefaultListen || c.SMTP.Host != "" || c.Notify.DisableAfter != 20 || c.Notify.WebhookRate != 5 {
		t.Errorf("defaults: status %+v, smtp %+v, notify %+v", c.Status, c.SMTP, c.Notify)
	}
	c, err = Parse([]byte(good+"status: {public_url: https://status.example.com/}\nsmtp: {host: mail.example.com, from: Status <status@example.com>, username: ll, password_env: LL_SMTP_PASSWORD}\n"), "/tmp")
	if err != nil {
		t.Fatal(err)
	}
	if c.SMTP.TLS != "starttls" || c.SMTP.Port != 587 || c.SMTP.Rate != 10 || c.Status.PublicURL != "https://status.example.com" {
		t.Errorf("smtp defaults: %+v, %s", c.SMTP, c.Status.PublicURL)
	}
	// The password comes from the environment and appears nowhere in the
	// parsed config.
	pw, err := c.SMTPPassword(func(k string) string { return map[string]string{"LL_SMTP_PASSWORD": "s3cret-pw"}[k] })
	if err != nil || pw != "s3cret-pw" {
		t.Errorf("password = %q, %v", pw, err)
	}
	if strings.Contains(fmt.Sprintf("%+v", *c), "s3cret-pw") {
		t.Error("the parsed config holds the password")
	}
	if _, err := c.SMTPPassword(func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "LL_SMTP_PASSWORD") || fault.ExitStatus(err) != 2 {
		t.Errorf("unset password variable: %v", err)
	}

	for name, tc := range map[string]struct{ yaml, want string }{
		"tls mode":        {"smtp: {host: h, from: a@example.com, tls: ssl}\n", "smtp.tls"},
		"from":            {"smtp: {host: h, from: nobody}\n", "smtp.from"},
		"password inline": {"smtp: {host: h, from: a@example.com, username: u, password_env: \"hunter2!\"}\n", "smtp.password_env"},
		"user alone":      {"smtp: {host: h, from: a@example.com, username: u}\n", "smtp.username"},
		"no host":         {"smtp: {from: a@example.com}\n", "smtp.host"},
		"url":             {"status: {public_url: status.example.com}\n", "status.public_url"},
		"typo":            {"smtp: {hots: h}\n", "did you mean host"},
	} {
		_, err := Parse([]byte(good+tc.yaml), "/tmp")
		if err == nil || !strings.Contains(err.Error()+fault.HintOf(err), tc.want) || fault.ExitStatus(err) != 2 {
			t.Errorf("%s: %v, want an error naming %s", name, err, tc.want)
		}
	}
}
