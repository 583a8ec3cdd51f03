package tenant

import (
	"context"
	"sort"
	"strconv"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
)

// Summary is one tenant across every product, for `tenants list`.
type Summary struct {
	Key    string                     `json:"key"`
	Name   string                     `json:"name"`
	States map[string]productdb.State `json:"states"` // product -> state
}

// Detail is one tenant in depth, for `tenants show`.
type Detail struct {
	Key        string                          `json:"key"`
	Name       string                          `json:"name"`
	Products   map[string]productdb.TenantInfo `json:"products"`
	Operations []state.Operation               `json:"operations"`
	Erasures   []state.Erasure                 `json:"erasures,omitempty"`
}

// List returns every tenant known to any product, sorted by key.
func (s *Service) List(ctx context.Context) ([]Summary, error) {
	byKey := map[string]*Summary{}
	for _, p := range s.Products {
		infos, err := p.DB.Tenants(ctx, p.Layout)
		if err != nil {
			return nil, err
		}
		for _, in := range infos {
			sum := byKey[in.Key]
			if sum == nil {
				sum = &Summary{Key: in.Key, States: map[string]productdb.State{}}
				byKey[in.Key] = sum
			}
			if sum.Name == "" {
				sum.Name = in.Name
			}
			sum.States[p.Name] = orActive(in.State)
		}
	}
	out := make([]Summary, 0, len(byKey))
	for _, v := range byKey {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return keyLess(out[i].Key, out[j].Key) })
	return out, nil
}

// Show returns one tenant's state, name and row counts in every product, and
// its last operations.
func (s *Service) Show(ctx context.Context, key string) (*Detail, error) {
	d := &Detail{Key: key, Products: map[string]productdb.TenantInfo{}}
	for _, p := range s.Products {
		in, err := p.DB.Tenant(ctx, p.Layout, key)
		if fault.CodeOf(err) == fault.NotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		in.State = orActive(in.State)
		d.Products[p.Name] = *in
		if d.Name == "" {
			d.Name = in.Name
		}
	}
	if len(d.Products) == 0 {
		return nil, fault.New(fault.NotFound, "`lifeline tenants list` shows the known tenants", "unknown tenant %q", key)
	}
	var err error
	if d.Operations, err = s.Store.ListOperations(ctx, state.OpFilter{Tenant: key, Limit: 10}); err != nil {
		return nil, err
	}
	all, err := s.Store.Erasures(ctx, key)
	if err != nil {
		return nil, err
	}
	d.Erasures = all
	return d, nil
}

func orActive(s productdb.State) productdb.State {
	if s == "" {
		return productdb.Active
	}
	return s
}

// keyLess orders numeric keys numerically and others as text.
func keyLess(a, b string) bool {
	x, errA := strconv.ParseInt(a, 10, 64)
	y, errB := strconv.ParseInt(b, 10, 64)
	if errA == nil && errB == nil {
		return x < y
	}
	if (errA == nil) != (errB == nil) {
		return errA == nil
	}
	return a < b
}
