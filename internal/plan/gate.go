package plan

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"lifeline/internal/fault"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// Gate results. A failed check aborts the plan, an inconclusive one pauses
// it: a person decides (`plan promote` passes the gate, `plan abort` ends
// the plan).
const (
	Pass         = "pass"
	Fail         = "fail"
	Inconclusive = "inconclusive"
	Promoted     = "promoted"
)

// gate decides, once the bake is over, whether the next wave may start.
func (r *runner) gate(ctx context.Context, p *Plan) (halt bool, err error) {
	g := GateCheck{Wave: p.Wave, At: r.s.now(), Checks: r.s.checks(ctx, p)}
	g.Result = Pass
	for _, c := range g.Checks {
		if c.Result == Fail {
			g.Result = Fail
			break
		}
		if c.Result == Inconclusive {
			g.Result = Inconclusive
		}
	}
	// The gate's result is recorded with what it leads to, in one
	// transaction: an abort, a pause, a wait for a person, or the next wave.
	saved := r.s.saveGate(ctx, p.ID, g)
	detail := map[string]any{"wave": p.Wave, "result": g.Result, "checks": g.Checks}
	switch g.Result {
	case Fail:
		note := fmt.Sprintf("aborted: the gate after wave %d failed (%s); `lifeline plan rollback %s` undoes what ran", p.Wave, failing(g, Fail), p.ID)
		return true, r.s.transitionWith(ctx, p, "lifeline", "abort", Aborted, []Status{Running}, released(map[string]any{"note": note}), detail, saved)
	case Inconclusive:
		note := fmt.Sprintf("paused: the gate after wave %d is inconclusive (%s); `lifeline plan promote %s` passes it, `lifeline plan abort %s` ends the plan",
			p.Wave, failing(g, Inconclusive), p.ID, p.ID)
		return true, r.s.transitionWith(ctx, p, "lifeline", "pause", Paused, []Status{Running}, map[string]any{"note": note}, detail, saved)
	}
	passed := both(saved, r.s.auditTx(ctx, auditGate(r.actor.Name, p.ID, detail)))
	if p.Spec.Manual && p.promoted <= p.Wave {
		note := fmt.Sprintf("wave %d passed its gate; waiting for `lifeline plan promote %s`", p.Wave, p.ID)
		_, err := r.s.advance(ctx, p.ID, map[string]any{"phase": phasePromote, "note": note}, passed)
		return true, err
	}
	return false, r.nextWave(ctx, p, passed)
}

// both runs a, then b, in one transaction.
func both(a, b func(*sql.Tx) error) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		if err := a(tx); err != nil {
			return err
		}
		return b(tx)
	}
}

func failing(g GateCheck, result string) string {
	var out []string
	for _, c := range g.Checks {
		if c.Result == result {
			out = append(out, c.Name+": "+c.Detail)
		}
	}
	return strings.Join(out, "; ")
}

// checks runs a gate's automatic checks over the wave just run.
func (s *Service) checks(ctx context.Context, p *Plan) []Check {
	var ran, failed, unverified, untested int
	var bad []string
	for _, st := range p.Steps {
		if st.Wave != p.Wave {
			continue
		}
		switch st.Status {
		case StepDone:
			ran++
			if st.Verify != "passed" {
				unverified++
				bad = append(bad, st.Target+": "+st.Verify)
			}
		case StepFailed:
			ran++
			failed++
		case StepSkipped:
			// Skipped before a person resumed the plan: accepted by them.
			if st.Finished.After(p.resumedAt) {
				untested++
			}
		}
	}
	out := []Check{{Name: "verification", Result: Pass, Detail: fmt.Sprintf("%d steps verified", ran-failed-unverified)}}
	if unverified > 0 {
		out[0] = Check{Name: "verification", Result: Fail, Detail: fmt.Sprintf("%d steps did not leave their target as promised: %s", unverified, strings.Join(head(bad, 3), "; "))}
	}
	rt := Check{Name: "restore_tests", Result: Pass, Detail: "no restore test failed"}
	if untested > 0 {
		rt = Check{Name: "restore_tests", Result: Inconclusive, Detail: fmt.Sprintf("%d tenants were skipped because the backup could not reproduce them", untested)}
	}
	out = append(out, rt)
	fs := Check{Name: "failed_steps", Result: Pass, Detail: fmt.Sprintf("%d of %d steps failed", failed, ran)}
	if ran > 0 && float64(failed)/float64(ran) > p.Spec.MaxFailedShare {
		fs.Result = Fail
		fs.Detail += fmt.Sprintf(", more than the %.0f%% allowed", p.Spec.MaxFailedShare*100)
	}
	out = append(out, fs)
	urls := append(append([]string{}, s.Config.Checks...), p.Spec.Checks...)
	for _, u := range urls {
		out = append(out, s.webhook(ctx, u, p))
	}
	return out
}

