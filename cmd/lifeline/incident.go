package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"lifeline/internal/contacts"
	"lifeline/internal/fault"
	"lifeline/internal/notify"
	"lifeline/internal/plan"
	"lifeline/internal/state"
	"lifeline/internal/status"
	"lifeline/internal/tenant"
	"lifeline/internal/web"
)

// incidentCmd manages status page incidents straight in the state store; a
// running `lifeline serve` shows the change within its poll interval.
func incidentCmd(e *env, args []string) error {
	return subcommand(e, "incident", args, map[string]func(*env, []string) error{
		"open": incidentOpen, "update": incidentUpdate, "resolve": incidentResolve, "list": incidentList,
	})
}

// multi is a flag that may be given several times.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ", ") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

// updateFlags are the flags of every incident subcommand that publishes: the
// template's parts, English and Chinese, component changes and links.
type updateFlags struct {
	from                      string
	status, impact, template  string
	carryOver                 bool
	components, links, groups multi
	text                      map[string]*[2]string // field → en, zh
	timelineConf, percentConf string
	dataLossConf, fullerAt    string
	percent, actor            string
	tenants                   string
	allowUnknownTenants       bool
	asJSON                    bool
}

// textFields are the template's text parts, as flag names.
var textFields = []string{"situation", "timeline", "data-loss", "support", "support-no-login", "known", "unknown"}

func newUpdateFlags(e *env, name string) (*flag.FlagSet, *updateFlags) {
	fs := flags(e, name)
	u := &updateFlags{text: map[string]*[2]string{}}
	fs.StringVar(&u.from, "from", "", "read the request as JSON (the /api/v1/incidents body) from FILE, or - for stdin; flags override it")
	fs.StringVar(&u.status, "status", "", "investigating, identified, monitoring (incidents); scheduled, in_progress, verifying (maintenances)")
	fs.StringVar(&u.impact, "impact", "", "none, minor, major or critical")
	fs.StringVar(&u.template, "template", "", "start from the stored template NAME")
	fs.BoolVar(&u.carryOver, "carry-over", false, "start from the previous update and restate only what changed")
	fs.Var(&u.components, "component", "NAME=STATUS, e.g. tracker=major_outage (repeatable)")
	fs.Var(&u.links, "link", "restore:ID or plan:ID whose verified progress fills the % restored (repeatable)")
	fs.Var(&u.groups, "affected", `affected group "KIND NAME COUNT", e.g. "product tracker 883" (repeatable)`)
	fs.StringVar(&u.tenants, "tenants", "", "affected tenants whose authorised contacts get a private notice of this and every later update: KEY[,KEY…] or @FILE (restore links add theirs)")
	fs.BoolVar(&u.allowUnknownTenants, "allow-unknown-tenants", false, "accept --tenants keys that neither the contacts vault nor the products know (refused by default)")
	for _, f := range textFields {
		v := &[2]string{}
		u.text[f] = v
		fs.StringVar(&v[0], f, "", "template part: "+f)
		fs.StringVar(&v[1], f+"-zh", "", "the same in Simplified Chinese")
	}
	fs.StringVar(&u.timelineConf, "timeline-confidence", "", "low, medium or high")
	fs.StringVar(&u.fullerAt, "fuller-picture-at", "", "when a fuller picture is expected (RFC 3339)")
	fs.StringVar(&u.percent, "percent-restored", "", "0–100 (filled from verified restores when --link is given)")
	fs.StringVar(&u.percentConf, "percent-confidence", "", "low, medium or high")
	fs.StringVar(&u.dataLossConf, "data-loss-confidence", "", "low, medium or high")
	fs.StringVar(&u.actor, "actor", "", "who publishes (default $LIFELINE_ACTOR, else user@host)")
	fs.BoolVar(&u.asJSON, "json", false, "print the incident as JSON")
	return fs, u
}

