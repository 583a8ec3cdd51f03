package contacts

import (
	"context"
	"strings"

	"lifeline/internal/fault"
)

// ContactInput is one contact as the API upserts it. Fields left empty
// keep their value; links listed are added (or, with remove, withdrawn);
// links not listed are left alone.
type ContactInput struct {
	Email    string      `json:"email"`
	Name     string      `json:"name,omitempty"`
	Phone    string      `json:"phone,omitempty"`
	Language string      `json:"language,omitempty"`
	Links    []LinkInput `json:"links,omitempty"`
}

// LinkInput is one link of a ContactInput: a tenant or an account, a role.
type LinkInput struct {
	Tenant  string `json:"tenant,omitempty"`
	Account string `json:"account,omitempty"`
	Role    Role   `json:"role"`
	Remove  bool   `json:"remove,omitempty"`
}

// APISource is the source of everything written through the API.
const APISource = "api"

// UpsertContact creates or updates one contact and its links, as one new
// version, and returns the contact. Links written by the API are its own:
// a sync never removes them, and the API withdraws only its own. Bad input
// is fault.Invalid and changes nothing.
func (s *Service) UpsertContact(ctx context.Context, in ContactInput, actor string) (*Contact, *Changes, error) {
	base := Record{Email: in.Email, Name: in.Name, Phone: in.Phone, Language: in.Language}
	records := []Record{base}
	for _, l := range in.Links {
		if (l.Tenant == "") == (l.Account == "") {
			return nil, nil, fault.New(fault.Invalid, `write {"tenant":"42","role":"admin"} or {"account":"acme","role":"billing"}`, "a link names exactly one tenant or account")
		}
		r := base
		r.Tenant, r.Account, r.Role, r.Remove = l.Tenant, l.Account, Role(strings.ToLower(string(l.Role))), l.Remove
		if r.Role == "" {
			r.Role = missingRole
		}
		records = append(records, r)
	}
	ch, err := s.apply(ctx, &batch{source: APISource, actor: actor, records: records, strict: true})
	if err != nil {
		return nil, ch, err
	}
	c, err := s.contact(ctx, in.Email)
	return c, ch, err
}

// UpsertAccount creates or renames an account and assigns it tenants.
func (s *Service) UpsertAccount(ctx context.Context, in AccountInput, actor string) (*Account, *Changes, error) {
	in.ID = strings.TrimSpace(in.ID)
	if in.ID == "" {
		return nil, nil, fault.New(fault.Invalid, `send {"id":"acme","name":"Acme Corp","tenants":["42"]}`, "an account needs an id")
	}
	for _, tk := range in.Tenants {
		if strings.TrimSpace(tk) == "" {
			return nil, nil, fault.New(fault.Invalid, "list tenant keys", "an empty tenant key")
		}
	}
	ch, err := s.apply(ctx, &batch{source: APISource, actor: actor, accounts: []AccountInput{in}, strict: true})
	if err != nil {
		return nil, ch, err
	}
	var a *Account
	err = s.store.read(ctx, func(t *tx) error {
		var err error
		a, err = accountOf(t, in.ID)
		return err
	})
	return a, ch, err
}

// contact reads one contact by email; fault.NotFound if absent.
func (s *Service) contact(ctx context.Context, email string) (*Contact, error) {
	a, err := NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	var c *Contact
	err = s.store.read(ctx, func(t *tx) error {
		r, err := loadOne[contactRow](t, "SELECT "+contactCols+" FROM contacts WHERE email_key = $1", a.Key)
		if err != nil || r == nil {
			return err
		}
		ls, err := linksOf(t, []contactRow{*r})
		if err != nil {
			return err
		}
		pc := publicContact(r, ls[r.ID], s.now(), s.cfg.StaleAfter)
		c = &pc
		return nil
	})
	if err == nil && c == nil {
		err = fault.New(fault.NotFound, "`lifeline contacts lookup @DOMAIN` searches a whole domain", "no contact %s in the vault", Mask(a.Email))
	}
	return c, err
}

// Listing is the whole vault as the API exports it.
type Listing struct {
	Contacts []Contact `json:"contacts"`
	Accounts []Account `json:"accounts"`
	Tenants  []Tenant  `json:"tenants"`
}

// Export returns every contact, account and tenant. It is an export of
// personal data, audited as contacts.export with who asked and how many.
func (s *Service) Export(ctx context.Context, actor string) (*Listing, error) {
	out := &Listing{Contacts: []Contact{}, Accounts: []Account{}, Tenants: []Tenant{}}
	now := s.now()
	err := s.store.read(ctx, func(t *tx) error {
		rows, err := load[contactRow](t, "SELECT "+contactCols+" FROM contacts ORDER BY email_key")
		if err != nil {
			return err
		}
		links, err := linksOf(t, rows)
		if err != nil {
			return err
		}
		for i := range rows {
			out.Contacts = append(out.Contacts, publicContact(&rows[i], links[rows[i].ID], now, s.cfg.StaleAfter))
		}
		accounts, err := load[accountRow](t, "SELECT "+accountCols+" FROM accounts ORDER BY id")
		if err != nil {
			return err
		}
		for _, ar := range accounts {
			a, err := accountOf(t, ar.ID)
			if err != nil {
				return err
			}
			out.Accounts = append(out.Accounts, *a)
		}
		tenants, err := load[tenantRow](t, "SELECT "+tenantCols+" FROM tenants ORDER BY tenant_key")
		for i := range tenants {
			out.Tenants = append(out.Tenants, tenants[i].public())
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, s.audit(ctx, actor, "contacts.export", map[string]any{"contacts": len(out.Contacts), "accounts": len(out.Accounts)})
}

// Accounts lists the accounts with their tenants. Audited as contacts.accounts.
func (s *Service) Accounts(ctx context.Context, actor string) ([]Account, error) {
	out := []Account{}
	err := s.store.read(ctx, func(t *tx) error {
		rows, err := load[accountRow](t, "SELECT "+accountCols+" FROM accounts ORDER BY id")
		if err != nil {
			return err
		}
		for _, r := range rows {
			a, err := accountOf(t, r.ID)
			if err != nil {
				return err
			}
			out = append(out, *a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, s.audit(ctx, actor, "contacts.accounts", map[string]any{"accounts": len(out)})
}

// MarkBounced records that mail to email bounced (from a bounce webhook or
// a hard failure at send time). A later verification clears it. An unknown
// address is fault.NotFound.
func (s *Service) MarkBounced(ctx context.Context, email, reason, source, actor string) error {
	a, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	found := false
	_, err = s.store.write(ctx, s.now(), false, func(t *tx) error {
		r, err := loadOne[contactRow](t, "SELECT "+contactCols+" FROM contacts WHERE email_key = $1", a.Key)
		if err != nil || r == nil {
			return err
		}
		found = true
		if r.BouncedAt != 0 && r.BounceReason == reason {
			return nil
		}
		r.BouncedAt, r.BounceReason, r.UpdatedAt = micros(t.now), reason, micros(t.now)
		r.Version++
		if err := r.update(t); err != nil {
			return err
		}
		return t.record(Change{Actor: actor, Source: source, Action: "bounce", ContactID: r.ID, Version: r.Version, Detail: map[string]any{"reason": reason}})
	})
	if err == nil && !found {
		err = fault.New(fault.NotFound, "", "no contact %s in the vault", Mask(a.Email))
	}
	if err == nil {
		s.log.Info("contact bounced", "email", Mask(a.Email), "source", source)
	}
	return err
}
