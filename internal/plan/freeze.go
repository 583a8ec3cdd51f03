package plan

import (
	"context"
	"fmt"
	"strings"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// Freeze is the global stop: while it is on, no plan runs (runners pause
// their plan before their next tenant) and no destructive lifecycle
// command is admitted. It is the first action of any large incident.
// Rollbacks, reactivations and undeletes still run: they are the way back.
type Freeze struct {
	On     bool      `json:"on"`
	Reason string    `json:"reason,omitempty"`
	Actor  string    `json:"actor,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// Frozen returns the freeze (On false when there is none).
func (s *Service) Frozen(ctx context.Context) (Freeze, error) {
	f, err := s.frozen(ctx)
	if err != nil || f == nil {
		return Freeze{}, err
	}
	return *f, nil
}

// SetFreeze turns the freeze on or off, and audits it (freeze.on,
// freeze.off). Turning on an existing freeze keeps its start and actor and
// returns it; turning off when not frozen does nothing.
func (s *Service) SetFreeze(ctx context.Context, on bool, actor, reason string) (Freeze, error) {
	cur, err := s.frozen(ctx)
	if err != nil {
		return Freeze{}, err
	}
	if on == (cur != nil) {
		return s.Frozen(ctx)
	}
	if strings.TrimSpace(actor) == "" {
		return Freeze{}, fault.New(fault.Invalid, "set --actor or LIFELINE_ACTOR", "a freeze needs an actor")
	}
	// The freeze and its audit entry commit together.
	audit := state.AuditEntry{Actor: actor, Action: "freeze.off", Detail: map[string]any{"reason": reason}}
	q, args := "DELETE FROM plan_freeze WHERE id = 1", []any{}
	if on {
		audit.Action = "freeze.on"
		q, args = "INSERT INTO plan_freeze (id, reason, actor, since) VALUES (1, ?, ?, ?)", []any{reason, actor, micros(s.now())}
	}
	if _, err := s.execAudited(ctx, audit, q, args...); err != nil {
		return Freeze{}, err
	}
	return s.Frozen(ctx)
}

// refuseFrozen is the refusal of anything that would start destructive
// work during a freeze.
func (s *Service) refuseFrozen(ctx context.Context, doing string) error {
	f, err := s.frozen(ctx)
	if err != nil || f == nil {
		return err
	}
	return fault.New(fault.Refused, "wait for the incident to end; `lifeline freeze off` lifts the freeze",
		"cannot %s: Lifeline is frozen since %s by %s (%s)", doing, f.Since.Format(time.RFC3339), f.Actor, orDash(f.Reason))
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "no reason given"
	}
	return s
}

// Admit is tenant.Service's admission check (set it as its Admit hook).
// Requests a plan runs pass: the plan was reviewed as a whole. Others that
// take data away (deactivate, delete, purge) are refused during a freeze,
// and when they would make more than the handful of tenants changed that
// way outside plans within the window: many tenants at once is what plans
// are for. Reactivate and undelete always pass.
func (s *Service) Admit(ctx context.Context, req tenant.Request, t tenant.Target) error {
	if FromPlan(ctx) != "" || !destructive(string(req.Action)) {
		return nil
	}
	if err := s.refuseFrozen(ctx, string(req.Action)+" "+t.String()); err != nil {
		return err
	}
	cfg := s.Config.withDefaults()
	tenants, err := s.recentOutsidePlans(ctx, s.now().Add(-cfg.HandfulWindow))
	if err != nil {
		return err
	}
	tenants[t.Tenant] = true
	if len(tenants) <= cfg.Handful {
		return nil
	}
	return fault.New(fault.Refused,
		fmt.Sprintf("make it a plan, which is reviewed, approved by a second person and run in waves: `lifeline plan create --action %s --kind %s --targets …`", req.Action, t.Kind),
		"%s %s refused: it would make %d tenants changed by deactivate, delete or purge outside a plan within %s, more than the %d allowed",
		req.Action, t, len(tenants), cfg.HandfulWindow, cfg.Handful)
}

// recentOutsidePlans returns the tenants that destructive lifecycle
// operations not run by a plan have touched since. It reads the state
// store's operations: which ones a plan ran is known from the plan's
// steps, not from anything a caller could write in a reason.
func (s *Service) recentOutsidePlans(ctx context.Context, since time.Time) (map[string]bool, error) {
	rows, err := s.store().DB().QueryContext(ctx, s.store().Rebind(`SELECT DISTINCT st.tenant FROM operations o
		JOIN operation_steps st ON st.op_id = o.id
		WHERE o.created >= ? AND o.action IN ('deactivate', 'delete', 'purge') AND o.status IN ('running', 'done')
		AND NOT EXISTS (SELECT 1 FROM plan_targets pt WHERE pt.op_id = o.id)`), micros(since))
	if err != nil {
		return nil, fmt.Errorf("plan: recent operations: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out[t] = true
	}
	return out, rows.Err()
}