// request builds the API request shape from --from and the flags, so the
// CLI, the API and the form check the same things in the same place.
func (u *updateFlags) request(e *env) (status.Request, error) {
	var q status.Request
	if u.from != "" {
		var r io.Reader = e.stdin
		if u.from != "-" {
			f, err := os.Open(u.from)
			if err != nil {
				return q, fault.Wrap(err, fault.Invalid, "give a readable JSON file, or - for stdin", "--from %s", u.from)
			}
			defer f.Close()
			r = f
		}
		dec := json.NewDecoder(r)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			return q, fault.Wrap(err, fault.Invalid, "write the same JSON object POST /api/v1/incidents takes", "--from %s", u.from)
		}
	}
	if u.status != "" {
		q.Status = status.IncidentStatus(u.status)
	}
	if u.impact != "" {
		q.Impact = status.Impact(u.impact)
	}
	if u.template != "" {
		q.Template = u.template
	}
	q.CarryOver = q.CarryOver || u.carryOver
	q.Links = append(q.Links, u.links...)
	tenants, err := tenantList(u.tenants)
	if err != nil {
		return q, err
	}
	q.Tenants = append(q.Tenants, tenants...)
	q.AllowUnknownTenants = q.AllowUnknownTenants || u.allowUnknownTenants
	for _, c := range u.components {
		ch, err := status.ParseComponentChange(c)
		if err != nil {
			return q, err
		}
		q.Components = append(q.Components, ch)
	}
	for _, g := range u.groups {
		ag, err := status.ParseAffectedGroup(g)
		if err != nil {
			return q, err
		}
		q.Body.AffectedGroups = append(q.Body.AffectedGroups, ag)
	}
	b := &q.Body
	for f, dst := range map[string]*status.Text{"situation": &b.Situation, "timeline": &b.Timeline, "data-loss": &b.DataLoss, "support": &b.Support,
		"support-no-login": &b.SupportNoLogin, "known": &b.Known, "unknown": &b.Unknown} {
		// A flag replaces one language of what --from gave.
		if en := u.text[f][0]; en != "" {
			dst.En = en
		}
		if zh := u.text[f][1]; zh != "" {
			dst.Zh = zh
		}
	}
	for _, c := range []struct {
		v   string
		dst *status.Confidence
	}{{u.timelineConf, &b.TimelineConfidence}, {u.percentConf, &b.PercentConfidence}, {u.dataLossConf, &b.DataLossConfidence}} {
		if c.v != "" {
			*c.dst = status.Confidence(c.v)
		}
	}
	if u.fullerAt != "" {
		t, err := time.Parse(time.RFC3339, u.fullerAt)
		if err != nil {
			return q, fault.New(fault.Invalid, "use RFC 3339, e.g. 2026-04-05T15:00:00Z", "bad --fuller-picture-at %q", u.fullerAt)
		}
		b.FullerPictureAt = t.UTC()
	}
	if u.percent != "" {
		p, err := strconv.ParseFloat(strings.TrimSuffix(u.percent, "%"), 64)
		if err != nil {
			return q, fault.New(fault.Invalid, "give a number between 0 and 100", "bad --percent-restored %q", u.percent)
		}
		b.PercentRestored = &p
	}
	return q, nil
}

// statusConfig is the status service's config for lifeline.yaml: the
// cadence, the life of targeted notices' links, the restore records that
// fill in progress and the tenants of restore: links, and the contacts
// vault, which checks affected tenants' keys and gives the private pages
// tenants' lifecycle states. The vault is opened on first use (serve's own
// vault service opens later) and closed when e's context ends.
func statusConfig(e *env, a *app, log *slog.Logger) (status.Config, error) {
	// Plans are only read here, but their tables must exist for a plan:
	// link to be found or refused.
	plans, err := plan.OpenService(e.ctx, &plan.Service{Tenants: &tenant.Service{Store: a.store}})
	if err != nil {
		return status.Config{}, err
	}
	products := make([]string, 0, len(a.cfg.Products))
	for _, p := range a.cfg.Products {
		products = append(products, p.Name)
	}
	links := &status.LinkSource{Ops: a.store, Plans: planRuns{plans: plans, products: products}}
	vault := &vaultReader{a: a, log: log}
	context.AfterFunc(e.ctx, vault.Close)
	return status.Config{Store: a.store, Log: log, Cadence: a.cfg.Status.Cadence.D(), TenantLinkTTL: a.cfg.Status.TenantLinkTTL.D(),
		Progress: links, Targets: links, States: vault, Registry: vault}, nil
}

// planRuns reads the plans behind incidents' plan: links (status.Plans)
// from the plan runner's records, so the status package needs nothing of
// the plan package.
type planRuns struct {
	plans *plan.Service
	// products are every configured product: where a site target is when
	// its plan has no report to say.
	products []string
}

