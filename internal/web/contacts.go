package web

import (
	"context"
	"errors"
	"html/template"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"lifeline/internal/contacts"
	"lifeline/internal/fault"
	"lifeline/internal/status"
)

// Contacts serves the contacts vault: its operator API (every read of
// personal data needs the operator role and is audited by the vault) and
// the public page that verification links open.
type Contacts struct {
	Service *contacts.Service
	Log     *slog.Logger
	// PerMinute is how many verification requests one client address may
	// make per minute (a token bucket: that many at once, refilled over the
	// minute); 0 means 10. All clients together get 50 times that.
	PerMinute int
	// Limits holds the verification page's buckets. It is the state
	// store's (status.Service, the status page's forms use it too), so
	// every serve process sharing the store draws from the same buckets
	// and the limit holds however many serve the page. Required.
	Limits RateBuckets
}

// RateBuckets are token buckets shared by every process on the state
// store; status.Service implements it.
type RateBuckets interface {
	Take(ctx context.Context, bucket string, r status.Rate) (ok bool, wait time.Duration, err error)
}

// vault returns the vault's handlers' dependency, or answers 404 itself
// when this server runs without a vault.
func (s *Server) vault(w http.ResponseWriter, r *http.Request) *contacts.Service {
	if s.Contacts == nil || s.Contacts.Service == nil {
		s.writeError(w, r, fault.New(fault.NotFound, "`lifeline serve` runs the vault when vault: is configured", "this server has no contacts vault"))
		return nil
	}
	return s.Contacts.Service
}

