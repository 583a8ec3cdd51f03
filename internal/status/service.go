package status

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"lifeline/internal/fault"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Config configures a Service. Store is required; the rest have defaults.
type Config struct {
	Store Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Policy says which update fields each impact requires; nil means
	// DefaultPolicy.
	Policy Policy
	// Cadence is how old the last update of an open major or critical
	// incident may get before it is overdue; 0 means DefaultCadence.
	Cadence time.Duration
	// Progress, if set, fills the percentage restored of incidents linked to
	// restores or plans.
	Progress Progress
	// Targets, if set, gives the tenants that linked restores and plans
	// affect (their contacts get targeted notices) and each one's restore
	// progress for its private page.
	Targets Targets
	// States, if set, gives a tenant's lifecycle state for its private page.
	States TenantStates
	// Registry, if set, says which tenant keys exist: keys named as
	// affected tenants that it does not know are refused (see
	// Draft.AllowUnknownTenants).
	Registry TenantRegistry
	// TenantLinkTTL is how long the signed link in a targeted notice stays
	// valid; 0 means DefaultTenantLinkTTL.
	TenantLinkTTL time.Duration
	// Rand is where confirmation tokens, webhook secrets and link keys
	// come from; nil means crypto/rand. Tests inject a fixed stream so a
	// secret's encoding (base64 '+' and '/', which HTML escapes) is the
	// same on every run.
	Rand io.Reader
	Log  *slog.Logger
}

// Service is the status page's domain service. It is safe for concurrent use.
type Service struct {
	db        sqlStore
	now       func() time.Time
	policy    Policy
	cadence   time.Duration
	progress  Progress
	targets   Targets
	states    TenantStates
	registry  TenantRegistry
	tenantTTL time.Duration
	rand      io.Reader
	log       *slog.Logger

	// key caches the link-signing key (subscribers.go), which never
	// changes once made: every notice signs an unsubscribe link.
	keyMu sync.Mutex
	key   []byte
}

