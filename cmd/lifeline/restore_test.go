package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var demoTables = map[string][]string{
	"tracker": {"sites", "site_admins", "projects", "issues", "comments", "attachments", "insight_objects", "insight_links"},
	"wiki":    {"sites", "spaces", "pages", "page_versions"},
}

// rowsOf reads the sites' rows of every demo table, exactly (see liveRows),
// keyed by product/table/site.
func (c *cli) rowsOf(sites ...int) map[string][]string {
	c.t.Helper()
	out := map[string][]string{}
	for product, tables := range demoTables {
		db := c.product(product)
		for _, table := range tables {
			for _, s := range sites {
				out[fmt.Sprintf("%s/%s/%d", product, table, s)] = liveRows(c.t, db, table, s)
			}
		}
	}
	return out
}

func (c *cli) product(name string) *sql.DB {
	c.t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(filepath.Dir(c.config), name+".db")+"?_pragma=busy_timeout(20000)&_pragma=foreign_keys(1)")
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { db.Close() })
	return db
}

func sameRows(t *testing.T, what string, want, got map[string][]string) {
	t.Helper()
	for k, rows := range want {
		if !slices.Equal(rows, got[k]) {
			t.Errorf("%s: %s differs\nwant %d rows %.300q\ngot  %d rows %.300q", what, k, len(rows), rows, len(got[k]), got[k])
		}
	}
}

// aprilScript damages sites with raw SQL, as the incident's script did,
// within the guard limits: row deletes, overwrites and an insert.
func (c *cli) aprilScript(sites ...int) {
	c.t.Helper()
	tr, wk := c.product("tracker"), c.product("wiki")
	for _, s := range sites {
		for _, q := range []string{
			"DELETE FROM comments WHERE site_id = ? AND parent_id IS NOT NULL",
			"UPDATE issues SET title = 'migrated', priority = NULL WHERE site_id = ?",
			"DELETE FROM insight_links WHERE site_id = ?",
			"UPDATE sites SET name = 'renamed by the script' WHERE id = ?",
		} {
			if _, err := tr.Exec(q, s); err != nil {
				c.t.Fatalf("%v: %s", err, q)
			}
		}
		for _, q := range []string{
			"DELETE FROM page_versions WHERE site_id = ? AND version > 1",
			"UPDATE pages SET title = upper(title) WHERE site_id = ?",
		} {
			if _, err := wk.Exec(q, s); err != nil {
				c.t.Fatalf("%v: %s", err, q)
			}
		}
	}
}

// moment is a time between two shipped states.
func moment() string {
	time.Sleep(20 * time.Millisecond)
	m := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(20 * time.Millisecond)
	return m
}

type restoreJSON struct {
	Operation string `json:"operation"`
	Status    string `json:"status"`
	Bytes     int64  `json:"bytes"`
	Tenants   []struct {
		Tenant   string `json:"tenant"`
		Products []struct {
			Product, Status, Hash string
			Resumed               bool
			Rows                  int64
		} `json:"products"`
	} `json:"tenants"`
}

