package contacts

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/tenant"
)

// LookupResult is who a person is and what they may speak for.
type LookupResult struct {
	Query    string    `json:"query"`
	Contacts []Contact `json:"contacts"`
	// Accounts and Tenants are what the contacts' active links reach,
	// directly or through an account, in every lifecycle state: a deleted
	// or purged tenant is still listed, which is the point.
	Accounts []Account `json:"accounts"`
	Tenants  []Tenant  `json:"tenants"`
	// History is the contact's versions, for a lookup by one email.
	History []Change `json:"history,omitempty"`
}

// Lookup finds a person by email, or everyone of a domain by "@domain", with
// the accounts and tenants they may speak for. Support intake uses it to
// verify a customer whose site is gone. Nothing found is fault.NotFound; the
// read is audited as contacts.lookup.
func (s *Service) Lookup(ctx context.Context, query, actor string) (*LookupResult, error) {
	where, arg, shown := "", "", ""
	if strings.HasPrefix(strings.TrimSpace(query), "@") {
		d, err := NormalizeDomain(query)
		if err != nil {
			return nil, err
		}
		where, arg, shown = "domain = $1", d, "@"+d
	} else {
		a, err := NormalizeEmail(query)
		if err != nil {
			return nil, err
		}
		where, arg, shown = "email_key = $1", a.Key, Mask(a.Email)
	}
	res := &LookupResult{Query: strings.TrimSpace(query), Contacts: []Contact{}, Accounts: []Account{}, Tenants: []Tenant{}}
	now := s.now()
	err := s.store.read(ctx, func(t *tx) error {
		rows, err := load[contactRow](t, "SELECT "+contactCols+" FROM contacts WHERE "+where+" ORDER BY email_key", arg)
		if err != nil {
			return err
		}
		links, err := linksOf(t, rows)
		if err != nil {
			return err
		}
		tenantKeys, accountIDs := map[string]bool{}, map[string]bool{}
		for i := range rows {
			res.Contacts = append(res.Contacts, publicContact(&rows[i], links[rows[i].ID], now, s.cfg.StaleAfter))
			for _, l := range links[rows[i].ID] {
				if l.RemovedAt != 0 {
					continue
				}
				if l.Scope == scopeTenant {
					tenantKeys[l.ScopeKey] = true
				} else {
					accountIDs[l.ScopeKey] = true
				}
			}
		}
		// An account's contacts speak for its tenants; a tenant's owner
		// account is shown too.
		for id := range accountIDs {
			ts, err := load[tenantRow](t, "SELECT "+tenantCols+" FROM tenants WHERE account_id = $1", id)
			if err != nil {
				return err
			}
			for _, tr := range ts {
				tenantKeys[tr.Key] = true
			}
		}
		for _, key := range slices.Sorted(maps.Keys(tenantKeys)) {
			tr, err := loadOne[tenantRow](t, "SELECT "+tenantCols+" FROM tenants WHERE tenant_key = $1", key)
			if err != nil {
				return err
			}
			if tr == nil {
				tr = &tenantRow{Key: key, States: "{}"}
			}
			if tr.AccountID != "" {
				accountIDs[tr.AccountID] = true
			}
			res.Tenants = append(res.Tenants, tr.public())
		}
		for _, id := range slices.Sorted(maps.Keys(accountIDs)) {
			a, err := accountOf(t, id)
			if err != nil {
				return err
			}
			if a != nil {
				res.Accounts = append(res.Accounts, *a)
			}
		}
		if len(rows) == 1 && where == "email_key = $1" {
			hs, err := load[historyRow](t, "SELECT "+historyCols+" FROM history WHERE contact_id = $1 ORDER BY seq", rows[0].ID)
			if err != nil {
				return err
			}
			for i := range hs {
				res.History = append(res.History, hs[i].public())
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(res.Contacts) == 0 {
		hint := "check the spelling; the vault holds what sync, import and the API put in"
		if !strings.HasPrefix(shown, "@") {
			hint = "search the whole domain with `lifeline contacts lookup @" + strings.SplitN(arg, "@", 2)[1] + "`"
		}
		return nil, fault.New(fault.NotFound, hint, "no contact %s in the vault", shown)
	}
	s.overlayLive(ctx, res.Tenants)
	return res, s.audit(ctx, actor, "contacts.lookup", map[string]any{"query": shown, "contacts": len(res.Contacts)})
}

// linksOf loads the links of the given contacts, by contact id.
func linksOf(t *tx, rows []contactRow) (map[string][]linkRow, error) {
	out := map[string][]linkRow{}
	if len(rows) > 50 {
		all, err := load[linkRow](t, "SELECT "+linkCols+" FROM links")
		if err != nil {
			return nil, err
		}
		for _, l := range all {
			out[l.ContactID] = append(out[l.ContactID], l)
		}
		return out, nil
	}
	for _, r := range rows {
		ls, err := load[linkRow](t, "SELECT "+linkCols+" FROM links WHERE contact_id = $1", r.ID)
		if err != nil {
			return nil, err
		}
		out[r.ID] = ls
	}
	return out, nil
}

// accountOf reads one account with its tenants; nil if unknown.
func accountOf(t *tx, id string) (*Account, error) {
	r, err := loadOne[accountRow](t, "SELECT "+accountCols+" FROM accounts WHERE id = $1", id)
	if err != nil || r == nil {
		return nil, err
	}
	a := &Account{ID: r.ID, Name: r.Name, Source: r.Source, Created: fromMicros(r.CreatedAt), Updated: fromMicros(r.UpdatedAt), Version: r.Version, Tenants: []string{}}
	ts, err := load[tenantRow](t, "SELECT "+tenantCols+" FROM tenants WHERE account_id = $1 ORDER BY tenant_key", id)
	if err != nil {
		return nil, err
	}
	for _, tr := range ts {
		a.Tenants = append(a.Tenants, tr.Key)
	}
	return a, nil
}

// overlayLive replaces recorded tenant states with the products' current
// ones when the products can be asked; when they cannot (a product database
// is down or gone), the states the last sync recorded stay, with their date.
func (s *Service) overlayLive(ctx context.Context, ts []Tenant) {
	live := s.liveStates(ctx)
	if live == nil {
		return
	}
	for i := range ts {
		if st, ok := live[ts[i].Key]; ok {
			ts[i].States, ts[i].StatesAsOf = st, time.Time{}
		}
	}
}

func (s *Service) liveStates(ctx context.Context) map[string]map[string]string {
	if s.cfg.Directory == nil {
		return nil
	}
	list, err := s.cfg.Directory.List(ctx)
	if err != nil {
		s.log.Warn("contacts: tenant states from the products are unavailable; showing the recorded ones", "err", err)
		return nil
	}
	out := make(map[string]map[string]string, len(list))
	for _, sum := range list {
		st := make(map[string]string, len(sum.States))
		for p, v := range sum.States {
			st[p] = string(v)
		}
		out[sum.Key] = st
	}
	return out
}

// Ranked is one authorised contact of a tenant, in the order to call them.
type Ranked struct {
	Contact
	// Role is the contact's best role for this tenant.
	Role Role `json:"role"`
	// Via is "tenant" for a direct link, or "account:ID" through the
	// tenant's account.
	Via string `json:"via"`
	// Reachable: an active link and an address that has not bounced.
	Reachable bool `json:"reachable"`
}

// ForResult is a tenant's authorised contacts, best first.
type ForResult struct {
	Tenant   Tenant   `json:"tenant"`
	Contacts []Ranked `json:"contacts"`
}

// For returns the authorised contacts of the site named by a typed target
// ("site:KEY"), best first: reachable before bounced, then by role (admin,
// technical, billing, security), verified before stale, most recently
// verified first. Contacts whose links were all removed are left out unless
// all. Another kind of target is refused (contacts belong to whole sites);
// a tenant the vault never heard of is fault.NotFound. Audited as
// contacts.for.
func (s *Service) For(ctx context.Context, target, actor string, all bool) (*ForResult, error) {
	tg, err := tenant.ParseTarget(target)
	if err != nil {
		return nil, err
	}
	if tg.Kind != tenant.KindSite {
		return nil, fault.New(fault.Refused, "write site:"+tg.Tenant+": contacts speak for a whole site",
			"%q targets one %s of a site, not the site; contacts are kept per site", target, map[tenant.Kind]string{tenant.KindApp: "app", tenant.KindProduct: "product"}[tg.Kind])
	}
	key := tg.Tenant
	var res *ForResult
	found := false
	err = s.store.read(ctx, func(t *tx) error {
		res, found, err = s.forTenant(t, key, s.now(), all)
		return err
	})
	if err != nil {
		return nil, err
	}
	ts := []Tenant{res.Tenant}
	s.overlayLive(ctx, ts)
	res.Tenant = ts[0]
	if !found && len(res.Tenant.States) == 0 {
		return nil, fault.New(fault.NotFound, "`lifeline contacts sync` records the products' tenants; `lifeline contacts lookup EMAIL` searches by person",
			"the vault knows no tenant %q", key)
	}
	return res, s.audit(ctx, actor, "contacts.for", map[string]any{"tenant": key, "contacts": len(res.Contacts)})
}

// forTenant reads one tenant's contacts, best first, inside a read
// transaction. found reports whether the vault has a row for the tenant;
// its states are as recorded (callers overlay the live ones).
func (s *Service) forTenant(t *tx, key string, now time.Time, all bool) (*ForResult, bool, error) {
	res := &ForResult{Contacts: []Ranked{}}
	found := false
	tr, err := loadOne[tenantRow](t, "SELECT "+tenantCols+" FROM tenants WHERE tenant_key = $1", key)
	if err != nil {
		return nil, false, err
	}
	if tr == nil {
		tr = &tenantRow{Key: key, States: "{}"}
	} else {
		found = true
	}
	res.Tenant = tr.public()
	links, err := load[linkRow](t, "SELECT "+linkCols+" FROM links WHERE (scope = $1 AND scope_key = $2) OR (scope = $3 AND scope_key = $4)",
		scopeTenant, key, scopeAccount, tr.AccountID)
	if err != nil {
		return nil, false, err
	}
	byContact := map[string][]linkRow{}
	for _, l := range links {
		if l.Scope == scopeAccount && tr.AccountID == "" {
			continue
		}
		byContact[l.ContactID] = append(byContact[l.ContactID], l)
	}
	for _, id := range slices.Sorted(maps.Keys(byContact)) {
		r, err := loadOne[contactRow](t, "SELECT "+contactCols+" FROM contacts WHERE id = $1", id)
		if err != nil {
			return nil, false, err
		}
		if r == nil {
			continue
		}
		ls := byContact[id]
		best := -1
		for i, l := range ls {
			if best < 0 || betterLink(l, ls[best]) {
				best = i
			}
		}
		l := ls[best]
		if l.RemovedAt != 0 && !all {
			continue
		}
		rk := Ranked{Contact: publicContact(r, ls, now, s.cfg.StaleAfter), Role: Role(l.Role), Via: "tenant",
			Reachable: l.RemovedAt == 0 && r.BouncedAt == 0}
		if l.Scope == scopeAccount {
			rk.Via = "account:" + l.ScopeKey
		}
		res.Contacts = append(res.Contacts, rk)
	}
	slices.SortStableFunc(res.Contacts, compareRanked)
	return res, found, nil
}

// betterLink prefers active links, then better roles, then direct links.
func betterLink(a, b linkRow) bool {
	if (a.RemovedAt == 0) != (b.RemovedAt == 0) {
		return a.RemovedAt == 0
	}
	if Role(a.Role).rank() != Role(b.Role).rank() {
		return Role(a.Role).rank() < Role(b.Role).rank()
	}
	return a.Scope == scopeTenant && b.Scope != scopeTenant
}

// compareRanked is the calling order of `contacts for`.
func compareRanked(a, b Ranked) int {
	flag := func(x bool) int {
		if x {
			return 1
		}
		return 0
	}
	return cmp.Or(
		cmp.Compare(flag(!a.Reachable), flag(!b.Reachable)),
		cmp.Compare(a.Role.rank(), b.Role.rank()),
		cmp.Compare(flag(a.Stale), flag(b.Stale)),
		b.VerifiedAt.Compare(a.VerifiedAt),
		strings.Compare(a.Email, b.Email),
	)
}

// Report is the readiness audit of the vault: can every tenant be reached?
type Report struct {
	At time.Time `json:"at"`
	// Tenants counts the tenants considered: every tenant the vault or the
	// products know, except those purged in every product.
	Tenants int `json:"tenants"`
	// Reachable counts tenants with at least one active contact whose email
	// has not bounced; ReachableShare is Reachable / Tenants.
	Reachable      int     `json:"reachable"`
	ReachableShare float64 `json:"reachable_share"`
	// NoVerifiedAdmin lists tenants without an admin verified within
	// vault.stale_after.
	NoVerifiedAdmin []Tenant  `json:"no_verified_admin"`
	Bounced         []Contact `json:"bounced"`
	Contacts        int       `json:"contacts"` // contacts with an active link
	Stale           int       `json:"stale"`    // of those, not verified within vault.stale_after
}

// Report computes the readiness numbers a quarterly audit asks for. It is
// audited as contacts.report (it lists bounced addresses).
func (s *Service) Report(ctx context.Context, actor string) (*Report, error) {
	now := s.now()
	rep := &Report{At: now, NoVerifiedAdmin: []Tenant{}, Bounced: []Contact{}}
	var tenants map[string]*tenantRow
	var contacts []contactRow
	var links []linkRow
	err := s.store.read(ctx, func(t *tx) error {
		var err error
		if tenants, err = loadMap[tenantRow](t, "SELECT "+tenantCols+" FROM tenants", func(r *tenantRow) string { return r.Key }); err != nil {
			return err
		}
		if contacts, err = load[contactRow](t, "SELECT "+contactCols+" FROM contacts ORDER BY email_key"); err != nil {
			return err
		}
		links, err = load[linkRow](t, "SELECT "+linkCols+" FROM links WHERE removed_at = 0")
		return err
	})
	if err != nil {
		return nil, err
	}
	views := map[string]Tenant{}
	for k, tr := range tenants {
		views[k] = tr.public()
	}
	if live := s.liveStates(ctx); live != nil {
		for k, st := range live {
			v, ok := views[k]
			if !ok {
				v = Tenant{Key: k}
			}
			v.States, v.StatesAsOf = st, time.Time{}
			views[k] = v
		}
	}
	byID := map[string]*contactRow{}
	for i := range contacts {
		byID[contacts[i].ID] = &contacts[i]
	}
	byAccount := map[string][]string{}
	for k, v := range views {
		if v.Account != "" {
			byAccount[v.Account] = append(byAccount[v.Account], k)
		}
	}
	reach, admin := map[string]bool{}, map[string]bool{}
	active := map[string]bool{}
	for _, l := range links {
		c := byID[l.ContactID]
		if c == nil {
			continue
		}
		active[c.ID] = true
		scope := []string{l.ScopeKey}
		if l.Scope == scopeAccount {
			scope = byAccount[l.ScopeKey]
		}
		for _, k := range scope {
			if c.BouncedAt == 0 {
				reach[k] = true
			}
			if Role(l.Role) == RoleAdmin && c.BouncedAt == 0 && !stale(c.VerifiedAt, now, s.cfg.StaleAfter) {
				admin[k] = true
			}
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(views), tenantKeyCompare) {
		v := views[k]
		if allPurged(v.States) {
			continue
		}
		rep.Tenants++
		if reach[k] {
			rep.Reachable++
		}
		if !admin[k] {
			rep.NoVerifiedAdmin = append(rep.NoVerifiedAdmin, v)
		}
	}
	if rep.Tenants > 0 {
		rep.ReachableShare = float64(rep.Reachable) / float64(rep.Tenants)
	}
	for i := range contacts {
		c := &contacts[i]
		if c.BouncedAt != 0 {
			pc := publicContact(c, nil, now, s.cfg.StaleAfter)
			pc.Removed = !active[c.ID]
			rep.Bounced = append(rep.Bounced, pc)
		}
		if active[c.ID] {
			rep.Contacts++
			if stale(c.VerifiedAt, now, s.cfg.StaleAfter) {
				rep.Stale++
			}
		}
	}
	return rep, s.audit(ctx, actor, "contacts.report", map[string]any{"tenants": rep.Tenants, "bounced": len(rep.Bounced)})
}

func allPurged(states map[string]string) bool {
	if len(states) == 0 {
		return false
	}
	for _, st := range states {
		if st != string(productdb.Purged) {
			return false
		}
	}
	return true
}

// tenantKeyCompare orders numeric keys numerically, then the rest as text.
func tenantKeyCompare(a, b string) int {
	if len(a) != len(b) && isDigits(a) && isDigits(b) {
		return cmp.Compare(len(a), len(b))
	}
	return strings.Compare(a, b)
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}
