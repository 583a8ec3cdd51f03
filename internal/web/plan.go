package web

import (
	"context"
	"net/http"

	"lifeline/internal/fault"
	"lifeline/internal/plan"
	"lifeline/internal/state"
)

// Plans serves /api/v1/plans and /api/v1/freeze: reviewed bulk operations
// over HTTP, in the JSON shape of `lifeline plan … --json`. The actor of
// every request is its token's name and its role the token's role, so the
// two-person rule holds here without trusting the caller.
type Plans struct {
	Service *plan.Service
	// Background is the context plans run in after their request returned
	// (serve's lifetime); nil runs them until the process ends.
	Background context.Context
}

func (s *Server) plans(w http.ResponseWriter, r *http.Request) (*plan.Service, bool) {
	if s.Plans == nil || s.Plans.Service == nil {
		s.writeError(w, r, fault.New(fault.Unavailable, "plans are served by `lifeline serve`", "plans are not configured"))
		return nil, false
	}
	return s.Plans.Service, true
}

func actorOf(r *http.Request) plan.Actor {
	tok := caller(r)
	return plan.Actor{Name: tok.Name, Role: tok.Role}
}

// planRefused is a refused plan: the error, and the plan with every
// problem in its report.
type planRefused struct {
	errorBody
	Plan *plan.Plan `json:"plan"`
}

func (s *Server) listPlans(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.plans(w, r)
	if !ok {
		return
	}
	list, err := svc.List(r.Context(), 100)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"plans": list})
}

func (s *Server) showPlan(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.plans(w, r)
	if !ok {
		return
	}
	p, err := svc.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// createPlan validates a plan; the requester is the token's name. A
// refused plan answers 422 with the plan and its problems.
func (s *Server) createPlan(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.plans(w, r)
	if !ok {
		return
	}
	var req plan.CreateRequest
	if err := decode(r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	req.Requester = caller(r).Name
	p, err := svc.Create(r.Context(), req)
	if err != nil && p != nil {
		writeJSON(w, http.StatusUnprocessableEntity, planRefused{errorBody{Error: err.Error(), Code: string(fault.CodeOf(err)), Hint: fault.HintOf(err)}, p})
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, p)
}

type approveBody struct {
	Hash    string `json:"hash"`    // the report hash the approver reviewed
	Confirm int    `json:"confirm"` // purge plans: the typed count of targets
}

func (s *Server) approvePlan(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.plans(w, r)
	if !ok {
		return
	}
	var body approveBody
	if err := decode(r, &body); err != nil {
		s.writeError(w, r, err)
		return
	}
	p, err := svc.Approve(r.Context(), plan.ApproveRequest{ID: r.PathValue("id"), Actor: actorOf(r), Hash: body.Hash, Confirm: body.Confirm})
	s.planResult(w, r, p, err, http.StatusOK)
}

// runPlan starts (or continues) a plan in the background and answers 202
// once its checks passed and it holds the plan; its progress is then
// GET /api/v1/plans/{id}.
func (s *Server) runPlan(w http.ResponseWriter, r *http.Request) {
	s.startPlan(w, r, nil)
}

// resumePlan resumes a paused plan and runs it on in the background.
func (s *Server) resumePlan(w http.ResponseWriter, r *http.Request) {
	s.startPlan(w, r, func(svc *plan.Service) error {
		_, err := svc.Resume(r.Context(), r.PathValue("id"), actorOf(r))
		return err
	})
}

// promotePlan passes the gate waiting for a person and runs on.
func (s *Server) promotePlan(w http.ResponseWriter, r *http.Request) {
	s.startPlan(w, r, func(svc *plan.Service) error {
		_, err := svc.Promote(r.Context(), r.PathValue("id"), actorOf(r))
		return err
	})
}

func (s *Server) startPlan(w http.ResponseWriter, r *http.Request, first func(*plan.Service) error) {
	svc, ok := s.plans(w, r)
	if !ok {
		return
	}
	if first != nil {
		if err := first(svc); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	id := r.PathValue("id")
	run, err := svc.Begin(r.Context(), id, actorOf(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	bg := s.Plans.Background
	if bg == nil {
		bg = context.WithoutCancel(r.Context())
	}
	go func() {
		if _, err := run(bg); err != nil && s.Log != nil {
			s.Log.Warn("plan run stopped", "plan", id, "err", err)
		}
	}()
	p, err := svc.Get(r.Context(), id)
	s.planResult(w, r, p, err, http.StatusAccepted)
}

type reasonBody struct {
	Reason string `json:"reason"`
}

func (s *Server) pausePlan(w http.ResponseWriter, r *http.Request) {
	s.planReason(w, r, (*plan.Service).Pause)
}

func (s *Server) abortPlan(w http.ResponseWriter, r *http.Request) {
	s.planReason(w, r, (*plan.Service).Abort)
}

func (s *Server) planReason(w http.ResponseWriter, r *http.Request, act func(*plan.Service, context.Context, string, plan.Actor, string) (*plan.Plan, error)) {
	svc, ok := s.plans(w, r)
	if !ok {
		return
	}
	var body reasonBody
	if err := decode(r, &body); err != nil {
		s.writeError(w, r, err)
		return
	}
	p, err := act(svc, r.Context(), r.PathValue("id"), actorOf(r), body.Reason)
	s.planResult(w, r, p, err, http.StatusOK)
}

// rollbackPlan undoes a plan's steps; it answers when every step is undone
// and verified, or with what could not be.
func (s *Server) rollbackPlan(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.plans(w, r)
	if !ok {
		return
	}
	p, err := svc.Rollback(r.Context(), r.PathValue("id"), actorOf(r))
	s.planResult(w, r, p, err, http.StatusOK)
}

func (s *Server) planResult(w http.ResponseWriter, r *http.Request, p *plan.Plan, err error, status int) {
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, status, p)
}

func (s *Server) showFreeze(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.plans(w, r)
	if !ok {
		return
	}
	f, err := svc.Frozen(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}

type freezeBody struct {
	On     bool   `json:"on"`
	Reason string `json:"reason"`
}

// setFreeze turns the freeze on (any operator: it is the first action of
// an incident) or off (an approver: it lets destructive work start again).
func (s *Server) setFreeze(w http.ResponseWriter, r *http.Request) {
	svc, ok := s.plans(w, r)
	if !ok {
		return
	}
	var body freezeBody
	if err := decode(r, &body); err != nil {
		s.writeError(w, r, err)
		return
	}
	if tok := caller(r); !body.On && !tok.Role.Allows(state.RoleApprover) {
		writeJSON(w, http.StatusForbidden, errorBody{Error: "lifting the freeze needs the approver role; token " + tok.Name + " has " + string(tok.Role),
			Code: string(fault.Unauthorized), Hint: "ask an approver or admin"})
		return
	}
	f, err := svc.SetFreeze(r.Context(), body.On, caller(r).Name, body.Reason)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}
