package contacts

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"lifeline/internal/fault"
)

// Record is one statement from a source: this person, these details, and
// optionally that they speak for a tenant or an account in a role. Sync,
// import and the API all turn their input into Records, and one engine
// (apply) turns Records into versioned changes.
type Record struct {
	Line     int    `json:"line,omitempty"` // the row or line it came from, for messages
	Email    string `json:"email"`
	Name     string `json:"name,omitempty"`
	Phone    string `json:"phone,omitempty"`
	Language string `json:"language,omitempty"`
	Role     Role   `json:"role,omitempty"`
	// Tenant is the tenant the person speaks for. Account is the account
	// that owns Tenant or, without Tenant, the account the person speaks for.
	Tenant      string `json:"tenant,omitempty"`
	Account     string `json:"account,omitempty"`
	AccountName string `json:"account_name,omitempty"`
	// Remove withdraws the link (API only): it is marked removed, not deleted.
	Remove bool `json:"remove,omitempty"`
}

// AccountInput names an account and the tenants it owns.
type AccountInput struct {
	ID      string   `json:"id"`
	Name    string   `json:"name,omitempty"`
	Tenants []string `json:"tenants,omitempty"`
}

// Changes says what a sync, import or upsert changed (or, dry, would).
type Changes struct {
	Source          string      `json:"source"`
	Records         int         `json:"records"`
	ContactsAdded   int         `json:"contacts_added"`
	ContactsUpdated int         `json:"contacts_updated"`
	Merged          int         `json:"merged"` // spellings folded into an existing contact
	LinksAdded      int         `json:"links_added"`
	LinksRestored   int         `json:"links_restored"`
	LinksRemoved    int         `json:"links_removed"`
	LinksHeld       int         `json:"links_held"` // missing from the source, kept because their tenant is not active there
	AccountsAdded   int         `json:"accounts_added"`
	AccountsUpdated int         `json:"accounts_updated"`
	TenantsUpdated  int         `json:"tenants_updated"`
	SkippedErased   int         `json:"skipped_erased"` // records of erased people, kept out
	Rejected        []Rejection `json:"rejected"`
	Removals        []string    `json:"removals,omitempty"` // what was (or would be) removed, emails masked
	Revision        int64       `json:"revision"`
	DryRun          bool        `json:"dry_run"`
}

// Changed reports whether anything was (or would be) written.
func (c *Changes) Changed() bool {
	return c.ContactsAdded+c.ContactsUpdated+c.LinksAdded+c.LinksRestored+c.LinksRemoved+c.AccountsAdded+c.AccountsUpdated+c.TenantsUpdated > 0
}

// Rejection is a record that could not be used.
type Rejection struct {
	Line   int    `json:"line,omitempty"`
	Email  string `json:"email"` // masked
	Reason string `json:"reason"`
}

// missingRole marks a record whose source gave a link but no role, so that
// validate rejects it with its line instead of taking it as "no link".
const missingRole Role = "(none)"

// tenantInfo is what the directory says of a tenant.
type tenantInfo struct {
	name   string
	states map[string]string
}

// batch is one unit of change from one source, applied in one transaction.
type batch struct {
	source   string
	actor    string
	records  []Record
	accounts []AccountInput
	// complete: the records are the source's whole truth, so its links
	// that are missing are removed (sync). Import and API are partial.
	complete bool
	// keep says a missing link of this tenant is kept, not removed: the
	// tenant is not active in the source's product (deleted, purged…).
	keep    func(tenant string) bool
	tenants map[string]tenantInfo
	// strict: one bad record refuses the whole batch (import, API). A sync
	// skips and reports bad rows instead: the product's data is what it is.
	strict  bool
	confirm bool
	dryRun  bool
}

type item struct {
	rec  Record
	addr Address
}

// pending is one contact's changes within a batch: one new version.
type pending struct {
	row     *contactRow
	isNew   bool
	changes []Change
}

