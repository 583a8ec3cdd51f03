package web

import (
	"net/http"
	"strconv"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if s.Ready != nil {
		if err := s.Ready(r.Context()); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy", "error": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	list, err := s.Tenants.List(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenants": list})
}

func (s *Server) showTenant(w http.ResponseWriter, r *http.Request) {
	d, err := s.Tenants.Show(r.Context(), r.PathValue("key"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) listOperations(w http.ResponseWriter, r *http.Request) {
	f := state.OpFilter{Tenant: r.URL.Query().Get("tenant"), Status: state.OpStatus(r.URL.Query().Get("status"))}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			s.writeError(w, r, fault.New(fault.Invalid, "use a positive whole number", "bad limit %q", l))
			return
		}
		f.Limit = n
	}
	ops, err := s.Ops.ListOperations(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"operations": ops})
}

func (s *Server) showOperation(w http.ResponseWriter, r *http.Request) {
	op, err := s.Ops.GetOperation(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, op)
}

// operationRequest is the body of POST /api/v1/operations.
type operationRequest struct {
	Action string `json:"action"` // deactivate, reactivate, delete, undelete, purge
	Target string `json:"target"` // typed: site:KEY, product:KEY/PRODUCT, app:KEY/PRODUCT/APP
	Reason string `json:"reason"`
}

// createOperation runs one lifecycle action, as the CLI does. Purge needs the
// admin role: it is the one action that cannot be undone.
func (s *Server) createOperation(w http.ResponseWriter, r *http.Request) {
	var req operationRequest
	if err := decode(r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	a, err := tenant.ParseAction(req.Action)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tok := caller(r)
	if a == productdb.Purge && !tok.Role.Allows(state.RoleAdmin) {
		writeJSON(w, http.StatusForbidden, errorBody{Error: "purge needs the admin role", Code: string(fault.Unauthorized), Hint: "ask an admin to run it"})
		return
	}
	op, err := s.Tenants.Run(r.Context(), tenant.Request{Action: a, Target: req.Target, Actor: tok.Name, Reason: req.Reason})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, op)
}
