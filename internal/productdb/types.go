package productdb

import "time"

// Engines a product database can run on.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Schema is what Inspect found in a product database: its user tables, with
// Lifeline's own lifeline_* objects left out. Tables are sorted by name and
// columns by position, so two inspections of one schema are equal.
type Schema struct {
	Tables []Table `json:"tables"`
}

// Table describes one table.
type Table struct {
	Name        string       `json:"name"`
	Columns     []Column     `json:"columns"`
	PrimaryKey  []string     `json:"primary_key"` // empty: none
	ForeignKeys []ForeignKey `json:"foreign_keys,omitempty"`
}

// Column describes one column.
type Column struct {
	Name    string `json:"name"`
	Type    string `json:"type"` // as declared (SQLite) or format_type (PostgreSQL)
	NotNull bool   `json:"not_null,omitempty"`
	Default string `json:"default,omitempty"` // SQL text of the default; "" for none
}

// ForeignKey is a reference from Columns to RefTable(RefColumns).
type ForeignKey struct {
	Columns    []string `json:"columns"`
	RefTable   string   `json:"ref_table"`
	RefColumns []string `json:"ref_columns"`
	OnDelete   string   `json:"on_delete,omitempty"` // NO ACTION, CASCADE, SET NULL, RESTRICT, SET DEFAULT
}

// Spec is what the operator configured for one product (from lifeline.yaml).
type Spec struct {
	Product      string
	TenantColumn string
	TenantsTable string              // its primary key is the tenant key
	NameColumn   string              // "" = first of name, title, display_name in the tenants table
	Tables       []string            // "" = every table that has TenantColumn
	Apps         map[string][]string // app name -> its tables
	Limits       Limits
}

// Limits are the mass-delete limits the guards enforce on raw SQL.
type Limits struct {
	RowsPerStatement    int
	RowsPerTransaction  int // enforced on PostgreSQL only
	TenantsPerStatement int
}

// Layout is a Spec resolved against a Schema: what protect installs and what
// lifecycle steps act on.
type Layout struct {
	Spec
	// KeyColumn is the tenants table's primary key column: the tenant key.
	KeyColumn string
	// NameColumn is the resolved human-name column ("" if the table has none).
	NameColumn string
	// Tables are every protected table in foreign-key order, parents first,
	// the tenants table included (it is the root, so it comes first).
	Tables []string
}

// AppTables returns the protected tables of app in foreign-key order, or the
// tables that belong to no app when app is "" and whole is false. With
// whole=true and app "", it returns every table.
func (l *Layout) AppTables(app string, whole bool) []string {
	if app == "" && whole {
		return l.Tables
	}
	owner := map[string]string{}
	for a, ts := range l.Apps {
		for _, t := range ts {
			owner[t] = a
		}
	}
	var out []string
	for _, t := range l.Tables {
		if owner[t] == app {
			out = append(out, t)
		}
	}
	return out
}

// State is a tenant's lifecycle state in one product (or one app of it).
type State string

const (
	Active      State = "active"
	Deactivated State = "deactivated"
	Deleted     State = "deleted"
	Purged      State = "purged"
	// RestoredPending: restored, waiting for validation before it is active.
	RestoredPending State = "restored-pending-validation"
)

// Action is a lifecycle step a product database applies in one transaction.
type Action string

const (
	Deactivate Action = "deactivate"
	Reactivate Action = "reactivate"
	Delete     Action = "delete"
	Undelete   Action = "undelete"
	Purge      Action = "purge"
)

// Step asks a product database to apply one Action to one tenant (and app).
type Step struct {
	OpID   string
	Action Action
	Tenant string
	App    string  // "" = the whole product
	From   []State // the states the action is allowed from; else fault.Conflict
	To     State
}

// Result is what a committed step did.
type Result struct {
	Rows    map[string]int64 // rows moved (or purged) per table
	Already bool             // the step had already committed earlier (resume); Rows are from then
}

// TenantState is one row of lifeline_tenant_state: the state of a tenant (or
// of one app of it) in this product. Tenants without a row are active.
type TenantState struct {
	Tenant  string    `json:"tenant"`
	App     string    `json:"app,omitempty"`
	State   State     `json:"state"`
	OpID    string    `json:"op_id,omitempty"` // the operation that set it; for deleted, whose trash holds the rows
	Changed time.Time `json:"changed"`
}

// TenantInfo is what a product database knows of one tenant.
type TenantInfo struct {
	Key   string           `json:"key"`
	Name  string           `json:"name"` // from the root row (live or in trash)
	State State            `json:"state"`
	Since time.Time        `json:"since,omitzero"`
	OpID  string           `json:"op_id,omitempty"`
	Apps  []TenantState    `json:"apps,omitempty"` // per-app states that differ from active
	Rows  map[string]int64 `json:"rows,omitempty"` // live rows per table (only from Tenant, not Tenants)
	Trash map[string]int64 `json:"trash,omitempty"`
}
