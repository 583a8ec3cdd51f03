package web

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lifeline/internal/contacts"
	"lifeline/internal/state"
	"lifeline/internal/status"
)

// linkMailer keeps the last message per address.
type linkMailer struct {
	mu   sync.Mutex
	last map[string]string
}

func (m *linkMailer) Send(_ context.Context, to, _, text string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last[to] = text
	return nil
}

func (m *linkMailer) token(t *testing.T, to string) string {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range strings.Fields(m.last[to]) {
		if u, err := url.Parse(f); err == nil && u.Path == contacts.VerifyPath {
			return u.Query().Get("t")
		}
	}
	t.Fatalf("no link mailed to %s", to)
	return ""
}

type contactsBundle struct {
	ctx   context.Context
	svc   *contacts.Service
	store *state.Store
	dsn   string // the state store's
	srv   *httptest.Server
	clock *testClock
	mail  *linkMailer
}

func setupContacts(t *testing.T) *contactsBundle {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	clk := &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	dsn := "sqlite:" + filepath.Join(dir, "state.db")
	st, err := state.Open(ctx, dsn, "", clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	vs, err := contacts.OpenStore(ctx, "sqlite:contacts.db", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vs.Close() })
	limits, err := status.New(ctx, status.Config{Store: st, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	mail := &linkMailer{last: map[string]string{}}
	svc, err := contacts.New(contacts.Config{Store: vs, Ledger: st, Mailer: mail, LinkBase: "https://ll.example", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Auth: fakeAuth{
		"viewer-secret":   {Name: "vera", Role: state.RoleViewer},
		"operator-secret": {Name: "otto", Role: state.RoleOperator},
		"admin-secret":    {Name: "ada", Role: state.RoleAdmin},
	}, Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler), Contacts: &Contacts{Service: svc, PerMinute: 5, Limits: limits}}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &contactsBundle{ctx: ctx, svc: svc, store: st, dsn: dsn, srv: srv, clock: clk, mail: mail}
}

func TestContactsAPIRoles(t *testing.T) {
	t.Parallel()
	b := setupContacts(t)
	u := b.srv.URL + "/api/v1/contacts"
	body := map[string]any{"email": "Pat@Corp.Example", "name": "Pat", "links": []map[string]any{{"tenant": "9", "role": "admin"}}}
	if code, _ := apiCall(t, "POST", u, "", body); code != http.StatusUnauthorized {
		t.Errorf("upsert without a token: %d", code)
	}
	if code, _ := apiCall(t, "POST", u, "viewer-secret", body); code != http.StatusForbidden {
		t.Errorf("upsert as viewer: %d", code)
	}
	code, res := apiCall(t, "POST", u, "operator-secret", body)
	if code != http.StatusCreated || at(res, "contact", "email") != "Pat@corp.example" {
		t.Fatalf("upsert as operator: %d %v", code, res)
	}
	// Reading personal data needs the operator role too.
	if code, _ := apiCall(t, "GET", u+"?email=pat@corp.example", "viewer-secret", nil); code != http.StatusForbidden {
		t.Errorf("lookup as viewer: %d", code)
	}
	code, res = apiCall(t, "GET", u+"?email=pat@corp.example", "operator-secret", nil)
	if code != 200 || at(res, "tenants", 0, "key") != "9" {
		t.Errorf("lookup: %d %v", code, res)
	}
	code, res = apiCall(t, "GET", u+"?tenant=site:9", "operator-secret", nil)
	if code != 200 || at(res, "contacts", 0, "role") != "admin" {
		t.Errorf("contacts of site:9: %d %v", code, res)
	}
	if code, res = apiCall(t, "GET", u+"?tenant=app:9/tracker/insight", "operator-secret", nil); code != http.StatusUnprocessableEntity {
		t.Errorf("an app target: %d %v; want a refusal", code, res)
	}
	code, res = apiCall(t, "GET", u, "operator-secret", nil)
	if code != 200 || len(res["contacts"].([]any)) != 1 {
		t.Errorf("export: %d %v", code, res)
	}
	code, _ = apiCall(t, "POST", b.srv.URL+"/api/v1/accounts", "operator-secret", map[string]any{"id": "corp", "name": "Corp", "tenants": []string{"9"}})
	if code != http.StatusCreated {
		t.Errorf("account upsert: %d", code)
	}
	code, res = apiCall(t, "GET", b.srv.URL+"/api/v1/accounts", "operator-secret", nil)
	if code != 200 || at(res, "accounts", 0, "tenants", 0) != "9" {
		t.Errorf("accounts: %d %v", code, res)
	}
	if code, _ = apiCall(t, "POST", u+"/bounces", "operator-secret", map[string]string{"email": "pat@corp.example", "reason": "550"}); code != 200 {
		t.Errorf("bounce: %d", code)
	}
	if code, res = apiCall(t, "GET", u+"/report", "operator-secret", nil); code != 200 || len(res["bounced"].([]any)) != 1 {
		t.Errorf("report: %d %v", code, res)
	}
	// Erasure cannot be undone: admin only.
	erase := map[string]string{"email": "pat@corp.example", "reason": "request #1"}
	if code, _ = apiCall(t, "POST", u+"/erasures", "operator-secret", erase); code != http.StatusForbidden {
		t.Errorf("erasure as operator: %d", code)
	}
	if code, res = apiCall(t, "POST", u+"/erasures", "admin-secret", erase); code != 200 || res["in_vault"] != true {
		t.Errorf("erasure as admin: %d %v", code, res)
	}
	if code, _ = apiCall(t, "GET", u+"?email=pat@corp.example", "operator-secret", nil); code != http.StatusNotFound {
		t.Errorf("lookup after erasure: %d", code)
	}
	// Every read was audited, with who asked.
	entries, err := b.store.ListAudit(b.ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, e := range entries {
		seen[e.Action] = e.Actor
	}
	for _, a := range []string{"contacts.lookup", "contacts.for", "contacts.export", "contacts.accounts", "contacts.report", "erasure"} {
		if seen[a] == "" {
			t.Errorf("%s is not in the audit log (%v)", a, seen)
		}
	}
	if seen["contacts.export"] != "otto" {
		t.Errorf("export audited as %q, want the token's name", seen["contacts.export"])
	}
}

func page(t *testing.T, method, u string, form url.Values) (int, string) {
	t.Helper()
	var resp *http.Response
	var err error
	if method == "POST" {
		resp, err = http.PostForm(u, form)
	} else {
		resp, err = http.Get(u)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Referrer-Policy") != "no-referrer" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("%s %s: the page may leak its token (headers %v)", method, u, resp.Header)
	}
	return resp.StatusCode, string(body)
}

func TestVerificationPage(t *testing.T) {
	t.Parallel()
	b := setupContacts(t)
	_, _, err := b.svc.UpsertContact(b.ctx, contacts.ContactInput{Email: "ana@acme.example", Links: []contacts.LinkInput{{Tenant: "1", Role: "admin"}}}, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.SendVerifications(b.ctx, contacts.VerifyOptions{Emails: []string{"ana@acme.example"}}); err != nil {
		t.Fatal(err)
	}
	token := b.mail.token(t, "ana@acme.example")
	verify := b.srv.URL + contacts.VerifyPath
	verified := func() bool {
		res, err := b.svc.Lookup(b.ctx, "ana@acme.example", "t")
		if err != nil {
			t.Fatal(err)
		}
		return !res.Contacts[0].VerifiedAt.IsZero()
	}

	// Opening the link (as a mail scanner would) verifies nothing.
	code, body := page(t, "GET", verify+"?t="+url.QueryEscape(token), nil)
	if code != 200 || !strings.Contains(body, "a***@acme.example") || !strings.Contains(body, `method="post"`) || verified() {
		t.Fatalf("GET: %d, verified %v\n%s", code, verified(), body)
	}
	if strings.Contains(body, "ana@acme.example") {
		t.Error("the page shows the address in full")
	}
	if code, _ := page(t, "POST", verify, url.Values{"t": {token[:len(token)-2] + "xx"}}); code != http.StatusBadRequest || verified() {
		t.Errorf("forged token: %d", code)
	}
	code, body = page(t, "POST", verify, url.Values{"t": {token}})
	if code != 200 || !strings.Contains(body, "confirmed") || !verified() {
		t.Fatalf("POST: %d, verified %v\n%s", code, verified(), body)
	}
	b.clock.Add(8 * 24 * time.Hour)
	if code, body = page(t, "POST", verify, url.Values{"t": {token}}); code != http.StatusGone || !strings.Contains(body, "expired") {
		t.Errorf("expired token: %d\n%s", code, body)
	}
	// Five requests at once per address (PerMinute: 5), then one every
	// 12s: with the expired link's post, the sixth since the clock moved
	// waits.
	for i := range 4 {
		if code, _ = page(t, "GET", verify+"?t=x", nil); code == http.StatusTooManyRequests {
			t.Fatalf("request %d within the burst refused", i+1)
		}
	}
	if code, _ = page(t, "GET", verify+"?t=x", nil); code != http.StatusTooManyRequests {
		t.Errorf("after 6 requests: %d, want 429", code)
	}
}

// TestVerifyRateLimitIsSharedByServers: two servers, each with its own
// connection to one state store, draw from the same bucket per address:
// three requests across both pass (PerMinute: 3), the fourth, on the other
// server, gets 429 with the time until the next token (20s).
func TestVerifyRateLimitIsSharedByServers(t *testing.T) {
	t.Parallel()
	a := setupContacts(t)
	var bases []string
	for range 2 {
		st, err := state.Open(a.ctx, a.dsn, "", a.clock.Now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		limits, err := status.New(a.ctx, status.Config{Store: st, Now: a.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		s := &Server{Auth: fakeAuth{}, Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler),
			Contacts: &Contacts{Service: a.svc, PerMinute: 3, Limits: limits}}
		srv := httptest.NewServer(s.Handler())
		t.Cleanup(srv.Close)
		bases = append(bases, srv.URL)
	}
	get := func(base string) *http.Response {
		t.Helper()
		resp, err := http.Get(base + contacts.VerifyPath + "?t=x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i, base := range []string{bases[0], bases[1], bases[0]} {
		if r := get(base); r.StatusCode != http.StatusBadRequest {
			t.Fatalf("request %d within the shared burst: %d, want 400 (a bad link)", i+1, r.StatusCode)
		}
	}
	if r := get(bases[1]); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "20" {
		t.Fatalf("fourth request, on the other server: %d, Retry-After %q; want 429 after 20s", r.StatusCode, r.Header.Get("Retry-After"))
	}
	a.clock.Add(20 * time.Second)
	if r := get(bases[0]); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("after 20s: %d; want a token again", r.StatusCode)
	}
}