// GateRequest is what a webhook check receives: the plan (without its
// report) and the wave whose gate it is.
type GateRequest struct {
	Plan *Plan `json:"plan"`
	Wave int   `json:"wave"`
}

// GateAnswer is what a webhook check answers: {"result": "pass"} (or
// "fail", "inconclusive") and optionally why. Anything else — no answer in
// time, another status than 2xx, another body — is inconclusive.
type GateAnswer struct {
	Result string `json:"result"`
	Detail string `json:"detail,omitempty"`
}

// webhook asks one check URL.
func (s *Service) webhook(ctx context.Context, url string, p *Plan) Check {
	c := Check{Name: "webhook " + url, Result: Inconclusive}
	summary := *p
	summary.Report, summary.Steps, summary.Gates = nil, nil, nil
	body, err := json.Marshal(GateRequest{Plan: &summary, Wave: p.Wave})
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	timeout := s.Config.withDefaults().CheckTimeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	req.Header.Set("Content-Type", "application/json")
	client := s.HTTP
	if client == nil {
		client = &http.Client{Timeout: timeout}
	}
	resp, err := client.Do(req)
	if err != nil {
		c.Detail = "no answer: " + err.Error()
		return c
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		c.Detail = fmt.Sprintf("answered HTTP %d", resp.StatusCode)
		return c
	}
	var a GateAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		c.Detail = "answer is not {\"result\": \"pass|fail|inconclusive\"}"
		return c
	}
	switch a.Result {
	case Pass, Fail, Inconclusive:
		c.Result, c.Detail = a.Result, a.Detail
	default:
		c.Detail = fmt.Sprintf("answered %q, not pass, fail or inconclusive", a.Result)
	}
	return c
}

// Promote passes the current gate by a person's decision: a manual gate
// whose checks passed, or a gate that paused the plan as inconclusive. The
// plan then runs on (the caller runs it). fault.Conflict when no gate is
// waiting.
func (s *Service) Promote(ctx context.Context, id string, actor Actor) (*Plan, error) {
	p, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.refuseFrozen(ctx, "promote plan "+id); err != nil {
		return nil, err
	}
	waiting := (p.Status == Running && p.Phase == phasePromote) || (p.Status == Paused && p.Phase == phaseGate)
	if !waiting {
		return nil, wrongStatus(p, "promote (a gate waiting for a person)", Running, Paused)
	}
	g := GateCheck{Wave: p.Wave, At: s.now(), Result: Promoted, Checks: []Check{{Name: "promote", Result: Pass, Detail: "by " + actor.Name}}}
	set := map[string]any{"promoted": p.Wave + 1, "note": "", "last_progress": micros(s.now())}
	if p.Phase == phaseGate {
		set["phase"], set["wave"], set["gate_until"] = phaseSteps, p.Wave+1, 0
	}
	if err := s.transitionWith(ctx, p, actor.Name, "promote", Running, []Status{p.Status}, set, map[string]any{"wave": p.Wave}, s.saveGate(ctx, id, g)); err != nil {
		return nil, err
	}
	return s.get(ctx, id)
}

