package plan

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Text writes the dry-run report for people: what the plan does, to whom
// (each target by its human name and key), in which waves, the blast
// radius, who must approve, and the hash the approval binds to.
func (r *Report) Text(w io.Writer) {
	fmt.Fprintf(w, "%s %d %s targets, requested by %s\n", strings.ToUpper(r.Action[:1])+r.Action[1:], len(r.Targets), r.Kind, r.Requester)
	fmt.Fprintf(w, "reason: %s\n", r.Reason)
	if r.Spec.To != nil {
		fmt.Fprintf(w, "restore to: %s\n", r.Spec.To.Format(time.RFC3339))
	}
	if r.Spec.Before != "" {
		fmt.Fprintf(w, "restore to just before: %s\n", r.Spec.Before)
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "\nREFUSED: %d targets are wrong; nothing will run:\n", len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s\n", p.Message)
		}
		return
	}
	fmt.Fprintln(w, "\nwaves:")
	for _, wv := range r.Waves {
		gate := fmt.Sprintf("then a gate: bake %s, checks", r.Spec.Bake.D())
		if r.Spec.Manual {
			gate += ", promote by a person"
		}
		if wv.Index == len(r.Waves)-1 {
			gate = "last wave"
		}
		fmt.Fprintf(w, "  %d  %-9s %5d targets  %s\n", wv.Index, wv.Name, wv.Size, gate)
	}
	fmt.Fprintln(w, "\ntargets:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  WAVE\tTARGET\tNAME\tSTATE\tROWS")
	for _, t := range r.Targets {
		var states []string
		var rows int64
		for _, prod := range sortedKeys(t.States) {
			states = append(states, prod+"="+string(t.States[prod]))
			for _, n := range t.Rows[prod] {
				rows += n
			}
		}
		name := t.Name
		if t.Internal {
			name += " (internal)"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\n", t.Wave, t.Target, name, strings.Join(states, " "), rows)
	}
	tw.Flush()
	tot := r.Totals
	fmt.Fprintf(w, "\nblast radius: %d tenants (%.2f%% of %d; %d internal) in %s", tot.Tenants, tot.Share*100, tot.TenantsKnown, tot.Internal, strings.Join(tot.Products, ", "))
	if len(tot.Apps) > 0 {
		fmt.Fprintf(w, ", apps %s", strings.Join(tot.Apps, ", "))
	}
	fmt.Fprintf(w, "; %d rows", tot.RowsTotal)
	if tot.Contacts != nil {
		fmt.Fprintf(w, "; %d contacts", *tot.Contacts)
	}
	fmt.Fprintln(w)
	tables := make([]string, 0, len(tot.Rows))
	for t := range tot.Rows {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	for _, t := range tables {
		fmt.Fprintf(w, "  %-32s %d rows\n", t, tot.Rows[t])
	}
	if r.Caps.Exceeded {
		fmt.Fprintf(w, "above the caps (%s): an admin must approve\n", r.Caps.Why)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintf(w, "\napproval needs: the %s role, and someone other than %s\n", r.RequiredRole, r.Requester)
	fmt.Fprintf(w, "report hash: %s\n", r.Hash)
}
