package main

import (
	"strings"
	"syscall"
	"testing"
)

// kill -9 in the middle of `restore --undo OP`, then the same command
// again: it takes the killed undo over and finishes it. No site is ever
// half undone, and every site ends exactly as it was before the restore.
func TestKill9MidUndoIsResumedByTheSameCommand(t *testing.T) {
	t.Parallel()
	c, args, restoreOp, before, undone, r, ws := undoMidway(t, "LIFELINE_TEST_CRASH_BEFORE_STEP=3")
	if ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the undo was meant to die by SIGKILL; exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	if undone == 0 || undone > 2 {
		t.Errorf("%d site-products undone before the crash before the third; want 1 or 2", undone)
	}
	checkUndone(t, c, c.run(append(args, "--json")...), restoreOp, before, undone)
}

// Ctrl-C (SIGINT) in the middle of an undo stops it between two tenants:
// it reports the sites undone and those not, exits 1 and leaves the undo
// running. `ops resume` refuses it, naming the command that finishes it:
// the same `restore --undo OP`, which then does.
func TestInterruptedUndoReportsAndIsResumedByTheSameCommand(t *testing.T) {
	t.Parallel()
	c, args, restoreOp, before, undone, r, ws := undoMidway(t, "LIFELINE_TEST_INTERRUPT_BEFORE_STEP=2")
	if ws.Signaled() || r.code != 1 {
		t.Fatalf("an interrupted undo must exit 1 by itself; got %v, exit %d\n%s\n%s", ws, r.code, r.out, r.err)
	}
	rep, statuses, _ := decodeReport(t, r.out)
	for _, tr := range rep.Tenants {
		for _, p := range tr.Products {
			if p.Status == "interrupted" && !strings.Contains(r.err, tr.Tenant+" in "+p.Product) {
				t.Errorf("stderr does not name %s in %s, left as it was:\n%s", tr.Tenant, p.Product, r.err)
			}
		}
	}
	if rep.Status != "interrupted" || statuses["undone"] != undone || statuses["interrupted"] != 6-undone || undone == 0 || undone == 6 {
		t.Errorf("report: %s, steps %v; %d site-products undone in the databases", rep.Status, statuses, undone)
	}
	if !strings.Contains(r.err, "interrupted") {
		t.Errorf("stderr does not say interrupted:\n%s", r.err)
	}
	if ops := opsOf(t, c, "restore-undo"); len(ops) != 1 || ops[0] != rep.Operation+" running" {
		t.Errorf("undo operations %v, want the interrupted %s running", ops, rep.Operation)
	}
	c.refused([]string{"ops", "resume", rep.Operation}, "restore --undo")
	checkUndone(t, c, c.run(append(args, "--json")...), restoreOp, before, undone)
}

// undoMidway damages hitSites, restores them to before the damage, then
// runs the restore's undo (--json) with the real binary and hook (a
// LIFELINE_TEST_… variable) in its environment, and checks that no site
// was left half undone and that the sites stay locked to the undo. It
// returns the undo's command, the restore's ID, the sites' rows before the
// restore, how many site-products the run undid, and how the run ended.
func undoMidway(t *testing.T, hook string) (c *cli, args []string, restoreOp string, before map[string][]string, undone int, r result, ws syscall.WaitStatus) {
	c, T, atT, before := damagedSites(t)
	rep := c.restoreJSON("--tenants", "2,3,4", "--to", T)
	if rep.Status != "done" {
		t.Fatalf("restore: %+v", rep)
	}
	sameRows(t, "restored sites", atT, c.rowsOf(hitSites...))
	c.must("backup", "run")

	args = []string{"restore", "--undo", rep.Operation}
	r, ws = runHooked(t, c, buildLifeline(t), hook, append(args, "--json")...)
	undone = moved(t, c, hitSites, atT, before, "undone")
	c.refused([]string{"tenants", "deactivate", "site:3"}, "restore --undo")
	return c, args, rep.Operation, before, undone, r, ws
}

// checkUndone checks the run r that finished an interrupted undo of
// restore restoreOp: it succeeded, recognised the steps the first run
// committed, put every site back exactly as before the restore, finished
// the interrupted undo rather than starting another, and marked the
// restore rolled back.
func checkUndone(t *testing.T, c *cli, r result, restoreOp string, before map[string][]string, undone int) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	rep, statuses, resumed := decodeReport(t, r.out)
	if statuses["undone"] != 6 {
		t.Errorf("steps after the rerun %v, want all 6 undone", statuses)
	}
	if rep.Status != "done" || resumed != undone {
		t.Errorf("rerun %s: %d steps recognised as committed by the first run, %d were", rep.Status, resumed, undone)
	}
	sameRows(t, "after the rerun", before, c.rowsOf(hitSites...))
	for _, s := range []string{"2", "3", "4"} {
		for product := range demoTables {
			if st := c.stateOf(s, product); st != "active" {
				t.Errorf("site %s in %s is %q after the undo, want active as before the restore", s, product, st)
			}
		}
	}
	if ops := opsOf(t, c, "restore-undo"); len(ops) != 1 || ops[0] != rep.Operation+" done" {
		t.Errorf("undo operations %v; the rerun must finish the interrupted one (%s)", ops, rep.Operation)
	}
	if ops := opsOf(t, c, "restore"); len(ops) != 1 || ops[0] != restoreOp+" rolled_back" {
		t.Errorf("restore operations %v, want %s rolled_back", ops, restoreOp)
	}
}
