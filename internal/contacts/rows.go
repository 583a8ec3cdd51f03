package contacts

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The row types mirror the vault's tables one to one. The same types load
// rows, write them, and make up the export document (docs/contacts.md), so a
// restore writes back exactly what was read.

type contactRow struct {
	ID           string `json:"id"`
	Email        string `json:"email"`
	EmailKey     string `json:"email_key"`
	Domain       string `json:"domain"`
	Name         string `json:"name"`
	Phone        string `json:"phone"`
	Language     string `json:"language"`
	Source       string `json:"source"`
	VerifiedAt   int64  `json:"verified_at"`
	VerifySentAt int64  `json:"verify_sent_at"`
	BouncedAt    int64  `json:"bounced_at"`
	BounceReason string `json:"bounce_reason"`
	CreatedAt    int64  `json:"created_at"`
	UpdatedAt    int64  `json:"updated_at"`
	Version      int64  `json:"version"`
}

const contactCols = "id, email, email_key, domain, name, phone, language, source, verified_at, verify_sent_at, bounced_at, bounce_reason, created_at, updated_at, version"

func (r *contactRow) dest() []any {
	return []any{&r.ID, &r.Email, &r.EmailKey, &r.Domain, &r.Name, &r.Phone, &r.Language, &r.Source,
		&r.VerifiedAt, &r.VerifySentAt, &r.BouncedAt, &r.BounceReason, &r.CreatedAt, &r.UpdatedAt, &r.Version}
}

func (r *contactRow) insert(t *tx) error {
	return t.exec("INSERT INTO contacts ("+contactCols+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
		r.ID, r.Email, r.EmailKey, r.Domain, r.Name, r.Phone, r.Language, r.Source,
		r.VerifiedAt, r.VerifySentAt, r.BouncedAt, r.BounceReason, r.CreatedAt, r.UpdatedAt, r.Version)
}

// update writes every mutable column back.
func (r *contactRow) update(t *tx) error {
	return t.exec(`UPDATE contacts SET email = $2, name = $3, phone = $4, language = $5, verified_at = $6, verify_sent_at = $7,
		bounced_at = $8, bounce_reason = $9, updated_at = $10, version = $11 WHERE id = $1`,
		r.ID, r.Email, r.Name, r.Phone, r.Language, r.VerifiedAt, r.VerifySentAt, r.BouncedAt, r.BounceReason, r.UpdatedAt, r.Version)
}

type aliasRow struct {
	Email     string `json:"email"`
	ContactID string `json:"contact_id"`
	Source    string `json:"source"`
	At        int64  `json:"at"`
}

const aliasCols = "email, contact_id, source, at"

func (r *aliasRow) dest() []any { return []any{&r.Email, &r.ContactID, &r.Source, &r.At} }

func (r *aliasRow) insert(t *tx) error {
	return t.exec("INSERT INTO aliases ("+aliasCols+") VALUES ($1, $2, $3, $4)", r.Email, r.ContactID, r.Source, r.At)
}

type linkRow struct {
	ContactID string `json:"contact_id"`
	Scope     string `json:"scope"` // "tenant" or "account"
	ScopeKey  string `json:"scope_key"`
	Role      string `json:"role"`
	Source    string `json:"source"`
	AddedAt   int64  `json:"added_at"`
	RemovedAt int64  `json:"removed_at"`
}

const linkCols = "contact_id, scope, scope_key, role, source, added_at, removed_at"

const (
	scopeTenant  = "tenant"
	scopeAccount = "account"
)

func (r *linkRow) dest() []any {
	return []any{&r.ContactID, &r.Scope, &r.ScopeKey, &r.Role, &r.Source, &r.AddedAt, &r.RemovedAt}
}

func (r *linkRow) insert(t *tx) error {
	return t.exec("INSERT INTO links ("+linkCols+") VALUES ($1, $2, $3, $4, $5, $6, $7)",
		r.ContactID, r.Scope, r.ScopeKey, r.Role, r.Source, r.AddedAt, r.RemovedAt)
}

