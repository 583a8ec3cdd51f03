package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/restore"
)

// restoreCmd is `lifeline restore`: see docs/restore.md.
func restoreCmd(e *env, args []string) error {
	fs := flags(e, "restore")
	tenants := fs.String("tenants", "", "tenant keys, comma-separated, or @FILE with one key per line")
	to := fs.String("to", "", "restore as of this moment, RFC 3339 (2026-04-05T08:00:00Z)")
	before := fs.String("before", "", "restore as of just before an operation (op_…) or a change position (pos:N)")
	products := fs.String("products", "", "only these products, comma-separated (default: every product)")
	into := fs.String("into", "", "restore out of place into this empty database (sqlite:FILE or postgres://…)")
	policy := fs.String("policy", string(productdb.Replace), "replace (exactly as at the moment) or missing-only (only rows absent now)")
	dryRun := fs.Bool("dry-run", false, "report what would be restored; change nothing")
	skipBroken := fs.Bool("skip-broken", false, "restore the tenants whose backup is readable and report the others")
	allowDrift := fs.Bool("allow-drift", false, "restore tables that lost a column since the moment, without that column's values")
	undo := fs.String("undo", "", "undo a finished restore operation (op_…)")
	validate := fs.Bool("validate", false, "make the --tenants that are restored-pending-validation active (support confirmed them)")
	reason := fs.String("reason", "", "why (recorded in the audit log)")
	who := fs.String("actor", "", "who is running this (default $LIFELINE_ACTOR or user@host)")
	asJSON := fs.Bool("json", false, "print the report as one JSON document")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("lifeline restore takes no positional arguments (got %q); use --tenants", strings.Join(pos, " "))
	}
	req := restore.Request{Before: *before, Into: *into, Policy: productdb.Policy(*policy), DryRun: *dryRun,
		SkipBroken: *skipBroken, AllowDrift: *allowDrift, Actor: actor(e, *who), Reason: *reason}
	if *undo == "" {
		if req.Tenants, err = tenantList(*tenants); err != nil {
			return err
		}
		if *to != "" {
			if req.To, err = time.Parse(time.RFC3339Nano, *to); err != nil {
				return fault.New(fault.Invalid, "write it as RFC 3339, for example 2026-04-05T08:00:00Z or 2026-04-05T10:00:00+02:00", "bad --to %q", *to)
			}
		}
		if *products != "" {
			req.Products = splitList(*products)
		}
	}
	a, err := openApp(e)
	if err != nil {
		return err
	}
	defer a.Close()
	req.IntoBase = a.cfg.Dir
	svc, bar, err := restoreService(e, a)
	if err != nil {
		return err
	}
	if *validate {
		op, err := svc.Validate(e.ctx, req.Tenants, req.Actor, *reason)
		return opOutput(e, op, err, *asJSON)
	}
	var rep *restore.Report
	if *undo != "" {
		rep, err = svc.Undo(e.ctx, *undo, req.Actor, *reason)
	} else {
		rep, err = svc.Run(e.ctx, req)
	}
	bar.done()
	return restoreOutput(e, rep, err, *asJSON)
}

// restoreService opens the repository and the restore service, with a
// progress bar when stderr is a terminal.
func restoreService(e *env, a *app) (*restore.Service, *progressBar, error) {
	repo, err := openRepo(e, a)
	if err != nil {
		return nil, nil, err
	}
	svc, err := restore.OpenService(e.ctx, paced(a, &restore.Service{Tenants: a.tenants, Repo: repo, Log: a.log, BeforeStep: a.tenants.BeforeStep}))
	if err != nil {
		return nil, nil, err
	}
	bar := newProgressBar(e.stderr)
	if bar != nil {
		svc.Progress = bar.update
	}
	return svc, bar, nil
}

// paced sets s's pacing of SQLite writes from lifeline.yaml's restore:
// section, for every restore this process runs.
func paced(a *app, s *restore.Service) *restore.Service {
	s.TxBudget, s.Pause = a.cfg.Restore.SQLiteTransaction.D(), a.cfg.Restore.SQLitePause.D()
	return s
}

// restoreOutput prints a restore's report (as JSON, or for people) and
// passes its error on.
func restoreOutput(e *env, rep *restore.Report, err error, asJSON bool) error {
	if asJSON {
		if perr := printJSON(e.stdout, rep); perr != nil {
			return perr
		}
		return err
	}
	printRestore(e.stdout, rep)
	return err
}

