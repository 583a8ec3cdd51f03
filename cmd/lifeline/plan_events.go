package main

import (
	"fmt"
	"text/tabwriter"
)

// planEvents is `lifeline plan events [ID] [--failed] [--json]`, the plan
// events kept for their webhooks, newest first, and `lifeline plan events
// retry EVENT-ID|--all-failed`, which gives events that were given up a
// fresh run of delivery attempts (docs/plans.md, Events).
func planEvents(e *env, args []string) error {
	if len(args) > 0 && args[0] == "retry" {
		return planEventsRetry(e, args[1:])
	}
	fs := flags(e, "plan events")
	failed := fs.Bool("failed", false, "only the events given up after every delivery attempt")
	asJSON := jsonFlag(fs)
	svc, pos, done, err := readPlans(e, fs, args, "usage: lifeline plan events [PLAN-ID] [--failed] [--json], or lifeline plan events retry EVENT-ID|--all-failed",
		func(pos []string) bool { return len(pos) <= 1 })
	if err != nil {
		return err
	}
	defer done()
	id := ""
	if len(pos) == 1 {
		if _, err := svc.Get(e.ctx, pos[0]); err != nil {
			return err // an unknown plan is named, not an empty list
		}
		id = pos[0]
	}
	list, err := svc.Events(e.ctx, id, *failed)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, map[string]any{"events": list})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPLAN\tEVENT\tSTATE\tATTEMPTS\tCREATED\tURL\tLAST ERROR")
	for _, ev := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", ev.ID, ev.Plan, ev.Event, ev.State, ev.Attempts, since(ev.Created), ev.URL, ev.LastError)
	}
	return tw.Flush()
}

func planEventsRetry(e *env, args []string) error {
	fs := flags(e, "plan events retry")
	all := fs.Bool("all-failed", false, "retry every event given up")
	name, token := identity(fs)
	asJSON := jsonFlag(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if (len(pos) == 1) == *all || len(pos) > 1 {
		return usageErr("usage: lifeline plan events retry EVENT-ID, or lifeline plan events retry --all-failed (`lifeline plan events --failed` lists them)")
	}
	svc, who, done, err := plansAs(e, *name, *token)
	if err != nil {
		return err
	}
	defer done()
	id := ""
	if len(pos) == 1 {
		id = pos[0]
	}
	n, err := svc.RetryEvents(e.ctx, id, who.Name)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, map[string]any{"retried": n})
	}
	fmt.Fprintf(e.stdout, "%d events put back for delivery (lifeline serve delivers them)\n", n)
	return nil
}
