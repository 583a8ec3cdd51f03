package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"lifeline/internal/demo"
	"lifeline/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// cli runs the whole program in-process, as a user would from a shell.
type cli struct {
	t      *testing.T
	config string
	env    map[string]string
}

type result struct {
	out, err string
	code     int
}

func (c *cli) run(args ...string) result {
	c.t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		if k == "LIFELINE_ACTOR" {
			return "tester"
		}
		return c.env[k]
	}
	code := run(context.Background(), append([]string{"--config", c.config}, args...), getenv, strings.NewReader(""), &out, &errb)
	return result{out.String(), errb.String(), code}
}

// must runs a command that has to succeed.
func (c *cli) must(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("lifeline %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	return r.out
}

// refused runs a command that has to exit 2 and say each of want.
func (c *cli) refused(args []string, want ...string) {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 2 {
		c.t.Fatalf("lifeline %s: exit %d, want 2 (refused)\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	for _, w := range want {
		if !strings.Contains(r.err, w) {
			c.t.Errorf("lifeline %s: stderr %q does not say %q", strings.Join(args, " "), r.err, w)
		}
	}
}

// demoSaaS builds the demo products (SQLite) with n tenants and protects them.
func demoSaaS(t *testing.T, n int) *cli {
	t.Helper()
	dir := t.TempDir()
	if err := demo.Generate(context.Background(), dir, demo.Options{Tenants: n}); err != nil {
		t.Fatal(err)
	}
	c := &cli{t: t, config: filepath.Join(dir, "lifeline.yaml"), env: map[string]string{}}
	c.must("protect")
	return c
}

func (c *cli) showJSON(key string) map[string]any {
	c.t.Helper()
	var d map[string]any
	if err := json.Unmarshal([]byte(c.must("tenants", "show", key, "--json")), &d); err != nil {
		c.t.Fatal(err)
	}
	return d
}

func (c *cli) stateOf(key, product string) string {
	c.t.Helper()
	p, _ := c.showJSON(key)["products"].(map[string]any)[product].(map[string]any)
	s, _ := p["state"].(string)
	return s
}

func TestDemoTour(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "demo")
	c := &cli{t: t, config: "unused.yaml"}
	out := c.must("demo", "--dir", dir, "--tenants", "40", "--no-serve")
	for _, want := range []string{
		"refused by the database", "lifeline", // the raw April script
		"is a site, not an app", // the typed-target refusal
		"identical, byte for byte",
		"restored  verified",
		"40 of 40 sites are exactly as they were before the script", // the April replay, restored
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "the database accepted it") {
		t.Errorf("a raw April deletion got through:\n%s", out)
	}
	// A second demo into the same folder must refuse, not overwrite.
	if r := c.run("demo", "--dir", dir, "--no-serve"); r.code != 2 {
		t.Errorf("demo over an existing demo: exit %d, want 2", r.code)
	}
}

func TestLifecycleThroughTheCLI(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 30)

	c.refused([]string{"tenants", "delete", "site:5", "--reason", "x"}, "active", "deactivate it first")
	c.refused([]string{"tenants", "deactivate", "5"}, "bare key", "site:5")
	c.refused([]string{"tenants", "deactivate", "app:5"}, "is a site, not an app")
	c.refused([]string{"tenants", "deactivate", "site:99999"}, "unknown tenant")
	c.refused([]string{"tenants", "deactivate", "app:5/tracker/nosuch"}, "no app")
	c.refused([]string{"tenants", "deactivate", "product:5/nosuch"}, "no product")

	c.must("tenants", "deactivate", "site:5")
	if s := c.stateOf("5", "wiki"); s != "deactivated" {
		t.Fatalf("wiki state after deactivate = %q", s)
	}
	c.refused([]string{"tenants", "delete", "site:5"}, "needs a reason")
	c.must("tenants", "delete", "site:5", "--reason", "customer closed the account")
	for _, p := range []string{"tracker", "wiki"} {
		if s := c.stateOf("5", p); s != "deleted" {
			t.Fatalf("%s state after delete = %q", p, s)
		}
	}
	c.refused([]string{"tenants", "purge", "site:5", "--reason", "gdpr"}, "retention")
	c.must("tenants", "undelete", "site:5")
	c.must("tenants", "reactivate", "site:5")
	if s := c.stateOf("5", "tracker"); s != "active" {
		t.Fatalf("state after the round trip = %q", s)
	}

	// App lifecycle: only the app's tables move.
	c.must("tenants", "deactivate", "app:6/tracker/insight")
	c.must("tenants", "delete", "app:6/tracker/insight", "--reason", "insight retired")
	d := c.showJSON("6")
	tr := d["products"].(map[string]any)["tracker"].(map[string]any)
	rows := tr["rows"].(map[string]any)
	if rows["insight_objects"].(float64) != 0 || rows["issues"].(float64) == 0 {
		t.Errorf("after an app delete: live rows %v; want insight gone and issues kept", rows)
	}
	if tr["state"] != "active" {
		t.Errorf("the site's product state changed to %v on an app delete", tr["state"])
	}

	var ops struct{ Operations []map[string]any }
	if err := json.Unmarshal([]byte(c.must("ops", "list", "--json")), &ops); err != nil {
		t.Fatal(err)
	}
	if len(ops.Operations) != 6 {
		t.Errorf("ops list has %d operations, want the 6 that ran (refusals record none)", len(ops.Operations))
	}
	id := ops.Operations[0]["id"].(string)
	if out := c.must("ops", "show", id); !strings.Contains(out, id) {
		t.Errorf("ops show lacks the id:\n%s", out)
	}
	c.refused([]string{"ops", "show", "op_nosuch"}, "op_nosuch")
	if out := c.must("audit", "verify"); !strings.Contains(out, "intact") {
		t.Errorf("audit verify: %s", out)
	}
	if out := c.must("tenants", "list"); !strings.Contains(out, demo.SiteName(7)) {
		t.Errorf("tenants list lacks the names from the root rows:\n%s", out)
	}
}