func (r *linkRow) setRemoved(t *tx, at int64) error {
	r.RemovedAt = at
	return t.exec("UPDATE links SET removed_at = $6 WHERE contact_id = $1 AND scope = $2 AND scope_key = $3 AND role = $4 AND source = $5",
		r.ContactID, r.Scope, r.ScopeKey, r.Role, r.Source, at)
}

// id identifies a link within its contact.
func (r *linkRow) id() linkID { return linkID{r.ContactID, r.Scope, r.ScopeKey, r.Role, r.Source} }

type linkID struct{ contact, scope, key, role, source string }

func (r *linkRow) public() Link {
	l := Link{Role: Role(r.Role), Source: r.Source, Added: fromMicros(r.AddedAt), Removed: fromMicros(r.RemovedAt)}
	if r.Scope == scopeAccount {
		l.Account = r.ScopeKey
	} else {
		l.Tenant = r.ScopeKey
	}
	return l
}

type accountRow struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Source    string `json:"source"`
	CreatedAt int64  `json:"created_at"`
	UpdatedAt int64  `json:"updated_at"`
	Version   int64  `json:"version"`
}

const accountCols = "id, name, source, created_at, updated_at, version"

func (r *accountRow) dest() []any {
	return []any{&r.ID, &r.Name, &r.Source, &r.CreatedAt, &r.UpdatedAt, &r.Version}
}

func (r *accountRow) insert(t *tx) error {
	return t.exec("INSERT INTO accounts ("+accountCols+") VALUES ($1, $2, $3, $4, $5, $6)", r.ID, r.Name, r.Source, r.CreatedAt, r.UpdatedAt, r.Version)
}

type tenantRow struct {
	Key       string `json:"key"`
	AccountID string `json:"account_id"`
	Name      string `json:"name"`
	States    string `json:"states"` // JSON object: product -> state
	StatesAt  int64  `json:"states_at"`
	CreatedAt int64  `json:"created_at"`
	UpdatedAt int64  `json:"updated_at"`
}

const tenantCols = "tenant_key, account_id, name, states, states_at, created_at, updated_at"

func (r *tenantRow) dest() []any {
	return []any{&r.Key, &r.AccountID, &r.Name, &r.States, &r.StatesAt, &r.CreatedAt, &r.UpdatedAt}
}

func (r *tenantRow) insert(t *tx) error {
	return t.exec("INSERT INTO tenants ("+tenantCols+") VALUES ($1, $2, $3, $4, $5, $6, $7)",
		r.Key, r.AccountID, r.Name, r.States, r.StatesAt, r.CreatedAt, r.UpdatedAt)
}

func (r *tenantRow) update(t *tx) error {
	return t.exec("UPDATE tenants SET account_id = $2, name = $3, states = $4, states_at = $5, updated_at = $6 WHERE tenant_key = $1",
		r.Key, r.AccountID, r.Name, r.States, r.StatesAt, r.UpdatedAt)
}

func (r *tenantRow) public() Tenant {
	t := Tenant{Key: r.Key, Name: r.Name, Account: r.AccountID, States: map[string]string{}, StatesAsOf: fromMicros(r.StatesAt)}
	_ = json.Unmarshal([]byte(r.States), &t.States)
	return t
}

type historyRow struct {
	Seq       int64  `json:"seq"`
	At        int64  `json:"at"`
	Actor     string `json:"actor"`
	Source    string `json:"source"`
	Action    string `json:"action"`
	ContactID string `json:"contact_id"`
	AccountID string `json:"account_id"`
	Tenant    string `json:"tenant"`
	Version   int64  `json:"version"`
	Detail    string `json:"detail"`
}

const historyCols = "seq, at, actor, source, action, contact_id, account_id, tenant, version, detail"

func (r *historyRow) dest() []any {
	return []any{&r.Seq, &r.At, &r.Actor, &r.Source, &r.Action, &r.ContactID, &r.AccountID, &r.Tenant, &r.Version, &r.Detail}
}

