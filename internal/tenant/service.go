// Package tenant runs the tenant lifecycle (active → deactivated → deleted →
// purged) on typed targets, as operations that are recorded before they start
// and resumable after a crash. It owns the rules; productdb owns the SQL.
package tenant

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
)

// Product is one configured product database, protected and resolved.
type Product struct {
	Name   string
	DB     *productdb.DB
	Layout *productdb.Layout
}

// Service runs lifecycle operations. Fill the fields, then call its methods.
type Service struct {
	Store     *state.Store
	Products  []*Product    // in config order
	Retention time.Duration // how long deleted tenants stay before purge is allowed
	Now       func() time.Time
	Log       *slog.Logger
	// Owner identifies this process in operation leases: "host:pid".
	Owner string
	// LeaseTTL is how long an operation's lease lasts without renewal.
	LeaseTTL time.Duration
	// BeforeStep, if set, runs before each step is applied. Tests use it to
	// crash or race at a precise point; it is nil in production.
	BeforeStep func(state.Step)
	// Admit, if set, is asked before a resolved request is recorded; an
	// error refuses the request as it is. internal/plan uses it to refuse
	// destructive actions during a freeze, and on more than a handful of
	// tenants outside a plan. Nil admits everything.
	Admit func(ctx context.Context, req Request, t Target) error
}

// DefaultOwner is this process's lease identity.
func DefaultOwner() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", h, os.Getpid())
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) ttl() time.Duration {
	if s.LeaseTTL > 0 {
		return s.LeaseTTL
	}
	return 30 * time.Second
}

