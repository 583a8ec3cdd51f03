package plan

import (
	"context"
	"fmt"
	"strings"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
)

// Actor is who asks for something, and with which role. Through the API
// both come from the bearer token; on the CLI the name comes from --actor
// or LIFELINE_ACTOR (or a token, when one is given) — docs/plans.md says
// what that trusts.
type Actor struct {
	Name string
	Role state.Role
}

// ApproveRequest is `lifeline plan approve`.
type ApproveRequest struct {
	ID    string
	Actor Actor
	// Hash, if set, is the report hash the approver reviewed; approval is
	// refused if the report is not that one any more.
	Hash string
	// Confirm is the typed count of targets a purge plan needs.
	Confirm int
}

// Approve approves a validated plan, binding the approval to its report's
// hash. The report is computed again first: if it changed since it was
// shown (a target's state or name, the internal tenants), the new report
// is stored and approval refused, so nobody approves what they did not see.
//
// Refusals: the requester approving their own plan (fault.Refused: a second
// person must); a role below the plan's required role (fault.Unauthorized:
// admin above the caps and for purges); a purge without the typed count
// (fault.Refused); a stale Hash or a changed report (fault.Conflict); a
// plan not validated (fault.Conflict).
func (s *Service) Approve(ctx context.Context, req ApproveRequest) (*Plan, error) {
	p, err := s.get(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	if p.Status != Validated {
		return nil, wrongStatus(p, "approval", Validated)
	}
	if samePerson(req.Actor.Name, p.Requester) {
		return nil, fault.New(fault.Refused, "ask a second person (approver role) to review `lifeline plan show "+p.ID+"` and approve it",
			"%s requested plan %s and cannot also approve it: a plan needs two people", p.Requester, p.ID)
	}
	rep, err := s.revalidate(ctx, p)
	if err != nil {
		return nil, err
	}
	if !req.Actor.Role.Allows(rep.RequiredRole) {
		why := ""
		if rep.Caps.Exceeded {
			why = " because its blast radius is above the caps (" + rep.Caps.Why + ")"
		} else if p.Action == "purge" {
			why = " because a purge cannot be undone"
		}
		return nil, fault.New(fault.Unauthorized, "ask someone with the "+string(rep.RequiredRole)+" role to approve it",
			"plan %s needs approval by the %s role%s; %s has %s", p.ID, rep.RequiredRole, why, req.Actor.Name, orNone(req.Actor.Role))
	}
	if req.Hash != "" && req.Hash != rep.Hash {
		return nil, fault.New(fault.Conflict, "review `lifeline plan show "+p.ID+"` again and approve the hash it shows now",
			"plan %s's report hash is %s, not the %s you reviewed", p.ID, short(rep.Hash), short(req.Hash))
	}
	if p.Action == "purge" && req.Confirm != len(rep.Targets) {
		return nil, fault.New(fault.Refused, fmt.Sprintf("purge cannot be rolled back; if you mean it, approve with --confirm %d", len(rep.Targets)),
			"plan %s purges %d targets: type that count to confirm (got %d)", p.ID, len(rep.Targets), req.Confirm)
	}
	now := s.now()
	err = s.transition(ctx, p, req.Actor.Name, "approve", Approved, []Status{Validated}, map[string]any{
		"approved_by": req.Actor.Name, "approved_role": string(req.Actor.Role), "approved_hash": rep.Hash, "approved_at": micros(now),
	}, map[string]any{"hash": rep.Hash, "role": string(req.Actor.Role), "required_role": string(rep.RequiredRole)})
	if err != nil {
		return nil, err
	}
	return s.get(ctx, p.ID)
}

// revalidate computes the report again over the plan's resolved targets.
// A report that changed since it was stored is saved (the plan stays or
// goes back to validated, without approval) and reported as a
// fault.Conflict; a plan whose targets no longer validate goes back to
// draft with the refusal.
func (s *Service) revalidate(ctx context.Context, p *Plan) (*Report, error) {
	if p.Report == nil {
		return nil, wrongStatus(p, "validation", Validated)
	}
	var targets []string
	for _, t := range p.Report.Targets {
		targets = append(targets, t.Target)
	}
	rep, verr := s.validate(ctx, p, targets)
	if verr != nil {
		if rep == nil || len(rep.Problems) == 0 {
			return nil, verr
		}
		if err := s.transition(ctx, p, "lifeline", "invalidate", Draft, []Status{Validated, Approved}, map[string]any{"note": verr.Error(),
			"approved_by": "", "approved_role": "", "approved_hash": "", "approved_at": 0}, map[string]any{"problems": len(rep.Problems)}); err != nil {
			return nil, err
		}
		return nil, verr
	}
	if rep.Hash == p.ReportHash {
		return rep, nil
	}
	from := p.Status
	event := "report_changed"
	if from == Approved {
		event = "approval_voided"
	}
	audit := state.AuditEntry{Actor: "lifeline", Action: "plan." + event, Detail: map[string]any{
		"plan": p.ID, "from": string(from), "to": string(Validated), "old_hash": p.ReportHash, "new_hash": rep.Hash}}
	if err := s.saveReport(ctx, p, rep, audit, Validated, from); err != nil {
		return nil, err
	}
	s.tell(ctx, p.ID)
	what := diffReports(p.Report, rep)
	if from == Approved {
		return nil, fault.New(fault.Conflict, "review `lifeline plan show "+p.ID+"` and ask for approval again",
			"plan %s's approval is void: its report changed since it was approved (%s)", p.ID, what)
	}
	return nil, fault.New(fault.Conflict, "review `lifeline plan show "+p.ID+"` again, then approve",
		"plan %s's report changed since it was shown (%s); the new report is stored", p.ID, what)
}

// diffReports names the first differences between two reports, for people.
func diffReports(old, cur *Report) string {
	var out []string
	byTarget := map[string]TargetReport{}
	for _, t := range old.Targets {
		byTarget[t.Target] = t
	}
	for _, t := range cur.Targets {
		o, ok := byTarget[t.Target]
		switch {
		case !ok:
			out = append(out, t.Target+" is new")
		case o.Wave != t.Wave:
			out = append(out, fmt.Sprintf("%s moved from wave %d to %d", t.Target, o.Wave, t.Wave))
		case o.Name != t.Name:
			out = append(out, fmt.Sprintf("%s was renamed from %q to %q", t.Target, o.Name, t.Name))
		default:
			for prod, st := range t.States {
				if o.States[prod] != st {
					out = append(out, fmt.Sprintf("%s is now %s in %s (was %s)", t.Target, st, prod, o.States[prod]))
				} else if st != productdb.Active && fmt.Sprint(o.Rows[prod]) != fmt.Sprint(t.Rows[prod]) {
					out = append(out, fmt.Sprintf("%s's rows in %s changed", t.Target, prod))
				}
			}
		}
		if len(out) >= 5 {
			out = append(out, "…")
			break
		}
	}
	if len(out) == 0 {
		out = append(out, "the required role or the plan's settings")
	}
	return strings.Join(out, "; ")
}

// samePerson compares actor names as people write them.
func samePerson(a, b string) bool {
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}

func orNone(r state.Role) string {
	if r == "" {
		return "no role"
	}
	return "the " + string(r) + " role"
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
