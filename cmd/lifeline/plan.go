package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"lifeline/internal/backup"
	"lifeline/internal/config"
	"lifeline/internal/contacts"
	"lifeline/internal/demo"
	"lifeline/internal/fault"
	"lifeline/internal/plan"
	"lifeline/internal/restore"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// planCmd is `lifeline plan`: reviewed bulk operations (docs/plans.md).
func planCmd(e *env, args []string) error {
	return subcommand(e, "plan", args, map[string]func(*env, []string) error{
		"create": planCreate, "list": planList, "show": planShow, "approve": planApprove, "run": planRun,
		"pause": planPause, "resume": planResume, "promote": planPromote, "abort": planAbort, "rollback": planRollback,
		"events": planEvents,
	})
}

// planApp is an app with the plan service over it: the backup repository
// for restore tests and restore plans, and progress on stderr.
type planApp struct {
	*app
	plans      *plan.Service
	closeVault func()
}

func openPlans(e *env) (*planApp, error) {
	a, err := openApp(e)
	if err != nil {
		return nil, err
	}
	svc, closePlans, err := newPlans(e, a)
	if err != nil {
		a.Close()
		return nil, err
	}
	svc.OnChange = func(_ context.Context, p *plan.Plan) { progressLine(e.stderr, p) }
	return &planApp{app: a, plans: svc, closeVault: closePlans}, nil
}

// newPlans builds the plan service over an open app: the backup repository
// for restore tests and restore plans, the contacts vault for the blast
// radius, and the admission hook on the app's tenant service. serve wires
// it the same way; the returned func closes what it opened.
func newPlans(e *env, a *app) (*plan.Service, func(), error) {
	svc := &plan.Service{Tenants: a.tenants, Config: planConfig(a.cfg.Plans), Log: a.log}
	if repo, err := openRepo(e, a); err == nil {
		rs, err := restore.OpenService(e.ctx, paced(a, &restore.Service{Tenants: a.tenants, Repo: repo, Log: a.log}))
		if err != nil {
			return nil, nil, err
		}
		svc.Restorer = &plan.Backup{Service: rs, CatchUp: catchUp(e, a, repo)}
	} else if fault.CodeOf(err) != fault.Invalid {
		return nil, nil, err
	}
	closeVault := func() {}
	if len(a.cfg.Contacts) > 0 {
		var c func()
		if svc.Contacts, c = vaultCounter(e, a); c != nil {
			closeVault = c
		}
	}
	if _, err := plan.OpenService(e.ctx, svc); err != nil {
		closeVault()
		return nil, nil, err
	}
	a.tenants.Admit = svc.Admit
	return svc, closeVault, nil
}

func (pa *planApp) Close() {
	if pa.closeVault != nil {
		pa.closeVault()
	}
	pa.app.Close()
}

// contactCounter counts a plan's contacts in the contacts vault. Each
// tenant's lookup is audited (contacts.for) under the actor: counting
// who would be affected is a read of their contact details.
type contactCounter struct {
	vault *contacts.Service
	actor string
}

func (c *contactCounter) CountContacts(ctx context.Context, tenants []string) (int, error) {
	seen := map[string]bool{}
	for _, t := range tenants {
		res, err := c.vault.For(ctx, "site:"+t, c.actor, false)
		if fault.CodeOf(err) == fault.NotFound {
			continue
		}
		if err != nil {
			return 0, err
		}
		for _, r := range res.Contacts {
			seen[strings.ToLower(r.Email)] = true
		}
	}
	return len(seen), nil
}

// vaultCounter opens the contacts vault for the blast radius. A vault that
// cannot be opened leaves the count out (with a note), rather than
// blocking a plan on it.
func vaultCounter(e *env, a *app) (plan.ContactCounter, func()) {
	cfg, err := vaultConfig(e, a)
	var store *contacts.Store
	if err == nil {
		store, err = contacts.OpenStore(e.ctx, a.cfg.Vault.Database, a.cfg.Dir)
	}
	var svc *contacts.Service
	if err == nil {
		cfg.Store = store
		svc, err = contacts.New(cfg)
		if err != nil {
			store.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "note: the contacts vault cannot be opened (%v); the report leaves contacts out\n", err)
		return nil, nil
	}
	return &contactCounter{vault: svc, actor: actor(e, "")}, func() { _ = store.Close() }
}