// PlanRun gives a plan's action and, per step, the tenant, the products
// its target covers, the step's status and whether its check passed: a
// done step's verification, or a rollback, which is only recorded once the
// tenant's rows are those it had before the plan.
func (r planRuns) PlanRun(ctx context.Context, id string) (status.PlanRun, error) {
	p, err := r.plans.Get(ctx, id)
	if err != nil {
		return status.PlanRun{}, err
	}
	in := map[string][]string{}
	if p.Report != nil {
		for _, t := range p.Report.Targets {
			in[t.Target] = slices.Sorted(maps.Keys(t.States))
		}
	}
	out := status.PlanRun{Action: p.Action}
	for _, st := range p.Steps {
		products := in[st.Target]
		if t, err := tenant.ParseTarget(st.Target); err == nil && t.Product != "" {
			products = []string{t.Product}
		} else if len(products) == 0 {
			products = r.products
		}
		out.Steps = append(out.Steps, status.PlanStep{Tenant: st.Tenant, Products: products, Status: string(st.Status),
			Verified: st.Status == plan.StepRolledBack || (st.Status == plan.StepDone && st.Verify == "passed"), Finished: st.Finished})
	}
	return out, nil
}

// openStatus opens the state store and the status service on it.
func openStatus(e *env) (*app, *status.Service, error) {
	a, err := openStore(e)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := statusConfig(e, a, a.log)
	var svc *status.Service
	if err == nil {
		svc, err = status.New(e.ctx, cfg)
	}
	if err == nil {
		err = syncComponents(e, a, svc)
	}
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, svc, nil
}

