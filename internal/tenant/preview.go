package tenant

import (
	"context"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
)

// These let internal/plan validate many requests before any of them runs,
// with exactly the rules Run applies.

// Ambiguous says whether key, as a tenant key, also names a product or an
// app, which makes a bare mention of it mean two things. clash describes
// the other thing ("a product", "an app of tracker") and hint how to fix
// it; clash is "" when the key is unambiguous.
func (s *Service) Ambiguous(key string) (clash, hint string) {
	for _, p := range s.Products {
		if key == p.Name {
			return "a product", "rename the tenant or the product so that keys are unambiguous"
		}
		for app := range p.Layout.Apps {
			if key == app {
				return "an app of " + p.Name, "rename the tenant or the app so that keys are unambiguous"
			}
		}
	}
	return "", ""
}

// Check resolves req's target and checks every state, the retention period
// and the schema, exactly as Run would, without recording or changing
// anything. It returns the steps Run would take. It does not check the
// actor, the reason, admission or operations already holding the tenant.
func (s *Service) Check(ctx context.Context, req Request) (Target, []state.Step, error) {
	if _, ok := rules[req.Action]; !ok {
		return Target{}, nil, fault.New(fault.Invalid, "use deactivate, reactivate, delete, undelete or purge", "unknown action %q", req.Action)
	}
	t, err := s.Resolve(ctx, req.Target)
	if err != nil {
		return Target{}, nil, err
	}
	steps, err := s.plan(ctx, req.Action, t)
	return t, steps, err
}

// Inverse is the action that undoes a, and the state a target is in after
// a: reactivate for deactivate, undelete for delete, and so on. Purge has
// no inverse ("").
func Inverse(a productdb.Action) (inverse productdb.Action, after productdb.State) {
	r := rules[a]
	return r.inverse, r.to
}

// OwnerGone reports whether a lease owner ("host:pid") is a process of this
// host that has exited, so its lease may be taken at once.
func OwnerGone(owner string) bool { return ownerGone(owner) }