// validate normalises the records, returning the usable ones and the
// rejections.
func validate(records []Record) ([]item, []Rejection) {
	var items []item
	rejected := []Rejection{}
	for _, r := range records {
		addr, err := NormalizeEmail(r.Email)
		reason := ""
		switch {
		case err != nil:
			reason = err.Error()
		case r.Role == missingRole:
			reason = "the role is empty (use admin, technical, billing or security)"
		case r.Role != "" && Role(r.Role).rank() == len(Roles):
			reason = fmt.Sprintf("unknown role %q (use admin, technical, billing or security)", r.Role)
		case r.Role != "" && r.Tenant == "" && r.Account == "":
			reason = "a role needs the tenant or account it is for"
		case r.Remove && r.Role == "":
			reason = "a removal needs the role and tenant or account it removes"
		}
		if reason != "" {
			rejected = append(rejected, Rejection{Line: r.Line, Email: Mask(r.Email), Reason: reason})
			continue
		}
		r.Name, r.Phone, r.Language = strings.TrimSpace(r.Name), strings.TrimSpace(r.Phone), strings.TrimSpace(r.Language)
		r.Tenant, r.Account, r.AccountName = strings.TrimSpace(r.Tenant), strings.TrimSpace(r.Account), strings.TrimSpace(r.AccountName)
		items = append(items, item{r, addr})
	}
	// A stable order makes a batch deterministic: when two rows disagree on
	// a name, the same one wins every time, so a repeated sync is a no-op.
	slices.SortStableFunc(items, func(a, b item) int {
		return cmp.Or(strings.Compare(a.addr.Key, b.addr.Key), strings.Compare(a.rec.Tenant, b.rec.Tenant),
			strings.Compare(a.rec.Account, b.rec.Account), strings.Compare(string(a.rec.Role), string(b.rec.Role)),
			strings.Compare(a.addr.Email, b.addr.Email), cmp.Compare(a.rec.Line, b.rec.Line))
	})
	return items, rejected
}

// apply writes a batch as new versions, in one transaction.
func (s *Service) apply(ctx context.Context, b *batch) (*Changes, error) {
	ch := &Changes{Source: b.source, Records: len(b.records), DryRun: b.dryRun}
	items, rejected := validate(b.records)
	ch.Rejected = rejected
	if b.strict && len(rejected) > 0 {
		lines := make([]string, 0, min(len(rejected), 10))
		for _, r := range rejected[:min(len(rejected), 10)] {
			lines = append(lines, fmt.Sprintf("line %d (%s): %s", r.Line, r.Email, r.Reason))
		}
		return ch, fault.New(fault.Invalid, "fix these rows and try again; nothing was changed",
			"%d of %d records cannot be used: %s", len(rejected), len(b.records), strings.Join(lines, "; "))
	}
	if err := s.guardFresh(ctx, !b.dryRun); err != nil {
		return ch, err
	}
	now := s.now()
	rev, err := s.store.write(ctx, now, b.dryRun, func(t *tx) error {
		return s.applyTx(t, b, items, ch)
	})
	if err != nil {
		return ch, err
	}
	ch.Revision = rev
	return ch, nil
}

