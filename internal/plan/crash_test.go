package plan

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// TestCrashChild is the process the crash test kills: it runs a plan and
// SIGKILLs itself, as kill -9 would, inside its Nth lifecycle operation.
func TestCrashChild(t *testing.T) {
	dir, id := os.Getenv("LIFELINE_PLAN_CRASH_DIR"), os.Getenv("LIFELINE_PLAN_CRASH_ID")
	n, _ := strconv.Atoi(os.Getenv("LIFELINE_PLAN_CRASH_AT"))
	if dir == "" {
		t.Skip("only run by TestKillDashNineResumes")
	}
	b := setup(t, options{dir: dir, owner: tenant.DefaultOwner()})
	seen := 0
	b.tenants.BeforeStep = func(state.Step) {
		if seen++; seen == n {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	if _, err := b.plans.Run(ctx, id, carol); err != nil {
		t.Fatal(err)
	}
	t.Fatal("the plan finished without the crash")
}

// kill -9 in the middle of a wave: running the plan again takes it over
// from the dead runner, finishes the interrupted operation instead of
// starting another, and runs the rest; no target runs twice.
func TestKillDashNineResumes(t *testing.T) {
	t.Parallel()
	b := setup(t, options{internal: 2})
	p := b.create(t, CreateRequest{Action: "deactivate", Kind: tenant.KindSite, Targets: keys(1, 8, ""), Waves: []string{"internal", "100%"}})
	p = b.approve(t, p, carol)
	// Operation 5 is tenant 3's first product step: the second wave, after
	// its gate, in the middle of a tenant.
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LIFELINE_PLAN_CRASH_DIR="+b.dir, "LIFELINE_PLAN_CRASH_ID="+p.ID, "LIFELINE_PLAN_CRASH_AT=5")
	out, err := cmd.CombinedOutput()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child was not killed: %v\n%s", err, out)
	}
	p = must[*Plan](t)(b.plans.Get(ctx, p.ID))
	if p.Status != Running || p.Runner == "test:1" || p.Wave != 1 || p.Progress.Done != 2 {
		t.Fatalf("after the kill: %s runner %s wave %d %+v", p.Status, p.Runner, p.Wave, p.Progress)
	}
	if ids := must[[]string](t)(b.plans.Interrupted(ctx)); len(ids) != 1 || ids[0] != p.ID {
		t.Fatalf("interrupted plans: %v", ids)
	}
	p = must[*Plan](t)(b.plans.Run(ctx, p.ID, carol))
	if p.Status != Done || p.Progress.Done != 8 {
		t.Fatalf("after taking over: %s %+v %s", p.Status, p.Progress, p.Note)
	}
	ops := must[[]state.Operation](t)(b.store.ListOperations(ctx, state.OpFilter{Limit: 100}))
	per := map[string]int{}
	for _, op := range ops {
		per[op.Targets[0]]++
		if op.Status != state.OpDone {
			t.Errorf("operation %s is %s", op.ID, op.Status)
		}
	}
	for i := 1; i <= 8; i++ {
		if per["site:"+itoa(i)] != 1 {
			t.Errorf("site %d has %d operations; want exactly one", i, per["site:"+itoa(i)])
		}
		if st := b.state(t, "wiki", itoa(i)); st != productdb.Deactivated {
			t.Errorf("site %d is %s", i, st)
		}
	}
	if !slices.Contains(auditActions(t, b.store), "plan.takeover") {
		t.Error("the take-over is not audited")
	}
}