func auditGate(actor, id string, detail map[string]any) state.AuditEntry {
	detail["plan"] = id
	return state.AuditEntry{Actor: actor, Action: "plan.gate", Detail: detail}
}

// Pause stops a running (or approved) plan before its next tenant.
func (s *Service) Pause(ctx context.Context, id string, actor Actor, reason string) (*Plan, error) {
	p, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	note := "paused by " + actor.Name
	if reason != "" {
		note += ": " + reason
	}
	if err := s.transition(ctx, p, actor.Name, "pause", Paused, []Status{Running, Approved}, map[string]any{"note": note}, map[string]any{"reason": reason}); err != nil {
		return nil, err
	}
	return s.get(ctx, id)
}

// Resume lets a paused plan run again (the caller runs it). Targets not yet
// run must still be as the approved report shows them; if one changed, the
// plan stays paused (fault.Conflict): abort it and create a new one.
func (s *Service) Resume(ctx context.Context, id string, actor Actor) (*Plan, error) {
	p, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.refuseFrozen(ctx, "resume plan "+id); err != nil {
		return nil, err
	}
	if p.Status != Paused {
		return nil, wrongStatus(p, "resume", Paused)
	}
	if err := s.checkPending(ctx, p); err != nil {
		return nil, err
	}
	to := Running
	if p.Phase == "" { // paused before it ever ran
		to = Approved
	}
	now := s.now()
	if err := s.transition(ctx, p, actor.Name, "resume", to, []Status{Paused}, map[string]any{"note": "", "resumed_at": micros(now), "last_progress": micros(now)}, nil); err != nil {
		return nil, err
	}
	return s.get(ctx, id)
}

// Abort ends a plan that has not finished. What ran stays; `plan rollback`
// undoes it.
func (s *Service) Abort(ctx context.Context, id string, actor Actor, reason string) (*Plan, error) {
	p, err := s.get(ctx, id)
	if err != nil {
		return nil, err
	}
	note := "aborted by " + actor.Name
	if reason != "" {
		note += ": " + reason
	}
	if p.Progress.Done > 0 {
		note += fmt.Sprintf("; %d steps ran: `lifeline plan rollback %s` undoes them", p.Progress.Done, id)
	}
	if err := s.transition(ctx, p, actor.Name, "abort", Aborted, []Status{Draft, Validated, Approved, Running, Paused}, map[string]any{"note": note}, map[string]any{"reason": reason}); err != nil {
		return nil, err
	}
	return s.get(ctx, id)
}

// checkPending compares the targets not yet run with the approved report.
func (s *Service) checkPending(ctx context.Context, p *Plan) error {
	if p.Report == nil {
		return nil
	}
	byTarget := map[string]TargetReport{}
	for _, t := range p.Report.Targets {
		byTarget[t.Target] = t
	}
	var changed []string
	for _, st := range p.Steps {
		if st.Status != StepPending {
			continue
		}
		t, err := tenant.ParseTarget(st.Target)
		if err != nil {
			return err
		}
		now, err := s.describe(ctx, p.Action, t)
		if err != nil {
			return err
		}
		was := byTarget[st.Target]
		for prod, st0 := range was.States {
			if now.States[prod] != st0 {
				changed = append(changed, fmt.Sprintf("%s is %s in %s (approved as %s)", st.Target, orGone(string(now.States[prod])), prod, st0))
			}
		}
	}
	if len(changed) > 0 {
		return fault.New(fault.Conflict, "abort this plan (`lifeline plan abort "+p.ID+"`) and create a new one for what is left",
			"plan %s cannot resume: targets changed since approval: %s", p.ID, strings.Join(head(changed, 5), "; "))
	}
	return nil
}

func orGone(s string) string {
	if s == "" {
		return "gone"
	}
	return s
}
