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

// RestoreSource answers for restore:ID links from the operations the
// restore engine records in the state store: ID is the operation id that
// `lifeline restore` prints. It implements Progress and Targets. A tenant
// counts as restored when every one of its steps (one per product) is
// done, which the engine records only after the tenant's rows hashed equal
// to the backup's.
//
// Plans do not record progress yet: a plan: link is answered with
// fault.Unavailable, so publishing goes on with the typed numbers and an
// explicit tenant list.
type RestoreSource struct {
	Ops Operations
	// Now is the clock for Counts.AsOf; nil means time.Now.
	Now func() time.Time
}

// restore reads the operation behind a restore: link.
func (r *RestoreSource) restore(ctx context.Context, link string) (*state.Operation, error) {
	id, ok := strings.CutPrefix(link, "restore:")
	if !ok {
		return nil, fault.New(fault.Unavailable, "name the affected tenants with --tenants until plans report their own",
			"%s: plans do not report progress or tenants yet", link)
	}
	op, err := r.Ops.GetOperation(ctx, id)
	if err != nil {
		return nil, err
	}
	if op.Action != "restore" {
		return nil, fault.New(fault.NotFound, "link the id `lifeline restore` printed, as restore:op_…",
			"%s: operation %s is a %s, not a restore", link, id, op.Action)
	}
	return op, nil
}

// AffectedTenants returns the tenants a restore targets, including those
// it could not restore.
func (r *RestoreSource) AffectedTenants(ctx context.Context, link string) ([]string, error) {
	op, err := r.restore(ctx, link)
	if err != nil {
		return nil, err
	}
	return tenantsOf(op), nil
}

// tenantsOf lists the sites an operation targets and those it has steps
// for, once each.
func tenantsOf(op *state.Operation) []string {
	var out []string
	seen := map[string]bool{}
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, t := range op.Targets {
		add(strings.TrimPrefix(t, "site:"))
	}
	for _, st := range op.Steps {
		add(st.Tenant)
	}
	return out
}

// stepState is where one step stands, in the words of the private page.
func stepState(op *state.Operation, st state.Step) string {
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

// TenantProgress returns one entry per product of each linked restore that
// involves tenant.
func (r *RestoreSource) TenantProgress(ctx context.Context, links []string, tenant string) ([]TenantStep, error) {
	var out []TenantStep
	for _, l := range links {
		op, err := r.restore(ctx, l)
		if err != nil {
			return nil, err
		}
		for _, st := range op.Steps {
			if st.Tenant == tenant {
				out = append(out, TenantStep{Link: l, Product: st.Product, State: stepState(op, st), Finished: st.Finished})
			}
		}
	}
	return out, nil
}

// Progress counts, over the linked restores, the affected sites and those
// restored and verified in every product they are restored in. A site
// with no step (left out when planned) counts as affected, never as
// restored, and a site still waiting in one linked restore is not restored
// even if another restored it: the percentage never claims more than was
// done.
func (r *RestoreSource) Progress(ctx context.Context, links []string) (Counts, error) {
	type site struct{ stepped, done bool }
	sites := map[string]*site{}
	perProduct := map[string]map[string]bool{}
	for _, l := range links {
		op, err := r.restore(ctx, l)
		if err != nil {
			return Counts{}, err
		}
		for _, k := range tenantsOf(op) {
			if sites[k] == nil {
				sites[k] = &site{}
			}
		}
		for _, st := range op.Steps {
			s := sites[st.Tenant] // tenantsOf includes every step's tenant
			done := stepState(op, st) == StepRestored
			s.done = done && (s.done || !s.stepped)
			s.stepped = true
			if perProduct[st.Product] == nil {
				perProduct[st.Product] = map[string]bool{}
			}
			perProduct[st.Product][st.Tenant] = true
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