// New applies the status migrations to the store and returns the service.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, fault.New(fault.Internal, "", "status.New: no store")
	}
	s := &Service{db: sqlStore{st: cfg.Store}, now: cfg.Now, policy: cfg.Policy, cadence: cfg.Cadence, progress: cfg.Progress, rand: cfg.Rand, log: cfg.Log,
		targets: cfg.Targets, states: cfg.States, registry: cfg.Registry, tenantTTL: cfg.TenantLinkTTL}
	if s.tenantTTL <= 0 {
		s.tenantTTL = DefaultTenantLinkTTL
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.policy == nil {
		s.policy = DefaultPolicy()
	}
	if s.cadence <= 0 {
		s.cadence = DefaultCadence
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	if err := cfg.Store.Migrate(ctx, "status", sub); err != nil {
		return nil, err
	}
	return s, nil
}

// Cadence returns the configured update interval.
func (s *Service) Cadence() time.Duration { return s.cadence }

// Policy returns the required-fields policy in force.
func (s *Service) Policy() Policy { return s.policy }

// stamp is now at the store's precision, so what is returned equals what a
// later read returns.
func (s *Service) stamp() time.Time { return fromMicros(s.now().UnixMicro()) }

// Revision changes whenever anything on the page changes, in any process.
func (s *Service) Revision(ctx context.Context) (int64, error) { return s.db.revision(ctx) }

// PutGroup creates the group named g.Name.En, or updates it.
func (s *Service) PutGroup(ctx context.Context, g Group) (Group, error) {
	if strings.TrimSpace(g.Name.En) == "" {
		return g, fault.New(fault.Invalid, "give the group an English name", "group name is empty")
	}
	now := s.stamp()
	g.ID, g.Created, g.Updated = newID(), now, now
	err := s.db.putGroup(ctx, &g)
	return g, err
}

// PutComponent creates the component named c.Name.En, or updates it. The
// name is the key, so wiring can sync components from the config on every
// start without duplicating them.
func (s *Service) PutComponent(ctx context.Context, c Component) (Component, error) {
	if strings.TrimSpace(c.Name.En) == "" {
		return c, fault.New(fault.Invalid, "give the component an English name", "component name is empty")
	}
	if c.GroupID != "" {
		gs, err := s.db.groups(ctx)
		if err != nil {
			return c, err
		}
		if !slices.ContainsFunc(gs, func(g Group) bool { return g.ID == c.GroupID }) {
			return c, fault.New(fault.NotFound, "create the group first", "no group with id %q", c.GroupID)
		}
	}
	now := s.stamp()
	c.ID, c.Created, c.Updated = newID(), now, now
	err := s.db.putComponent(ctx, &c)
	return c, err
}

// Components returns the groups and the components, in page order.
func (s *Service) Components(ctx context.Context) ([]Group, []Component, error) {
	gs, err := s.db.groups(ctx)
	if err != nil {
		return nil, nil, err
	}
	cs, err := s.db.components(ctx)
	return gs, cs, err
}

// resolveChanges maps component references (id or English name, any case)
// to ids.
func (s *Service) resolveChanges(ctx context.Context, in []ComponentChange) ([]ComponentChange, error) {
	if len(in) == 0 {
		return nil, nil
	}
	cs, err := s.db.components(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ComponentChange, 0, len(in))
	for _, ch := range in {
		i := slices.IndexFunc(cs, func(c Component) bool {
			return c.ID == ch.ComponentID || strings.EqualFold(c.Name.En, ch.ComponentID)
		})
		if i < 0 {
			names := make([]string, len(cs))
			for j, c := range cs {
				names[j] = c.Name.En
			}
			return nil, fault.New(fault.NotFound, "known components: "+strings.Join(names, ", "), "no component %q", ch.ComponentID)
		}
		if _, err := ParseComponentStatus(string(ch.Status)); err != nil {
			return nil, err
		}
		if slices.ContainsFunc(out, func(o ComponentChange) bool { return o.ComponentID == cs[i].ID }) {
			return nil, fault.New(fault.Invalid, "name each component once", "component %q given twice", ch.ComponentID)
		}
		out = append(out, ComponentChange{ComponentID: cs[i].ID, Status: ch.Status})
	}
	return out, nil
}

// Draft is what publishing an update takes. Fields left zero keep their
// current value (status, impact) or come from the template.
type Draft struct {
	Status IncidentStatus
	Impact Impact
	// Components sets component statuses, by id or English name.
	Components []ComponentChange
	// Links adds restores or plans ("restore:ID", "plan:ID") whose verified
	// progress fills the percentage restored and whose tenants' contacts
	// get targeted notices.
	Links []string
	// Tenants adds tenants (plain keys or site:KEY) whose authorised
	// contacts get a private notice of this update and every later one.
	Tenants []string
	// AllowUnknownTenants accepts Tenants the registry does not know (a
	// site gone from the products and never recorded by the vault, or a
	// vault that cannot answer now); by default they are refused.
	AllowUnknownTenants bool
	// Template names a stored template to start from; Body overrides it.
	Template string
	// CarryOver starts from the previous update's body, so an update can
	// restate only what changed. Off by default: every field is then a
	// deliberate statement.
	CarryOver bool
	Body      Body
	Author    string
}

// NewIncident is what opening an incident takes.
type NewIncident struct {
	Name Text
	Draft
}

// OpenIncident opens an incident with its first update. The update must
// satisfy the policy at the incident's impact.
func (s *Service) OpenIncident(ctx context.Context, n NewIncident) (*Incident, error) {
	inc := &Incident{ID: newID(), Kind: KindIncident, Name: n.Name, Impact: n.Impact, Status: n.Status}
	if err := s.begin(ctx, inc, &n.Draft); err != nil {
		return nil, err
	}
	if inc.Status == "" {
		inc.Status = Investigating
	}
	if inc.Status.Closed() {
		return nil, fault.New(fault.Invalid, "open it as investigating, identified or monitoring", "a new incident cannot be %s", inc.Status)
	}
	return inc, s.publish(ctx, inc, n.Draft, true)
}

// NewMaintenance is what scheduling a maintenance takes.
type NewMaintenance struct {
	Name           Text
	ScheduledFor   time.Time
	ScheduledUntil time.Time
	// Components go under_maintenance while the window is in progress.
	Components []string
	Draft
}

// ScheduleMaintenance records a maintenance window with its first update.
func (s *Service) ScheduleMaintenance(ctx context.Context, n NewMaintenance) (*Incident, error) {
	if n.ScheduledFor.IsZero() || !n.ScheduledUntil.After(n.ScheduledFor) {
		return nil, fault.New(fault.Invalid, "give a start and an end after it", "bad maintenance window %s – %s", n.ScheduledFor, n.ScheduledUntil)
	}
	inc := &Incident{ID: newID(), Kind: KindMaintenance, Name: n.Name, Impact: ImpactMaintenance, Status: Scheduled,
		ScheduledFor: n.ScheduledFor.UTC().Truncate(time.Microsecond), ScheduledUntil: n.ScheduledUntil.UTC().Truncate(time.Microsecond)}
	d := n.Draft
	d.Impact, d.Components = "", nil
	for _, c := range n.Components {
		d.Components = append(d.Components, ComponentChange{ComponentID: c, Status: UnderMaintenance})
	}
	if err := s.begin(ctx, inc, &d); err != nil {
		return nil, err
	}
	if d.Status != "" {
		inc.Status = d.Status
	}
	return inc, s.publish(ctx, inc, d, true)
}

// begin applies a draft's template title and impact to a new incident.
func (s *Service) begin(ctx context.Context, inc *Incident, d *Draft) error {
	if d.Template != "" {
		t, err := s.Template(ctx, d.Template)
		if err != nil {
			return err
		}
		inc.Name = t.Title.Over(inc.Name)
		if inc.Impact == "" && inc.Kind == KindIncident {
			inc.Impact = t.Impact
		}
		if d.Status == "" && inc.Kind == KindIncident {
			d.Status = t.Status
		}
	}
	if inc.Name.Empty() {
		return fault.New(fault.Invalid, "give the incident a name (a title customers will read)", "incident name is empty")
	}
	if inc.Kind == KindIncident {
		if inc.Impact == "" {
			return fault.New(fault.Invalid, "set the impact: none, minor, major or critical", "incident impact is not set")
		}
		if _, err := ParseImpact(string(inc.Impact)); err != nil {
			return err
		}
	}
	if d.Status != "" {
		inc.Status = d.Status
	}
	return nil
}

// PostUpdate publishes an update on an open incident or maintenance.
func (s *Service) PostUpdate(ctx context.Context, id string, d Draft) (*Incident, error) {
	inc, err := s.Incident(ctx, id)
	if err != nil {
		return nil, err
	}
	if inc.Status.Closed() && d.Status != Postmortem {
		return nil, fault.New(fault.Conflict, "open a new incident, or post a postmortem", "incident %s is already %s", id, inc.Status)
	}
	if d.Impact != "" {
		if inc.Kind != KindIncident {
			return nil, fault.New(fault.Invalid, "maintenances have no impact level", "cannot set the impact of maintenance %s", id)
		}
		if _, err := ParseImpact(string(d.Impact)); err != nil {
			return nil, err
		}
		inc.Impact = d.Impact
	}
	if d.Status != "" {
		inc.Status = d.Status
	}
	if inc.Status.Closed() {
		// Closing gives every touched component back, unless d says otherwise.
		for _, a := range inc.Affected {
			if !slices.ContainsFunc(d.Components, func(c ComponentChange) bool {
				return c.ComponentID == a.ComponentID || strings.EqualFold(c.ComponentID, a.Name.En)
			}) && a.New != Operational {
				d.Components = append(d.Components, ComponentChange{ComponentID: a.ComponentID, Status: Operational})
			}
		}
	}
	return inc, s.publish(ctx, inc, d, false)
}

// Resolve closes an incident (or completes a maintenance): every component
// it affected returns to operational unless d sets otherwise.
func (s *Service) Resolve(ctx context.Context, id string, d Draft) (*Incident, error) {
	inc, err := s.Incident(ctx, id)
	if err != nil {
		return nil, err
	}
	d.Status = Resolved
	if inc.Kind == KindMaintenance {
		d.Status = Completed
	}
	return s.PostUpdate(ctx, id, d)
}

// publish checks the draft against the policy and writes the update (and,
// for a new incident, the incident) in one transaction.
func (s *Service) publish(ctx context.Context, inc *Incident, d Draft, create bool) error {
	if _, err := parseStatus(inc.Kind, string(inc.Status)); err != nil {
		return err
	}
	changes, err := s.resolveChanges(ctx, d.Components)
	if err != nil {
		return err
	}
	if err := checkLinks(d.Links); err != nil {
		return err
	}
	for _, l := range d.Links {
		if !slices.Contains(inc.Links, l) {
			inc.Links = append(inc.Links, l)
		}
	}
	targets, err := s.targetsOf(ctx, inc, d)
	if err != nil {
		return err
	}
	var body Body
	if d.CarryOver && len(inc.Updates) > 0 {
		body = inc.Updates[0].Body
	}
	if d.Template != "" {
		t, err := s.Template(ctx, d.Template)
		if err != nil {
			return err
		}
		body = body.Over(t.Body)
		if len(changes) == 0 && len(t.Components) > 0 {
			if changes, err = s.resolveChanges(ctx, t.Components); err != nil {
				return err
			}
		}
	}
	body = body.Over(d.Body)
	if body.PercentRestored != nil && body.PercentSource == "" {
		body.PercentSource = "manual"
	}
	if len(inc.Links) > 0 && s.progress != nil {
		c, err := s.progress.Progress(ctx, inc.Links)
		switch {
		case err == nil:
			c.fill(&body)
		case fault.CodeOf(err) == fault.NotFound:
			return err
		default:
			// An update must still go out when the restore engine cannot
			// answer; the policy decides whether the typed numbers suffice.
			s.log.Warn("status: restore progress unavailable; publishing without it", "incident", inc.ID, "err", err)
		}
	}
	if err := s.policy.Check(inc.Impact, inc.Status, body); err != nil {
		return err
	}

	now := s.stamp()
	u := Update{ID: newID(), IncidentID: inc.ID, Status: inc.Status, Body: body, Changes: changes, Author: d.Author, Created: now}
	inc.Updated = now
	if create {
		inc.Created = now
	}
	if inc.Status.Closed() && inc.Resolved.IsZero() {
		inc.Resolved = now
	}
	err = s.db.write(ctx, func(tx *sql.Tx) error {
		if create {
			if err := s.db.insertIncident(ctx, tx, inc); err != nil {
				return err
			}
		} else if err := s.db.saveIncident(ctx, tx, inc); err != nil {
			return err
		}
		if err := s.db.insertUpdate(ctx, tx, &u); err != nil {
			return err
		}
		// The notices owed for this update are recorded with it: an update
		// published is an update owed to its subscribers, crash or not.
		var comps []string
		for _, a := range inc.Affected {
			comps = append(comps, a.ComponentID)
		}
		for _, c := range changes {
			if !slices.Contains(comps, c.ComponentID) {
				comps = append(comps, c.ComponentID)
			}
		}
		if err := s.db.enqueueNotices(ctx, tx, &u, comps, now); err != nil {
			return err
		}
		return s.db.insertTargets(ctx, tx, &u, targets, now)
	})
	if err != nil {
		return err
	}
	if inc.Tenants, err = s.db.countTargets(ctx, inc.ID); err != nil {
		return err
	}
	inc.Updates = append([]Update{u}, inc.Updates...)
	cs, err := s.db.components(ctx)
	if err != nil {
		return err
	}
	inc.Affected = affected(inc, cs)
	return nil
}

// Incident returns one incident or maintenance with its updates.
func (s *Service) Incident(ctx context.Context, id string) (*Incident, error) {
	list, err := s.db.incidents(ctx, byID(id))
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fault.New(fault.NotFound, "list incidents with GET /api/v1/incidents", "no incident %q", id)
	}
	cs, err := s.db.components(ctx)
	if err != nil {
		return nil, err
	}
	list[0].Affected = affected(&list[0], cs)
	return &list[0], nil
}