// syncComponents makes every configured product a component in a
// "Products" group, so incidents can name products before any serve ran.
func syncComponents(e *env, a *app, svc *status.Service) error {
	if len(a.cfg.Products) == 0 {
		return nil
	}
	_, have, err := svc.Components(e.ctx)
	if err != nil {
		return err
	}
	missing := false
	for _, p := range a.cfg.Products {
		if !slices.ContainsFunc(have, func(c status.Component) bool { return c.Name.En == p.Name }) {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	g, err := svc.PutGroup(e.ctx, status.Group{Name: status.Text{En: "Products", Zh: "产品"}})
	if err != nil {
		return err
	}
	for i, p := range a.cfg.Products {
		if slices.ContainsFunc(have, func(c status.Component) bool { return c.Name.En == p.Name }) {
			continue
		}
		if _, err := svc.PutComponent(e.ctx, status.Component{Name: status.Text{En: p.Name}, GroupID: g.ID, Position: i}); err != nil {
			return err
		}
	}
	return nil
}

func incidentOpen(e *env, args []string) error {
	fs, u := newUpdateFlags(e, "incident open")
	name := fs.String("name", "", "the title customers read")
	nameZh := fs.String("name-zh", "", "the title in Simplified Chinese")
	maint := fs.Bool("maintenance", false, "schedule a maintenance instead (with --from-time and --until)")
	fromT := fs.String("from-time", "", "maintenance start (RFC 3339)")
	until := fs.String("until", "", "maintenance end (RFC 3339)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	q, err := u.request(e)
	if err != nil {
		return err
	}
	if *name != "" {
		q.Name = *name
	}
	if *nameZh != "" {
		q.NameZh = *nameZh
	}
	a, svc, err := openStatus(e)
	if err != nil {
		return err
	}
	defer a.Close()
	if *maint {
		q.Kind = status.KindMaintenance
	}
	for _, p := range []struct {
		s   string
		dst *time.Time
	}{{*fromT, &q.ScheduledFor}, {*until, &q.ScheduledUntil}} {
		if p.s == "" {
			continue
		}
		if *p.dst, err = time.Parse(time.RFC3339, p.s); err != nil {
			return fault.New(fault.Invalid, "use RFC 3339, e.g. 2026-04-05T15:00:00Z", "bad maintenance time %q", p.s)
		}
	}
	inc, err := svc.Open(e.ctx, q, actor(e, u.actor))
	if err != nil {
		return err
	}
	return printIncident(e, inc, u.asJSON, "opened")
}

func incidentUpdate(e *env, args []string) error { return incidentPublish(e, args, false) }

func incidentResolve(e *env, args []string) error { return incidentPublish(e, args, true) }

func incidentPublish(e *env, args []string, resolve bool) error {
	verb := "update"
	if resolve {
		verb = "resolve"
	}
	fs, u := newUpdateFlags(e, "incident "+verb)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("lifeline incident %s takes one incident id; list them with `lifeline incident list`", verb)
	}
	q, err := u.request(e)
	if err != nil {
		return err
	}
	a, svc, err := openStatus(e)
	if err != nil {
		return err
	}
	defer a.Close()
	var inc *status.Incident
	if resolve {
		inc, err = svc.Resolve(e.ctx, pos[0], q.Draft(actor(e, u.actor)))
	} else {
		inc, err = svc.PostUpdate(e.ctx, pos[0], q.Draft(actor(e, u.actor)))
	}
	if err != nil {
		return err
	}
	return printIncident(e, inc, u.asJSON, verb+"d")
}

func incidentList(e *env, args []string) error {
	fs := flags(e, "incident list")
	asJSON := fs.Bool("json", false, "print JSON")
	all := fs.Bool("all", false, "include resolved incidents and completed maintenances of the last 90 days")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	a, svc, err := openStatus(e)
	if err != nil {
		return err
	}
	defer a.Close()
	list, err := svc.Incidents(e.ctx)
	if err != nil {
		return err
	}
	shown := []status.Incident{}
	for _, i := range list {
		if *all || !i.Status.Closed() {
			shown = append(shown, i)
		}
	}
	overdue := map[string]bool{}
	for _, o := range status.CheckCadence(shown, time.Now(), svc.Cadence()) {
		overdue[o.IncidentID] = true
	}
	if *asJSON {
		for i := range shown {
			shown[i].Overdue = overdue[shown[i].ID]
		}
		return printJSON(e.stdout, map[string]any{"incidents": shown})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tIMPACT\tSTATUS\tLAST UPDATE\tNAME")
	for _, i := range shown {
		last := since(i.LastUpdate().Created)
		if overdue[i.ID] {
			last += " OVERDUE"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", i.ID, i.Kind, i.Impact, i.Status, last, i.Name.In(status.English))
	}
	return tw.Flush()
}

func printIncident(e *env, inc *status.Incident, asJSON bool, verb string) error {
	if asJSON {
		return printJSON(e.stdout, inc)
	}
	fmt.Fprintf(e.stdout, "%s\n", inc.ID)
	fmt.Fprintf(e.stderr, "%s %s %q: %s, impact %s\n", verb, inc.Kind, inc.Name.In(status.English), inc.Status, inc.Impact)
	if inc.Tenants > 0 {
		fmt.Fprintf(e.stderr, "the contacts of %d affected tenants get a private notice (sent by lifeline serve)\n", inc.Tenants)
	}
	return nil
}

// statusPage builds the public status page for `lifeline serve` over the
// state store, with the configured products as components. The caller sets
// it as web.Server.Status and runs its Run loop while serving.
func statusPage(e *env, a *app, log *slog.Logger) (*web.StatusPage, error) {
	cfg, err := statusConfig(e, a, log)
	if err != nil {
		return nil, err
	}
	svc, err := status.New(e.ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := syncComponents(e, a, svc); err != nil {
		return nil, err
	}
	return &web.StatusPage{Service: svc, Name: a.cfg.Status.Name, URL: a.cfg.Status.PublicURL, Log: log}, nil
}

// startNotices starts the delivery of notices for `lifeline serve`: the
// mail server from smtp:, webhooks, River's workers on the state store, and
// the public subscription pages on page. The returned function stops it.
func startNotices(e *env, a *app, page *web.StatusPage, log *slog.Logger) (func(), error) {
	vault := &vaultReader{a: a, log: log}
	cfg := notify.Config{Store: a.store, Status: page.Service, PageName: a.cfg.Status.Name, PublicURL: a.cfg.Status.PublicURL,
		WebhookRate: a.cfg.Notify.WebhookRate, DisableAfter: a.cfg.Notify.DisableAfter, Recipients: vault, Bounces: vault, Log: log}
	if a.store.Engine() == state.EnginePostgres {
		cfg.PostgresURL = a.cfg.State
	}
	var mail *notify.SMTPSender
	if m := a.cfg.SMTP; m.Host != "" {
		pw, err := a.cfg.SMTPPassword(e.getenv)
		if err != nil {
			return nil, err
		}
		mail, err = notify.NewSMTPSender(notify.SMTPConfig{Host: m.Host, Port: m.Port, From: m.From, Username: m.Username, Password: pw, TLS: m.TLS})
		if err != nil {
			return nil, err
		}
		cfg.Email, cfg.EmailRate = mail, m.Rate
		log.Info("notices: mail goes through the configured server", "smtp", mail)
	} else {
		log.Warn("notices: no smtp: in lifeline.yaml, so nobody can subscribe and email notices wait; webhooks are delivered")
	}
	svc, err := notify.New(e.ctx, cfg)
	if err != nil {
		vault.Close()
		return nil, err
	}
	if err := svc.Start(e.ctx); err != nil {
		vault.Close()
		return nil, err
	}
	page.Subscriptions = svc
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), 15*time.Second)
		defer cancel()
		if err := svc.Stop(ctx); err != nil {
			log.Warn("notices: stopping delivery", "err", err)
		}
		if mail != nil {
			_ = mail.Close()
		}
		vault.Close()
	}, nil
}

// vaultReader is the contacts vault as targeted notices and the tenants'
// private pages read it: who to tell about a tenant, and the tenant's
// lifecycle state. It opens the vault on first use, so a vault that cannot
// be opened makes those notices wait (and the pages omit the state) without
// stopping serve; a failed open is tried again on the next use.
type vaultReader struct {
	a   *app
	log *slog.Logger

	mu     sync.Mutex
	store  *contacts.Store
	svc    *contacts.Service
	closed bool
}

// open returns the vault's service, opening it if needed.
func (v *vaultReader) open(ctx context.Context) (*contacts.Service, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.svc != nil {
		return v.svc, nil
	}
	if v.closed {
		return nil, fault.New(fault.Unavailable, "", "the contacts vault reader is closed: serve is stopping")
	}
	store, err := contacts.OpenStore(ctx, v.a.cfg.Vault.Database, v.a.cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg := contacts.Config{Store: store, Ledger: v.a.store, StaleAfter: v.a.cfg.Vault.StaleAfter.D(), Log: v.log}
	if v.a.tenants != nil {
		cfg.Directory = v.a.tenants
	}
	svc, err := contacts.New(cfg)
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	v.store, v.svc = store, svc
	return svc, nil
}

// Close closes the vault if it was opened; it is not opened again.
func (v *vaultReader) Close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.store != nil {
		_ = v.store.Close()
	}
	v.store, v.svc, v.closed = nil, nil, true
}

// Recipients implements notify.Recipients with the vault's ranking of each
// site's contacts (contacts for site:KEY), audited as one read.
func (v *vaultReader) Recipients(ctx context.Context, tenants []string) (map[string][]notify.Recipient, error) {
	svc, err := v.open(ctx)
	if err != nil {
		return nil, err
	}
	res, err := svc.ForSites(ctx, tenants, "lifeline serve", "targeted incident notice")
	if err != nil {
		return nil, err
	}
	out := make(map[string][]notify.Recipient, len(res))
	for k, r := range res {
		for _, c := range r.Contacts {
			rc := notify.Recipient{ContactID: c.ID, Email: c.Email, Name: c.Name, Language: c.Language, Role: string(c.Role), Reachable: c.Reachable}
			if !c.BouncedAt.IsZero() {
				rc.Bounced = c.BouncedAt.UTC().Format("2006-01-02 15:04 UTC") + ", " + c.BounceReason
			}
			out[k] = append(out[k], rc)
		}
	}
	return out, nil
}

// Revision implements notify.Recipients: the vault's change counter.
func (v *vaultReader) Revision(ctx context.Context) (int64, error) {
	svc, err := v.open(ctx)
	if err != nil {
		return 0, err
	}
	return svc.Revision(ctx)
}

// Bounced implements notify.Bounces: the vault records the bounce as a
// versioned change of the contact (action "bounce", source "notify"), and
// ranks the address unreachable from then on, until a verification clears
// it.
func (v *vaultReader) Bounced(ctx context.Context, email, reason string) error {
	svc, err := v.open(ctx)
	if err != nil {
		return err
	}
	return svc.MarkBounced(ctx, email, reason, "notify", "lifeline serve")
}

// UnknownTenants implements status.TenantRegistry: a key is known if the
// vault knows it (it keeps deleted and purged sites) or, failing that, a
// product has it (a site not synced yet). Only if some key is in neither
// and one of them could not be read is it an error.
func (v *vaultReader) UnknownTenants(ctx context.Context, keys []string) ([]string, error) {
	known := map[string]bool{}
	svc, errs := v.open(ctx)
	if errs == nil {
		known, errs = svc.KnownTenants(ctx, keys)
	}
	rest := slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return known[k] })
	if len(rest) > 0 && v.a.tenants != nil {
		list, err := v.a.tenants.List(ctx)
		errs = errors.Join(errs, err)
		inProducts := map[string]bool{}
		for _, t := range list {
			inProducts[t.Key] = true
		}
		rest = slices.DeleteFunc(rest, func(k string) bool { return inProducts[k] })
	}
	if len(rest) > 0 && errs != nil {
		return nil, errs
	}
	return rest, nil
}

// TenantStates implements status.TenantStates from the vault.
func (v *vaultReader) TenantStates(ctx context.Context, tenant string) (map[string]string, time.Time, error) {
	svc, err := v.open(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	return svc.TenantStates(ctx, tenant)
}