func (s *Service) applyTx(t *tx, b *batch, items []item, ch *Changes) error {
	nowM := micros(t.now)
	erased, err := erasedHashes(t)
	if err != nil {
		return err
	}
	kept := items[:0:0]
	for _, it := range items {
		if erased[ErasureHash(it.addr.Key)] {
			ch.SkippedErased++
			continue
		}
		kept = append(kept, it)
	}
	items = kept

	// Load what the batch may touch. The vault is small (people, not
	// rows of product data), so a large or complete batch reads it whole.
	keys := map[string]bool{}
	for _, it := range items {
		keys[it.addr.Key] = true
	}
	whole := b.complete || len(keys) > 100
	byKey, byID := map[string]*contactRow{}, map[string]*contactRow{}
	links := map[linkID]*linkRow{}
	aliases := map[string]bool{}
	var loaded []*contactRow
	if whole {
		rows, err := load[contactRow](t, "SELECT "+contactCols+" FROM contacts")
		if err != nil {
			return err
		}
		for i := range rows {
			loaded = append(loaded, &rows[i])
		}
		if err := loadLinks(t, links, aliases, ""); err != nil {
			return err
		}
	} else {
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			r, err := loadOne[contactRow](t, "SELECT "+contactCols+" FROM contacts WHERE email_key = $1", k)
			if err != nil {
				return err
			}
			if r != nil {
				loaded = append(loaded, r)
				if err := loadLinks(t, links, aliases, r.ID); err != nil {
					return err
				}
			}
		}
	}
	for _, r := range loaded {
		byKey[r.EmailKey], byID[r.ID] = r, r
	}
	// The source's active links before this batch: the base of the
	// removal guard's share.
	active := 0
	for _, l := range links {
		if l.Source == b.source && l.RemovedAt == 0 {
			active++
		}
	}
	tenants, err := loadMap[tenantRow](t, "SELECT "+tenantCols+" FROM tenants", func(r *tenantRow) string { return r.Key })
	if err != nil {
		return err
	}
	accounts, err := loadMap[accountRow](t, "SELECT "+accountCols+" FROM accounts", func(r *accountRow) string { return r.ID })
	if err != nil {
		return err
	}

	// Work out every change in memory first.
	touched := map[string]*pending{}
	touch := func(c *contactRow) *pending {
		p := touched[c.ID]
		if p == nil {
			p = &pending{row: c}
			touched[c.ID] = p
		}
		return p
	}
	var newAliases []aliasRow
	type fields struct{ name, phone, language string }
	want := map[string]*fields{}
	present := map[linkID]bool{}
	var removals []linkID
	tenantsNew, tenantsChanged := map[string]bool{}, map[string]bool{}
	accountsNew, accountsChanged := map[string]bool{}, map[string]bool{}
	var tenantChanges []Change
	var accountChanges []Change

	ensureTenant := func(key string) *tenantRow {
		r := tenants[key]
		if r == nil {
			r = &tenantRow{Key: key, States: "{}", CreatedAt: nowM, UpdatedAt: nowM}
			tenants[key] = r
			tenantsNew[key], tenantsChanged[key] = true, true
		}
		return r
	}
	ensureAccount := func(id, name string) {
		a := accounts[id]
		if a == nil {
			accounts[id] = &accountRow{ID: id, Name: name, Source: b.source, CreatedAt: nowM, UpdatedAt: nowM}
			accountsNew[id] = true
			accountChanges = append(accountChanges, Change{Action: "account.create", AccountID: id, Detail: map[string]any{"name": name}})
			return
		}
		if name != "" && name != a.Name {
			accountChanges = append(accountChanges, Change{Action: "account.update", AccountID: id, Detail: map[string]any{"name": []string{a.Name, name}}})
			a.Name = name
			accountsChanged[id] = true
		}
	}
	setOwner := func(tenant, account string) {
		tr := ensureTenant(tenant)
		if tr.AccountID != account {
			tenantChanges = append(tenantChanges, Change{Action: "tenant.account", Tenant: tenant, AccountID: account, Detail: map[string]any{"from": tr.AccountID, "to": account}})
			tr.AccountID = account
			tenantsChanged[tenant] = true
		}
	}

	for _, it := range items {
		r, a := it.rec, it.addr
		c := byKey[a.Key]
		if c == nil {
			c = &contactRow{ID: newID("c_"), Email: a.Email, EmailKey: a.Key, Domain: a.Domain, Source: b.source, CreatedAt: nowM}
			byKey[a.Key], byID[c.ID] = c, c
			p := touch(c)
			p.isNew = true
			p.changes = append(p.changes, Change{Action: "create", Detail: map[string]any{"email": a.Email}})
			aliases[a.Email] = true
			newAliases = append(newAliases, aliasRow{Email: a.Email, ContactID: c.ID, Source: b.source, At: nowM})
		} else if !aliases[a.Email] {
			if a.Email != c.Email {
				p := touch(c)
				p.changes = append(p.changes, Change{Action: "merge", Detail: map[string]any{"spelling": a.Email, "into": c.Email}})
				ch.Merged++
			}
			aliases[a.Email] = true
			newAliases = append(newAliases, aliasRow{Email: a.Email, ContactID: c.ID, Source: b.source, At: nowM})
		}
		f := want[c.ID]
		if f == nil {
			f = &fields{}
			want[c.ID] = f
		}
		f.name = cmp.Or(r.Name, f.name)
		f.phone = cmp.Or(r.Phone, f.phone)
		f.language = cmp.Or(r.Language, f.language)
		if r.Account != "" {
			ensureAccount(r.Account, r.AccountName)
		}
		if r.Tenant != "" {
			ensureTenant(r.Tenant)
			if r.Account != "" {
				setOwner(r.Tenant, r.Account)
			}
		}
		if r.Role == "" {
			continue
		}
		id := linkID{c.ID, scopeTenant, r.Tenant, string(r.Role), b.source}
		if r.Tenant == "" {
			id.scope, id.key = scopeAccount, r.Account
		}
		if r.Remove {
			removals = append(removals, id)
		} else {
			present[id] = true
		}
	}
	for _, in := range b.accounts {
		ensureAccount(in.ID, in.Name)
		for _, tk := range in.Tenants {
			setOwner(tk, in.ID)
		}
	}

	// Field changes: a source never clears a value by leaving it out.
	for _, id := range slices.Sorted(maps.Keys(want)) {
		f, c := want[id], byID[id]
		diff := map[string]any{}
		for _, fc := range []struct {
			name string
			cur  *string
			to   string
		}{{"name", &c.Name, f.name}, {"phone", &c.Phone, f.phone}, {"language", &c.Language, f.language}} {
			if fc.to != "" && fc.to != *fc.cur {
				diff[fc.name] = []string{*fc.cur, fc.to}
				*fc.cur = fc.to
			}
		}
		if len(diff) > 0 {
			p := touch(c)
			if p.isNew {
				for k, v := range diff {
					p.changes[0].Detail[k] = v.([]string)[1]
				}
			} else {
				p.changes = append(p.changes, Change{Action: "update", Detail: diff})
			}
		}
	}

	linkChange := func(action string, l *linkRow) {
		c := Change{Action: action, Detail: map[string]any{"role": l.Role}}
		if l.Scope == scopeAccount {
			c.AccountID = l.ScopeKey
		} else {
			c.Tenant = l.ScopeKey
		}
		p := touch(byID[l.ContactID])
		p.changes = append(p.changes, c)
	}
	var newLinks, changedLinks []*linkRow
	for _, id := range sortedIDs(present) {
		l := links[id]
		switch {
		case l == nil:
			l = &linkRow{ContactID: id.contact, Scope: id.scope, ScopeKey: id.key, Role: id.role, Source: id.source, AddedAt: nowM}
			links[id] = l
			newLinks = append(newLinks, l)
			linkChange("link.add", l)
			ch.LinksAdded++
		case l.RemovedAt != 0:
			l.RemovedAt = 0
			changedLinks = append(changedLinks, l)
			linkChange("link.restore", l)
			ch.LinksRestored++
		}
	}

	var toRemove []*linkRow
	if b.complete {
		for _, l := range links {
			if l.Source != b.source || l.RemovedAt != 0 || present[l.id()] {
				continue
			}
			if l.Scope == scopeTenant && b.keep != nil && b.keep(l.ScopeKey) {
				ch.LinksHeld++
				continue
			}
			toRemove = append(toRemove, l)
		}
		slices.SortFunc(toRemove, func(x, y *linkRow) int { return compareLinkIDs(x.id(), y.id()) })
		for _, l := range toRemove[:min(len(toRemove), 20)] {
			ch.Removals = append(ch.Removals, fmt.Sprintf("%s %s: %s (%s)", l.Scope, l.ScopeKey, Mask(byID[l.ContactID].Email), l.Role))
		}
		if err := s.removalGuard(b, len(items), len(toRemove), active); err != nil {
			ch.LinksRemoved = len(toRemove)
			return err
		}
	}
	for _, id := range removals {
		if l := links[id]; l != nil && l.RemovedAt == 0 {
			toRemove = append(toRemove, l)
		}
	}
	for _, l := range toRemove {
		changedLinks = append(changedLinks, l)
		l.RemovedAt = nowM
		linkChange("link.remove", l)
		ch.LinksRemoved++
	}

	// What the directory says of tenants: names and lifecycle states.
	for _, key := range slices.Sorted(maps.Keys(b.tenants)) {
		info := b.tenants[key]
		tr := ensureTenant(key)
		states, _ := json.Marshal(info.states)
		if info.name != "" && info.name != tr.Name {
			tr.Name = info.name
			tenantsChanged[key] = true
		}
		if string(states) != tr.States {
			tr.States, tr.StatesAt = string(states), nowM
			tenantsChanged[key] = true
		}
	}

	// Write it all: contacts first (aliases and links refer to them).
	for _, id := range slices.Sorted(maps.Keys(touched)) {
		p := touched[id]
		c := p.row
		c.Version++
		c.UpdatedAt = nowM
		if p.isNew {
			ch.ContactsAdded++
			if err := c.insert(t); err != nil {
				return err
			}
		} else {
			ch.ContactsUpdated++
			if err := c.update(t); err != nil {
				return err
			}
		}
	}
	for i := range newAliases {
		if err := newAliases[i].insert(t); err != nil {
			return err
		}
	}
	for _, l := range newLinks {
		if err := l.insert(t); err != nil {
			return err
		}
	}
	for _, l := range changedLinks {
		if err := l.setRemoved(t, l.RemovedAt); err != nil {
			return err
		}
	}
	for _, key := range slices.Sorted(maps.Keys(tenantsChanged)) {
		tr := tenants[key]
		tr.UpdatedAt = nowM
		write := tr.update
		if tenantsNew[key] {
			write = tr.insert
		}
		if err := write(t); err != nil {
			return err
		}
		ch.TenantsUpdated++
		t.changed = true
	}
	for _, id := range slices.Sorted(maps.Keys(accounts)) {
		a := accounts[id]
		switch {
		case accountsNew[id]:
			a.Version = 1
			ch.AccountsAdded++
			if err := a.insert(t); err != nil {
				return err
			}
		case accountsChanged[id]:
			a.Version++
			a.UpdatedAt = nowM
			ch.AccountsUpdated++
			if err := t.exec("UPDATE accounts SET name = $2, updated_at = $3, version = $4 WHERE id = $1", a.ID, a.Name, a.UpdatedAt, a.Version); err != nil {
				return err
			}
		}
	}

	// History last: every change with the version it produced.
	for _, id := range slices.Sorted(maps.Keys(touched)) {
		p := touched[id]
		for _, c := range p.changes {
			c.ContactID, c.Version, c.Actor, c.Source = p.row.ID, p.row.Version, b.actor, b.source
			if err := t.record(c); err != nil {
				return err
			}
		}
	}
	for _, c := range append(accountChanges, tenantChanges...) {
		c.Actor, c.Source = b.actor, b.source
		if a := accounts[c.AccountID]; a != nil && c.Tenant == "" {
			c.Version = a.Version
		}
		if err := t.record(c); err != nil {
			return err
		}
	}
	return nil
}