// affected lists the components an incident touched, with the status it
// gives each now and the one before, from its updates' changes.
func affected(inc *Incident, cs []Component) []AffectedComponent {
	out := []AffectedComponent{}
	for i := len(inc.Updates) - 1; i >= 0; i-- {
		for _, c := range inc.Updates[i].Changes {
			j := slices.IndexFunc(out, func(a AffectedComponent) bool { return a.ComponentID == c.ComponentID })
			if j < 0 {
				a := AffectedComponent{ComponentID: c.ComponentID, Old: Operational, New: c.Status}
				if k := slices.IndexFunc(cs, func(x Component) bool { return x.ID == c.ComponentID }); k >= 0 {
					a.Name = cs[k].Name
				}
				out = append(out, a)
				continue
			}
			out[j].Old, out[j].New = out[j].New, c.Status
		}
	}
	return out
}

// PutTemplate stores a reusable template under t.Name, replacing one of the
// same name.
func (s *Service) PutTemplate(ctx context.Context, t Template) (Template, error) {
	if strings.TrimSpace(t.Name) == "" {
		return t, fault.New(fault.Invalid, "name the template", "template name is empty")
	}
	if t.Impact != "" {
		if _, err := ParseImpact(string(t.Impact)); err != nil {
			return t, err
		}
	}
	if err := validBody(t.Body); err != nil {
		return t, err
	}
	now := s.stamp()
	t.ID, t.Created, t.Updated = newID(), now, now
	err := s.db.putTemplate(ctx, &t)
	return t, err
}