// tenantList reads --tenants: KEY[,KEY…] or @FILE (one key per line,
// commas too; # starts a comment).
func tenantList(v string) ([]string, error) {
	if v == "" {
		return nil, nil
	}
	if name, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fault.Wrap(err, fault.Invalid, "give a file with one tenant key per line", "cannot read --tenants file %s", name)
		}
		var out []string
		for _, line := range strings.Split(string(b), "\n") {
			line, _, _ = strings.Cut(line, "#")
			out = append(out, splitList(line)...)
		}
		if len(out) == 0 {
			return nil, fault.New(fault.Invalid, "give a file with one tenant key per line", "--tenants file %s names no tenant", name)
		}
		return out, nil
	}
	return splitList(v), nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// printRestore writes the report for people: a summary line, then one line
// per tenant and product.
func printRestore(w io.Writer, rep *restore.Report) {
	if rep == nil || rep.Status == "refused" {
		return // the refusal and its hint go to stderr
	}
	what := "restore"
	if rep.DryRun {
		what = "restore plan (dry run: nothing changed)"
	}
	if rep.Operation != "" {
		what += " " + rep.Operation
	}
	moment := strings.Join(momentList(rep.Moment), ", ")
	fmt.Fprintf(w, "%s: %d tenants to %s, policy %s: %s in %.1fs (%d rows; %d objects, %s of them to read)\n",
		what, len(rep.Tenants), moment, rep.Policy, rep.Status, rep.Seconds, rep.Rows, len(rep.Objects), bytesText(rep.Bytes))
	if rep.Into != "" {
		fmt.Fprintf(w, "  into %s\n", rep.Into)
	}
	for _, tr := range rep.Tenants {
		for _, p := range tr.Products {
			line := fmt.Sprintf("  %-10s %-10s %-9s", tr.Tenant, p.Product, p.Status)
			if p.Hash != "" {
				line += " " + p.Hash
			}
			if p.State != "" && p.State != productdb.Active {
				line += " (" + string(p.State) + ")"
			}
			line += fmt.Sprintf("  %d rows", p.Rows)
			if changes := tableChanges(p.Tables, rep.DryRun); changes != "" {
				line += ": " + changes
			}
			line += fmt.Sprintf("  %.2fs", p.Seconds)
			if p.Resumed {
				line += " (committed by an earlier run)"
			}
			fmt.Fprintln(w, line)
			if p.Error != "" {
				fmt.Fprintf(w, "    error: %s\n", p.Error)
			}
			for _, n := range p.Notes {
				fmt.Fprintf(w, "    note: %s\n", n)
			}
		}
	}
}

func momentList(m restore.Moment) []string {
	if m.Undoes != "" {
		return []string{"as before " + m.Undoes + " (undo)"}
	}
	if m.Before != "" {
		return []string{"before " + m.Before}
	}
	var out []string
	seen := map[string]bool{}
	for _, v := range m.Products {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

func tableChanges(tables []restore.TableReport, planned bool) string {
	var parts []string
	for _, t := range tables {
		var c []string
		for _, x := range []struct {
			n    int64
			what string
		}{{t.Inserted, "inserted"}, {t.Replaced, "replaced"}, {t.Removed, "removed"}, {t.Conflicts, "held by another tenant"}} {
			if x.n > 0 {
				c = append(c, fmt.Sprintf("%d %s", x.n, x.what))
			}
		}
		if len(c) > 0 {
			parts = append(parts, t.Table+" "+strings.Join(c, ", "))
		}
	}
	if len(parts) == 0 {
		if planned {
			return "already as at the moment"
		}
		return "unchanged"
	}
	return strings.Join(parts, "; ")
}

// progressBar draws progress on a terminal: a bar, rows per second and an
// estimate of the time left. It is nil when stderr is not a terminal.
type progressBar struct {
	w    io.Writer
	mu   sync.Mutex
	last time.Time
	drew bool
}

func newProgressBar(w io.Writer) *progressBar {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return &progressBar{w: w}
}

func (b *progressBar) update(p restore.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if now.Sub(b.last) < 100*time.Millisecond && p.StepsDone < p.Steps {
		return
	}
	b.last = now
	const width = 30
	filled := 0
	if p.Steps > 0 {
		filled = width * p.StepsDone / p.Steps
	}
	elapsed := now.Sub(p.Started).Seconds()
	rate, eta := 0.0, "?"
	if elapsed > 0 {
		rate = float64(p.Rows) / elapsed
	}
	if p.StepsDone > 0 && p.Steps > p.StepsDone {
		eta = (time.Duration(elapsed/float64(p.StepsDone)*float64(p.Steps-p.StepsDone)) * time.Second).Round(time.Second).String()
	} else if p.StepsDone >= p.Steps {
		eta = "0s"
	}
	fmt.Fprintf(b.w, "\r%-7s [%s%s] %d/%d tenants  %d rows  %.0f rows/s  ETA %s   ",
		p.Phase, strings.Repeat("#", filled), strings.Repeat("-", width-filled), p.StepsDone, p.Steps, p.Rows, rate, eta)
	b.drew = true
}

func (b *progressBar) done() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drew {
		fmt.Fprintln(b.w)
	}
}
