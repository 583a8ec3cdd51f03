package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startServe runs `lifeline serve` in-process on a free port and returns its
// base URL; it stops when the test ends.
func startServe(t *testing.T, c *cli) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"--config", c.config, "serve", "--listen", "127.0.0.1:0"}, func(string) string { return "" }, strings.NewReader(""), out, io.Discard)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d", code)
		}
	})
	re := regexp.MustCompile(`serving on (http://\S+)/`)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
	}
	t.Fatalf("serve did not print its URL: %q", out.String())
	return ""
}

func TestServeAPIWithRoles(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 12)
	viewer := strings.TrimSpace(c.must("tokens", "create", "--role", "viewer", "--name", "vera"))
	operator := strings.TrimSpace(c.must("tokens", "create", "--role", "operator", "--name", "otto"))
	c.refused([]string{"tokens", "create", "--role", "god"}, "viewer")
	base := startServe(t, c)

	call := func(method, path, token, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var v map[string]any
		_ = json.Unmarshal(raw, &v)
		if v == nil {
			v = map[string]any{"raw": string(raw)}
		}
		return resp.StatusCode, v
	}

	if code, _ := call("GET", "/healthz", "", ""); code != 200 {
		t.Errorf("healthz = %d", code)
	}
	if code, v := call("GET", "/metrics", "", ""); code != 200 || !strings.Contains(v["raw"].(string), `lifeline_tenants{product="tracker",state="active"} 12`) {
		t.Errorf("metrics = %d, lacks the tenant gauge:\n%.400s", code, v["raw"])
	}
	if code, v := call("GET", "/api/v1/tenants", "", ""); code != 401 || v["hint"] == nil {
		t.Errorf("no token: %d %v; want 401 with a hint", code, v)
	}
	if code, _ := call("GET", "/api/v1/tenants", "ll_bogus_token", ""); code != 401 {
		t.Errorf("bad token: %d; want 401", code)
	}
	if code, v := call("GET", "/api/v1/tenants", viewer, ""); code != 200 || len(v["tenants"].([]any)) != 12 {
		t.Errorf("viewer list: %d %v", code, v)
	}
	if code, _ := call("POST", "/api/v1/operations", viewer, `{"action":"deactivate","target":"site:3"}`); code != 403 {
		t.Errorf("viewer may not act: got %d", code)
	}
	code, op := call("POST", "/api/v1/operations", operator, `{"action":"deactivate","target":"site:3"}`)
	if code != 201 || op["status"] != "done" || op["actor"] != "otto" {
		t.Fatalf("operator deactivate: %d %v", code, op)
	}
	if code, v := call("GET", "/api/v1/operations/"+op["id"].(string), viewer, ""); code != 200 || v["action"] != "deactivate" {
		t.Errorf("get operation: %d %v", code, v)
	}
	if code, v := call("POST", "/api/v1/operations", operator, `{"action":"deactivate","target":"app:3"}`); code != 422 || !strings.Contains(v["error"].(string), "not an app") {
		t.Errorf("wrong kind over the API: %d %v", code, v)
	}
	if code, _ := call("POST", "/api/v1/operations", operator, `{"action":"purge","target":"site:3","reason":"x"}`); code != 403 {
		t.Errorf("operator purge: %d, want 403", code)
	}
	if code, _ := call("POST", "/api/v1/operations", operator, `{"action":"deactivate","target":"site:3","extra":1}`); code != 400 {
		t.Errorf("unknown field: %d, want 400", code)
	}
	if code, _ := call("GET", "/api/v1/tenants/424242", viewer, ""); code != 404 {
		t.Errorf("unknown tenant: %d, want 404", code)
	}
}
