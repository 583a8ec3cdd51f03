package main

import (
	"fmt"

	"lifeline/internal/plan"
)

// freezeCmd is `lifeline freeze on|off|status`: the global stop of every
// destructive plan and lifecycle command, the first action of a large
// incident (docs/plans.md).
func freezeCmd(e *env, args []string) error {
	set := func(on bool) func(*env, []string) error {
		return func(e *env, args []string) error { return freezeSet(e, on, args) }
	}
	return subcommand(e, "freeze", args, map[string]func(*env, []string) error{"on": set(true), "off": set(false), "status": freezeStatus})
}

func freezeSet(e *env, on bool, args []string) error {
	fs := flags(e, "freeze")
	reason := fs.String("reason", "", "why (shown to everyone refused)")
	name, token := identity(fs)
	asJSON := jsonFlag(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("lifeline freeze on|off takes no arguments (got %q)", pos[0])
	}
	svc, who, done, err := plansAs(e, *name, *token)
	if err != nil {
		return err
	}
	defer done()
	f, err := svc.SetFreeze(e.ctx, on, who.Name, *reason)
	if err != nil {
		return err
	}
	return printFreeze(e, f, *asJSON)
}

func freezeStatus(e *env, args []string) error {
	fs := flags(e, "freeze status")
	asJSON := jsonFlag(fs)
	svc, _, done, err := readPlans(e, fs, args, "", nil)
	if err != nil {
		return err
	}
	defer done()
	f, err := svc.Frozen(e.ctx)
	if err != nil {
		return err
	}
	return printFreeze(e, f, *asJSON)
}

func printFreeze(e *env, f plan.Freeze, asJSON bool) error {
	if asJSON {
		return printJSON(e.stdout, f)
	}
	if !f.On {
		fmt.Fprintln(e.stdout, "not frozen: plans run and lifecycle commands are admitted")
		return nil
	}
	fmt.Fprintf(e.stdout, "FROZEN since %s by %s: %s\nno plan runs and no destructive lifecycle command is admitted; rollbacks, reactivations and undeletes still run\n",
		since(f.Since), f.Actor, orDash(f.Reason))
	return nil
}
