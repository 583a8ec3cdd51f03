package web

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"lifeline/internal/contacts"
	"lifeline/internal/state"
)

// Handler returns every route Lifeline serves. The whole HTTP surface is
// listed here.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{Registry: s.Registry}))

	mux.HandleFunc("GET /api/v1/tenants", s.requireRole(state.RoleViewer, s.listTenants))
	mux.HandleFunc("GET /api/v1/tenants/{key}", s.requireRole(state.RoleViewer, s.showTenant))
	mux.HandleFunc("GET /api/v1/operations", s.requireRole(state.RoleViewer, s.listOperations))
	mux.HandleFunc("GET /api/v1/operations/{id}", s.requireRole(state.RoleViewer, s.showOperation))
	mux.HandleFunc("POST /api/v1/operations", s.requireRole(state.RoleOperator, s.createOperation))

	// Status page (status*.go): the public page, its feed, the Statuspage v2
	// JSON, /api/v1/incidents and the /console/incidents form.
	s.statusRoutes(mux)

	// Contacts vault (contacts.go). Reads of personal data need the operator
	// role and are audited; an erasure needs admin. GET /api/v1/contacts
	// takes ?email=, ?domain=, ?tenant=site:KEY, or nothing (an export).
	// The verification page is public: signed, expiring, rate-limited.
	mux.HandleFunc("GET /api/v1/contacts", s.requireRole(state.RoleOperator, s.contactsGet))
	mux.HandleFunc("POST /api/v1/contacts", s.requireRole(state.RoleOperator, s.contactsPost))
	mux.HandleFunc("GET /api/v1/contacts/report", s.requireRole(state.RoleOperator, s.contactsReport))
	mux.HandleFunc("POST /api/v1/contacts/bounces", s.requireRole(state.RoleOperator, s.contactsBounce))
	mux.HandleFunc("POST /api/v1/contacts/erasures", s.requireRole(state.RoleAdmin, s.contactsErase))
	mux.HandleFunc("GET /api/v1/accounts", s.requireRole(state.RoleOperator, s.accountsGet))
	mux.HandleFunc("POST /api/v1/accounts", s.requireRole(state.RoleOperator, s.accountsPost))
	mux.HandleFunc("GET "+contacts.VerifyPath, s.contactsVerifyPage)
	mux.HandleFunc("POST "+contacts.VerifyPath, s.contactsVerifyConfirm)
	return mux
}