// Template returns the stored template called name.
func (s *Service) Template(ctx context.Context, name string) (Template, error) {
	ts, err := s.db.templates(ctx, name)
	if err != nil {
		return Template{}, err
	}
	if len(ts) == 0 {
		return Template{}, fault.New(fault.NotFound, "list templates with GET /api/v1/incident-templates", "no template %q", name)
	}
	return ts[0], nil
}

// Templates returns every stored template by name.
func (s *Service) Templates(ctx context.Context) ([]Template, error) { return s.db.templates(ctx, "") }

// Incidents returns the open incidents and maintenances and those of the
// last 90 days, newest first, as stored (maintenance statuses are not moved
// along their windows here; Snapshot does that).
func (s *Service) Incidents(ctx context.Context) ([]Incident, error) {
	list, err := s.db.incidents(ctx, recent(s.now()))
	if err != nil {
		return nil, err
	}
	cs, err := s.db.components(ctx)
	if err != nil {
		return nil, err
	}
	for i := range list {
		list[i].Affected = affected(&list[i], cs)
	}
	return list, nil
}

// Request is a publishing request as the API, the CLI (--from) and the
// console form take it: one shape, checked in one place.
type Request struct {
	Kind       Kind              `json:"kind,omitempty"` // incident (default) or maintenance; open only
	Name       string            `json:"name,omitempty"`
	NameZh     string            `json:"name_zh,omitempty"`
	Impact     Impact            `json:"impact,omitempty"`
	Status     IncidentStatus    `json:"status,omitempty"`
	Components []ComponentChange `json:"components,omitempty"` // component_id may be an id or an English name
	Links      []string          `json:"links,omitempty"`      // restore:ID, plan:ID
	Tenants    []string          `json:"tenants,omitempty"`    // tenant keys whose contacts get targeted notices
	// AllowUnknownTenants accepts tenant keys the registry does not know.
	AllowUnknownTenants bool      `json:"allow_unknown_tenants,omitempty"`
	Template            string    `json:"template,omitempty"`
	CarryOver           bool      `json:"carry_over,omitempty"`
	Body                Body      `json:"body"`
	ScheduledFor        time.Time `json:"scheduled_for,omitzero"`
	ScheduledUntil      time.Time `json:"scheduled_until,omitzero"`
}