func (c *cli) restoreJSON(args ...string) restoreJSON {
	c.t.Helper()
	var r restoreJSON
	out := c.must(append([]string{"restore", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		c.t.Fatalf("%v\n%s", err, out)
	}
	return r
}

// The April incident end to end with real capture: a script damages three
// sites in both products; one command restores them to the moment before,
// verified, leaving every other site as it was; the restore can be undone.
func TestRestoreThroughTheCLI(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 12)
	c.must("backup", "run")
	T := moment()
	hit := []int{3, 4, 9}
	atT, others := c.rowsOf(hit...), c.rowsOf(1, 2, 5, 6, 7, 8, 10, 11, 12)
	c.aprilScript(hit...)
	c.must("backup", "run")
	damaged := c.rowsOf(hit...)
	var listed struct {
		Objects    []struct{ Key, Product string }
		Unrecorded []struct{ Key string }
	}
	if err := json.Unmarshal([]byte(c.must("backup", "list", "--json")), &listed); err != nil || len(listed.Objects) < 4 || len(listed.Unrecorded) != 0 {
		t.Fatalf("backup list: %+v %v; want a snapshot and a segment per product, nothing unrecorded", listed, err)
	}

	plan := c.restoreJSON("--tenants", "3,4,9", "--to", T, "--dry-run")
	if plan.Status != "planned" || plan.Operation != "" || plan.Bytes == 0 {
		t.Errorf("dry run: %+v", plan)
	}
	sameRows(t, "after a dry run", damaged, c.rowsOf(hit...))

	file := filepath.Join(t.TempDir(), "tenants.txt")
	if err := os.WriteFile(file, []byte("# the April sites\n3\n4, 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := c.restoreJSON("--tenants", "@"+file, "--to", T)
	if rep.Status != "done" || len(rep.Tenants) != 3 {
		t.Fatalf("restore: %+v", rep)
	}
	for _, tr := range rep.Tenants {
		for _, p := range tr.Products {
			if p.Status != "restored" || p.Hash != "verified" {
				t.Errorf("tenant %s in %s: %+v", tr.Tenant, p.Product, p)
			}
		}
	}
	sameRows(t, "restored sites", atT, c.rowsOf(hit...))
	sameRows(t, "other sites", others, c.rowsOf(1, 2, 5, 6, 7, 8, 10, 11, 12))

	c.refused([]string{"restore", "--tenants", "3,ghost", "--to", T}, "ghost")
	c.refused([]string{"restore", "--tenants", "3", "--to", "2001-01-01T00:00:00Z"}, "before the oldest restorable moment")
	c.refused([]string{"restore", "--tenants", "3", "--to", "yesterday"}, "RFC 3339")
	c.refused([]string{"restore", "--tenants", "3", "--before", "pos:5"}, "positions are per product")

	c.must("backup", "run")
	c.must("restore", "--undo", rep.Operation)
	sameRows(t, "after undo", damaged, c.rowsOf(hit...))

	// A deleted site comes back pending validation; support validates it.
	site12 := c.rowsOf(12)
	c.must("tenants", "deactivate", "site:12")
	c.must("tenants", "delete", "site:12", "--reason", "closed by mistake")
	c.must("backup", "run")
	c.must("restore", "--tenants", "12", "--to", T)
	sameRows(t, "a deleted site restored", site12, c.rowsOf(12))
	if s := c.stateOf("12", "tracker"); s != "restored-pending-validation" {
		t.Errorf("restored site 12 is %q", s)
	}
	c.must("restore", "--validate", "--tenants", "12", "--reason", "the customer confirmed")
	for _, p := range []string{"tracker", "wiki"} {
		if s := c.stateOf("12", p); s != "active" {
			t.Errorf("validated site 12 is %q in %s", s, p)
		}
	}
	c.must("audit", "verify")
}

// kill -9 in the middle of a restore, then the same command again: it
// resumes and finishes. No site is ever half restored.
func TestKill9MidRestoreIsResumedByTheSameCommand(t *testing.T) {
	t.Parallel()
	c, args, atT, restored := killMidRestore(t)
	r := c.run(append(args, "--json")...)
	checkResumed(t, c, r, atT, restored)
}

// `lifeline ops resume OP` finishes a restore killed mid-way, from the
// request it was recorded with, as the same command would.
func TestKill9MidRestoreIsResumedByOpsResume(t *testing.T) {
	t.Parallel()
	c, _, atT, restored := killMidRestore(t)
	op := runningRestore(t, c)
	r := c.run("ops", "resume", op, "--json")
	checkResumed(t, c, r, atT, restored)
	c.refused([]string{"ops", "resume", op}, "not running")
}

// `lifeline serve` finishes, in the background, a restore killed mid-way.
func TestKill9MidRestoreIsResumedByServe(t *testing.T) {
	t.Parallel()
	c, _, atT, _ := killMidRestore(t)
	op := runningRestore(t, c)
	startServe(t, c)
	status := ""
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && status != "done"; time.Sleep(100 * time.Millisecond) {
		var o struct{ Operation struct{ Status string } }
		if err := json.Unmarshal([]byte(c.must("ops", "show", op, "--json")), &o); err != nil {
			t.Fatal(err)
		}
		status = o.Operation.Status
	}
	if status != "done" {
		t.Fatalf("serve left the killed restore %s %s", op, status)
	}
	sameRows(t, "after serve resumed the restore", atT, c.rowsOf(2, 3, 4))
}

// runningRestore is the ID of the one running restore operation.
func runningRestore(t *testing.T, c *cli) string {
	t.Helper()
	var ops struct {
		Operations []struct{ ID, Action, Status string }
	}
	if err := json.Unmarshal([]byte(c.must("ops", "list", "--json")), &ops); err != nil {
		t.Fatal(err)
	}
	for _, o := range ops.Operations {
		if o.Action == "restore" && o.Status == "running" {
			return o.ID
		}
	}
	t.Fatalf("no running restore after the kill: %+v", ops)
	return ""
}

// killMidRestore damages three sites, starts their restore with the real
// binary and kills it (SIGKILL) before its third tenant step, and checks
// that no site was left half restored. It returns the restore's command,
// the sites' rows at the moment and how many site-products were restored
// before the kill.
func killMidRestore(t *testing.T) (c *cli, args []string, atT map[string][]string, restored int) {
	c, args, atT, restored, r, ws := restoreMidway(t, "LIFELINE_TEST_CRASH_BEFORE_STEP=3")
	if ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the restore was meant to die by SIGKILL; exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	if restored == 0 || restored > 2 {
		t.Errorf("%d site-products restored before the crash before the third; want 1 or 2", restored)
	}
	return c, args, atT, restored
}

// hitSites are the sites damagedSites damages.
var hitSites = []int{2, 3, 4}

// damagedSites makes a demo SaaS of 8 sites, backed up, and damages
// hitSites with aprilScript, backed up too. It returns the moment T before
// the damage and the sites' rows at T and now.
func damagedSites(t *testing.T) (c *cli, T string, atT, damaged map[string][]string) {
	t.Helper()
	c = demoSaaS(t, 8)
	c.must("backup", "run")
	T = moment()
	atT = c.rowsOf(hitSites...)
	c.aprilScript(hitSites...)
	c.must("backup", "run")
	return c, T, atT, c.rowsOf(hitSites...)
}

// restoreMidway damages sites 2, 3 and 4, runs their restore (--json) with
// the real binary and hook (a LIFELINE_TEST_… variable) in its
// environment, and checks that no site was left half restored. It returns
// the restore's command, the sites' rows at the moment, how many
// site-products the run restored, and how the run ended.
func restoreMidway(t *testing.T, hook string) (c *cli, args []string, atT map[string][]string, restored int, r result, ws syscall.WaitStatus) {
	c, T, atT, damaged := damagedSites(t)
	args = []string{"restore", "--tenants", "2,3,4", "--to", T}
	r, ws = runHooked(t, c, buildLifeline(t), hook, append(args, "--json")...)
	restored = moved(t, c, hitSites, damaged, atT, "restored")
	c.refused([]string{"tenants", "deactivate", "site:3"}, "restore")
	return c, args, atT, restored, r, ws
}

// Ctrl-C (SIGINT) in the middle of a restore stops it between two swap
// transactions: it reports the sites restored and those not, exits 1, and
// leaves its operation running, so that the same command finishes it.
func TestInterruptedRestoreReportsAndIsResumedByTheSameCommand(t *testing.T) {
	t.Parallel()
	c, args, atT, restored, r, ws := restoreMidway(t, "LIFELINE_TEST_INTERRUPT_BEFORE_STEP=2")
	if ws.Signaled() || r.code != 1 {
		t.Fatalf("an interrupted restore must exit 1 by itself; got %v, exit %d\n%s\n%s", ws, r.code, r.out, r.err)
	}
	rep, statuses, _ := decodeReport(t, r.out)
	if rep.Status != "interrupted" || statuses["restored"] != restored || statuses["interrupted"] != 6-restored || restored == 0 || restored == 6 {
		t.Errorf("report: %s, steps %v; %d site-products restored in the databases", rep.Status, statuses, restored)
	}
	for _, want := range []string{"interrupted", "ops resume " + rep.Operation} {
		if !strings.Contains(r.err, want) {
			t.Errorf("stderr does not say %q:\n%s", want, r.err)
		}
	}
	if op := runningRestore(t, c); op != rep.Operation {
		t.Errorf("running restore %s, want the interrupted %s", op, rep.Operation)
	}
	checkResumed(t, c, c.run(append(args, "--json")...), atT, restored)
}

// opsOf lists the operations of one action as "ID status".
func opsOf(t *testing.T, c *cli, action string) []string {
	t.Helper()
	var ops struct {
		Operations []struct{ ID, Action, Status string }
	}
	if err := json.Unmarshal([]byte(c.must("ops", "list", "--json")), &ops); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, op := range ops.Operations {
		if op.Action == action {
			out = append(out, op.ID+" "+op.Status)
		}
	}
	return out
}

// runHooked runs the real binary bin with args on c's config and hook (a
// LIFELINE_TEST_… variable) in its environment, and returns how it ended.
func runHooked(t *testing.T, c *cli, bin, hook string, args ...string) (result, syscall.WaitStatus) {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), bin, append([]string{"--config", c.config}, args...)...)
	cmd.Env = append(os.Environ(), hook, "LIFELINE_ACTOR=tester")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return result{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}, ws
}

// moved counts the site-products of sites whose rows are now wholly as in
// to and no longer as in from; a site-product that is neither (half moved)
// is an error. what names the move in the error.
func moved(t *testing.T, c *cli, sites []int, from, to map[string][]string, what string) (n int) {
	t.Helper()
	now := c.rowsOf(sites...)
	for _, s := range sites {
		for product, tables := range demoTables {
			full, none := true, true
			for _, table := range tables {
				k := fmt.Sprintf("%s/%s/%d", product, table, s)
				full = full && slices.Equal(now[k], to[k])
				none = none && slices.Equal(now[k], from[k])
			}
			switch {
			case full && !none:
				n++
			case !full && !none:
				t.Errorf("site %d in %s is half %s after the run", s, product, what)
			}
		}
	}
	return n
}

// decodeReport decodes a restore's --json report and counts its tenant
// steps by status and those recognised as committed by an earlier run.
func decodeReport(t *testing.T, out string) (rep restoreJSON, statuses map[string]int, resumed int) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	statuses = map[string]int{}
	for _, tr := range rep.Tenants {
		for _, p := range tr.Products {
			statuses[p.Status]++
			if p.Resumed {
				resumed++
			}
		}
	}
	return rep, statuses, resumed
}

