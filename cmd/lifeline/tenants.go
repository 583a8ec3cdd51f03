package main

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

func tenantsCmd(e *env, args []string) error {
	subs := map[string]func(*env, []string) error{
		"list": tenantsList,
		"show": tenantsShow,
	}
	for _, a := range []productdb.Action{productdb.Deactivate, productdb.Reactivate, productdb.Delete, productdb.Undelete, productdb.Purge} {
		subs[string(a)] = func(e *env, args []string) error { return tenantsAction(e, a, args) }
	}
	return subcommand(e, "tenants", args, subs)
}

func tenantsList(e *env, args []string) error {
	fs := flags(e, "tenants list")
	asJSON := jsonFlag(fs)
	a, _, err := start(e, fs, args, openApp)
	if err != nil {
		return err
	}
	defer a.Close()
	list, err := a.tenants.List(e.ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, map[string]any{"tenants": list})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "KEY\tNAME\t%s\n", strings.ToUpper(strings.Join(productNames(a), "\t")))
	for _, t := range list {
		states := make([]string, 0, len(a.cfg.Products))
		for _, p := range a.cfg.Products {
			states = append(states, orDash(string(t.States[p.Name])))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Key, orDash(t.Name), strings.Join(states, "\t"))
	}
	return tw.Flush()
}

func productNames(a *app) []string {
	out := make([]string, len(a.cfg.Products))
	for i, p := range a.cfg.Products {
		out[i] = p.Name
	}
	return out
}

func tenantsShow(e *env, args []string) error {
	fs := flags(e, "tenants show")
	asJSON := jsonFlag(fs)
	a, pos, err := startArgs(e, fs, args, openApp, "usage: lifeline tenants show KEY", oneArg)
	if err != nil {
		return err
	}
	defer a.Close()
	d, err := a.tenants.Show(e.ctx, strings.TrimPrefix(pos[0], "site:"))
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, d)
	}
	fmt.Fprintf(e.stdout, "tenant %s  %q\n", d.Key, d.Name)
	names := make([]string, 0, len(d.Products))
	for n := range d.Products {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		in := d.Products[n]
		fmt.Fprintf(e.stdout, "\n%s: %s since %s\n", n, in.State, since(in.Since))
		for _, as := range in.Apps {
			fmt.Fprintf(e.stdout, "  app %s: %s since %s\n", as.App, as.State, since(as.Changed))
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TABLE\tLIVE ROWS\tIN TRASH")
		for _, t := range sortedKeys(in.Rows, in.Trash) {
			fmt.Fprintf(tw, "  %s\t%d\t%d\n", t, in.Rows[t], in.Trash[t])
		}
		tw.Flush()
	}
	fmt.Fprintln(e.stdout, "\nlast operations:")
	printOps(e, d.Operations)
	for _, er := range d.Erasures {
		fmt.Fprintf(e.stdout, "erased: %s in %s by %s at %s (%s)\n", er.OpID, er.Product, er.Actor, since(er.At), er.Reason)
	}
	return nil
}

func sortedKeys(ms ...map[string]int64) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range ms {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

// tenantsAction runs one lifecycle action on one typed target.
func tenantsAction(e *env, act productdb.Action, args []string) error {
	fs := flags(e, "tenants "+string(act))
	reason := fs.String("reason", "", "why (required for delete and purge; recorded in the audit log)")
	who := fs.String("actor", "", "who is running this (default $LIFELINE_ACTOR or user@host)")
	asJSON := fs.Bool("json", false, "print the operation as JSON")
	a, pos, err := startArgs(e, fs, args, openApp,
		fmt.Sprintf("usage: lifeline tenants %s TARGET [--reason TEXT]  (TARGET: site:KEY, product:KEY/PRODUCT or app:KEY/PRODUCT/APP)", act), oneArg)
	if err != nil {
		return err
	}
	defer a.Close()
	// The plan service admits actions outside plans: none during a freeze,
	// and only a handful per hour.
	_, closePlans, err := newPlans(e, a)
	if err != nil {
		return err
	}
	defer closePlans()
	op, err := a.tenants.Run(e.ctx, tenant.Request{Action: act, Target: pos[0], Actor: actor(e, *who), Reason: *reason})
	return opOutput(e, op, err, *asJSON)
}

func printOps(e *env, ops []state.Operation) {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tACTION\tTARGETS\tSTATUS\tACTOR\tSTARTED\tREASON")
	for _, op := range ops {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", op.ID, op.Action, strings.Join(op.Targets, ","), op.Status, op.Actor, since(op.Created), orDash(op.Reason))
	}
	tw.Flush()
}

// opOutput prints an operation (as JSON, or for people), or passes err on.
func opOutput(e *env, op *state.Operation, err error, asJSON bool) error {
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(e.stdout, op)
	}
	printOp(e, op)
	return nil
}

func printOp(e *env, op *state.Operation) {
	fmt.Fprintf(e.stdout, "%s %s %s: %s (by %s)\n", op.ID, op.Action, strings.Join(op.Targets, ","), op.Status, op.Actor)
	for _, st := range op.Steps {
		where := st.Product
		if st.App != "" {
			where += "/" + st.App
		}
		var rows []string
		var total int64
		for _, t := range sortedKeys(st.Rows) {
			rows = append(rows, fmt.Sprintf("%s=%d", t, st.Rows[t]))
			total += st.Rows[t]
		}
		line := fmt.Sprintf("  %-16s %-8s", where, st.Status)
		if len(rows) > 0 {
			line += fmt.Sprintf(" %d rows (%s)", total, strings.Join(rows, " "))
		}
		if st.Error != "" {
			line += " error: " + st.Error
		}
		fmt.Fprintln(e.stdout, line)
	}
	if op.Error != "" {
		fmt.Fprintf(e.stdout, "  error: %s\n", op.Error)
	}
}
