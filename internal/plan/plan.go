// Package plan runs reviewed bulk operations. A plan is the only way to run
// a lifecycle action (or a restore) on more than a handful of tenants, and
// each of its stages answers one cause of the April 2022 deletion:
//
//   - create validates every target against its declared kind, so a site key
//     handed to an app removal is refused before anything runs, with the
//     reason ("`42` is a site, not an app: this plan would delete whole
//     sites"); it computes the blast radius and a dry-run report with a
//     content hash;
//   - approve needs a second person, with the approver role (admin above
//     the caps), and binds to that hash: a changed report voids it;
//   - run goes in waves, internal tenants first, with a gate between waves
//     (a bake time, automatic checks, optionally a person's promote);
//   - before a delete or purge touches a tenant, the backup must prove it
//     can bring that tenant back (the restore test);
//   - rollback undoes the executed steps and verifies the bytes;
//   - freeze stops every runner within one tenant.
//
// Every step runs through tenant.Service, so the lifecycle rules, tenant
// locks, operations and the audit log apply to plans exactly as to single
// commands. docs/plans.md describes the whole mechanism.
package plan

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// Status is where a plan is in its life.
type Status string

const (
	// Draft: recorded, not (successfully) validated; Note says why.
	Draft Status = "draft"
	// Validated: the dry-run report exists and waits for a second person.
	Validated Status = "validated"
	// Approved: a second person approved exactly the report with this hash.
	Approved Status = "approved"
	// Running: waves are being run or gated.
	Running Status = "running"
	// Paused: a person, a freeze, an inconclusive gate or a failed restore
	// test stopped it; `plan resume` continues.
	Paused Status = "paused"
	// Done: every wave ran and passed its gate.
	Done Status = "done"
	// Aborted: a gate failed, the progress deadline passed, or a person
	// aborted it; `plan rollback` undoes what ran.
	Aborted Status = "aborted"
	// RolledBack: every executed step was undone and verified.
	RolledBack Status = "rolled_back"
)

// ActionRestore is the plan action that restores tenants in place, as
// `lifeline restore` does, one tenant per step.
const ActionRestore = "restore"

// Actions a plan can run.
var Actions = []string{"deactivate", "reactivate", "delete", "undelete", "purge", ActionRestore}

// Duration is a time.Duration that reads and writes as text ("10m0s") in
// JSON, so plans are readable and the report hash does not depend on how a
// duration was typed.
type Duration time.Duration

// D is the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Spec is how a plan runs: its waves and gates, and for a restore, the
// moment. It is part of what the approver approves.
type Spec struct {
	// Waves as written: "internal" (only first), then cumulative shares of
	// the other targets ("1%", "10%", "100%") or counts ("5"). The last
	// must cover every target ("100%").
	Waves []string `json:"waves"`
	// Bake is how long each gate waits after its wave before checking.
	Bake Duration `json:"bake"`
	// Manual gates wait for `plan promote` after their checks pass.
	Manual bool `json:"manual,omitempty"`
	// Deadline: a running plan that makes no progress for this long (bakes
	// and promotions aside) is aborted.
	Deadline Duration `json:"deadline"`
	// Checks are webhook URLs asked at every gate (pass, fail, inconclusive).
	Checks []string `json:"checks,omitempty"`
	// MaxFailedShare is the share of a wave's steps that may fail before its
	// gate fails (0: any failed step fails the gate).
	MaxFailedShare float64 `json:"max_failed_share"`
	// To or Before is the moment a restore plan restores to.
	To     *time.Time `json:"to,omitempty"`
	Before string     `json:"before,omitempty"`
}

