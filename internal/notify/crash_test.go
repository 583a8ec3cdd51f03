package notify

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lifeline/internal/state"
	"lifeline/internal/status"
)

// The crash test runs deliveries in a child process (this test binary,
// re-executed in helper mode), kills it with SIGKILL in the middle of a
// batch, starts another, and counts what mailpit received.
const (
	helperEnv      = "LIFELINE_NOTIFY_HELPER"
	helperStateEnv = "LIFELINE_NOTIFY_STATE"
	helperSMTPEnv  = "LIFELINE_NOTIFY_SMTP_PORT"
)

// deliveryHelper is the child: a notify service on the given state store
// and SMTP port that delivers until it is killed.
func deliveryHelper() int {
	ctx := context.Background()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "helper:", err); return 1 }
	st, err := state.Open(ctx, "sqlite:"+os.Getenv(helperStateEnv), "", nil)
	if err != nil {
		return fail(err)
	}
	stat, err := status.New(ctx, status.Config{Store: st})
	if err != nil {
		return fail(err)
	}
	port, _ := strconv.Atoi(os.Getenv(helperSMTPEnv))
	email, err := NewSMTPSender(SMTPConfig{Host: "127.0.0.1", Port: port, From: "status@lifeline.test", TLS: TLSNone})
	if err != nil {
		return fail(err)
	}
	cfg := testConfig()
	// Slow enough that a kill lands mid-batch; a job left running by the
	// dead process is rescued 3s after it started.
	cfg.Store, cfg.Status, cfg.Email, cfg.EmailRate, cfg.EmailWorkers = st, stat, email, 200, helperWorkers
	cfg.Recipients = numberedVault{}
	cfg.JobTimeout, cfg.RescueAfter = 2*time.Second, 3*time.Second
	svc, err := New(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	if err := svc.Start(ctx); err != nil {
		return fail(err)
	}
	fmt.Println("delivering")
	select {}
}

// helperWorkers is how many mails the helper process sends at once.
const helperWorkers = 8

func startHelper(t *testing.T, statePath string, smtpPort int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperStateEnv+"="+statePath, helperSMTPEnv+"="+strconv.Itoa(smtpPort))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "delivering" {
		t.Fatalf("helper did not start: %q, %v", line, err)
	}
	return cmd
}

func TestNoDuplicateMailAfterKill(t *testing.T) {
	t.Parallel()
	const subscribers = 400
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	st, stat := openStatus(t, "sqlite:"+path)
	if _, err := stat.PutComponent(ctx, status.Component{Name: status.Text{En: "tracker"}}); err != nil {
		t.Fatal(err)
	}
	b := &bundle{ctx: ctx, status: stat}
	for i := range subscribers {
		b.subscribe(t, status.SubscribeRequest{Channel: status.ChannelEmail, Address: fmt.Sprintf("admin%03d@example.com", i)})
	}
	mp := StartMailpit(t)
	b.open(t, "Tracker down")
	killMidBatch(t, st, path, mp, subscribers, func() int {
		ns, err := stat.Notices(ctx, status.NoticeSent, subscribers+1)
		if err != nil {
			t.Fatal(err)
		}
		return len(ns)
	})
}

// killMidBatch delivers in a child process, kills it with SIGKILL once a
// fifth of the want mails are in mailpit, delivers the rest in another
// child, and checks that every recipient got exactly one mail. sent counts
// what the state store records as sent.
func killMidBatch(t *testing.T, st *state.Store, path string, mp *Mailpit, want int, sent func() int) {
	t.Helper()
	ctx := context.Background()
	first := startHelper(t, path, mp.SMTPPort)
	eventually(t, 30*time.Second, "the first mails", func() bool { return mp.Count(t) >= want/5 })
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	atKill := mp.Count(t)
	if atKill >= want {
		t.Fatalf("all %d mails went before the kill; slow the helper down so the kill lands mid-batch", atKill)
	}
	t.Logf("killed after %d of %d mails", atKill, want)

	startHelper(t, path, mp.SMTPPort)
	// River's rescuer runs on the leader; the dead process's leadership
	// lapses first, so this takes up to ~30s.
	unfinished := func() int {
		var n int
		if err := st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM river_job WHERE finalized_at IS NULL").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	eventually(t, 90*time.Second, "every mail sent", func() bool { return sent() >= want && unfinished() == 0 })
	time.Sleep(time.Second) // anything late would show now
	// Delivery is at most once: the sent record is committed before the
	// message's last byte, so a kill in that instant loses the message
	// (the server discards the unfinished DATA) rather than sending it
	// twice. At most one message per worker can be caught that way.
	to := mp.To(t)
	if lost := want - len(to); lost < 0 || lost > helperWorkers {
		t.Errorf("%d recipients got mail, want %d (at most %d lost to the kill)", len(to), want, helperWorkers)
	}
	for addr, n := range to {
		if n != 1 {
			t.Errorf("%s got %d copies", addr, n)
		}
	}
	if total := mp.Count(t); total != len(to) {
		t.Errorf("mailpit holds %d mails for %d recipients: a duplicate", total, len(to))
	}
}
