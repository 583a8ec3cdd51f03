package notify

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lifeline/internal/notify/mailpit"
)

// Mailpit is a real SMTP server for the tests (package mailpit), with
// helpers that fail the test instead of returning errors.
type Mailpit struct {
	*mailpit.Server
}

// MailMessage is one message with its text and headers.
type MailMessage = mailpit.Message

// StartMailpit runs a mailpit for the test; extra flags are passed on. A
// missing binary fails the test: delivery is tested against a real server,
// never skipped.
func StartMailpit(t testing.TB, extra ...string) *Mailpit {
	t.Helper()
	s, err := mailpit.Start(t.TempDir(), extra...)
	if err != nil {
		t.Fatal(err) // ErrNotInstalled says how to install it
	}
	t.Cleanup(s.Close)
	return &Mailpit{s}
}

// Messages lists every message mailpit holds.
func (m *Mailpit) Messages(t testing.TB) []mailpit.Summary {
	t.Helper()
	list, err := m.Server.Messages()
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// Count is how many messages mailpit holds.
func (m *Mailpit) Count(t testing.TB) int {
	t.Helper()
	n, err := m.Server.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// To counts the messages to each recipient.
func (m *Mailpit) To(t testing.TB) map[string]int {
	t.Helper()
	to, err := m.Server.To()
	if err != nil {
		t.Fatal(err)
	}
	return to
}

// WaitFor waits until a message to addr arrives and returns the newest.
func (m *Mailpit) WaitFor(t testing.TB, addr string, timeout time.Duration) MailMessage {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		msg, ok, err := m.Newest(addr)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return msg
		}
	}
	t.Fatalf("no mail to %s within %s", addr, timeout)
	return MailMessage{}
}

// WaitForSubject waits until the newest message to addr has a subject
// containing part. A notice is recorded sent just before its mail goes out
// (at most once), so the notice can be "sent" while the newest mail in the
// box is still an earlier one, such as the confirmation.
func (m *Mailpit) WaitForSubject(t testing.TB, addr, part string, timeout time.Duration) MailMessage {
	t.Helper()
	var last MailMessage
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		msg, ok, err := m.Newest(addr)
		if err != nil {
			t.Fatal(err)
		}
		if ok && strings.Contains(msg.Subject, part) {
			return msg
		}
		last = msg
	}
	t.Fatalf("no mail to %s with %q in its subject within %s; the newest: %q", addr, part, timeout, last.Subject)
	return MailMessage{}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Hooks is a set of real webhook receivers on loopback. A receiver checks
// every delivery's Standard Webhooks signature and records what it
// accepted; its answer is settable per path.
type Hooks struct {
	URL    string
	secret atomic.Value // string
	mu     sync.Mutex
	got    []HookDelivery
	status map[string]int // path → status to answer; default 204
	calls  map[string]int
}

// HookDelivery is one accepted, verified delivery.
type HookDelivery struct {
	Path, ID string
	Body     []byte
	At       time.Time
}

// StartHooks serves receivers; set the signing secret with SetSecret.
func StartHooks(t testing.TB) *Hooks {
	t.Helper()
	h := &Hooks{status: map[string]int{}, calls: map[string]int{}}
	h.secret.Store("")
	srv := httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(srv.Close)
	h.URL = srv.URL
	return h
}

// SetSecret sets the whsec_ secret deliveries must be signed with.
func (h *Hooks) SetSecret(s string) { h.secret.Store(s) }

// Answer makes the receiver at path answer code from now on.
func (h *Hooks) Answer(path string, code int) {
	h.mu.Lock()
	h.status[path] = code
	h.mu.Unlock()
}

func (h *Hooks) serve(w http.ResponseWriter, r *http.Request) {
	body, err := VerifyRequest(h.secret.Load().(string), r, time.Now())
	h.mu.Lock()
	h.calls[r.URL.Path]++
	code := h.status[r.URL.Path]
	h.mu.Unlock()
	if err != nil {
		http.Error(w, "bad signature: "+err.Error(), http.StatusUnauthorized)
		return
	}
	if code == 0 {
		code = http.StatusNoContent
	}
	if code < 300 {
		h.mu.Lock()
		h.got = append(h.got, HookDelivery{Path: r.URL.Path, ID: r.Header.Get("webhook-id"), Body: body, At: time.Now()})
		h.mu.Unlock()
	}
	w.WriteHeader(code)
}

// Got returns the accepted deliveries at path.
func (h *Hooks) Got(path string) []HookDelivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []HookDelivery
	for _, d := range h.got {
		if d.Path == path {
			out = append(out, d)
		}
	}
	return out
}

// Calls counts requests at path, accepted or not.
func (h *Hooks) Calls(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[path]
}
