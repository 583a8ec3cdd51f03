package state

import "time"

// Operation is one change Lifeline makes to tenant data (deactivate, delete,
// undelete, purge, restore…). It is written before any product database is
// touched and finished after every step committed, so a crash in between
// leaves a record that `lifeline ops resume` completes.
type Operation struct {
	ID       string    `json:"id"`     // "op_" + sortable unique suffix; made by NewOperationID
	Action   string    `json:"action"` // deactivate, reactivate, delete, undelete, purge, restore…
	Actor    string    `json:"actor"`
	Reason   string    `json:"reason,omitempty"`
	Targets  []string  `json:"targets"` // typed targets as written, e.g. "site:42"
	Status   OpStatus  `json:"status"`
	Error    string    `json:"error,omitempty"`
	Created  time.Time `json:"created"`
	Finished time.Time `json:"finished,omitzero"`
	Steps    []Step    `json:"steps"`
	// Owner and LeaseUntil say which process is running the operation. A
	// running operation whose lease has expired was interrupted (kill -9,
	// a crash) and may be claimed by `lifeline ops resume`.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
}

// OpStatus is where an operation is in its life.
type OpStatus string

const (
	OpRunning    OpStatus = "running"     // steps are being applied (or the runner died: see Lease)
	OpDone       OpStatus = "done"        // every step committed
	OpFailed     OpStatus = "failed"      // a step failed; committed steps stay, the error says which
	OpRolledBack OpStatus = "rolled_back" // undone by a later operation
)

// Step is the part of an operation that runs in one product database
// transaction: one tenant in one product (optionally one app).
type Step struct {
	Product  string           `json:"product"`
	Tenant   string           `json:"tenant"`
	App      string           `json:"app,omitempty"`
	Status   StepStatus       `json:"status"`
	Rows     map[string]int64 `json:"rows,omitempty"` // rows moved per table
	Error    string           `json:"error,omitempty"`
	Finished time.Time        `json:"finished,omitzero"`
}

// StepStatus is the state of one step.
type StepStatus string

const (
	StepPending StepStatus = "pending"
	StepDone    StepStatus = "done"
	StepFailed  StepStatus = "failed"
	StepSkipped StepStatus = "skipped"
)

// OpFilter narrows ListOperations. Zero values mean "any".
type OpFilter struct {
	Tenant string
	Status OpStatus
	Limit  int // default 50
}

// AuditEntry is one line of the append-only, hash-chained audit log.
type AuditEntry struct {
	Seq      int64          `json:"seq"`
	At       time.Time      `json:"at"`
	Actor    string         `json:"actor"`
	Action   string         `json:"action"` // e.g. "operation.start", "token.create", "protect"
	OpID     string         `json:"op_id,omitempty"`
	Detail   map[string]any `json:"detail,omitempty"`
	PrevHash string         `json:"prev_hash"` // hex sha256 of the previous entry; "" for the first
	Hash     string         `json:"hash"`      // hex sha256 over PrevHash and this entry's canonical JSON
}

// Erasure is one entry of the erasure ledger: rows removed for good. It is
// never deleted, and a restore re-applies it, so erased data stays erased.
type Erasure struct {
	ID      int64            `json:"id"`
	At      time.Time        `json:"at"`
	Actor   string           `json:"actor"`
	Reason  string           `json:"reason"`
	OpID    string           `json:"op_id"`
	Tenant  string           `json:"tenant"`
	Product string           `json:"product"`
	App     string           `json:"app,omitempty"`
	Rows    map[string]int64 `json:"rows"`
}

// Role is what a token may do. Each role includes the ones before it.
type Role string

const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleApprover Role = "approver"
	RoleAdmin    Role = "admin"
)

// Roles in increasing order of power.
var Roles = []Role{RoleViewer, RoleOperator, RoleApprover, RoleAdmin}

// Allows reports whether r includes the powers of need.
func (r Role) Allows(need Role) bool { return r.rank() >= need.rank() && r.rank() > 0 }

func (r Role) rank() int {
	for i, x := range Roles {
		if x == r {
			return i + 1
		}
	}
	return 0
}

// Token is an operator credential. Only its hash is stored.
type Token struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"` // the person or script it belongs to; the actor of its requests
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
	Revoked bool      `json:"revoked"`
}

// SchemaRecord is what `lifeline protect` saw of a product database, so that
// `protect --check` can say exactly what drifted since.
type SchemaRecord struct {
	Product     string    `json:"product"`
	Fingerprint string    `json:"fingerprint"`
	Schema      []byte    `json:"schema"` // JSON of productdb.Schema
	Protected   time.Time `json:"protected"`
}
