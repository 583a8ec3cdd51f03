// Package web is Lifeline's HTTP surface: the operator API under /api/v1/,
// health and metrics, and (as later parts land) the console and the public
// status page. It speaks in domain terms only; it knows nothing of SQL.
package web

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lifeline/internal/fault"
	"lifeline/internal/state"
	"lifeline/internal/tenant"
)

// Authenticator turns a bearer token into the token's identity and role.
type Authenticator interface {
	Authenticate(ctx context.Context, secret string) (state.Token, error)
}

// Operations reads recorded operations.
type Operations interface {
	GetOperation(ctx context.Context, id string) (*state.Operation, error)
	ListOperations(ctx context.Context, f state.OpFilter) ([]state.Operation, error)
}

// Server holds what the handlers need. Fill the fields, then call Handler.
type Server struct {
	Tenants  *tenant.Service
	Ops      Operations
	Auth     Authenticator
	Registry *prometheus.Registry // private registry served at /metrics
	Log      *slog.Logger
	// Ready reports whether the process is healthy; nil means always.
	Ready func(ctx context.Context) error
	// Status is the public status page, its v2 JSON and incident management;
	// nil serves none of them.
	Status *StatusPage
	// Contacts is the contacts vault's API and verification page; nil
	// serves neither.
	Contacts *Contacts
	// Plans is /api/v1/plans and /api/v1/freeze; nil answers 503.
	Plans *Plans
	// Backups is the console's backup page and /api/v1/backups; nil
	// serves neither.
	Backups *Backups
}

// Listen opens the listener serve serves on. It is separate from Serve so
// the caller knows the bound address (":0" picks a port) before it builds
// what links to itself, such as the status page's URL.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fault.Wrap(err, fault.Invalid, "choose a free address with --listen or listen: in lifeline.yaml", "cannot listen on %s", addr)
	}
	return ln, nil
}

// Serve serves h on ln until ctx ends, then shuts down gracefully. It
// closes ln.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
		return nil
	}
}

// errorBody is the one JSON shape of every API error.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	Hint  string `json:"hint,omitempty"`
}

// writeError maps an error's code to an HTTP status in one place. Internal
// errors are logged in full and shown to the caller only as "internal error".
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := fault.CodeOf(err)
	status := map[fault.Code]int{
		fault.Invalid: 400, fault.Unauthorized: 401, fault.NotFound: 404,
		fault.Conflict: 409, fault.Refused: 422, fault.Unavailable: 503,
	}[code]
	body := errorBody{Error: err.Error(), Code: string(code), Hint: fault.HintOf(err)}
	if status == 0 {
		status = 500
		body = errorBody{Error: "internal error", Code: string(fault.Internal)}
		s.Log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads a JSON request body of at most 1 MiB, refusing unknown fields.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fault.Wrap(err, fault.Invalid, "send a JSON object with the documented fields", "bad request body")
	}
	return nil
}

type ctxKey struct{}

// requireRole wraps h so it runs only for a bearer token of at least role.
// The token's name becomes the actor of what the request does.
func (s *Server) requireRole(role state.Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || secret == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lifeline"`)
			s.writeError(w, r, fault.New(fault.Unauthorized, "send Authorization: Bearer TOKEN; create one with `lifeline tokens create`", "a token is required"))
			return
		}
		tok, err := s.Auth.Authenticate(r.Context(), secret)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if !tok.Role.Allows(role) {
			writeJSON(w, http.StatusForbidden, errorBody{Error: "this needs the " + string(role) + " role; token " + tok.Name + " has " + string(tok.Role), Code: string(fault.Unauthorized),
				Hint: "ask an admin for a token with `lifeline tokens create --role " + string(role) + "`"})
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, tok)))
	}
}

// caller returns the authenticated token of a request.
func caller(r *http.Request) state.Token {
	tok, _ := r.Context().Value(ctxKey{}).(state.Token)
	return tok
}

// privatePage sets the headers of every HTML page but the public status page
// itself: never cached or framed, and only the page's own scripts, styles
// and images (data: images too, such as the empty favicon the pages link so
// that browsers ask for no /favicon.ico).
func privatePage(h http.Header) {
	h.Set("Content-Type", statusHTMLType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
}