func TestDriftIsRefusedUntilProtect(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 10)
	c.must("protect", "--check")
	db, err := sql.Open("sqlite", filepath.Join(filepath.Dir(c.config), "tracker.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("ALTER TABLE issues ADD COLUMN severity TEXT"); err != nil {
		t.Fatal(err)
	}
	c.refused([]string{"protect", "--check"}, "drifted")
	if r := c.run("protect", "--check"); !strings.Contains(r.out, "severity") {
		t.Errorf("drift report does not name the new column:\n%s", r.out)
	}
	c.refused([]string{"tenants", "deactivate", "site:3"}, "drifted", "lifeline protect")
	c.must("protect")
	c.must("protect", "--check")
	c.must("tenants", "deactivate", "site:3")
}

func TestBadConfigAndUnreachableDatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "lifeline.yaml")
	c := &cli{t: t, config: cfg}
	c.refused([]string{"tenants", "list"}, "does not exist", "lifeline init")
	c.must("init")
	c.refused([]string{"init"}, "already exists")

	if err := os.WriteFile(cfg, []byte("products:\n  - name: tracker\n    databse: sqlite:x.db\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.refused([]string{"protect"}, "products[0].databse", "did you mean database")

	bad := "products:\n  - {name: tracker, database: 'postgres://nobody@127.0.0.1:1/none?connect_timeout=2', tenant_column: site_id, tenants_table: sites}\n"
	if err := os.WriteFile(cfg, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	r := c.run("protect")
	if r.code == 0 || !strings.Contains(r.err, "127.0.0.1:1") {
		t.Errorf("unreachable database: exit %d, stderr %q; want a failure naming the database", r.code, r.err)
	}
	if strings.Contains(r.err, "nobody:") {
		t.Errorf("the error leaks credentials: %q", r.err)
	}
	if r := c.run("frobnicate"); r.code != 2 || !strings.Contains(r.err, "unknown command") {
		t.Errorf("unknown command: exit %d, %q", r.code, r.err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