// removalGuard refuses a complete batch that would remove too much at once:
// a broken contacts query must not empty the vault.
func (s *Service) removalGuard(b *batch, records, removing, active int) error {
	if removing == 0 || b.confirm {
		return nil
	}
	hint := "check the contacts query of " + b.source + " in lifeline.yaml; if these removals are real, run `lifeline contacts sync --confirm`"
	if records == 0 {
		return fault.New(fault.Refused, hint,
			"%s returned no contacts but the vault holds %d active links from it: a sync that would empty the vault is stopped", b.source, active)
	}
	if float64(removing) > s.cfg.MaxRemoval*float64(active) {
		return fault.New(fault.Refused, hint,
			"%s would remove %d of %d contact links (%.1f%%), more than vault.max_removal (%.1f%%)",
			b.source, removing, active, 100*float64(removing)/float64(active), 100*s.cfg.MaxRemoval)
	}
	return nil
}

// loadLinks reads the links and aliases of one contact, or of all when
// contactID is "".
func loadLinks(t *tx, links map[linkID]*linkRow, aliases map[string]bool, contactID string) error {
	where, args := "", []any(nil)
	if contactID != "" {
		where, args = " WHERE contact_id = $1", []any{contactID}
	}
	ls, err := load[linkRow](t, "SELECT "+linkCols+" FROM links"+where, args...)
	if err != nil {
		return err
	}
	for i := range ls {
		links[ls[i].id()] = &ls[i]
	}
	as, err := load[aliasRow](t, "SELECT "+aliasCols+" FROM aliases"+where, args...)
	if err != nil {
		return err
	}
	for _, a := range as {
		aliases[a.Email] = true
	}
	return nil
}

// loadMap reads rows into a map by key.
func loadMap[R any, P rowPtr[R]](t *tx, query string, key func(*R) string) (map[string]*R, error) {
	rows, err := load[R, P](t, query)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*R, len(rows))
	for i := range rows {
		out[key(&rows[i])] = &rows[i]
	}
	return out, nil
}

// erasedHashes is the set of ErasureHashes of erased people.
func erasedHashes(t *tx) (map[string]bool, error) {
	rows, err := load[erasedRow](t, "SELECT "+erasedCols+" FROM erased")
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(rows))
	for _, r := range rows {
		out[r.Hash] = true
	}
	return out, nil
}

func sortedIDs(m map[linkID]bool) []linkID {
	ids := slices.Collect(maps.Keys(m))
	slices.SortFunc(ids, compareLinkIDs)
	return ids
}

func compareLinkIDs(a, b linkID) int {
	return cmp.Or(strings.Compare(a.contact, b.contact), strings.Compare(a.scope, b.scope), strings.Compare(a.key, b.key),
		strings.Compare(a.role, b.role), strings.Compare(a.source, b.source))
}