func (r *historyRow) insert(t *tx) error {
	return t.exec("INSERT INTO history ("+historyCols+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
		r.Seq, r.At, r.Actor, r.Source, r.Action, r.ContactID, r.AccountID, r.Tenant, r.Version, r.Detail)
}

func (r *historyRow) public() Change {
	c := Change{Seq: r.Seq, At: fromMicros(r.At), Actor: r.Actor, Source: r.Source, Action: r.Action,
		ContactID: r.ContactID, AccountID: r.AccountID, Tenant: r.Tenant, Version: r.Version}
	_ = json.Unmarshal([]byte(r.Detail), &c.Detail)
	return c
}

type erasedRow struct {
	Hash      string `json:"hash"`
	ContactID string `json:"contact_id"`
	LedgerID  int64  `json:"ledger_id"`
	At        int64  `json:"at"`
}

const erasedCols = "hash, contact_id, ledger_id, at"

func (r *erasedRow) dest() []any { return []any{&r.Hash, &r.ContactID, &r.LedgerID, &r.At} }

func (r *erasedRow) insert(t *tx) error {
	return t.exec("INSERT INTO erased ("+erasedCols+") VALUES ($1, $2, $3, $4)", r.Hash, r.ContactID, r.LedgerID, r.At)
}

// rowPtr is a row type whose pointer can scan itself.
type rowPtr[R any] interface {
	*R
	dest() []any
}

// load runs query and scans every row into R.
func load[R any, P rowPtr[R]](t *tx, query string, args ...any) ([]R, error) {
	rows, err := t.QueryContext(t.ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("contacts: %s: %w", firstWords(query), err)
	}
	defer rows.Close()
	var out []R
	for rows.Next() {
		var r R
		if err := rows.Scan(P(&r).dest()...); err != nil {
			return nil, fmt.Errorf("contacts: scan: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// loadOne returns the first row of query, or nil.
func loadOne[R any, P rowPtr[R]](t *tx, query string, args ...any) (*R, error) {
	var r R
	err := t.QueryRowContext(t.ctx, query, args...).Scan(P(&r).dest()...)
	if err == sql.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("contacts: %s: %w", firstWords(query), err)
	}
	return &r, nil
}

// publicContact builds the Contact a caller sees from its row and links.
func publicContact(r *contactRow, links []linkRow, now time.Time, staleAfter time.Duration) Contact {
	c := Contact{ID: r.ID, Email: r.Email, Name: r.Name, Phone: r.Phone, Language: r.Language, Source: r.Source,
		VerifiedAt: fromMicros(r.VerifiedAt), VerifySentAt: fromMicros(r.VerifySentAt), BouncedAt: fromMicros(r.BouncedAt),
		BounceReason: r.BounceReason, Created: fromMicros(r.CreatedAt), Updated: fromMicros(r.UpdatedAt), Version: r.Version,
		Roles: []Role{}, Links: []Link{}, Removed: true}
	c.Stale = stale(r.VerifiedAt, now, staleAfter)
	for i := range links {
		l := &links[i]
		c.Links = append(c.Links, l.public())
		if l.RemovedAt == 0 {
			c.Removed = false
			if !slices.Contains(c.Roles, Role(l.Role)) {
				c.Roles = append(c.Roles, Role(l.Role))
			}
		}
	}
	slices.SortFunc(c.Roles, func(a, b Role) int { return a.rank() - b.rank() })
	slices.SortFunc(c.Links, func(a, b Link) int {
		return strings.Compare(a.Tenant+"\x00"+a.Account+"\x00"+string(a.Role)+"\x00"+a.Source, b.Tenant+"\x00"+b.Account+"\x00"+string(b.Role)+"\x00"+b.Source)
	})
	return c
}

// stale reports whether a contact verified at verifiedAt (micros; 0 never)
// is due for verification.
func stale(verifiedAt int64, now time.Time, staleAfter time.Duration) bool {
	return verifiedAt == 0 || now.Sub(fromMicros(verifiedAt)) > staleAfter
}
