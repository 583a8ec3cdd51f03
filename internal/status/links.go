package status

import (
	"context"
	"slices"
	"strings"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/state"
)

// Operations reads the operations Lifeline records; *state.Store
// implements it.
type Operations interface {
	// GetOperation returns one operation with its steps, or an error with
	// code fault.NotFound for an unknown id.
	GetOperation(ctx context.Context, id string) (*state.Operation, error)
}

// Plans reads the plans that plan:ID links name. cmd/lifeline adapts the
// plan runner's records to it, so this package needs nothing of the plan
// package but these few fields.
type Plans interface {
	// PlanRun returns a plan's action and steps, or an error with code
	// fault.NotFound for an unknown id.
	PlanRun(ctx context.Context, id string) (PlanRun, error)
}

// PlanRun is a plan as an incident sees it.
type PlanRun struct {
	Action string // restore, undelete, reactivate, deactivate, delete, purge
	Steps  []PlanStep
}

// PlanStep is one target of a plan.
type PlanStep struct {
	Tenant string
	// Products are those the target's data is in: its own for a product or
	// app target, every product the site is in for a site.
	Products []string
	// Status is the plan's word for the step: pending, running, done,
	// failed, skipped, rolled_back.
	Status string
	// Verified is true when the step's own check passed: the tenant is in
	// the state the action leaves (a restore's rows hashed equal to the
	// backup's), or, rolled back, its rows are those it had before.
	Verified bool
	Finished time.Time
}

// recoveryActions are the plan actions that bring tenants back; the others
// harm them, and their recovery is the plan's rollback.
var recoveryActions = []string{"restore", "undelete", "reactivate"}

// LinkSource answers for an incident's links from Lifeline's own records.
// It implements Progress and Targets.
//
// restore:ID names the operation `lifeline restore` printed. A site counts
// as restored when every one of its steps (one per product) is done, which
// the engine records only after the site's rows hashed equal to the
// backup's.
//
// plan:ID names a plan (through Plans; without it such links are
// fault.Unavailable and publishing goes on with the typed numbers). A plan
// that brings tenants back (restore, undelete, reactivate) affects all its
// targets, and a target is restored when its step is done and verified. A
// plan that harms them (deactivate, delete, purge) affects the targets its
// steps reached (the set grows while it runs), and a target is restored
// when the plan's rollback has undone it and found its rows as they were.
// A purge cannot be rolled back: its sites are affected but have no
// progress here; link the restore that brings them back.
type LinkSource struct {
	Ops   Operations
	Plans Plans
	// Now is the clock for Counts.AsOf; nil means time.Now.
	Now func() time.Time
}

// linked is what one link stands for: the sites it affects, and where each
// one's recovery stands in each product.
type linked struct {
	tenants []string
	seen    map[string]bool
	steps   []linkedStep
}

type linkedStep struct {
	tenant string
	TenantStep
}

// read resolves one link.
func (r *LinkSource) read(ctx context.Context, link string) (linked, error) {
	if id, ok := strings.CutPrefix(link, "plan:"); ok {
		return r.plan(ctx, link, id)
	}
	id, _ := strings.CutPrefix(link, "restore:")
	op, err := r.Ops.GetOperation(ctx, id)
	if err != nil {
		return linked{}, err
	}
	if op.Action != "restore" {
		return linked{}, fault.New(fault.NotFound, "link the id `lifeline restore` printed, as restore:op_…",
			"%s: operation %s is a %s, not a restore", link, id, op.Action)
	}
	var out linked
	for _, t := range op.Targets {
		out.add(strings.TrimPrefix(t, "site:"))
	}
	for _, st := range op.Steps {
		out.add(st.Tenant)
		out.steps = append(out.steps, linkedStep{st.Tenant, TenantStep{Link: link, Product: st.Product, State: opStepState(op, st), Finished: st.Finished}})
	}
	return out, nil
}

// add records an affected tenant once.
func (l *linked) add(tenant string) {
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	if !l.seen[tenant] {
		l.seen[tenant] = true
		l.tenants = append(l.tenants, tenant)
	}
}