// checkResumed checks the run r that finished a killed restore: it
// succeeded, recognised the steps the killed run committed, restored every
// site as at the moment, and finished the killed operation rather than
// starting another.
func checkResumed(t *testing.T, c *cli, r result, atT map[string][]string, restored int) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	rep, _, resumed := decodeReport(t, r.out)
	if resumed != restored {
		t.Errorf("%d steps recognised as committed by the killed run, %d were", resumed, restored)
	}
	sameRows(t, "after the rerun", atT, c.rowsOf(2, 3, 4))
	restores := opsOf(t, c, "restore")
	if len(restores) != 1 || restores[0] != rep.Operation+" done" {
		t.Errorf("restore operations %v; the rerun must resume the killed one (%s) and finish it", restores, rep.Operation)
	}
}

// lifeline.yaml's restore: section paces the SQLite writes of the restores
// the commands run.
func TestRestorePacingComesFromTheConfig(t *testing.T) {
	t.Parallel()
	c := demoSaaS(t, 2)
	f, err := os.OpenFile(c.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("restore: {sqlite_transaction: 60ms, sqlite_pause: 25ms}\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e := &env{ctx: context.Background(), getenv: func(string) string { return "" }, stdout: io.Discard, stderr: io.Discard, configPath: c.config}
	a, err := openApp(e)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	svc, _, err := restoreService(e, a)
	if err != nil {
		t.Fatal(err)
	}
	if svc.TxBudget != 60*time.Millisecond || svc.Pause != 25*time.Millisecond {
		t.Errorf("restore pacing %v / %v, want 60ms / 25ms from lifeline.yaml", svc.TxBudget, svc.Pause)
	}
	c.must("backup", "run")
	T := moment()
	c.must("backup", "run")
	c.must("restore", "--tenants", "1", "--to", T)
}