func (s *Service) product(name string) (*Product, error) {
	for _, p := range s.Products {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fault.New(fault.NotFound, "configured products: "+strings.Join(s.productNames(), ", "), "no product named %q", name)
}

func (s *Service) productNames() []string {
	out := make([]string, len(s.Products))
	for i, p := range s.Products {
		out[i] = p.Name
	}
	return out
}

// rule is what each action needs and does.
type rule struct {
	from        []productdb.State
	to          productdb.State
	needsReason bool
	inverse     productdb.Action // "" = cannot be undone automatically
}

var rules = map[productdb.Action]rule{
	productdb.Deactivate: {from: []productdb.State{productdb.Active}, to: productdb.Deactivated, inverse: productdb.Reactivate},
	productdb.Reactivate: {from: []productdb.State{productdb.Deactivated}, to: productdb.Active, inverse: productdb.Deactivate},
	// Delete is allowed only from deactivated: access is blocked first, and
	// the data goes only once nobody has missed the tenant.
	productdb.Delete: {from: []productdb.State{productdb.Deactivated}, to: productdb.Deleted, needsReason: true, inverse: productdb.Undelete},
	// Undelete is one step back: the tenant returns deactivated, and a
	// separate reactivate lets its users in again.
	productdb.Undelete: {from: []productdb.State{productdb.Deleted}, to: productdb.Deactivated, inverse: productdb.Delete},
	productdb.Purge:    {from: []productdb.State{productdb.Deleted}, to: productdb.Purged, needsReason: true},
}

// ParseAction checks an action name.
func ParseAction(s string) (productdb.Action, error) {
	a := productdb.Action(s)
	if _, ok := rules[a]; !ok {
		return "", fault.New(fault.Invalid, "use deactivate, reactivate, delete, undelete or purge", "unknown action %q", s)
	}
	return a, nil
}

// Resolve parses a typed target and checks it against what exists: the
// tenant is known, the product and app are configured, and the key does not
// also name something of another kind.
func (s *Service) Resolve(ctx context.Context, raw string) (Target, error) {
	t, err := ParseTarget(raw)
	if err != nil {
		return Target{}, err
	}
	if clash, hint := s.Ambiguous(t.Tenant); clash != "" {
		return Target{}, fault.New(fault.Refused, hint, "%q matches more than one kind: %q is both a tenant key and %s", raw, t.Tenant, clash)
	}
	if t.Kind != KindSite {
		p, err := s.product(t.Product)
		if err != nil {
			return Target{}, err
		}
		if t.Kind == KindApp {
			if _, ok := p.Layout.Apps[t.App]; !ok {
				return Target{}, fault.New(fault.NotFound, "apps of "+p.Name+": "+strings.Join(appNames(p.Layout), ", "),
					"product %s has no app %q", p.Name, t.App)
			}
		}
	}
	found := false
	for _, p := range s.scope(t) {
		if _, err := p.DB.Tenant(ctx, p.Layout, t.Tenant); err == nil {
			found = true
		} else if fault.CodeOf(err) != fault.NotFound {
			return Target{}, err
		}
	}
	if !found {
		where := "any product"
		if t.Kind != KindSite {
			where = "product " + t.Product
		}
		return Target{}, fault.New(fault.NotFound, "`lifeline tenants list` shows the known tenants", "unknown tenant %q: it is not in %s", t.Tenant, where)
	}
	return t, nil
}

func appNames(l *productdb.Layout) []string {
	var out []string
	for a := range l.Apps {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// scope is the products a target covers.
func (s *Service) scope(t Target) []*Product {
	if t.Kind == KindSite {
		return s.Products
	}
	for _, p := range s.Products {
		if p.Name == t.Product {
			return []*Product{p}
		}
	}
	return nil
}

// Request asks for one lifecycle action on one target.
type Request struct {
	Action productdb.Action
	Target string // typed, e.g. "site:42"
	Actor  string
	Reason string
}

// Run validates a request, records it as an operation and applies it, one
// transaction per product. It refuses before touching anything when the
// target, a state, the retention period or the schema says no. If a step
// fails after others committed, the committed ones are undone, so the
// operation is never left half done.
func (s *Service) Run(ctx context.Context, req Request) (*state.Operation, error) {
	r, ok := rules[req.Action]
	if !ok {
		return nil, fault.New(fault.Invalid, "use deactivate, reactivate, delete, undelete or purge", "unknown action %q", req.Action)
	}
	if r.needsReason && strings.TrimSpace(req.Reason) == "" {
		return nil, fault.New(fault.Invalid, "add --reason \"why\"; it goes into the audit log", "%s is destructive and needs a reason", req.Action)
	}
	if strings.TrimSpace(req.Actor) == "" {
		return nil, fault.New(fault.Invalid, "set --actor or LIFELINE_ACTOR", "an operation needs an actor")
	}
	t, err := s.Resolve(ctx, req.Target)
	if err != nil {
		return nil, err
	}
	if s.Admit != nil {
		if err := s.Admit(ctx, req, t); err != nil {
			return nil, err
		}
	}
	if op, busy, err := s.takeOver(ctx, req.Action, t); busy {
		return op, err
	}
	steps, err := s.plan(ctx, req.Action, t)
	if err != nil {
		return nil, err
	}
	op := &state.Operation{
		ID:      state.NewOperationID(s.now()),
		Action:  string(req.Action),
		Actor:   req.Actor,
		Reason:  req.Reason,
		Targets: []string{t.String()},
		Steps:   steps,
	}
	if err := s.Store.CreateOperation(ctx, op, s.Owner, s.ttl()); err != nil {
		return nil, err
	}
	return s.execute(ctx, op)
}

// plan turns a target into per-product steps after checking every state and
// the schema, so that nothing runs unless everything may.
func (s *Service) plan(ctx context.Context, a productdb.Action, t Target) ([]state.Step, error) {
	r := rules[a]
	var steps []state.Step
	var problems []string
	var hint string
	for _, p := range s.scope(t) {
		info, err := p.DB.Tenant(ctx, p.Layout, t.Tenant)
		if fault.CodeOf(err) == fault.NotFound && t.Kind == KindSite {
			continue // a site need not live in every product
		}
		if err != nil {
			return nil, err
		}
		if err := s.checkDrift(ctx, p); err != nil {
			return nil, err
		}
		cur, since := t.StateIn(info)
		// An app cannot be brought back while its whole product is gone.
		if t.Kind == KindApp && (info.State == productdb.Deleted || info.State == productdb.Purged) {
			problems = append(problems, fmt.Sprintf("tenant %s is %s in %s, so its app %s cannot be changed on its own", t.Tenant, info.State, p.Name, t.App))
			continue
		}
		if !slices.Contains(r.from, cur) {
			problems = append(problems, fmt.Sprintf("%s is %s in %s; %s needs %s", t, cur, p.Name, a, joinStates(r.from)))
			hint = fixFor(a, cur, t)
			continue
		}
		if a == productdb.Purge {
			if after := since.Add(s.Retention); s.now().Before(after) {
				problems = append(problems, fmt.Sprintf("%s was deleted in %s at %s; purge is allowed from %s (retention.deleted is %s)",
					t, p.Name, since.UTC().Format(time.RFC3339), after.UTC().Format(time.RFC3339), s.Retention))
				hint = "wait until the retention period has passed; until then `lifeline tenants undelete " + t.String() + "` can still bring it back"
				continue
			}
		}
		steps = append(steps, state.Step{Product: p.Name, Tenant: t.Tenant, App: t.App, Status: state.StepPending})
	}
	if len(problems) > 0 {
		code := fault.Conflict
		if a == productdb.Purge && hint != "" && strings.HasPrefix(hint, "wait") {
			code = fault.Refused
		}
		return nil, fault.New(code, hint, "%s refused: %s", a, strings.Join(problems, "; "))
	}
	if len(steps) == 0 {
		return nil, fault.New(fault.NotFound, "`lifeline tenants list` shows the known tenants", "%s has no data in any product", t)
	}
	return steps, nil
}

func joinStates(ss []productdb.State) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return strings.Join(out, " or ")
}

func fixFor(a productdb.Action, cur productdb.State, t Target) string {
	switch {
	case a == productdb.Delete && cur == productdb.Active:
		return "deactivate it first: `lifeline tenants deactivate " + t.String() + "`, then delete once nobody has missed it"
	case cur == productdb.Deleted:
		return "it is deleted: `lifeline tenants undelete " + t.String() + "` brings it back"
	case cur == productdb.Purged:
		return "it was purged: its rows are gone for good, see the erasure ledger"
	}
	return "`lifeline tenants show " + t.Tenant + "` shows its state in every product"
}

// checkDrift refuses to act on a product whose schema changed since protect:
// the guards and trash tables would no longer match the tables. Under
// CheckSchemaOnce, the first check of a product stands for the rest.
func (s *Service) checkDrift(ctx context.Context, p *Product) error {
	if once, ok := ctx.Value(schemaOnceKey{}).(*schemaOnce); ok {
		once.mu.Lock()
		defer once.mu.Unlock()
		if err, done := once.checked[p.Name]; done {
			return err
		}
		err := s.driftRefusal(ctx, p)
		once.checked[p.Name] = err
		return err
	}
	return s.driftRefusal(ctx, p)
}

func (s *Service) driftRefusal(ctx context.Context, p *Product) error {
	drift, err := Drift(ctx, s.Store, p)
	if err != nil {
		return err
	}
	if len(drift) > 0 {
		return fault.New(fault.Refused, "review the change, then run `lifeline protect` to protect the new schema",
			"the schema of %s drifted since `lifeline protect`: %s", p.Name, strings.Join(drift, "; "))
	}
	return nil
}

type schemaOnceKey struct{}

type schemaOnce struct {
	mu      sync.Mutex
	checked map[string]error
}

// CheckSchemaOnce returns a context under which Check (and Run) compare
// each product's live schema with the one protect recorded only the first
// time: a bulk check of many targets (a plan's validation) inspects each
// product once instead of once per target. Use it for one pass over many
// targets, not for long: a drift after the first check goes unseen under
// it (each plan step runs without it, and checks again).
func CheckSchemaOnce(ctx context.Context) context.Context {
	return context.WithValue(ctx, schemaOnceKey{}, &schemaOnce{checked: map[string]error{}})
}

// execute applies the pending steps of a claimed operation, renewing its
// lease, and finishes it. On a failed step it undoes the committed ones.
func (s *Service) execute(ctx context.Context, op *state.Operation) (*state.Operation, error) {
	stop := s.keepLease(ctx, op.ID)
	defer stop()
	a := productdb.Action(op.Action)
	r := rules[a]
	var done []state.Step
	var failure error
	for _, st := range op.Steps {
		if st.Status == state.StepDone {
			done = append(done, st)
			continue
		}
		if s.BeforeStep != nil {
			s.BeforeStep(st)
		}
		res, err := s.apply(ctx, op, st, a, r.from, r.to)
		if err != nil {
			st.Status, st.Error = state.StepFailed, err.Error()
			_ = s.Store.UpdateStep(context.WithoutCancel(ctx), op.ID, st)
			failure = fmt.Errorf("%s in %s: %w", op.Action, st.Product, err)
			break
		}
		st.Status, st.Rows, st.Finished = state.StepDone, res.Rows, s.now()
		if err := s.Store.UpdateStep(ctx, op.ID, st); err != nil {
			return nil, err
		}
		if a == productdb.Purge && !res.Already {
			if err := s.Store.RecordErasure(ctx, &state.Erasure{Actor: op.Actor, Reason: op.Reason, OpID: op.ID,
				Tenant: st.Tenant, Product: st.Product, App: st.App, Rows: res.Rows}); err != nil {
				return nil, err
			}
		}
		done = append(done, st)
	}
	bg := context.WithoutCancel(ctx)
	if failure == nil {
		if err := s.Store.FinishOperation(bg, op.ID, state.OpDone, ""); err != nil {
			return nil, err
		}
		return s.Store.GetOperation(bg, op.ID)
	}
	status := state.OpFailed
	if len(done) > 0 && r.inverse != "" {
		if err := s.undo(bg, op, done, r.inverse); err != nil {
			failure = fmt.Errorf("%w; undoing the committed steps also failed: %v (run `lifeline ops resume %s`)", failure, err, op.ID)
		} else {
			status = state.OpRolledBack
		}
	}
	if err := s.Store.FinishOperation(bg, op.ID, status, failure.Error()); err != nil {
		return nil, errors.Join(failure, err)
	}
	return nil, failure
}

func (s *Service) apply(ctx context.Context, op *state.Operation, st state.Step, a productdb.Action, from []productdb.State, to productdb.State) (productdb.Result, error) {
	p, err := s.product(st.Product)
	if err != nil {
		return productdb.Result{}, err
	}
	return p.DB.Apply(ctx, p.Layout, productdb.Step{OpID: op.ID, Action: a, Tenant: st.Tenant, App: st.App, From: from, To: to})
}

// undo reverts committed steps of a failed operation with the inverse action,
// under a derived operation ID so the product's applied markers stay unique.
func (s *Service) undo(ctx context.Context, op *state.Operation, done []state.Step, inv productdb.Action) error {
	r := rules[productdb.Action(op.Action)]
	undoOp := &state.Operation{ID: op.ID + "-undo", Action: string(inv)}
	for _, st := range done {
		if _, err := s.apply(ctx, undoOp, st, inv, []productdb.State{r.to}, r.from[0]); err != nil {
			return err
		}
		st.Status = state.StepSkipped
		st.Error = "undone after a later step failed"
		if err := s.Store.UpdateStep(ctx, op.ID, st); err != nil {
			return err
		}
	}
	return nil
}

// keepLease renews the operation's lease until the returned stop is called.
func (s *Service) keepLease(ctx context.Context, id string) (stop func()) {
	return state.KeepLease(ctx, s.ttl(), func(ctx context.Context) {
		if err := s.Store.ClaimOperation(ctx, id, s.Owner, s.ttl()); err != nil && ctx.Err() == nil && s.Log != nil {
			s.Log.Warn("renewing operation lease failed", "op", id, "err", err)
		}
	})
}

// Resume takes over an interrupted operation (its runner died) and finishes
// it. Steps that committed before the crash are recognised and not redone.
func (s *Service) Resume(ctx context.Context, id string) (*state.Operation, error) {
	op, err := s.Store.GetOperation(ctx, id)
	if err != nil {
		return nil, err
	}
	if op.Status != state.OpRunning {
		return op, fault.New(fault.Conflict, "nothing to resume", "operation %s is %s, not running", id, op.Status)
	}
	// Only lifecycle operations resume here; any other (an undo of a
	// restore) would be marked failed with its tenants half done.
	if _, ok := rules[productdb.Action(op.Action)]; !ok {
		return op, fault.New(fault.Refused, "finish it with "+state.FinishCommand(op.ID, op.Action),
			"operation %s is a %s, not a lifecycle operation this resumes", id, op.Action)
	}
	if err := s.claim(ctx, op); err != nil {
		return nil, err
	}
	return s.execute(ctx, op)
}

// claim takes an operation's lease. A lease held by a process of this host
// that no longer exists is taken at once instead of waiting for it to expire.
func (s *Service) claim(ctx context.Context, op *state.Operation) error {
	err := s.Store.ClaimOperation(ctx, op.ID, s.Owner, s.ttl())
	if err == nil || fault.CodeOf(err) != fault.Conflict || !ownerGone(op.Owner) {
		return err
	}
	return s.Store.TakeOverOperation(ctx, op.ID, op.Owner, s.Owner, s.ttl())
}

// ownerGone reports whether owner ("host:pid") is a process on this host
// that has exited.
func ownerGone(owner string) bool {
	host, pidText, ok := strings.Cut(owner, ":")
	me, _ := os.Hostname()
	if !ok || host != me {
		return false
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return false
	}
	_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
	return errors.Is(err, os.ErrNotExist)
}

// takeOver looks for an operation already holding the tenant. Running the
// command of an interrupted operation (same action, same target) again
// resumes it, which is how a kill -9 is recovered from. Any other operation
// on the tenant refuses the request. busy is false when the tenant is free.
func (s *Service) takeOver(ctx context.Context, a productdb.Action, t Target) (op *state.Operation, busy bool, err error) {
	running, err := s.Store.ListOperations(ctx, state.OpFilter{Tenant: t.Tenant, Status: state.OpRunning})
	if err != nil {
		return nil, true, err
	}
	for _, old := range running {
		interrupted := old.LeaseUntil.Before(s.now()) || ownerGone(old.Owner)
		if interrupted && old.Action == string(a) && slices.Equal(old.Targets, []string{t.String()}) {
			if s.Log != nil {
				s.Log.Info("resuming interrupted operation", "op", old.ID)
			}
			op, err := s.Resume(ctx, old.ID)
			return op, true, err
		}
		what := "is running"
		hint := "wait for it to finish: `lifeline ops show " + old.ID + "`"
		if interrupted {
			what = "was interrupted"
			hint = "finish it first with " + state.FinishCommand(old.ID, old.Action) + " (or rerun its command)"
		}
		return nil, true, fault.New(fault.Conflict, hint, "tenant %s already has an operation: %s %s %s %s",
			t.Tenant, old.ID, old.Action, strings.Join(old.Targets, ","), what)
	}
	return nil, false, nil
}
