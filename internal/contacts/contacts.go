// Package contacts is the contacts vault: each tenant's authorised contacts,
// kept outside every product database and backed up on its own, so that
// deleting, purging or losing a tenant (or a whole product database) never
// removes who to call about it. In 2022 the deleted sites took their admins'
// contact details with them; this package is the answer to that.
//
// The vault has its own store (Store: a SQLite file, or a schema of its own
// in PostgreSQL), separate from the state store and the product databases.
// Contacts get in by sync from the products' contacts queries, by CSV import
// and through the API; every change is a new version in an append-only
// history that says who, when and from which source. Nothing is deleted
// except by an erasure, which the erasure ledger of the state store records
// and which a restore of the vault re-applies.
//
// Service is the domain API; cmd/lifeline and internal/web only call it.
// docs/contacts.md describes the behaviour and the export format.
package contacts

import (
	"context"
	"slices"
	"strings"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// Role is what a contact may speak for a tenant or account about.
type Role string

const (
	RoleAdmin     Role = "admin"
	RoleTechnical Role = "technical"
	RoleBilling   Role = "billing"
	RoleSecurity  Role = "security"
)

// Roles lists the roles best first: the order `contacts for` ranks by.
var Roles = []Role{RoleAdmin, RoleTechnical, RoleBilling, RoleSecurity}

// ParseRole reads a role name, case-insensitively. An unknown role is
// fault.Invalid.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if !slices.Contains(Roles, r) {
		return "", fault.New(fault.Invalid, "use admin, technical, billing or security", "unknown contact role %q", s)
	}
	return r, nil
}

// rank orders roles best first; unknown roles sort last.
func (r Role) rank() int {
	if i := slices.Index(Roles, r); i >= 0 {
		return i
	}
	return len(Roles)
}

// Contact is one person in the vault.
type Contact struct {
	ID       string `json:"id"`
	Email    string `json:"email"`
	Name     string `json:"name,omitempty"`
	Phone    string `json:"phone,omitempty"`
	Language string `json:"language,omitempty"`
	// Source is where the contact was first seen: sync:PRODUCT,
	// import:FILE or api.
	Source string `json:"source"`
	// Roles are the roles of the contact's active links.
	Roles        []Role    `json:"roles"`
	VerifiedAt   time.Time `json:"verified_at,omitzero"`
	VerifySentAt time.Time `json:"verify_sent_at,omitzero"`
	BouncedAt    time.Time `json:"bounced_at,omitzero"`
	BounceReason string    `json:"bounce_reason,omitempty"`
	// Stale: not verified within the configured age (vault.stale_after).
	Stale bool `json:"stale"`
	// Removed: every link of the contact has been removed by its source.
	// The contact stays in the vault, with its history.
	Removed bool      `json:"removed"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	Version int64     `json:"version"`
	Links   []Link    `json:"links"`
}

// Link says a contact may speak for one tenant or one account, in one role,
// according to one source. A link its source no longer lists is marked
// removed, never deleted.
type Link struct {
	Tenant  string    `json:"tenant,omitempty"`
	Account string    `json:"account,omitempty"`
	Role    Role      `json:"role"`
	Source  string    `json:"source"`
	Added   time.Time `json:"added"`
	Removed time.Time `json:"removed,omitzero"`
}

// Account is a customer organisation and the tenants it owns.
type Account struct {
	ID      string    `json:"id"`
	Name    string    `json:"name,omitempty"`
	Source  string    `json:"source"`
	Tenants []string  `json:"tenants"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	Version int64     `json:"version"`
}

// Tenant is what the vault knows of a tenant: enough to answer "who speaks
// for site 42" after the products have forgotten site 42.
type Tenant struct {
	Key     string `json:"key"`
	Name    string `json:"name,omitempty"`
	Account string `json:"account,omitempty"`
	// States is the tenant's lifecycle state per product.
	States map[string]string `json:"states"`
	// StatesAsOf is when States were recorded by a sync; zero when they
	// were read live from the products just now.
	StatesAsOf time.Time `json:"states_as_of,omitzero"`
}

// Change is one entry of the vault's append-only history.
type Change struct {
	Seq       int64          `json:"seq"`
	At        time.Time      `json:"at"`
	Actor     string         `json:"actor"`
	Source    string         `json:"source"`
	Action    string         `json:"action"`
	ContactID string         `json:"contact_id,omitempty"`
	AccountID string         `json:"account_id,omitempty"`
	Tenant    string         `json:"tenant,omitempty"`
	Version   int64          `json:"version,omitempty"`
	Detail    map[string]any `json:"detail,omitempty"`
}

// Mailer sends one plain-text email. internal/notify implements it; tests
// use a fake. An error wrapping ErrUndeliverable means the address was
// refused for good and the contact is marked bounced; any other error is
// taken as transient and the contact is tried again next time.
type Mailer interface {
	Send(ctx context.Context, to, subject, text string) error
}

// ErrUndeliverable marks a permanent delivery failure (a hard bounce).
var ErrUndeliverable = &fault.Error{Code: fault.Refused, Msg: "the mail system refused the address for good"}

// Ledger is the part of the state store the vault writes to: erasures go to
// the erasure ledger, reads of personal data to the audit log.
// *state.Store implements it.
type Ledger interface {
	RecordErasure(ctx context.Context, e *state.Erasure) error
	Erasures(ctx context.Context, tenant string) ([]state.Erasure, error)
	AppendAudit(ctx context.Context, e state.AuditEntry) (state.AuditEntry, error)
}

// Directory lists the tenants the products know, with their lifecycle state
// per product. *tenant.Service implements it.
type Directory interface {
	List(ctx context.Context) ([]tenant.Summary, error)
}

// Erasures in the state store's ledger use this product name, and a tenant
// field of "contact:" + ErasureHash: they erase a person, not a tenant.
const (
	LedgerProduct = "contacts"
	ledgerPrefix  = "contact:"
)
