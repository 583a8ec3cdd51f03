package web

import (
	"context"
	"net/http"
	"strings"

	"lifeline/internal/state"
	"lifeline/internal/status"
)

// published re-renders the page after a write in this process, so the
// operator sees the change at once; other processes pick it up by polling.
func (p *StatusPage) published(ctx context.Context) {
	if err := p.Refresh(ctx); err != nil {
		p.log().Warn("status page: refresh after a change failed", "err", err)
	}
}

func (s *Server) listIncidents(w http.ResponseWriter, r *http.Request) {
	list, err := s.Status.Service.Incidents(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if r.URL.Query().Get("open") == "true" {
		open := list[:0]
		for _, i := range list {
			if !i.Status.Closed() {
				open = append(open, i)
			}
		}
		list = open
	}
	writeJSON(w, http.StatusOK, map[string]any{"incidents": list})
}

func (s *Server) showIncident(w http.ResponseWriter, r *http.Request) {
	inc, err := s.Status.Service.Incident(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, inc)
}

// incidentPart answers with one part of a known incident under key: its
// tenants (those whose contacts get targeted notices), or its delivery
// report (each update's notice to each tenant: contacts written to, and
// those skipped with why).
func incidentPart[T any](s *Server, key string, part func(*status.Service, context.Context, string) ([]T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		svc, id := s.Status.Service, r.PathValue("id")
		if _, err := svc.Incident(r.Context(), id); err != nil {
			s.writeError(w, r, err)
			return
		}
		list, err := part(svc, r.Context(), id)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{key: list})
	}
}

func (s *Server) createIncident(w http.ResponseWriter, r *http.Request) {
	var q status.Request
	if err := decode(r, &q); err != nil {
		s.writeError(w, r, err)
		return
	}
	inc, err := s.Status.Service.Open(r.Context(), q, caller(r).Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.Status.published(r.Context())
	writeJSON(w, http.StatusCreated, inc)
}

// updateIncident posts an update; with resolve it closes the incident.
func (s *Server) updateIncident(resolve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var q status.Request
		if err := decode(r, &q); err != nil {
			s.writeError(w, r, err)
			return
		}
		svc, id, d := s.Status.Service, r.PathValue("id"), q.Draft(caller(r).Name)
		var inc *status.Incident
		var err error
		if resolve {
			inc, err = svc.Resolve(r.Context(), id, d)
		} else {
			inc, err = svc.PostUpdate(r.Context(), id, d)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		s.Status.published(r.Context())
		writeJSON(w, http.StatusCreated, inc)
	}
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	ts, err := s.Status.Service.Templates(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if ts == nil {
		ts = []status.Template{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"templates": ts})
}

func (s *Server) putTemplate(w http.ResponseWriter, r *http.Request) {
	var t status.Template
	if err := decode(r, &t); err != nil {
		s.writeError(w, r, err)
		return
	}
	t.Name = r.PathValue("name")
	t, err := s.Status.Service.PutTemplate(r.Context(), t)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

// componentRequest is the body of PUT /api/v1/components/{name}. The group
// is named; it is created if missing.
type componentRequest struct {
	NameZh        string `json:"name_zh,omitempty"`
	Description   string `json:"description,omitempty"`
	DescriptionZh string `json:"description_zh,omitempty"`
	Group         string `json:"group,omitempty"`
	GroupZh       string `json:"group_zh,omitempty"`
	Position      int    `json:"position,omitempty"`
}

func (s *Server) listComponents(w http.ResponseWriter, r *http.Request) {
	gs, cs, err := s.Status.Service.Components(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if gs == nil {
		gs = []status.Group{}
	}
	if cs == nil {
		cs = []status.Component{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"groups": gs, "components": cs})
}

func (s *Server) putComponent(w http.ResponseWriter, r *http.Request) {
	var q componentRequest
	if err := decode(r, &q); err != nil {
		s.writeError(w, r, err)
		return
	}
	svc := s.Status.Service
	c := status.Component{Name: status.Text{En: r.PathValue("name"), Zh: q.NameZh}, Description: status.Text{En: q.Description, Zh: q.DescriptionZh}, Position: q.Position}
	if strings.TrimSpace(q.Group) != "" {
		g, err := svc.PutGroup(r.Context(), status.Group{Name: status.Text{En: q.Group, Zh: q.GroupZh}})
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		c.GroupID = g.ID
	}
	c, err := svc.PutComponent(r.Context(), c)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.Status.published(r.Context())
	writeJSON(w, http.StatusOK, c)
}

// stoppedSubscribers lists the subscribers delivery disabled (a mailbox
// that refused for good, a failing webhook), with why. Operators only: it
// names people's addresses.
func (s *Server) stoppedSubscribers(w http.ResponseWriter, r *http.Request) {
	list, err := s.Status.Service.StoppedSubscribers(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"subscribers": list})
}

// statusAPIRoutes adds incident management under /api/v1/.
func (s *Server) statusAPIRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/incidents", s.requireRole(state.RoleViewer, s.listIncidents))
	mux.HandleFunc("GET /api/v1/incidents/{id}", s.requireRole(state.RoleViewer, s.showIncident))
	mux.HandleFunc("GET /api/v1/incidents/{id}/tenants", s.requireRole(state.RoleViewer, incidentPart(s, "tenants", (*status.Service).IncidentTenants)))
	mux.HandleFunc("GET /api/v1/incidents/{id}/notices", s.requireRole(state.RoleViewer, incidentPart(s, "notices", (*status.Service).IncidentNotices)))
	mux.HandleFunc("POST /api/v1/incidents", s.requireRole(state.RoleOperator, s.createIncident))
	mux.HandleFunc("POST /api/v1/incidents/{id}/updates", s.requireRole(state.RoleOperator, s.updateIncident(false)))
	mux.HandleFunc("POST /api/v1/incidents/{id}/resolve", s.requireRole(state.RoleOperator, s.updateIncident(true)))
	mux.HandleFunc("GET /api/v1/subscribers/stopped", s.requireRole(state.RoleOperator, s.stoppedSubscribers))
	mux.HandleFunc("GET /api/v1/incident-templates", s.requireRole(state.RoleViewer, s.listTemplates))
	mux.HandleFunc("PUT /api/v1/incident-templates/{name}", s.requireRole(state.RoleOperator, s.putTemplate))
	mux.HandleFunc("GET /api/v1/components", s.requireRole(state.RoleViewer, s.listComponents))
	mux.HandleFunc("PUT /api/v1/components/{name}", s.requireRole(state.RoleOperator, s.putComponent))
}