// opStepState is where one step of a restore operation stands, in the
// words of the private page.
func opStepState(op *state.Operation, st state.Step) string {
	if op.Status == state.OpRolledBack {
		return StepUndone
	}
	switch st.Status {
	case state.StepDone:
		return StepRestored
	case state.StepFailed:
		return StepFailed
	case state.StepSkipped:
		return StepNotRestored
	}
	return StepWaiting
}

// plan resolves a plan: link by the rules in LinkSource's comment.
func (r *LinkSource) plan(ctx context.Context, link, id string) (linked, error) {
	if r.Plans == nil {
		return linked{}, fault.New(fault.Unavailable, "name the affected tenants with --tenants", "%s: plans are not readable here", link)
	}
	p, err := r.Plans.PlanRun(ctx, id)
	if err != nil {
		return linked{}, err
	}
	recovers := slices.Contains(recoveryActions, p.Action)
	var out linked
	for _, st := range p.Steps {
		where := planStepState(recovers, st)
		if where == "" {
			continue
		}
		out.add(st.Tenant)
		if p.Action == "purge" {
			continue
		}
		for _, prod := range st.Products {
			out.steps = append(out.steps, linkedStep{st.Tenant, TenantStep{Link: link, Product: prod, State: where, Finished: st.Finished}})
		}
	}
	return out, nil
}

// planStepState is where one plan step stands for its tenant's recovery,
// or "" if the step does not affect the tenant (a harmful plan's step that
// never ran).
func planStepState(recovers bool, st PlanStep) string {
	if recovers {
		switch {
		case st.Status == "done" && st.Verified:
			return StepRestored
		case st.Status == "done" || st.Status == "failed":
			return StepFailed
		case st.Status == "skipped":
			return StepNotRestored
		case st.Status == "rolled_back":
			return StepUndone
		}
		return StepWaiting
	}
	switch {
	case st.Status == "pending" || st.Status == "skipped":
		return ""
	case st.Status == "rolled_back" && st.Verified:
		return StepRestored
	case st.Status == "failed":
		return StepFailed
	}
	return StepWaiting
}

// AffectedTenants returns the tenants a link affects, including those not
// restored.
func (r *LinkSource) AffectedTenants(ctx context.Context, link string) ([]string, error) {
	l, err := r.read(ctx, link)
	return l.tenants, err
}

// TenantProgress returns one entry per product of each link that involves
// tenant.
func (r *LinkSource) TenantProgress(ctx context.Context, links []string, tenant string) ([]TenantStep, error) {
	var out []TenantStep
	for _, link := range links {
		l, err := r.read(ctx, link)
		if err != nil {
			return nil, err
		}
		for _, st := range l.steps {
			if st.tenant == tenant {
				out = append(out, st.TenantStep)
			}
		}
	}
	return out, nil
}

// Progress counts, over the links, the affected sites and those restored
// and verified in every product they are restored in. A site with no step
// (left out when planned) counts as affected, never as restored, and a
// site still waiting in one link is not restored even if another restored
// it: the percentage never claims more than was done.
func (r *LinkSource) Progress(ctx context.Context, links []string) (Counts, error) {
	type site struct{ stepped, done bool }
	sites := map[string]*site{}
	perProduct := map[string]map[string]bool{}
	for _, link := range links {
		l, err := r.read(ctx, link)
		if err != nil {
			return Counts{}, err
		}
		for _, k := range l.tenants {
			if sites[k] == nil {
				sites[k] = &site{}
			}
		}
		for _, st := range l.steps {
			s := sites[st.tenant] // every step's tenant is among l.tenants
			done := st.State == StepRestored
			s.done = done && (s.done || !s.stepped)
			s.stepped = true
			if perProduct[st.Product] == nil {
				perProduct[st.Product] = map[string]bool{}
			}
			perProduct[st.Product][st.tenant] = true
		}
	}
	c := Counts{Sites: len(sites)}
	for _, s := range sites {
		if s.stepped && s.done {
			c.Verified++
		}
	}
	products := make([]string, 0, len(perProduct))
	for p := range perProduct {
		products = append(products, p)
	}
	slices.Sort(products)
	for _, p := range products {
		c.Groups = append(c.Groups, AffectedGroup{Kind: "product", Name: p, Count: len(perProduct[p])})
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	c.AsOf = now().UTC()
	return c, nil
}
