package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// buildLifeline compiles the real binary once per test run.
func buildLifeline(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lifeline")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// A kill -9 between the products of one operation leaves one product
// deleted and the other not. Nothing may act on the tenant except finishing
// that operation, and running the same command again finishes it.
func TestKill9MidDeleteIsResumedByTheNextRun(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 10)
	bin := buildLifeline(t)
	c.must("tenants", "deactivate", "site:4")

	cmd := exec.CommandContext(context.Background(), bin, "--config", c.config, "tenants", "delete", "site:4", "--reason", "crash test")
	cmd.Env = append(os.Environ(), "LIFELINE_TEST_CRASH_BEFORE_STEP=2", "LIFELINE_ACTOR=tester")
	err := cmd.Run()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the run was meant to die by SIGKILL; got %v", err)
	}
	if tr, wk := c.stateOf("4", "tracker"), c.stateOf("4", "wiki"); tr != "deleted" || wk != "deactivated" {
		t.Fatalf("after the crash: tracker %q, wiki %q; want the first step committed and the second not", tr, wk)
	}
	c.refused([]string{"tenants", "reactivate", "site:4"}, "ops resume")

	out := c.must("tenants", "delete", "site:4", "--reason", "crash test")
	if !strings.Contains(out, "done") {
		t.Errorf("the rerun did not finish the operation:\n%s", out)
	}
	for _, p := range []string{"tracker", "wiki"} {
		if s := c.stateOf("4", p); s != "deleted" {
			t.Errorf("%s after the rerun = %q, want deleted", p, s)
		}
	}
	var ops struct {
		Operations []struct{ Action, Status string }
	}
	if err := json.Unmarshal([]byte(c.must("ops", "list", "--tenant", "4", "--json")), &ops); err != nil {
		t.Fatal(err)
	}
	deletes := 0
	for _, op := range ops.Operations {
		if op.Action == "delete" {
			deletes++
			if op.Status != "done" {
				t.Errorf("the delete operation is %s, want done", op.Status)
			}
		}
	}
	if deletes != 1 {
		t.Errorf("%d delete operations recorded; the rerun must resume the first, not start a second", deletes)
	}
	c.must("tenants", "undelete", "site:4")
	c.must("audit", "verify")
}