// Plan is one reviewed bulk operation, in the JSON shape the CLI's --json,
// /api/v1/plans and plan webhook events share.
type Plan struct {
	ID           string      `json:"id"`
	Action       string      `json:"action"`
	Kind         tenant.Kind `json:"kind"`
	Reason       string      `json:"reason"`
	Requester    string      `json:"requester"`
	Spec         Spec        `json:"spec"`
	Status       Status      `json:"status"`
	RequiredRole state.Role  `json:"required_role,omitempty"`
	ReportHash   string      `json:"report_hash,omitempty"`
	Approval     *Approval   `json:"approval,omitempty"`
	// Wave is the wave being run or gated; Phase is "steps", "gate" (baking
	// and checking) or "promote" (waiting for `plan promote`).
	Wave      int       `json:"wave"`
	Phase     string    `json:"phase,omitempty"`
	GateUntil time.Time `json:"gate_until,omitzero"`
	// Note says why the plan is where it is: a refusal, a pause, an abort.
	Note     string    `json:"note,omitempty"`
	Runner   string    `json:"runner,omitempty"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Progress Progress  `json:"progress"`
	// Report is the last dry-run report; Steps and Gates what ran.
	Report *Report     `json:"report,omitempty"`
	Steps  []Step      `json:"steps,omitempty"`
	Gates  []GateCheck `json:"gates,omitempty"`

	leaseUntil   time.Time
	lastProgress time.Time
	resumedAt    time.Time
	promoted     int
}

// Approval is who approved which report.
type Approval struct {
	By   string     `json:"by"`
	Role state.Role `json:"role"`
	Hash string     `json:"hash"`
	At   time.Time  `json:"at"`
}

// Progress counts a plan's steps by status.
type Progress struct {
	Total      int `json:"total"`
	Pending    int `json:"pending"`
	Done       int `json:"done"`
	Failed     int `json:"failed"`
	Skipped    int `json:"skipped"`
	RolledBack int `json:"rolled_back"`
}

// StepStatus is the state of one target of a plan.
type StepStatus string

const (
	StepPending    StepStatus = "pending"
	StepRunning    StepStatus = "running" // claimed by a runner; after a crash, reconciled with its operation
	StepDone       StepStatus = "done"
	StepFailed     StepStatus = "failed"
	StepSkipped    StepStatus = "skipped" // the restore test failed: not run
	StepRolledBack StepStatus = "rolled_back"
)

// Step is one target of a plan and what happened to it.
type Step struct {
	Pos         int        `json:"pos"`
	Target      string     `json:"target"`
	Tenant      string     `json:"tenant"`
	Wave        int        `json:"wave"`
	Status      StepStatus `json:"status"`
	OpID        string     `json:"op_id,omitempty"`
	UndoOpID    string     `json:"undo_op_id,omitempty"`
	RestoreTest string     `json:"restore_test,omitempty"` // passed, failed
	Verify      string     `json:"verify,omitempty"`       // passed, or what did not match
	Error       string     `json:"error,omitempty"`
	Started     time.Time  `json:"started,omitzero"`
	Finished    time.Time  `json:"finished,omitzero"`

	digest string
	runner string
}

// Service creates, approves and runs plans. Fill the fields, then call
// OpenService once per state store.
type Service struct {
	// Tenants runs every step; its Store keeps the plans.
	Tenants *tenant.Service
	Config  Config
	// Restorer proves the way back before a delete or purge, and runs
	// restore plans. Without one, delete, purge and restore plans are
	// refused at run time: no deletion without a proven way back.
	Restorer Restorer
	// Contacts counts the contacts a plan affects; nil leaves the count out.
	Contacts ContactCounter
	// HTTP asks webhook checks; nil uses a client with Config.CheckTimeout.
	HTTP *http.Client
	// Sleep waits for d or until ctx ends (bakes, polling); nil uses a
	// timer. Tests make bakes instant with a fake clock.
	Sleep func(ctx context.Context, d time.Duration) error
	// Owner identifies this process in run leases ("host:pid"); default
	// the tenant service's Owner.
	Owner string
	// LeaseTTL is how long a run lease lasts without renewal (default 30s).
	LeaseTTL time.Duration
	// EventBackoff is the wait before an event webhook's first retry,
	// doubling after each failure (default 1s).
	EventBackoff time.Duration
	// OnChange, if set, is called after every status change (webhook
	// events for the status page and chat).
	OnChange func(ctx context.Context, p *Plan)
	// BeforeStep, if set, runs before each target's action. Tests use it to
	// crash, freeze or race at a precise point; nil in production.
	BeforeStep func(s Step)
	Log        *slog.Logger
}

// Config is what lifeline.yaml says about plans. Zero values take the
// defaults documented on each field.
type Config struct {
	// MaxTenants and MaxShare are the caps: a plan over more than
	// MaxTenants tenants (default 50) or more than MaxShare of all tenants
	// (default 0.01) needs an admin's approval, not an approver's.
	MaxTenants int
	MaxShare   float64
	// Handful is how many tenants may see a destructive lifecycle action
	// (deactivate, delete, purge) outside a plan within HandfulWindow
	// (default 5 per hour). Beyond it, Lifeline asks for a plan.
	Handful       int
	HandfulWindow time.Duration
	// Internal finds the company's own tenants, which run first (wave 0).
	// Without queries: in every product whose tenants table has the
	// integer column InternalColumn (default "internal"), the tenants where
	// it is not 0.
	Internal       []InternalQuery
	InternalColumn string
	// Waves, Bake and Deadline are the defaults of `plan create`
	// (internal,1%,10%,100%; 10m; 1h).
	Waves    []string
	Bake     time.Duration
	Deadline time.Duration
	// Checks are webhook URLs asked at every gate of every plan, besides a
	// plan's own. CheckTimeout bounds each (default 10s; no answer is
	// inconclusive).
	Checks       []string
	CheckTimeout time.Duration
	// MaxFailedShare is the default share of a wave's steps that may fail
	// before its gate fails (0: any failed step fails it); a plan created
	// with a share of its own keeps that.
	MaxFailedShare float64
	// Events are webhook URLs told of every change of every plan: status,
	// wave or phase (plan.<status>, see Event). serve delivers them.
	Events []string
	// RestoreTestBatch is how many tenants one restore test rebuilds at
	// once (default 25).
	RestoreTestBatch int
}

// InternalQuery returns the keys of internal tenants of one product: its
// first column, one row per tenant.
type InternalQuery struct {
	Product string
	Query   string
}

func (c Config) withDefaults() Config {
	if c.MaxTenants <= 0 {
		c.MaxTenants = 50
	}
	if c.MaxShare <= 0 {
		c.MaxShare = 0.01
	}
	if c.Handful <= 0 {
		c.Handful = 5
	}
	if c.HandfulWindow <= 0 {
		c.HandfulWindow = time.Hour
	}
	if len(c.Waves) == 0 {
		c.Waves = []string{"internal", "1%", "10%", "100%"}
	}
	if c.Bake <= 0 {
		c.Bake = 10 * time.Minute
	}
	if c.Deadline <= 0 {
		c.Deadline = time.Hour
	}
	if c.InternalColumn == "" {
		c.InternalColumn = "internal"
	}
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = 10 * time.Second
	}
	if c.RestoreTestBatch <= 0 {
		c.RestoreTestBatch = 25
	}
	return c
}

// ContactCounter counts the authorised contacts of tenants (the contacts
// vault), for the blast radius: who will have to be told.
type ContactCounter interface {
	// CountContacts returns how many distinct contacts the tenants have.
	// Tenants the vault does not know count zero.
	CountContacts(ctx context.Context, tenants []string) (int, error)
}

// OpenService prepares the plan tables in the state store and returns s.
func OpenService(ctx context.Context, s *Service) (*Service, error) {
	if s.Tenants == nil || s.Tenants.Store == nil {
		return nil, fault.New(fault.Internal, "this is a bug in the caller of plan.OpenService", "a plan service needs a tenant service with a state store")
	}
	s.Config = s.Config.withDefaults()
	if err := migrate(ctx, s.Tenants.Store); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Service) store() *state.Store { return s.Tenants.Store }

func (s *Service) now() time.Time { return s.Tenants.Clock() }

func (s *Service) owner() string {
	if s.Owner != "" {
		return s.Owner
	}
	if s.Tenants.Owner != "" {
		return s.Tenants.Owner
	}
	return tenant.DefaultOwner()
}

func (s *Service) ttl() time.Duration {
	if s.LeaseTTL > 0 {
		return s.LeaseTTL
	}
	return 30 * time.Second
}

func (s *Service) sleep(ctx context.Context, d time.Duration) error {
	if s.Sleep != nil {
		return s.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (s *Service) logf(msg string, args ...any) {
	if s.Log != nil {
		s.Log.Info(msg, args...)
	}
}

// destructive actions are the ones a freeze stops and the handful counts:
// each takes data away from a tenant's users.
func destructive(action string) bool {
	switch action {
	case "deactivate", "delete", "purge", ActionRestore:
		return true
	}
	return false
}

// needsRestoreTest: no deletion without a proven way back.
func needsRestoreTest(action string) bool { return action == "delete" || action == "purge" }

func notFound(id string) error {
	return fault.New(fault.NotFound, "`lifeline plan list` shows the plans", "no plan %q", id)
}

func statusList(ss ...Status) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return strings.Join(out, " or ")
}

func wrongStatus(p *Plan, doing string, want ...Status) error {
	hint := "`lifeline plan show " + p.ID + "` shows where it is"
	switch p.Status {
	case Paused:
		hint = "resume it first: `lifeline plan resume " + p.ID + "`"
	case Validated:
		hint = "it needs a second person's approval: `lifeline plan approve " + p.ID + "`"
	case Draft:
		hint = "it was refused at validation; create a corrected plan"
	}
	msg := fmt.Sprintf("plan %s is %s; %s needs it %s", p.ID, p.Status, doing, statusList(want...))
	if p.Note != "" {
		msg += " (" + p.Note + ")"
	}
	return fault.New(fault.Conflict, hint, "%s", msg)
}
