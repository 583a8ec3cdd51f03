package plan

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/plan/waves"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// CreateRequest is `lifeline plan create` and POST /api/v1/plans.
type CreateRequest struct {
	Action string      `json:"action"`
	Kind   tenant.Kind `json:"kind"`
	// Targets are keys of Kind ("42" for a site, "42/tracker" for a
	// product, "42/tracker/insight" for an app) or typed targets.
	Targets   []string `json:"targets"`
	Reason    string   `json:"reason"`
	Requester string   `json:"-"` // from the token or --actor, never from the body
	// Waves, Bake, Deadline and MaxFailedShare (when 0) default to the config's.
	Waves          []string   `json:"waves,omitempty"`
	Bake           *Duration  `json:"bake,omitempty"`
	Deadline       *Duration  `json:"deadline,omitempty"`
	Manual         bool       `json:"manual,omitempty"`
	Checks         []string   `json:"checks,omitempty"`
	MaxFailedShare float64    `json:"max_failed_share,omitempty"`
	To             *time.Time `json:"to,omitempty"`
	Before         string     `json:"before,omitempty"`
}

// Report is a plan's dry run: what it would do to whom, for people (Text)
// and machines. Its Hash covers everything an approver approves.
type Report struct {
	Action    string         `json:"action"`
	Kind      tenant.Kind    `json:"kind"`
	Reason    string         `json:"reason"`
	Requester string         `json:"requester"`
	Spec      Spec           `json:"spec"`
	Targets   []TargetReport `json:"targets"`
	Waves     []WaveReport   `json:"waves"`
	Totals    Totals         `json:"totals"`
	Caps      Caps           `json:"caps"`
	// RequiredRole is the role the approver needs: approver, or admin above
	// the caps and for every purge.
	RequiredRole state.Role `json:"required_role"`
	// Problems are why the plan was refused; a refused report has no hash.
	Problems  []Problem `json:"problems,omitempty"`
	Notes     []string  `json:"notes,omitempty"`
	Hash      string    `json:"hash,omitempty"`
	Generated time.Time `json:"generated"`
}

// TargetReport is one target: whose it is and what the action touches.
type TargetReport struct {
	Target   string `json:"target"`
	Tenant   string `json:"tenant"`
	Name     string `json:"name"` // from the root row
	Internal bool   `json:"internal,omitempty"`
	Wave     int    `json:"wave"`
	// States and Rows are per product: the state of the target's scope
	// (the app's, for an app) and the rows the action moves, per table.
	States map[string]productdb.State  `json:"states"`
	Rows   map[string]map[string]int64 `json:"rows"`
}

// WaveReport is one wave: its name as written and how many targets it has.
type WaveReport struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	Size  int    `json:"size"`
}

// Totals is the blast radius.
type Totals struct {
	Tenants      int      `json:"tenants"`
	TenantsKnown int      `json:"tenants_known"` // in every product, for the share
	Share        float64  `json:"share"`
	Internal     int      `json:"internal"`
	Products     []string `json:"products"`
	Apps         []string `json:"apps,omitempty"`
	// Rows per "product.table", and their sum.
	Rows      map[string]int64 `json:"rows"`
	RowsTotal int64            `json:"rows_total"`
	// Contacts affected, from the contacts vault (absent without one).
	Contacts *int `json:"contacts,omitempty"`
}

// Caps are the limits above which an admin must approve.
type Caps struct {
	MaxTenants int     `json:"max_tenants"`
	MaxShare   float64 `json:"max_share"`
	Exceeded   bool    `json:"exceeded"`
	Why        string  `json:"why,omitempty"`
}

