package web

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"lifeline/internal/fault"
	"lifeline/internal/state"
	"lifeline/internal/status"
)

// The operator form under /console/incidents. An operator signs in with an
// API token, kept in an HttpOnly, SameSite=Strict cookie scoped to
// /console/. Every POST carries a CSRF token derived from that secret: a
// page on another origin can neither read the cookie nor compute the token,
// so it cannot forge a form post. The token is stateless, so it works across
// several `lifeline serve` processes.

const consoleCookie = "lifeline_console"

var consoleTemplate = template.Must(template.New("console.html").Funcs(template.FuncMap{
	"word": func(k string) string { return word(status.English, k) },
	"text": func(t status.Text) string { return t.In(status.English) },
	"ago":  func(now, t time.Time) string { return now.Sub(t).Round(time.Minute).String() },
	// split and confidences build a confidence <select> from "field|current".
	"split":       func(s string) []string { return strings.SplitN(s+"|", "|", 3)[:2] },
	"confidences": func() []string { return []string{string(status.Low), string(status.Medium), string(status.High)} },
}).ParseFS(statusAssets, "status_assets/console.html"))

// csrfToken is derived from the signed-in token's secret.
func csrfToken(secret string) string {
	sum := sha256.Sum256([]byte("lifeline console csrf\x00" + secret))
	return hex.EncodeToString(sum[:16])
}

type consoleView struct {
	Error   string
	Who     string
	Role    string
	CSRF    string
	Now     time.Time
	Open    []status.Incident
	Overdue map[string]bool
	// Notices counts each open incident's targeted notices by status.
	Notices    map[string]map[string]int
	Cadence    time.Duration
	Components []status.Component
	Templates  []status.Template
	Impacts    []status.Impact
	Statuses   []status.IncidentStatus
	CompStats  []status.ComponentStatus
	Form       url.Values // the failed form's values, to fill it again
	FormFor    string     // "new" or an incident id
	Login      bool
	CanOperate bool
	// Stopped are the subscribers delivery disabled, with why; their
	// addresses are shown to operators only.
	Stopped []status.Subscriber
}

// formCtx is one form on the console page: which incident it is for ("new"
// for the open form), and the values to fill in after a refused post.
type formCtx struct {
	V  consoleView
	ID string
}

// For returns the context of the form for id.
func (v consoleView) For(id string) formCtx { return formCtx{V: v, ID: id} }

// Get returns the value a refused post sent for key in this form.
func (f formCtx) Get(key string) string {
	if f.V.FormFor != f.ID || f.V.Form == nil {
		return ""
	}
	return f.V.Form.Get(key)
}

// consoleAuth returns the signed-in token and its secret, or redirects to
// the sign-in form.
func (s *Server) consoleAuth(w http.ResponseWriter, r *http.Request, need state.Role) (state.Token, string, bool) {
	c, err := r.Cookie(consoleCookie)
	if err == nil && c.Value != "" {
		tok, err := s.Auth.Authenticate(r.Context(), c.Value)
		if err == nil {
			if tok.Role.Allows(need) {
				return tok, c.Value, true
			}
			http.Error(w, "this needs the "+string(need)+" role; token "+tok.Name+" has "+string(tok.Role), http.StatusForbidden)
			return tok, "", false
		}
	}
	if r.Method == http.MethodGet {
		http.Redirect(w, r, "/console/incidents/login", http.StatusSeeOther)
	} else {
		http.Error(w, "sign in again at /console/incidents/login", http.StatusUnauthorized)
	}
	return state.Token{}, "", false
}

// sameOrigin refuses a POST whose browser-sent origin is another site.
// The CSRF token is the real check; this stops a forged post earlier.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host
	}
	return true
}

