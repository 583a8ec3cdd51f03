package contacts

import (
	"context"
	"time"

	"lifeline/internal/fault"
)

// Reads for targeted incident notices (internal/notify) and the tenants'
// private status pages (internal/status). They answer for deleted and
// purged tenants like For does: the vault keeps them.

// ForSites returns the contacts of many sites at once, each as For with
// all=false would rank them: reachable first, then admin, technical,
// billing, security, verified before stale. keys are plain tenant keys. A
// site the vault never heard of maps to a result with no contacts rather
// than an error: one unknown tenant must not hold up notices to the
// others. It is one read of the vault and one audit entry (contacts.for,
// with the purpose and the number of tenants), however many sites.
func (s *Service) ForSites(ctx context.Context, keys []string, actor, purpose string) (map[string]*ForResult, error) {
	out := make(map[string]*ForResult, len(keys))
	now := s.now()
	err := s.store.read(ctx, func(t *tx) error {
		for _, k := range keys {
			res, _, err := s.forTenant(t, k, now, false)
			if err != nil {
				return err
			}
			out[k] = res
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	n := 0
	for _, r := range out {
		n += len(r.Contacts)
	}
	return out, s.audit(ctx, actor, "contacts.for", map[string]any{"tenants": len(keys), "contacts": n, "purpose": purpose})
}

// TenantStates returns what the vault knows of a tenant's lifecycle state
// per product: live from the products when they can be read (asOf zero),
// else as the last sync recorded them (asOf that sync). It names no
// person, so it is not audited. A tenant neither the vault nor the
// products know is fault.NotFound.
func (s *Service) TenantStates(ctx context.Context, key string) (states map[string]string, asOf time.Time, err error) {
	var tn Tenant
	found := false
	err = s.store.read(ctx, func(t *tx) error {
		tr, err := loadOne[tenantRow](t, "SELECT "+tenantCols+" FROM tenants WHERE tenant_key = $1", key)
		if err != nil || tr == nil {
			tn = Tenant{Key: key, States: map[string]string{}}
			return err
		}
		found, tn = true, tr.public()
		return nil
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	ts := []Tenant{tn}
	s.overlayLive(ctx, ts)
	if !found && len(ts[0].States) == 0 {
		return nil, time.Time{}, fault.New(fault.NotFound, "`lifeline contacts sync` records the products' tenants", "the vault knows no tenant %q", key)
	}
	return ts[0].States, ts[0].StatesAsOf, nil
}

// Revision counts the vault's committed changes: it moves with every sync,
// import, upsert, bounce or erasure that changed something. Targeted
// notices left with nobody to tell look again when it moves. It names no
// person, so it is not audited.
func (s *Service) Revision(ctx context.Context) (int64, error) {
	var rev int64
	err := s.store.read(ctx, func(t *tx) error {
		var err error
		rev, err = t.revision()
		return err
	})
	return rev, err
}

// KnownTenants returns which of keys the vault knows: a tenant a sync
// recorded (it stays after the tenant is deleted or purged) or one a
// contact is linked to. It names no person, so it is not audited.
func (s *Service) KnownTenants(ctx context.Context, keys []string) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.store.read(ctx, func(t *tx) error {
		for _, k := range keys {
			var n int
			err := t.QueryRowContext(t.ctx, `SELECT (SELECT COUNT(*) FROM tenants WHERE tenant_key = $1) +
				(SELECT COUNT(*) FROM links WHERE scope = $2 AND scope_key = $1)`, k, scopeTenant).Scan(&n)
			if err != nil {
				return s.store.unavailable(err)
			}
			if n > 0 {
				out[k] = true
			}
		}
		return nil
	})
	return out, err
}