// catchUp makes "now" in the repository now before a restore test: if
// serve is shipping (its shipper reported recently), it waits for the
// shipper to pass this moment; otherwise it ships once, as `lifeline
// backup run` does.
func catchUp(e *env, a *app, repo *backup.Repo) func(context.Context) error {
	decided, serving := false, true
	return func(ctx context.Context) error {
		start := time.Now()
		interval := a.cfg.Shipping.Interval.D()
		// Decided once per process: after this process ships, the status
		// looks recently checked too.
		for _, p := range a.tenants.Products {
			if decided {
				break
			}
			st, err := repo.Status(ctx, p.Name, 0)
			if err != nil {
				return err
			}
			serving = serving && !st.Checked.IsZero() && time.Since(st.Checked) < 3*interval
		}
		decided = true
		if serving {
			caught, err := waitShipped(ctx, a, repo, start, time.Now().Add(max(10*time.Second, 5*interval)))
			if err != nil || caught {
				return err
			}
			serving = false // no shipper is keeping up after all: ship here
		}
		ships, closeAll, err := shippers(e, a, repo)
		if err != nil {
			return err
		}
		defer closeAll()
		for _, s := range ships {
			if _, err := s.Ship(ctx); err != nil {
				return fault.Wrap(err, fault.CodeOf(err), fault.HintOf(err), "shipping %s before the restore test", s.Product)
			}
		}
		return nil
	}
}

// waitShipped waits until every product's repository is known complete
// past start, or deadline.
func waitShipped(ctx context.Context, a *app, repo *backup.Repo, start, deadline time.Time) (bool, error) {
	for _, p := range a.tenants.Products {
		for {
			st, err := repo.Status(ctx, p.Name, 0)
			if err != nil {
				return false, err
			}
			if !st.Newest.Before(start) {
				break
			}
			if time.Now().After(deadline) {
				return false, nil
			}
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(a.cfg.Shipping.Interval.D() / 4):
			}
		}
	}
	return true, nil
}

// progressLine tells a person at the terminal where a plan is.
func progressLine(w io.Writer, p *plan.Plan) {
	line := fmt.Sprintf("plan %s: %s", p.ID, p.Status)
	if p.Status == plan.Running {
		line += fmt.Sprintf(", wave %d (%s)", p.Wave, p.Phase)
		if p.Phase == "gate" && !p.GateUntil.IsZero() {
			line += " baking until " + p.GateUntil.Local().Format("15:04:05")
		}
	}
	line += fmt.Sprintf("; %d/%d done", p.Progress.Done, p.Progress.Total)
	if p.Note != "" {
		line += "; " + p.Note
	}
	fmt.Fprintln(w, line)
}

// who is the CLI's actor: a token's name and role when one is given
// (--token or LIFELINE_TOKEN), else --actor / LIFELINE_ACTOR / user@host
// with the admin role: whoever runs the CLI holds the config and the
// database credentials (docs/plans.md, trust model).
func who(e *env, a *app, name, token string) (plan.Actor, error) {
	if token == "" {
		token = e.getenv("LIFELINE_TOKEN")
	}
	if token == "" {
		return plan.Actor{Name: actor(e, name), Role: state.RoleAdmin}, nil
	}
	tok, err := a.store.Authenticate(e.ctx, token)
	if err != nil {
		return plan.Actor{}, err
	}
	if name != "" && !strings.EqualFold(name, tok.Name) {
		return plan.Actor{}, fault.New(fault.Invalid, "leave out --actor when you give a token", "--actor %s does not match the token's name %s", name, tok.Name)
	}
	return plan.Actor{Name: tok.Name, Role: tok.Role}, nil
}

// identity adds --actor and --token to a plan command.
func identity(fs *flag.FlagSet) (name, token *string) {
	return fs.String("actor", "", "who you are (default $LIFELINE_ACTOR or user@host)"),
		fs.String("token", "", "act as this token's person and role (default $LIFELINE_TOKEN)")
}

