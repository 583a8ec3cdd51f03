package notify

import (
	"encoding/json"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Mailpit is a real SMTP server for the tests, started from the mailpit
// binary on free loopback ports and read through its HTTP API.
type Mailpit struct {
	SMTPPort int
	API      string
	cmd      *exec.Cmd
}

// mailpitBinary finds mailpit on PATH or in GOPATH/bin, or fails the test:
// delivery is tested against a real server, never skipped.
func mailpitBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p
	}
	p := filepath.Join(build.Default.GOPATH, "bin", "mailpit")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	t.Fatalf("mailpit not found on PATH or in %s: install it with `go install github.com/axllent/mailpit@v1.33.1` (.ci/run installs what the tests need)", filepath.Dir(p))
	return ""
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

// StartMailpit runs a mailpit for the test; extra flags are passed on.
func StartMailpit(t testing.TB, extra ...string) *Mailpit {
	t.Helper()
	bin := mailpitBinary(t)
	for try := 0; ; try++ {
		m, out, ok := tryMailpit(t, bin, extra)
		if ok {
			return m
		}
		if try == 3 { // more than a port taken between freePort and the bind
			t.Fatalf("mailpit did not start: %s", out)
		}
	}
}

func tryMailpit(t testing.TB, bin string, extra []string) (*Mailpit, string, bool) {
	m := &Mailpit{SMTPPort: freePort(t)}
	httpPort := freePort(t)
	m.API = "http://127.0.0.1:" + strconv.Itoa(httpPort)
	args := append([]string{"--smtp", "127.0.0.1:" + strconv.Itoa(m.SMTPPort), "--listen", "127.0.0.1:" + strconv.Itoa(httpPort),
		"--database", filepath.Join(t.TempDir(), "mailpit.db"), "--max", "0", "--smtp-disable-rdns", "--disable-version-check", "--quiet"}, extra...)
	m.cmd = exec.Command(bin, args...)
	out := &lockedBuffer{}
	m.cmd.Stdout, m.cmd.Stderr = out, out
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("starting mailpit: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = m.cmd.Process.Kill(); <-exited })
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			return nil, out.String(), false
		default:
		}
		if resp, err := http.Get(m.API + "/readyz"); err == nil {
			resp.Body.Close()
			if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(m.SMTPPort)); err == nil {
				c.Close()
				return m, "", true
			}
		}
	}
	return nil, out.String(), false
}

// lockedBuffer collects a child's output from two pipes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// MailSummary is a message as mailpit lists it.
type MailSummary struct {
	ID        string
	MessageID string
	To        []struct{ Address string }
	Subject   string
}

// Messages lists every message mailpit holds, newest first.
func (m *Mailpit) Messages(t testing.TB) []MailSummary {
	t.Helper()
	var all []MailSummary
	for start := 0; ; {
		var page struct {
			Total    int
			Messages []MailSummary
		}
		m.get(t, fmt.Sprintf("/api/v1/messages?start=%d&limit=1000", start), &page)
		all = append(all, page.Messages...)
		start += len(page.Messages)
		if len(page.Messages) == 0 || start >= page.Total {
			return all
		}
	}
}

// Count is how many messages mailpit holds.
func (m *Mailpit) Count(t testing.TB) int {
	t.Helper()
	var page struct{ Total int }
	m.get(t, "/api/v1/messages?limit=1", &page)
	return page.Total
}

// MailMessage is one message with its text and headers.
type MailMessage struct {
	MailSummary
	Text    string
	Headers map[string][]string
}

// Message reads one message in full.
func (m *Mailpit) Message(t testing.TB, id string) MailMessage {
	t.Helper()
	var msg MailMessage
	m.get(t, "/api/v1/message/"+id, &msg)
	m.get(t, "/api/v1/message/"+id+"/headers", &msg.Headers)
	return msg
}

// WaitFor waits until a message to addr arrives and returns the newest.
func (m *Mailpit) WaitFor(t testing.TB, addr string, timeout time.Duration) MailMessage {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var res struct{ Messages []MailSummary }
		m.get(t, "/api/v1/search?query="+url.QueryEscape("to:"+addr), &res)
		if len(res.Messages) > 0 {
			return m.Message(t, res.Messages[0].ID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no mail to %s within %s", addr, timeout)
	return MailMessage{}
}

// To counts the messages to each recipient.
func (m *Mailpit) To(t testing.TB) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, s := range m.Messages(t) {
		for _, a := range s.To {
			out[a.Address]++
		}
	}
	return out
}

func (m *Mailpit) get(t testing.TB, path string, v any) {
	t.Helper()
	resp, err := http.Get(m.API + path)
	if err != nil {
		t.Fatalf("mailpit API: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("mailpit API %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("mailpit API %s: %v", path, err)
	}
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
