package plan

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// Rollback undoes every step a plan ran, newest first: undelete for
// delete, reactivate for deactivate, the inverse for the others, the undo
// of a restore for a restore. Each undone target's rows are then hashed and
// compared with the hash taken just before its step ran: the rollback is
// only done when they are the same bytes. It runs during a freeze (it is
// the way back), and may be run again after a crash or a failure: undone
// steps are not redone.
//
// Refusals: a purge plan (fault.Refused: a purge is gone for good); a plan
// that is running (fault.Conflict: pause or abort it first).
func (s *Service) Rollback(ctx context.Context, id string, actor Actor) (*Plan, error) {
	p, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if p.Action == "purge" {
		return nil, fault.New(fault.Refused, "purged rows are gone for good; a restore from the backup (`lifeline restore`) is the only way, and the erasure ledger keeps erased tenants erased",
			"plan %s purged its targets: a purge cannot be rolled back", id)
	}
	if !slices.Contains([]Status{Done, Aborted, Paused}, p.Status) {
		return nil, wrongStatus(p, "rollback", Done, Aborted, Paused)
	}
	inv := productdb.Action("")
	if p.Action != ActionRestore {
		inv, _ = tenant.Inverse(productdb.Action(p.Action))
	} else if s.Restorer == nil {
		return nil, missingRestorer(p.Action)
	}
	// Hold the plan's lease while undoing: a runner still finishing its
	// tenant, or a second rollback, is refused instead of racing this one.
	if err := s.takeLease(ctx, p, actor); err != nil {
		return nil, err
	}
	r := &runner{s: s, id: id, actor: actor}
	stop := r.keepLease(ctx)
	defer func() {
		stop()
		_, _ = s.exec(context.WithoutCancel(ctx), "UPDATE plans SET runner = '', lease_until = 0 WHERE id = ? AND runner = ?", id, s.owner())
	}()
	if inv != "" {
		if err := r.canUndo(ctx, p, inv); err != nil {
			return nil, err
		}
	}
	if _, err := s.store().AppendAudit(ctx, state.AuditEntry{Actor: actor.Name, Action: "plan.rollback_start",
		Detail: map[string]any{"plan": id, "steps": p.Progress.Done}}); err != nil {
		return nil, err
	}
	steps := slices.Clone(p.Steps)
	// Newest first: waves in reverse, and within a wave, the reverse order.
	slices.SortStableFunc(steps, func(a, b Step) int {
		if a.Wave != b.Wave {
			return b.Wave - a.Wave
		}
		return b.Pos - a.Pos
	})
	var failed []string
	for i := range steps {
		st := &steps[i]
		if st.Status != StepDone {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := r.undo(ctx, p, st, inv); err != nil {
			st.Error = "rollback: " + err.Error()
			failed = append(failed, st.Target)
			if uerr := s.updateStep(ctx, id, st); uerr != nil {
				return nil, uerr
			}
		}
	}
	if len(failed) > 0 {
		note := fmt.Sprintf("rollback incomplete: %d targets could not be undone and verified (%s); fix the cause and run `lifeline plan rollback %s` again",
			len(failed), strings.Join(head(failed, 5), ", "), id)
		if _, err := s.setFields(ctx, id, map[string]any{"note": note}); err != nil {
			return nil, err
		}
		cur, _ := s.get(ctx, id)
		return cur, fault.New(fault.Internal, "see each step's error in `lifeline plan show "+id+"`", "%s", note)
	}
	if err := s.transition(ctx, p, actor.Name, "rollback", RolledBack, []Status{p.Status}, map[string]any{"note": "rolled back and verified", "phase": ""}, nil); err != nil {
		return nil, err
	}
	return s.get(ctx, id)
}

// canUndo checks, before anything is undone, that every executed step's
// inverse is allowed now, so a rollback does not stop halfway because a
// later change (another plan, a person) moved a target on.
func (r *runner) canUndo(ctx context.Context, p *Plan, inv productdb.Action) error {
	var problems []string
	for _, st := range p.Steps {
		if st.Status != StepDone {
			continue
		}
		t, err := tenant.ParseTarget(st.Target)
		if err != nil {
			return err
		}
		if r.undone(ctx, p, t) {
			continue
		}
		if _, _, err := r.s.Tenants.Check(ctx, tenant.Request{Action: inv, Target: st.Target}); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fault.New(fault.Conflict, "undo what changed them since (a later plan: `lifeline plan rollback` it first), then roll this one back",
		"plan %s cannot be rolled back now; nothing was undone: %s", p.ID, strings.Join(head(problems, 5), "; "))
}

// undo reverts one step and checks the bytes came back.
func (r *runner) undo(ctx context.Context, p *Plan, st *Step, inv productdb.Action) error {
	t, err := tenant.ParseTarget(st.Target)
	if err != nil {
		return err
	}
	pctx := withPlan(ctx, p.ID)
	reason := "rollback of " + planReason(p)
	if p.Action == ActionRestore {
		st.UndoOpID, err = r.s.Restorer.Undo(pctx, st.OpID, r.actor.Name, reason)
	} else {
		res, rerr := r.s.Tenants.Run(pctx, tenant.Request{Action: inv, Target: st.Target, Actor: r.actor.Name, Reason: reason})
		if res != nil {
			st.UndoOpID = res.ID
		}
		err = rerr
		// Undone already (a rollback interrupted after its operation
		// committed): the state refusal is expected; the bytes decide.
		if err != nil && fault.CodeOf(err) == fault.Conflict && r.undone(ctx, p, t) {
			err = nil
		}
	}
	if err != nil {
		return err
	}
	now, err := r.digest(ctx, t)
	if err != nil {
		return err
	}
	if diff := diffDigests(st.digest, now); diff != "" {
		st.Verify = "rollback left different rows: " + diff
		return fault.New(fault.Internal, "compare the tenant with the backup: `lifeline restore --dry-run`", "%s: %s", st.Target, st.Verify)
	}
	st.Status, st.Verify, st.Error = StepRolledBack, "rolled back; rows identical to before the plan", ""
	return r.s.updateStep(ctx, p.ID, st)
}

// undone says whether a target is already back in the state it was in
// before the plan's action.
func (r *runner) undone(ctx context.Context, p *Plan, t tenant.Target) bool {
	tr, err := r.s.describe(ctx, p.Action, t)
	if err != nil || p.Report == nil {
		return false
	}
	for _, was := range p.Report.Targets {
		if was.Target == t.String() {
			for prod, st := range was.States {
				if tr.States[prod] != st {
					return false
				}
			}
			return true
		}
	}
	return false
}

// digest hashes a target's live rows, per product and table of its scope,
// with the row hash restore verifies with: the same bytes, the same digest.
func (r *runner) digest(ctx context.Context, t tenant.Target) (string, error) {
	out := map[string]map[string]string{}
	for _, p := range r.s.Tenants.Products {
		if t.Product != "" && p.Name != t.Product {
			continue
		}
		if r.tables == nil {
			r.tables = map[string][]productdb.RestoreTable{}
		}
		rts, ok := r.tables[p.Name]
		if !ok {
			var err error
			if rts, _, err = p.DB.RestoreTables(ctx, p.Layout); err != nil {
				return "", err
			}
			r.tables[p.Name] = rts
		}
		scope := p.Layout.AppTables(t.App, t.App == "")
		tables := map[string]string{}
		for i := range rts {
			if !slices.Contains(scope, rts[i].Name) {
				continue
			}
			h, err := p.DB.HashLive(ctx, nil, &rts[i], t.Tenant)
			if err != nil {
				return "", err
			}
			tables[rts[i].Name] = fmt.Sprintf("%d:%s", h.Rows, h.Digest(rts[i].Columns, nil))
		}
		out[p.Name] = tables
	}
	raw, err := json.Marshal(out)
	return string(raw), err
}

// diffDigests names the tables whose rows differ; "" when none do.
func diffDigests(before, after string) string {
	var a, b map[string]map[string]string
	if err := json.Unmarshal([]byte(before), &a); err != nil {
		return "no digest was recorded before the step"
	}
	if err := json.Unmarshal([]byte(after), &b); err != nil {
		return err.Error()
	}
	var out []string
	for _, prod := range sortedKeys(a) {
		for _, table := range sortedKeys(a[prod]) {
			if a[prod][table] != b[prod][table] {
				out = append(out, fmt.Sprintf("%s.%s (%s before, %s now)", prod, table, a[prod][table], orGone(b[prod][table])))
			}
		}
	}
	return strings.Join(out, "; ")
}
