// Package mailpit runs and reads mailpit, the real SMTP server that
// Lifeline's mail delivery is tested and benchmarked against. It starts the
// mailpit binary on free loopback ports and reads what it received through
// its HTTP API. Production code does not use it.
package mailpit

import (
	"encoding/json"
	"errors"
	"fmt"
	"go/build"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Install is how to get the binary; errors about a missing one say it.
const Install = "go install github.com/axllent/mailpit@v1.33.1"

// ErrNotInstalled means no mailpit binary was found on PATH or in
// GOPATH/bin.
var ErrNotInstalled = errors.New("mailpit is not installed: run `" + Install + "` (.ci/run installs what the tests need)")

// Binary finds mailpit on PATH or in GOPATH/bin.
func Binary() (string, error) {
	if p, err := exec.LookPath("mailpit"); err == nil {
		return p, nil
	}
	p := filepath.Join(build.Default.GOPATH, "bin", "mailpit")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", ErrNotInstalled
}

// Server is a running mailpit.
type Server struct {
	SMTPPort int
	// API is the base URL of its HTTP API.
	API    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start runs mailpit with its database in dir (a temporary folder) and
// extra flags, and waits until both its SMTP and HTTP ports answer. It
// keeps every message (no limit) and skips reverse DNS lookups.
func Start(dir string, extra ...string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	var last string
	for try := range 4 { // a port taken between choosing and binding it
		s, out, err := start(bin, filepath.Join(dir, "mailpit-"+strconv.Itoa(try)+".db"), extra)
		if err == nil {
			return s, nil
		}
		last = fmt.Sprintf("%v: %s", err, out)
	}
	return nil, fmt.Errorf("mailpit did not start: %s", last)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(bin, db string, extra []string) (*Server, string, error) {
	smtpPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	s := &Server{SMTPPort: smtpPort, API: "http://127.0.0.1:" + strconv.Itoa(httpPort), exited: make(chan struct{})}
	args := append([]string{"--smtp", "127.0.0.1:" + strconv.Itoa(smtpPort), "--listen", "127.0.0.1:" + strconv.Itoa(httpPort),
		"--database", db, "--max", "0", "--smtp-disable-rdns", "--disable-version-check", "--quiet"}, extra...)
	s.cmd = exec.Command(bin, args...)
	out := &lockedBuffer{}
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := s.cmd.Start(); err != nil {
		return nil, "", err
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-s.exited:
			return nil, out.String(), errors.New("mailpit exited")
		default:
		}
		if resp, err := http.Get(s.API + "/readyz"); err == nil {
			resp.Body.Close()
			if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(smtpPort)); err == nil {
				c.Close()
				return s, "", nil
			}
		}
	}
	s.Close()
	return nil, out.String(), errors.New("mailpit did not answer within 20s")
}

// Close stops mailpit.
func (s *Server) Close() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Summary is a message as mailpit lists it.
type Summary struct {
	ID        string
	MessageID string
	To        []struct{ Address string }
	Subject   string
}

// Message is one message with its text and headers.
type Message struct {
	Summary
	Text    string
	Headers map[string][]string
}

// Messages lists every message held, newest first.
func (s *Server) Messages() ([]Summary, error) {
	var all []Summary
	for start := 0; ; {
		var page struct {
			Total    int
			Messages []Summary
		}
		if err := s.get(fmt.Sprintf("/api/v1/messages?start=%d&limit=1000", start), &page); err != nil {
			return nil, err
		}
		all = append(all, page.Messages...)
		start += len(page.Messages)
		if len(page.Messages) == 0 || start >= page.Total {
			return all, nil
		}
	}
}

// Count is how many messages are held.
func (s *Server) Count() (int, error) {
	var page struct{ Total int }
	err := s.get("/api/v1/messages?limit=1", &page)
	return page.Total, err
}

// Message reads one message in full.
func (s *Server) Message(id string) (Message, error) {
	var m Message
	if err := s.get("/api/v1/message/"+id, &m); err != nil {
		return m, err
	}
	return m, s.get("/api/v1/message/"+id+"/headers", &m.Headers)
}

// Newest returns the newest message to addr, if any.
func (s *Server) Newest(addr string) (Message, bool, error) {
	var res struct{ Messages []Summary }
	if err := s.get("/api/v1/search?query="+url.QueryEscape("to:"+addr), &res); err != nil || len(res.Messages) == 0 {
		return Message{}, false, err
	}
	m, err := s.Message(res.Messages[0].ID)
	return m, err == nil, err
}

// To counts the messages to each recipient.
func (s *Server) To() (map[string]int, error) {
	list, err := s.Messages()
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, m := range list {
		for _, a := range m.To {
			out[a.Address]++
		}
	}
	return out, nil
}

func (s *Server) get(path string, v any) error {
	resp, err := http.Get(s.API + path)
	if err != nil {
		return fmt.Errorf("mailpit API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("mailpit API %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("mailpit API %s: %w", path, err)
	}
	return nil
}

// lockedBuffer collects the child's output from two pipes.
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