// Problem is one reason a plan is refused.
type Problem struct {
	Key string `json:"key"`
	// Kind: wrong_kind, ambiguous, unknown, state, duplicate, busy, invalid.
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// Create records a plan as a draft and validates it: every target is
// resolved against its kind, its state is checked against the action, and
// the dry-run report is computed. A valid plan becomes validated and waits
// for approval. A plan with any bad target stays a draft, is audited as
// refused, and Create returns it with a fault.Refused (or NotFound,
// Conflict) that names every offending key; nothing runs either way.
// Malformed requests (unknown action or kind, no reason, bad waves) are
// fault.Invalid and record nothing.
func (s *Service) Create(ctx context.Context, req CreateRequest) (*Plan, error) {
	spec, err := s.checkRequest(&req)
	if err != nil {
		return nil, err
	}
	now := s.now()
	p := &Plan{ID: newID(now), Action: req.Action, Kind: req.Kind, Reason: strings.TrimSpace(req.Reason), Requester: req.Requester,
		Spec: spec, Status: Draft, Created: now, Updated: now}
	if err := s.insert(ctx, p, state.AuditEntry{Actor: p.Requester, Action: "plan.create", Detail: map[string]any{
		"plan": p.ID, "action": p.Action, "kind": string(p.Kind), "targets": len(req.Targets), "reason": p.Reason}}); err != nil {
		return nil, err
	}
	rep, verr := s.validate(ctx, p, req.Targets)
	if verr != nil {
		return s.refuse(ctx, p, rep, verr)
	}
	audit := state.AuditEntry{Actor: p.Requester, Action: "plan.validate", Detail: map[string]any{
		"plan": p.ID, "from": string(Draft), "to": string(Validated), "hash": rep.Hash, "tenants": rep.Totals.Tenants,
		"rows": rep.Totals.RowsTotal, "required_role": string(rep.RequiredRole)}}
	if err := s.saveReport(ctx, p, rep, audit, Validated, Draft); err != nil {
		return nil, err
	}
	s.tell(ctx, p.ID)
	return s.get(ctx, p.ID)
}

// refuse keeps a refused plan as a draft with its problems, and audits it.
func (s *Service) refuse(ctx context.Context, p *Plan, rep *Report, verr error) (*Plan, error) {
	raw, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	kinds := map[string]int{}
	for _, pr := range rep.Problems {
		kinds[pr.Kind]++
	}
	audit := state.AuditEntry{Actor: p.Requester, Action: "plan.refused", Detail: map[string]any{
		"plan": p.ID, "problems": kinds, "error": truncate(verr.Error(), 2000)}}
	if _, err := s.execAudited(ctx, audit, "UPDATE plans SET report = ?, note = ?, updated = ? WHERE id = ?", string(raw), verr.Error(), micros(s.now()), p.ID); err != nil {
		return nil, err
	}
	out, err := s.get(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	return out, verr
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// newID makes a sortable plan ID from the operation ID scheme.
func newID(now time.Time) string {
	return "plan_" + strings.TrimPrefix(state.NewOperationID(now), "op_")
}

// checkRequest refuses malformed requests and fills the defaults.
func (s *Service) checkRequest(req *CreateRequest) (Spec, error) {
	cfg := s.Config.withDefaults()
	if !slices.Contains(Actions, req.Action) {
		return Spec{}, fault.New(fault.Invalid, "use --action "+strings.Join(Actions, "|"), "unknown plan action %q", req.Action)
	}
	if !slices.Contains(tenant.Kinds, req.Kind) {
		return Spec{}, fault.New(fault.Invalid, "say what the keys name: --kind site|product|app", "unknown or missing target kind %q", req.Kind)
	}
	if strings.TrimSpace(req.Reason) == "" {
		return Spec{}, fault.New(fault.Invalid, "add --reason \"why\"; the approver reads it and it goes into the audit log", "a plan needs a reason")
	}
	if strings.TrimSpace(req.Requester) == "" {
		return Spec{}, fault.New(fault.Invalid, "set --actor or LIFELINE_ACTOR", "a plan needs a requester")
	}
	if len(req.Targets) == 0 {
		return Spec{}, fault.New(fault.Invalid, "give --targets KEY,… or --targets @FILE", "a plan needs targets")
	}
	spec := Spec{Waves: req.Waves, Manual: req.Manual, Checks: req.Checks, MaxFailedShare: req.MaxFailedShare, Before: req.Before,
		Bake: Duration(cfg.Bake), Deadline: Duration(cfg.Deadline)}
	if len(spec.Waves) == 0 {
		spec.Waves = cfg.Waves
	}
	if spec.MaxFailedShare == 0 {
		spec.MaxFailedShare = cfg.MaxFailedShare
	}
	if _, err := waves.Parse(spec.Waves); err != nil {
		return Spec{}, err
	}
	if req.Bake != nil {
		if *req.Bake < 0 {
			return Spec{}, fault.New(fault.Invalid, "give --bake as a duration such as 10m, or 0 for none", "negative bake time %s", req.Bake.D())
		}
		spec.Bake = *req.Bake
	}
	if req.Deadline != nil {
		if *req.Deadline <= 0 {
			return Spec{}, fault.New(fault.Invalid, "give --deadline as a positive duration such as 1h", "progress deadline %s is not positive", req.Deadline.D())
		}
		spec.Deadline = *req.Deadline
	}
	if spec.MaxFailedShare < 0 || spec.MaxFailedShare >= 1 {
		return Spec{}, fault.New(fault.Invalid, "give a share from 0 (no failed step allowed) to below 1", "max failed share %v is out of range", spec.MaxFailedShare)
	}
	for _, c := range spec.Checks {
		if !strings.HasPrefix(c, "http://") && !strings.HasPrefix(c, "https://") {
			return Spec{}, fault.New(fault.Invalid, "give gate checks as http:// or https:// URLs", "gate check %q is not a URL", c)
		}
	}
	if req.To != nil {
		t := req.To.UTC()
		spec.To = &t
	}
	isRestore := req.Action == ActionRestore
	switch {
	case isRestore && (spec.To == nil) == (spec.Before == ""):
		return Spec{}, fault.New(fault.Invalid, "give --to 2026-04-05T08:00:00Z or --before OPERATION-ID, exactly once", "a restore plan needs the moment to restore to")
	case !isRestore && (spec.To != nil || spec.Before != ""):
		return Spec{}, fault.New(fault.Invalid, "leave out --to and --before", "--to and --before are for restore plans, not %s", req.Action)
	case isRestore && req.Kind == tenant.KindApp:
		return Spec{}, fault.New(fault.Invalid, "restore whole tenants (--kind site) or a tenant in one product (--kind product)", "a restore plan cannot target apps")
	}
	return spec, nil
}

// resolved is one target that passed validation.
type resolved struct {
	raw    string
	target tenant.Target
}

// validate resolves every target and builds the dry-run report. The error
// lists every problem; the report then carries them too.
func (s *Service) validate(ctx context.Context, p *Plan, raws []string) (*Report, error) {
	ctx = tenant.CheckSchemaOnce(ctx) // one schema inspection per product, not per target
	rep := &Report{Action: p.Action, Kind: p.Kind, Reason: p.Reason, Requester: p.Requester, Spec: p.Spec, Generated: s.now(),
		Targets: []TargetReport{}, Totals: Totals{Rows: map[string]int64{}}}
	var good []resolved
	seen := map[string]bool{}
	for _, raw := range raws {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		t, pr := s.resolve(ctx, p.Action, p.Kind, raw)
		if pr == nil && seen[t.String()] {
			pr = &Problem{Key: raw, Kind: "duplicate", Message: fmt.Sprintf("`%s` is listed more than once", raw)}
		}
		if pr != nil {
			rep.Problems = append(rep.Problems, *pr)
			continue
		}
		seen[t.String()] = true
		good = append(good, resolved{raw: raw, target: t})
	}
	busy, err := s.busyTenants(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	for _, g := range good {
		if other, ok := busy[g.target.Tenant]; ok {
			rep.Problems = append(rep.Problems, Problem{Key: g.raw, Kind: "busy",
				Message: fmt.Sprintf("tenant %s is already in plan %s, which is not finished", g.target.Tenant, other)})
		}
	}
	if len(rep.Problems) > 0 {
		return rep, refusal(p, rep.Problems, len(raws))
	}
	if err := s.radius(ctx, p, good, rep); err != nil {
		return rep, err
	}
	rep.Hash = hashReport(rep)
	return rep, nil
}

// resolve checks one key against the plan's kind and action. It explains a
// key of another kind by what it really is and what the plan would have
// done to it.
func (s *Service) resolve(ctx context.Context, action string, kind tenant.Kind, raw string) (tenant.Target, *Problem) {
	invalid := func(msg string) (tenant.Target, *Problem) {
		return tenant.Target{}, &Problem{Key: raw, Kind: "invalid", Message: msg}
	}
	key := raw
	declared := tenant.Kind("")
	if prefix, rest, typed := strings.Cut(raw, ":"); typed {
		declared, key = tenant.Kind(prefix), rest
		if !slices.Contains(tenant.Kinds, declared) {
			return invalid(fmt.Sprintf("`%s` has an unknown kind %q (use site:, product: or app:, or plain keys of --kind)", raw, prefix))
		}
	}
	parts := strings.Split(key, "/")
	if len(parts) > 3 || slices.Contains(parts, "") {
		return invalid(fmt.Sprintf("`%s` is not a key: write KEY for a site, KEY/PRODUCT for a product, KEY/PRODUCT/APP for an app", raw))
	}
	t := tenant.Target{Kind: []tenant.Kind{tenant.KindSite, tenant.KindProduct, tenant.KindApp}[len(parts)-1], Tenant: parts[0]}
	if len(parts) >= 2 {
		t.Product = parts[1]
	}
	if len(parts) == 3 {
		t.App = parts[2]
	}
	// Only a key that is also a product or app name can be ambiguous: only
	// then is it worth reading whether it is a tenant too.
	clash, _ := s.Tenants.Ambiguous(t.Tenant)
	exists := false
	if clash != "" {
		var err error
		if exists, err = s.exists(ctx, t.Tenant); err != nil {
			return invalid(err.Error())
		}
	}
	switch {
	case clash != "" && exists:
		return tenant.Target{}, &Problem{Key: raw, Kind: "ambiguous",
			Message: fmt.Sprintf("`%s` matches more than one kind: %s is both a tenant key and %s", raw, t.Tenant, clash)}
	case clash != "" && t.Kind == tenant.KindSite:
		return tenant.Target{}, &Problem{Key: raw, Kind: "wrong_kind",
			Message: fmt.Sprintf("`%s` is %s, not a tenant: a %s plan takes %s", raw, clash, kind, keyShape(kind))}
	}
	if t.Kind != kind || (declared != "" && declared != kind) {
		if _, err := s.Tenants.Resolve(ctx, t.String()); err != nil {
			if fault.CodeOf(err) == fault.NotFound {
				return tenant.Target{}, &Problem{Key: raw, Kind: "unknown", Message: fmt.Sprintf("`%s`: %v", raw, err)}
			}
			return invalid(fmt.Sprintf("`%s`: %v", raw, err))
		}
		return tenant.Target{}, &Problem{Key: raw, Kind: "wrong_kind",
			Message: fmt.Sprintf("`%s` is %s %s, not %s %s: this plan would %s %s", raw, article(t.Kind), t.Kind, article(kind), kind, action, scope(t))}
	}
	if action == ActionRestore {
		if _, err := s.Tenants.Resolve(ctx, t.String()); err != nil {
			return tenant.Target{}, problemOf(raw, err)
		}
		return t, nil
	}
	if _, _, err := s.Tenants.Check(ctx, tenant.Request{Action: productdb.Action(action), Target: t.String()}); err != nil {
		return tenant.Target{}, problemOf(raw, err)
	}
	return t, nil
}

// problemOf classifies an error from resolving or checking a target.
func problemOf(raw string, err error) *Problem {
	kind := "state"
	if fault.CodeOf(err) == fault.NotFound {
		kind = "unknown"
	}
	msg := fmt.Sprintf("`%s`: %v", raw, err)
	if h := fault.HintOf(err); h != "" && kind == "state" {
		msg += " (" + h + ")"
	}
	return &Problem{Key: raw, Kind: kind, Message: msg}
}

// exists reports whether key is a tenant in any product.
func (s *Service) exists(ctx context.Context, key string) (bool, error) {
	for _, p := range s.Tenants.Products {
		_, err := p.DB.Tenant(ctx, p.Layout, key)
		if err == nil {
			return true, nil
		}
		if fault.CodeOf(err) != fault.NotFound {
			return false, err
		}
	}
	return false, nil
}

func article(k tenant.Kind) string {
	if k == tenant.KindApp {
		return "an"
	}
	return "a"
}

func keyShape(k tenant.Kind) string {
	switch k {
	case tenant.KindProduct:
		return "KEY/PRODUCT keys"
	case tenant.KindApp:
		return "KEY/PRODUCT/APP keys"
	}
	return "tenant keys"
}

// scope says what acting on t would have touched, in the words of the
// refusal the 2022 script never got.
func scope(t tenant.Target) string {
	switch t.Kind {
	case tenant.KindProduct:
		return fmt.Sprintf("all of tenant %s's data in %s", t.Tenant, t.Product)
	case tenant.KindApp:
		return fmt.Sprintf("only app %s of tenant %s in %s", t.App, t.Tenant, t.Product)
	}
	return "whole sites"
}

// refusal turns problems into one error: a summary by kind, then the first
// problems verbatim (the report lists them all).
func refusal(p *Plan, problems []Problem, total int) error {
	byKind := map[string]int{}
	for _, pr := range problems {
		byKind[pr.Kind]++
	}
	words := map[string]string{
		"wrong_kind": "not " + article(p.Kind) + " " + string(p.Kind), "ambiguous": "ambiguous", "unknown": "unknown",
		"state": "in a state that does not allow " + p.Action, "duplicate": "listed twice", "busy": "in another unfinished plan", "invalid": "malformed",
	}
	var parts []string
	for _, k := range sortedKeys(byKind) {
		parts = append(parts, fmt.Sprintf("%d %s", byKind[k], words[k]))
	}
	var lines []string
	for i, pr := range problems {
		if i == 10 {
			lines = append(lines, fmt.Sprintf("  … and %d more (`lifeline plan show %s` lists them all)", len(problems)-10, p.ID))
			break
		}
		lines = append(lines, "  "+pr.Message)
	}
	code := fault.Refused
	hint := "fix the targets and create the plan again; nothing has run"
	if byKind["wrong_kind"] > 0 {
		hint = "check that the keys are what --kind says; for an app removal give KEY/PRODUCT/APP keys. Nothing has run"
	}
	return fault.New(code, hint, "plan %s refused before anything ran: %d of %d targets are wrong (%s):\n%s",
		p.ID, len(problems), total, strings.Join(parts, ", "), strings.Join(lines, "\n"))
}

// busyTenants maps each tenant of another approved, running or paused plan
// to that plan: one tenant, one plan at a time.
func (s *Service) busyTenants(ctx context.Context, except string) (map[string]string, error) {
	rows, err := s.store().DB().QueryContext(ctx, s.store().Rebind(`SELECT t.tenant, p.id FROM plan_targets t JOIN plans p ON p.id = t.plan_id
		WHERE p.status IN (?, ?, ?) AND p.id <> ?`), string(Approved), string(Running), string(Paused), except)
	if err != nil {
		return nil, fmt.Errorf("plan: busy tenants: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var t, id string
		if err := rows.Scan(&t, &id); err != nil {
			return nil, err
		}
		out[t] = id
	}
	return out, rows.Err()
}

// radius fills the report's targets, waves, totals and caps.
func (s *Service) radius(ctx context.Context, p *Plan, good []resolved, rep *Report) error {
	internal, err := s.internalTenants(ctx)
	if err != nil {
		return err
	}
	products, apps, tenants := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, g := range good {
		tr, err := s.describe(ctx, p.Action, g.target)
		if err != nil {
			return err
		}
		tr.Internal = internal[g.target.Tenant]
		for prod, tables := range tr.Rows {
			products[prod] = true
			for table, n := range tables {
				rep.Totals.Rows[prod+"."+table] += n
				rep.Totals.RowsTotal += n
			}
		}
		if g.target.App != "" {
			apps[g.target.Product+"/"+g.target.App] = true
		}
		tenants[g.target.Tenant] = true
		rep.Targets = append(rep.Targets, tr)
	}
	waves, err := assignWaves(p.Spec.Waves, rep.Targets)
	if err != nil {
		return err
	}
	rep.Waves = waves
	for _, t := range rep.Targets {
		if t.Internal {
			rep.Totals.Internal++
		}
	}
	if rep.Totals.Internal == 0 && slices.Contains(p.Spec.Waves, "internal") {
		rep.Notes = append(rep.Notes, "no target is an internal tenant: the internal wave is empty, so the first customer wave is the canary")
	}
	rep.Totals.Tenants = len(tenants)
	rep.Totals.Products, rep.Totals.Apps = sortedKeys(products), sortedKeys(apps)
	all, err := s.Tenants.List(ctx)
	if err != nil {
		return err
	}
	rep.Totals.TenantsKnown = len(all)
	if len(all) > 0 {
		rep.Totals.Share = float64(len(tenants)) / float64(len(all))
	}
	if s.Contacts != nil {
		n, err := s.Contacts.CountContacts(ctx, sortedKeys(tenants))
		if err != nil {
			return err
		}
		rep.Totals.Contacts = &n
	}
	cfg := s.Config.withDefaults()
	rep.Caps = Caps{MaxTenants: cfg.MaxTenants, MaxShare: cfg.MaxShare}
	var why []string
	if len(tenants) > cfg.MaxTenants {
		why = append(why, fmt.Sprintf("%d tenants is more than %d", len(tenants), cfg.MaxTenants))
	}
	if rep.Totals.Share > cfg.MaxShare {
		why = append(why, fmt.Sprintf("%.2f%% of all tenants is more than %.2f%%", rep.Totals.Share*100, cfg.MaxShare*100))
	}
	rep.Caps.Exceeded, rep.Caps.Why = len(why) > 0, strings.Join(why, "; ")
	rep.RequiredRole = state.RoleApprover
	if rep.Caps.Exceeded {
		rep.RequiredRole = state.RoleAdmin
	}
	if p.Action == "purge" {
		rep.RequiredRole = state.RoleAdmin
		rep.Notes = append(rep.Notes, "purge cannot be rolled back: it needs an admin's approval and the typed count of its targets")
	}
	return nil
}

// describe reads one target's name, states and rows in every product of its
// scope: the rows the action moves (the trash, for undelete and purge).
func (s *Service) describe(ctx context.Context, action string, t tenant.Target) (TargetReport, error) {
	tr := TargetReport{Target: t.String(), Tenant: t.Tenant, States: map[string]productdb.State{}, Rows: map[string]map[string]int64{}}
	for _, p := range s.Tenants.Products {
		if t.Product != "" && p.Name != t.Product {
			continue
		}
		info, err := p.DB.Tenant(ctx, p.Layout, t.Tenant)
		if fault.CodeOf(err) == fault.NotFound {
			continue
		}
		if err != nil {
			return tr, err
		}
		if tr.Name == "" {
			tr.Name = info.Name
		}
		tr.States[p.Name], _ = t.StateIn(info)
		source := info.Rows
		if action == "undelete" || action == "purge" {
			source = info.Trash
		}
		rows := map[string]int64{}
		for _, table := range p.Layout.AppTables(t.App, t.App == "") {
			if n := source[table]; n > 0 {
				rows[table] = n
			}
		}
		tr.Rows[p.Name] = rows
	}
	return tr, nil
}

// hashReport is the content hash an approval binds to: the plan as asked
// (action, kind, reason, requester, spec), the required role, and each
// target with its name, wave, states and, where nobody can be writing to it
// (its state is not active), its row counts. Rows of active targets move
// with their users' work, so they are shown but not hashed.
func hashReport(r *Report) string {
	type target struct {
		Target   string                      `json:"target"`
		Name     string                      `json:"name"`
		Wave     int                         `json:"wave"`
		Internal bool                        `json:"internal"`
		States   map[string]productdb.State  `json:"states"`
		Rows     map[string]map[string]int64 `json:"rows,omitempty"`
	}
	in := struct {
		Action       string      `json:"action"`
		Kind         tenant.Kind `json:"kind"`
		Reason       string      `json:"reason"`
		Requester    string      `json:"requester"`
		Spec         Spec        `json:"spec"`
		RequiredRole state.Role  `json:"required_role"`
		Targets      []target    `json:"targets"`
	}{r.Action, r.Kind, r.Reason, r.Requester, r.Spec, r.RequiredRole, nil}
	for _, t := range r.Targets {
		h := target{Target: t.Target, Name: t.Name, Wave: t.Wave, Internal: t.Internal, States: t.States}
		for prod, st := range t.States {
			if st != productdb.Active {
				if h.Rows == nil {
					h.Rows = map[string]map[string]int64{}
				}
				h.Rows[prod] = t.Rows[prod]
			}
		}
		in.Targets = append(in.Targets, h)
	}
	raw, _ := json.Marshal(in) // maps marshal with sorted keys: canonical
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}