// contactsGet answers GET /api/v1/contacts: ?email=ADDRESS or ?domain=D
// (a lookup), ?tenant=site:KEY (its contacts, best first), or nothing (the
// whole vault: an export, audited as such).
func (s *Server) contactsGet(w http.ResponseWriter, r *http.Request) {
	svc := s.vault(w, r)
	if svc == nil {
		return
	}
	q, who := r.URL.Query(), caller(r).Name
	var (
		v   any
		err error
	)
	switch {
	case q.Get("email") != "":
		v, err = svc.Lookup(r.Context(), q.Get("email"), who)
	case q.Get("domain") != "":
		v, err = svc.Lookup(r.Context(), "@"+strings.TrimPrefix(q.Get("domain"), "@"), who)
	case q.Get("tenant") != "":
		v, err = svc.For(r.Context(), q.Get("tenant"), who, q.Get("all") == "true")
	default:
		v, err = svc.Export(r.Context(), who)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// contactsPost upserts one contact (contacts.ContactInput).
func (s *Server) contactsPost(w http.ResponseWriter, r *http.Request) {
	svc := s.vault(w, r)
	if svc == nil {
		return
	}
	var in contacts.ContactInput
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	c, ch, err := svc.UpsertContact(r.Context(), in, caller(r).Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if ch.ContactsAdded > 0 {
		status = http.StatusCreated
	}
	writeJSON(w, status, map[string]any{"contact": c, "changes": ch})
}

func (s *Server) contactsReport(w http.ResponseWriter, r *http.Request) {
	svc := s.vault(w, r)
	if svc == nil {
		return
	}
	rep, err := svc.Report(r.Context(), caller(r).Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// bounceRequest is the body of POST /api/v1/contacts/bounces, for the mail
// system's bounce notifications.
type bounceRequest struct {
	Email  string `json:"email"`
	Reason string `json:"reason"`
}

func (s *Server) contactsBounce(w http.ResponseWriter, r *http.Request) {
	svc := s.vault(w, r)
	if svc == nil {
		return
	}
	var in bounceRequest
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := svc.MarkBounced(r.Context(), in.Email, in.Reason, "api", caller(r).Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "recorded"})
}

// erasureRequest is the body of POST /api/v1/contacts/erasures.
type erasureRequest struct {
	Email  string `json:"email"`
	Reason string `json:"reason"`
}

// contactsErase erases a person for good; it needs the admin role, like a
// purge: it cannot be undone.
func (s *Server) contactsErase(w http.ResponseWriter, r *http.Request) {
	svc := s.vault(w, r)
	if svc == nil {
		return
	}
	var in erasureRequest
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := svc.Erase(r.Context(), in.Email, in.Reason, caller(r).Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) accountsGet(w http.ResponseWriter, r *http.Request) {
	svc := s.vault(w, r)
	if svc == nil {
		return
	}
	list, err := svc.Accounts(r.Context(), caller(r).Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"accounts": list})
}

// accountsPost upserts one account and the tenants it owns.
func (s *Server) accountsPost(w http.ResponseWriter, r *http.Request) {
	svc := s.vault(w, r)
	if svc == nil {
		return
	}
	var in contacts.AccountInput
	if err := decode(r, &in); err != nil {
		s.writeError(w, r, err)
		return
	}
	a, ch, err := svc.UpsertAccount(r.Context(), in, caller(r).Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if ch.AccountsAdded > 0 {
		status = http.StatusCreated
	}
	writeJSON(w, status, map[string]any{"account": a, "changes": ch})
}

// The verification page. Opening the link only shows a button: mail
// scanners and link previews open links, and must not verify anyone. The
// button posts the token back; that sets verified_at.
var verifyPage = template.Must(template.New("verify").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;color:#1d2330}
button{font:inherit;padding:.6rem 1.2rem;border:0;border-radius:.4rem;background:#1f5fbf;color:#fff;cursor:pointer}
.err{color:#a11}</style></head><body>
<h1>{{.Title}}</h1>
{{if .Error}}<p class="err">{{.Error}}</p>{{if .Hint}}<p>{{.Hint}}</p>{{end}}
{{else if .Done}}<p>Thank you: {{.Email}} is confirmed as a contact. There is nothing else to do.</p>
{{else}}<p>Please confirm that <strong>{{.Email}}</strong> is still the right address to reach you about your organisation's sites.</p>
<form method="post" action="{{.Action}}"><input type="hidden" name="t" value="{{.Token}}"><button type="submit">Confirm</button></form>{{end}}
</body></html>
`))

type verifyView struct {
	Title, Email, Token, Action, Error, Hint string
	Done                                     bool
}

// contactsVerifyPage answers GET /contacts/verify?t=TOKEN.
func (s *Server) contactsVerifyPage(w http.ResponseWriter, r *http.Request) {
	s.contactsVerify(w, r, false)
}

// contactsVerifyConfirm answers POST /contacts/verify (form field t).
func (s *Server) contactsVerifyConfirm(w http.ResponseWriter, r *http.Request) {
	s.contactsVerify(w, r, true)
}

func (s *Server) contactsVerify(w http.ResponseWriter, r *http.Request, confirm bool) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer") // the token is in the URL
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	view := verifyView{Title: "Confirm your contact details", Action: contacts.VerifyPath}
	if s.Contacts == nil || s.Contacts.Service == nil {
		view.Error = "Contact verification is not available here."
		renderVerify(w, http.StatusNotFound, view)
		return
	}
	ok, wait, err := s.Contacts.allow(r.Context(), clientIP(r))
	if err != nil {
		s.logContacts().Error("contact verification: the rate limit cannot be read", "err", err)
		view.Error, view.Hint = "This page is unavailable right now.", "Please try again in a minute."
		renderVerify(w, http.StatusServiceUnavailable, view)
		return
	}
	if !ok {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		view.Error, view.Hint = "Too many attempts from your address.", "Please wait a minute and try again."
		renderVerify(w, http.StatusTooManyRequests, view)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	token := r.FormValue("t")
	svc := s.Contacts.Service
	if confirm {
		var c *contacts.Confirmation
		if c, err = svc.Confirm(r.Context(), token); err == nil {
			view.Done, view.Email, view.Title = true, c.Email, "Confirmed"
		}
	} else {
		view.Token = token
		view.Email, err = svc.CheckLink(r.Context(), token)
	}
	status := http.StatusOK
	switch {
	case err == nil:
	case errors.Is(err, contacts.ErrLinkExpired):
		status, view.Error, view.Hint = http.StatusGone, "This link has expired.", "Ask your support contact for a new one."
	case errors.Is(err, contacts.ErrLinkInvalid):
		status, view.Error, view.Hint = http.StatusBadRequest, "This link is not valid.", "Open the link exactly as it arrived in the email."
	default:
		s.logContacts().Error("contact verification failed", "err", err)
		status, view.Error = http.StatusInternalServerError, "Something went wrong on our side. Please try again later."
	}
	renderVerify(w, status, view)
}

func renderVerify(w http.ResponseWriter, status int, v verifyView) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = verifyPage.Execute(w, v)
}

func (s *Server) logContacts() *slog.Logger {
	if s.Contacts.Log != nil {
		return s.Contacts.Log
	}
	return s.Log
}

// allow takes a token from the client's bucket and from the one all
// clients share, and says how long to wait when either is empty.
func (c *Contacts) allow(ctx context.Context, client string) (bool, time.Duration, error) {
	n := c.PerMinute
	if n <= 0 {
		n = 10
	}
	for _, b := range []struct {
		bucket string
		n      int
	}{{"verify:" + client, n}, {"verify:*", 50 * n}} {
		ok, wait, err := c.Limits.Take(ctx, b.bucket, status.Rate{Every: time.Minute / time.Duration(b.n), Burst: b.n})
		if err != nil || !ok {
			return false, wait, err
		}
	}
	return true, 0, nil
}

// clientIP is the connection's address. Forwarding headers are not
// trusted: anyone can send them, and the limit would be void.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