func planCreate(e *env, args []string) error {
	fs := flags(e, "plan create")
	action := fs.String("action", "", "deactivate|reactivate|delete|undelete|purge|restore")
	kind := fs.String("kind", "", "what the keys name: site|product|app")
	targets := fs.String("targets", "", "keys of --kind (42, 42/tracker, 42/tracker/insight), comma-separated, or @FILE with one per line")
	reason := fs.String("reason", "", "why (the approver reads it; recorded in the audit log)")
	waves := fs.String("waves", "", "waves: internal, then cumulative shares or counts (default internal,1%,10%,100%)")
	bake := fs.Duration("bake", -1, "how long each gate waits after its wave (default 10m)")
	deadline := fs.Duration("deadline", 0, "abort when no step completes for this long (default 1h)")
	manual := fs.Bool("manual", false, "every gate also waits for `lifeline plan promote`")
	var checks listFlag
	fs.Var(&checks, "check", "a webhook URL asked at every gate (pass, fail, inconclusive); repeatable")
	to := fs.String("to", "", "restore plans: restore as of this moment, RFC 3339")
	before := fs.String("before", "", "restore plans: restore as of just before this operation (op_…)")
	name, token := identity(fs)
	asJSON := jsonFlag(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("lifeline plan create takes no positional arguments (got %q); use --targets", strings.Join(pos, " "))
	}
	keys, err := tenantList(*targets)
	if err != nil {
		return err
	}
	req := plan.CreateRequest{Action: *action, Kind: tenant.Kind(*kind), Targets: keys, Reason: *reason, Manual: *manual, Checks: checks, Before: *before}
	if *waves != "" {
		req.Waves = splitList(*waves)
	}
	if *bake >= 0 {
		d := plan.Duration(*bake)
		req.Bake = &d
	}
	if *deadline != 0 {
		d := plan.Duration(*deadline)
		req.Deadline = &d
	}
	if *to != "" {
		t, err := time.Parse(time.RFC3339Nano, *to)
		if err != nil {
			return fault.New(fault.Invalid, "write it as RFC 3339, for example 2026-04-05T08:00:00Z", "bad --to %q", *to)
		}
		req.To = &t
	}
	pa, err := openPlans(e)
	if err != nil {
		return err
	}
	defer pa.Close()
	who, err := who(e, pa.app, *name, *token)
	if err != nil {
		return err
	}
	req.Requester = who.Name
	p, err := pa.plans.Create(e.ctx, req)
	return showPlan(e, p, err, *asJSON, true)
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// showPlan prints a plan (with its report when full) and passes err on.
// With --json the plan is printed even when refused: the refusal is in it.
func showPlan(e *env, p *plan.Plan, err error, asJSON, full bool) error {
	if p == nil {
		return err
	}
	if asJSON {
		if perr := printJSON(e.stdout, p); perr != nil {
			return perr
		}
		return err
	}
	if err != nil && p.Status == plan.Draft {
		return err // the refusal and its hint go to stderr
	}
	w := e.stdout
	fmt.Fprintf(w, "plan %s: %s %s %s, requested by %s\n", p.ID, p.Status, p.Action, p.Kind, p.Requester)
	if p.Approval != nil {
		fmt.Fprintf(w, "approved by %s (%s) for report %s at %s\n", p.Approval.By, p.Approval.Role, shortHash(p.Approval.Hash), since(p.Approval.At))
	}
	if p.Note != "" {
		fmt.Fprintf(w, "%s\n", p.Note)
	}
	pr := p.Progress
	fmt.Fprintf(w, "progress: %d targets: %d done, %d pending, %d failed, %d skipped, %d rolled back\n",
		pr.Total, pr.Done, pr.Pending, pr.Failed, pr.Skipped, pr.RolledBack)
	for _, g := range p.Gates {
		fmt.Fprintf(w, "gate after wave %d at %s: %s\n", g.Wave, since(g.At), g.Result)
		for _, c := range g.Checks {
			fmt.Fprintf(w, "  %-13s %-12s %s\n", c.Result, c.Name, c.Detail)
		}
	}
	if full && p.Report != nil {
		fmt.Fprintln(w)
		p.Report.Text(w)
	}
	if full {
		var problems []plan.Step
		for _, st := range p.Steps {
			if st.Error != "" || (st.Verify != "" && st.Verify != "passed" && st.Status != plan.StepRolledBack) {
				problems = append(problems, st)
			}
		}
		if len(problems) > 0 {
			fmt.Fprintln(w, "\nsteps with problems:")
			for _, st := range problems {
				fmt.Fprintf(w, "  %s %s: %s %s\n", st.Target, st.Status, st.Error, strings.TrimPrefix(st.Verify, "passed"))
			}
		}
	}
	if p.Status == plan.Validated {
		fmt.Fprintf(w, "\nnext: a second person runs `lifeline plan approve %s --hash %s`\n", p.ID, p.ReportHash)
	}
	return err
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func planList(e *env, args []string) error {
	fs := flags(e, "plan list")
	asJSON := jsonFlag(fs)
	svc, _, done, err := readPlans(e, fs, args, "", nil)
	if err != nil {
		return err
	}
	defer done()
	list, err := svc.List(e.ctx, 100)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(e.stdout, map[string]any{"plans": list})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tACTION\tKIND\tTARGETS\tDONE\tREQUESTER\tCREATED\tREASON")
	for _, p := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", p.ID, p.Status, p.Action, p.Kind, p.Progress.Total, p.Progress.Done, p.Requester, since(p.Created), p.Reason)
	}
	return tw.Flush()
}

// plansOver is a plan service over the state store alone: enough to read
// plans and to set the freeze, not to validate or run them.
func plansOver(e *env, a *app) (*plan.Service, error) {
	return plan.OpenService(e.ctx, &plan.Service{Tenants: &tenant.Service{Store: a.store}, Config: planConfig(a.cfg.Plans)})
}

// readPlans is startArgs for the commands that only read plans, their
// events and the freeze: the plan service over the state store alone
// (plansOver). done closes the state store.
func readPlans(e *env, fs *flag.FlagSet, args []string, usage string, valid func(pos []string) bool) (svc *plan.Service, pos []string, done func(), err error) {
	a, pos, err := startArgs(e, fs, args, openPlanStore, usage, valid)
	if err != nil {
		return nil, nil, nil, err
	}
	if svc, err = plansOver(e, a); err != nil {
		a.Close()
		return nil, nil, nil, err
	}
	return svc, pos, func() { a.Close() }, nil
}

// plansAs is plansOver for the person --actor or --token names: the
// commands that change plan records without running anything (the freeze,
// event retries). done closes the state store.
func plansAs(e *env, name, token string) (svc *plan.Service, actor plan.Actor, done func(), err error) {
	a, err := openPlanStore(e)
	if err != nil {
		return nil, plan.Actor{}, nil, err
	}
	if actor, err = who(e, a, name, token); err == nil {
		svc, err = plansOver(e, a)
	}
	if err != nil {
		a.Close()
		return nil, plan.Actor{}, nil, err
	}
	return svc, actor, func() { a.Close() }, nil
}

// planConfig is lifeline.yaml's plans: section as the plan engine takes it
// (config has validated it; zero values take the engine's defaults).
func planConfig(c config.Plans) plan.Config {
	out := plan.Config{MaxTenants: c.Caps.Tenants, MaxShare: float64(c.Caps.Share), Handful: c.Handful, HandfulWindow: c.HandfulWindow.D(),
		InternalColumn: c.Internal.Column, Waves: c.Waves, Bake: c.Bake.D(), Deadline: c.Deadline.D(),
		MaxFailedShare: float64(c.Checks.MaxFailedShare), Checks: c.Checks.Webhooks, CheckTimeout: c.Checks.Timeout.D(), Events: c.Events}
	for _, q := range c.Internal.Queries {
		out.Internal = append(out.Internal, plan.InternalQuery{Product: q.Product, Query: q.Query})
	}
	return out
}

// openPlanStore opens only the state store: listing and showing plans
// needs no product database.
func openPlanStore(e *env) (*app, error) { return openStore(e) }

func planShow(e *env, args []string) error {
	fs := flags(e, "plan show")
	asJSON := jsonFlag(fs)
	svc, pos, done, err := readPlans(e, fs, args, "usage: lifeline plan show ID", oneArg)
	if err != nil {
		return err
	}
	defer done()
	p, err := svc.Get(e.ctx, pos[0])
	if err != nil {
		return err
	}
	if !*asJSON && p.Status == plan.Draft && p.Note != "" {
		fmt.Fprintf(e.stdout, "plan %s: draft, refused\n", p.ID)
		if p.Report != nil {
			p.Report.Text(e.stdout)
		}
		return nil
	}
	return showPlan(e, p, nil, *asJSON, true)
}

// planStep is the shape of the commands that act on one plan by ID.
func planStep(e *env, name string, args []string, extra func(fs *flag.FlagSet) func(pa *planApp, id string, who plan.Actor) (*plan.Plan, error)) error {
	fs := flags(e, "plan "+name)
	nameFlag, token := identity(fs)
	asJSON := jsonFlag(fs)
	act := extra(fs)
	pa, pos, err := startArgs(e, fs, args, openPlans, "usage: lifeline plan "+name+" ID", oneArg)
	if err != nil {
		return err
	}
	defer pa.Close()
	who, err := who(e, pa.app, *nameFlag, *token)
	if err != nil {
		return err
	}
	p, err := act(pa, pos[0], who)
	if p == nil && err == nil {
		p, err = pa.plans.Get(e.ctx, pos[0])
	}
	return showPlan(e, p, err, *asJSON, false)
}

func planApprove(e *env, args []string) error {
	return planStep(e, "approve", args, func(fs *flag.FlagSet) func(*planApp, string, plan.Actor) (*plan.Plan, error) {
		hash := fs.String("hash", "", "the report hash you reviewed (`lifeline plan show ID`); refused if it changed")
		confirm := fs.Int("confirm", 0, "purge plans: the number of targets, typed")
		return func(pa *planApp, id string, who plan.Actor) (*plan.Plan, error) {
			return pa.plans.Approve(e.ctx, plan.ApproveRequest{ID: id, Actor: who, Hash: *hash, Confirm: *confirm})
		}
	})
}

func planRun(e *env, args []string) error {
	return planStep(e, "run", args, func(fs *flag.FlagSet) func(*planApp, string, plan.Actor) (*plan.Plan, error) {
		return func(pa *planApp, id string, who plan.Actor) (*plan.Plan, error) {
			return pa.plans.Run(e.ctx, id, who)
		}
	})
}

func planPause(e *env, args []string) error {
	return planStep(e, "pause", args, func(fs *flag.FlagSet) func(*planApp, string, plan.Actor) (*plan.Plan, error) {
		reason := fs.String("reason", "", "why (shown on the plan)")
		return func(pa *planApp, id string, who plan.Actor) (*plan.Plan, error) {
			return pa.plans.Pause(e.ctx, id, who, *reason)
		}
	})
}

// planResume resumes a paused plan and runs it on.
func planResume(e *env, args []string) error {
	return planStep(e, "resume", args, func(fs *flag.FlagSet) func(*planApp, string, plan.Actor) (*plan.Plan, error) {
		return func(pa *planApp, id string, who plan.Actor) (*plan.Plan, error) {
			if _, err := pa.plans.Resume(e.ctx, id, who); err != nil {
				return nil, err
			}
			return pa.plans.Run(e.ctx, id, who)
		}
	})
}

// planPromote passes the gate waiting for a person and runs the plan on.
func planPromote(e *env, args []string) error {
	return planStep(e, "promote", args, func(fs *flag.FlagSet) func(*planApp, string, plan.Actor) (*plan.Plan, error) {
		return func(pa *planApp, id string, who plan.Actor) (*plan.Plan, error) {
			if !who.Role.Allows(state.RoleApprover) {
				return nil, fault.New(fault.Unauthorized, "ask an approver", "promoting a gate needs the approver role; %s has %s", who.Name, who.Role)
			}
			if _, err := pa.plans.Promote(e.ctx, id, who); err != nil {
				return nil, err
			}
			return pa.plans.Run(e.ctx, id, who)
		}
	})
}

func planAbort(e *env, args []string) error {
	return planStep(e, "abort", args, func(fs *flag.FlagSet) func(*planApp, string, plan.Actor) (*plan.Plan, error) {
		reason := fs.String("reason", "", "why (shown on the plan)")
		return func(pa *planApp, id string, who plan.Actor) (*plan.Plan, error) {
			return pa.plans.Abort(e.ctx, id, who, *reason)
		}
	})
}

func planRollback(e *env, args []string) error {
	return planStep(e, "rollback", args, func(fs *flag.FlagSet) func(*planApp, string, plan.Actor) (*plan.Plan, error) {
		return func(pa *planApp, id string, who plan.Actor) (*plan.Plan, error) {
			return pa.plans.Rollback(e.ctx, id, who)
		}
	})
}

// demoPlans is the plan step of `lifeline demo`: the April mistake made as
// a plan is refused; the right app removal runs in waves with restore
// tests, and rolls back to the byte. demo.go calls it after the raw SQL
// replay with the sites it used (the internal sites 1-3 are added).
func demoPlans(e *env, a *app, sites []string, say func(string, ...any)) error {
	ps, closePlans, err := newPlans(e, a)
	if err != nil {
		return err
	}
	defer closePlans()
	ps.OnChange = func(_ context.Context, p *plan.Plan) { progressLine(e.stdout, p) }
	targets := append([]string{"1", "2", "3"}, sites...)
	say("$ lifeline plan create --action delete --kind app --targets %s --reason \"remove insight\"", strings.Join(targets, ","))
	_, err = ps.Create(e.ctx, plan.CreateRequest{Action: "delete", Kind: tenant.KindApp, Targets: targets, Reason: "remove insight", Requester: "april-script"})
	say("refused before anything ran: %v", err)

	apps := make([]string, len(targets))
	for i, k := range targets {
		apps[i] = k + "/tracker/insight"
	}
	digests := map[string]string{}
	tracker := a.tenants.Products[0]
	for _, k := range targets {
		if digests[k], _, err = demo.Digest(e.ctx, tracker.DB.SQL(), "tracker", k); err != nil {
			return err
		}
	}
	bake := plan.Duration(2 * time.Second)
	requester, approver := plan.Actor{Name: "alice", Role: state.RoleOperator}, plan.Actor{Name: "bob", Role: state.RoleAdmin}
	var done []*plan.Plan
	for _, action := range []string{"deactivate", "delete"} {
		say("\n$ lifeline plan create --action %s --kind app --targets 1/tracker/insight,… --waves internal,10%%,100%% --bake 2s", action)
		p, err := ps.Create(e.ctx, plan.CreateRequest{Action: action, Kind: tenant.KindApp, Targets: apps, Reason: "remove the insight app",
			Requester: requester.Name, Waves: []string{"internal", "10%", "100%"}, Bake: &bake})
		if err != nil {
			return err
		}
		say("%d app targets in %d waves, %d rows; approval needs %s. The requester cannot approve; bob (admin) does:", len(apps), len(p.Report.Waves), p.Report.Totals.RowsTotal, p.RequiredRole)
		if _, err := ps.Approve(e.ctx, plan.ApproveRequest{ID: p.ID, Actor: requester, Hash: p.ReportHash}); err != nil {
			say("  alice approving her own plan: %v", err)
		}
		if p, err = ps.Approve(e.ctx, plan.ApproveRequest{ID: p.ID, Actor: approver, Hash: p.ReportHash}); err != nil {
			return err
		}
		if p, err = ps.Run(e.ctx, p.ID, approver); err != nil {
			return err
		}
		done = append(done, p)
	}
	say("\nThe app is gone from %d sites; their other data is untouched. Now the tested way back:", len(targets))
	for i := len(done) - 1; i >= 0; i-- {
		say("$ lifeline plan rollback %s", done[i].ID)
		if _, err := ps.Rollback(e.ctx, done[i].ID, approver); err != nil {
			return err
		}
	}
	same := 0
	for _, k := range targets {
		d, _, err := demo.Digest(e.ctx, tracker.DB.SQL(), "tracker", k)
		if err != nil {
			return err
		}
		if d == digests[k] {
			same++
		}
	}
	say("%d of %d sites are back byte for byte.", same, len(targets))
	return nil
}
