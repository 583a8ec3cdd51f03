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

	// Plans (plan.go): reviewed bulk operations and the freeze. Approving
	// and promoting need the approver role (admin above a plan's caps,
	// checked by the plan); lifting the freeze needs approver too.
	mux.HandleFunc("GET /api/v1/plans", s.requireRole(state.RoleViewer, s.listPlans))
	mux.HandleFunc("POST /api/v1/plans", s.requireRole(state.RoleOperator, s.createPlan))
	mux.HandleFunc("GET /api/v1/plans/{id}", s.requireRole(state.RoleViewer, s.showPlan))
	mux.HandleFunc("POST /api/v1/plans/{id}/approve", s.requireRole(state.RoleApprover, s.approvePlan))
	mux.HandleFunc("POST /api/v1/plans/{id}/run", s.requireRole(state.RoleOperator, s.runPlan))
	mux.HandleFunc("POST /api/v1/plans/{id}/pause", s.requireRole(state.RoleOperator, s.pausePlan))
	mux.HandleFunc("POST /api/v1/plans/{id}/resume", s.requireRole(state.RoleOperator, s.resumePlan))
	mux.HandleFunc("POST /api/v1/plans/{id}/promote", s.requireRole(state.RoleApprover, s.promotePlan))
	mux.HandleFunc("POST /api/v1/plans/{id}/abort", s.requireRole(state.RoleOperator, s.abortPlan))
	mux.HandleFunc("POST /api/v1/plans/{id}/rollback", s.requireRole(state.RoleOperator, s.rollbackPlan))
	mux.HandleFunc("GET /api/v1/freeze", s.requireRole(state.RoleViewer, s.showFreeze))
	mux.HandleFunc("POST /api/v1/freeze", s.requireRole(state.RoleOperator, s.setFreeze))

	// Backups (backup.go): the console's live backup page and its JSON.
	s.backupRoutes(mux)

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