func (s *Server) consoleRender(w http.ResponseWriter, r *http.Request, code int, v consoleView) {
	v.Now = time.Now().UTC()
	v.Impacts, v.CompStats = status.Impacts, status.ComponentStatuses
	v.Statuses = []status.IncidentStatus{status.Investigating, status.Identified, status.Monitoring}
	if !v.Login {
		svc := s.Status.Service
		list, err := svc.Incidents(r.Context())
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		for _, i := range list {
			if !i.Status.Closed() {
				v.Open = append(v.Open, i)
			}
		}
		if v.Notices, err = svc.TenantNoticeCounts(r.Context()); err != nil {
			s.writeError(w, r, err)
			return
		}
		if v.Stopped, err = svc.StoppedSubscribers(r.Context()); err != nil {
			s.writeError(w, r, err)
			return
		}
		v.Cadence = svc.Cadence()
		v.Overdue = map[string]bool{}
		for _, o := range status.CheckCadence(v.Open, v.Now, svc.Cadence()) {
			v.Overdue[o.IncidentID] = true
		}
		if _, v.Components, err = svc.Components(r.Context()); err != nil {
			s.writeError(w, r, err)
			return
		}
		if v.Templates, err = svc.Templates(r.Context()); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	var buf bytes.Buffer
	if err := consoleTemplate.Execute(&buf, v); err != nil {
		s.writeError(w, r, err)
		return
	}
	privatePage(w.Header())
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) consoleLoginForm(w http.ResponseWriter, r *http.Request) {
	s.consoleRender(w, r, http.StatusOK, consoleView{Login: true})
}

func (s *Server) consoleLogin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-site sign-in refused", http.StatusForbidden)
		return
	}
	secret := strings.TrimSpace(r.PostFormValue("token"))
	if _, err := s.Auth.Authenticate(r.Context(), secret); secret == "" || err != nil {
		s.consoleRender(w, r, http.StatusUnauthorized, consoleView{Login: true, Error: "that token was not accepted; create one with `lifeline tokens create`"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: consoleCookie, Value: secret, Path: "/console/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: 12 * 3600})
	http.Redirect(w, r, "/console/incidents", http.StatusSeeOther)
}

func (s *Server) consoleLogout(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-site sign-out refused", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: consoleCookie, Value: "", Path: "/console/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/console/incidents/login", http.StatusSeeOther)
}

func (s *Server) consoleIncidents(w http.ResponseWriter, r *http.Request) {
	tok, secret, ok := s.consoleAuth(w, r, state.RoleViewer)
	if !ok {
		return
	}
	s.consoleRender(w, r, http.StatusOK, consoleView{Who: tok.Name, Role: string(tok.Role), CSRF: csrfToken(secret), CanOperate: tok.Role.Allows(state.RoleOperator)})
}

// consolePost handles the form posts: open (no id), update and resolve.
func (s *Server) consolePost(w http.ResponseWriter, r *http.Request) {
	tok, secret, ok := s.consoleAuth(w, r, state.RoleOperator)
	if !ok {
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	given := r.PostForm.Get("csrf")
	if !sameOrigin(r) || subtle.ConstantTimeCompare([]byte(given), []byte(csrfToken(secret))) != 1 {
		http.Error(w, "the form's CSRF token is missing or wrong; reload /console/incidents and try again", http.StatusForbidden)
		return
	}
	id := r.PathValue("id")
	q, err := requestFromForm(r.PostForm)
	if err == nil {
		svc := s.Status.Service
		switch {
		case id == "":
			_, err = svc.Open(r.Context(), q, tok.Name)
		case r.PostForm.Get("action") == "resolve":
			_, err = svc.Resolve(r.Context(), id, q.Draft(tok.Name))
		default:
			_, err = svc.PostUpdate(r.Context(), id, q.Draft(tok.Name))
		}
	}
	if err != nil {
		code := http.StatusUnprocessableEntity
		if fault.CodeOf(err) == fault.Internal || fault.CodeOf(err) == fault.Unavailable {
			s.Log.Error("console incident post", "err", err)
			code = http.StatusInternalServerError
		}
		formFor := id
		if formFor == "" {
			formFor = "new"
		}
		msg := err.Error()
		if h := fault.HintOf(err); h != "" {
			msg += " (" + h + ")"
		}
		s.consoleRender(w, r, code, consoleView{Who: tok.Name, Role: string(tok.Role), CSRF: csrfToken(secret), CanOperate: true,
			Error: msg, Form: r.PostForm, FormFor: formFor})
		return
	}
	s.Status.published(r.Context())
	http.Redirect(w, r, "/console/incidents", http.StatusSeeOther)
}

// requestFromForm reads the console form into the API's request shape, so
// the form and the API share one path into the domain.
func requestFromForm(f url.Values) (status.Request, error) {
	txt := func(k string) status.Text {
		return status.Text{En: strings.TrimSpace(f.Get(k)), Zh: strings.TrimSpace(f.Get(k + "_zh"))}
	}
	q := status.Request{
		Kind: status.Kind(f.Get("kind")), Name: strings.TrimSpace(f.Get("name")), NameZh: strings.TrimSpace(f.Get("name_zh")),
		Impact: status.Impact(f.Get("impact")), Status: status.IncidentStatus(f.Get("status")), Template: f.Get("template"),
		CarryOver: f.Get("carry_over") != "",
		Body: status.Body{Situation: txt("situation"), Timeline: txt("timeline"), DataLoss: txt("data_loss"), Support: txt("support"),
			SupportNoLogin: txt("support_no_login"), Known: txt("known"), Unknown: txt("unknown"),
			TimelineConfidence: status.Confidence(f.Get("timeline_confidence")), PercentConfidence: status.Confidence(f.Get("percent_confidence")),
			DataLossConfidence: status.Confidence(f.Get("data_loss_confidence"))},
	}
	for line := range strings.Lines(f.Get("components")) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		c, err := status.ParseComponentChange(line)
		if err != nil {
			return q, err
		}
		q.Components = append(q.Components, c)
	}
	for line := range strings.Lines(f.Get("affected_groups")) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		g, err := status.ParseAffectedGroup(line)
		if err != nil {
			return q, err
		}
		q.Body.AffectedGroups = append(q.Body.AffectedGroups, g)
	}
	for l := range strings.FieldsSeq(f.Get("links")) {
		q.Links = append(q.Links, l)
	}
	// Affected tenants, separated by commas or white space; the domain
	// checks them (status.NormalizeTenants) and names every bad one.
	q.Tenants = strings.FieldsFunc(f.Get("tenants"), func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	q.AllowUnknownTenants = f.Get("allow_unknown_tenants") == "1"
	if v := strings.TrimSpace(f.Get("percent_restored")); v != "" {
		p, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
		if err != nil {
			return q, fault.New(fault.Invalid, "give a number between 0 and 100", "bad percent_restored %q", v)
		}
		q.Body.PercentRestored = &p
	}
	var err error
	if q.Body.FullerPictureAt, err = formTime(f, "fuller_picture_at"); err != nil {
		return q, err
	}
	if q.ScheduledFor, err = formTime(f, "scheduled_for"); err != nil {
		return q, err
	}
	if q.ScheduledUntil, err = formTime(f, "scheduled_until"); err != nil {
		return q, err
	}
	return q, nil
}

// formTime reads a datetime-local field, which the form labels as UTC.
func formTime(f url.Values, key string) (time.Time, error) {
	v := strings.TrimSpace(f.Get(key))
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05", time.RFC3339} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fault.New(fault.Invalid, "use YYYY-MM-DDTHH:MM (UTC)", "bad %s %q", key, v)
}

// consoleRoutes adds the operator form.
func (s *Server) consoleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /console/incidents/login", s.consoleLoginForm)
	mux.HandleFunc("POST /console/incidents/login", s.consoleLogin)
	mux.HandleFunc("POST /console/incidents/logout", s.consoleLogout)
	mux.HandleFunc("GET /console/incidents", s.consoleIncidents)
	mux.HandleFunc("POST /console/incidents", s.consolePost)
	mux.HandleFunc("POST /console/incidents/{id}", s.consolePost)
}