// Draft returns the update part of q.
func (q Request) Draft(author string) Draft {
	return Draft{Status: q.Status, Impact: q.Impact, Components: q.Components, Links: q.Links, Tenants: q.Tenants, AllowUnknownTenants: q.AllowUnknownTenants,
		Template: q.Template, CarryOver: q.CarryOver, Body: q.Body, Author: author}
}

// Open opens an incident, or schedules a maintenance when q.Kind says so
// (its components then go under_maintenance during the window).
func (s *Service) Open(ctx context.Context, q Request, author string) (*Incident, error) {
	name := Text{En: q.Name, Zh: q.NameZh}
	switch q.Kind {
	case "", KindIncident:
		return s.OpenIncident(ctx, NewIncident{Name: name, Draft: q.Draft(author)})
	case KindMaintenance:
		comps := make([]string, len(q.Components))
		for i, c := range q.Components {
			comps[i] = c.ComponentID
		}
		d := q.Draft(author)
		d.Components = nil
		return s.ScheduleMaintenance(ctx, NewMaintenance{Name: name, ScheduledFor: q.ScheduledFor, ScheduledUntil: q.ScheduledUntil, Components: comps, Draft: d})
	}
	return nil, fault.New(fault.Invalid, "use incident or maintenance", "unknown kind %q", q.Kind)
}
