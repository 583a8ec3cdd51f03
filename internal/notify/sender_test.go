package notify

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"lifeline/internal/fault"
)

// senderHarness is one Sender and the real receiver behind it, as the
// conformance suite needs them.
type senderHarness struct {
	sender Sender
	// message builds a message to an accepting address; name tells
	// messages apart.
	message func(name string) Message
	// refused builds a message the receiver refuses for good.
	refused func(name string) Message
	// unreachable is a sender and a message whose provider is not
	// listening.
	unreachable func(name string) (Sender, Message)
	// received lists the ids of the messages the receiver accepted.
	received func(t *testing.T) []string
}

// testSender runs the Sender contract (notify.go) against one harness.
// Both SMTP (against mailpit) and webhooks (against a receiver on loopback)
// must pass it.
func testSender(t *testing.T, setup func(t *testing.T) senderHarness) {
	ctx := context.Background()
	// waitFor polls until id has arrived (or not), then checks once more
	// after a later message: if the receiver has that one, it has
	// everything sent before it.
	arrived := func(t *testing.T, h senderHarness, id string) int {
		t.Helper()
		marker := h.message("marker-" + strings.NewReplacer("@", "-", ".", "-").Replace(id))
		if err := h.sender.Send(ctx, marker, func(context.Context) error { return nil }); err != nil {
			t.Fatalf("marker: %v", err)
		}
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			got := h.received(t)
			if slices.Contains(got, marker.ID) {
				n := 0
				for _, g := range got {
					if g == id {
						n++
					}
				}
				return n
			}
		}
		t.Fatalf("the marker after %s never arrived", id)
		return 0
	}

	t.Run("delivers once, committing once before the end", func(t *testing.T) {
		t.Parallel()
		h := setup(t)
		m := h.message("one")
		commits := 0
		err := h.sender.Send(ctx, m, func(context.Context) error {
			commits++
			if slices.Contains(h.received(t), m.ID) {
				t.Error("commit ran after the receiver already had the message")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if commits != 1 {
			t.Fatalf("commit ran %d times", commits)
		}
		if n := arrived(t, h, m.ID); n != 1 {
			t.Fatalf("received %d copies", n)
		}
	})

	t.Run("a failing commit withdraws the message", func(t *testing.T) {
		t.Parallel()
		h := setup(t)
		m := h.message("withdrawn")
		boom := errors.New("state store down")
		err := h.sender.Send(ctx, m, func(context.Context) error { return boom })
		if !errors.Is(err, ErrWithdrawn) || !errors.Is(err, boom) {
			t.Fatalf("err = %v; want ErrWithdrawn wrapping the commit error", err)
		}
		if n := arrived(t, h, m.ID); n != 0 {
			t.Fatalf("a withdrawn message arrived %d times", n)
		}
	})

	t.Run("a permanent refusal is permanent", func(t *testing.T) {
		t.Parallel()
		h := setup(t)
		m := h.refused("refused")
		err := h.sender.Send(ctx, m, func(context.Context) error { return nil })
		if err == nil || !IsPermanent(err) {
			t.Fatalf("err = %v; want a permanent delivery error", err)
		}
		if n := arrived(t, h, m.ID); n != 0 {
			t.Fatalf("a refused message was accepted %d times", n)
		}
	})

	t.Run("an unreachable provider is a temporary failure before any commit", func(t *testing.T) {
		t.Parallel()
		h := setup(t)
		sender, m := h.unreachable("nowhere")
		err := sender.Send(ctx, m, func(context.Context) error {
			t.Error("commit ran for a provider that is not there")
			return nil
		})
		var d *DeliveryError
		if !errors.As(err, &d) || d.Permanent {
			t.Fatalf("err = %v; want a temporary DeliveryError", err)
		}
	})

	t.Run("a cancelled context sends nothing", func(t *testing.T) {
		t.Parallel()
		h := setup(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		m := h.message("cancelled")
		err := h.sender.Send(cctx, m, func(context.Context) error {
			t.Error("commit ran under a cancelled context")
			return nil
		})
		if err == nil {
			t.Fatal("sent under a cancelled context")
		}
		if n := arrived(t, h, m.ID); n != 0 {
			t.Fatalf("arrived %d times", n)
		}
	})

	t.Run("concurrent sends each arrive once", func(t *testing.T) {
		t.Parallel()
		h := setup(t)
		var wg sync.WaitGroup
		var failed atomic.Int32
		ids := make([]string, 24)
		for i := range ids {
			m := h.message("c" + strconv.Itoa(i))
			ids[i] = m.ID
			wg.Go(func() {
				if err := h.sender.Send(ctx, m, func(context.Context) error { return nil }); err != nil {
					t.Error(err)
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			return
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			got := h.received(t)
			missing := 0
			for _, id := range ids {
				n := 0
				for _, g := range got {
					if g == id {
						n++
					}
				}
				if n > 1 {
					t.Fatalf("%s arrived %d times", id, n)
				}
				if n == 0 {
					missing++
				}
			}
			if missing == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d messages never arrived", missing, len(ids))
			}
		}
	})
}

func TestSMTPSender(t *testing.T) {
	t.Parallel()
	testSender(t, func(t *testing.T) senderHarness {
		// Only example.com recipients are accepted: anything else gets a
		// 550 at RCPT TO, a permanent refusal.
		mp := StartMailpit(t, "--smtp-allowed-recipients", `@example\.com$`)
		smtp := func(port int) Sender {
			s, err := NewSMTPSender(SMTPConfig{Host: "127.0.0.1", Port: port, From: "Status <status@lifeline.test>", TLS: TLSNone, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		}
		msg := func(to, name string) Message {
			return Message{ID: name + "@lifeline.test", To: to, Subject: "conformance " + name, Text: "Body of " + name + ".\n"}
		}
		return senderHarness{
			sender:      smtp(mp.SMTPPort),
			message:     func(name string) Message { return msg(name+"@example.com", name) },
			refused:     func(name string) Message { return msg(name+"@refused.test", name) },
			unreachable: func(name string) (Sender, Message) { return smtp(freePort(t)), msg(name+"@example.com", name) },
			received: func(t *testing.T) []string {
				var ids []string
				for _, m := range mp.Messages(t) {
					ids = append(ids, strings.Trim(m.MessageID, "<>"))
				}
				return ids
			},
		}
	})
}

func TestWebhookSender(t *testing.T) {
	t.Parallel()
	testSender(t, func(t *testing.T) senderHarness {
		hooks := StartHooks(t)
		secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a 24 byte signing secret"))
		hooks.SetSecret(secret)
		hooks.Answer("/gone", http.StatusGone)
		msg := func(path, name string) Message {
			return Message{ID: "msg_" + name, To: hooks.URL + path, Secret: secret, Body: []byte(fmt.Sprintf(`{"type":"test","data":{"name":%q}}`, name))}
		}
		return senderHarness{
			sender:  &WebhookSender{},
			message: func(name string) Message { return msg("/ok", name) },
			refused: func(name string) Message { return msg("/gone", name) },
			unreachable: func(name string) (Sender, Message) {
				m := msg("/ok", name)
				m.To = "http://127.0.0.1:" + strconv.Itoa(freePort(t)) + "/ok"
				return &WebhookSender{}, m
			},
			received: func(t *testing.T) []string {
				var ids []string
				for _, d := range hooks.Got("/ok") {
					ids = append(ids, d.ID)
				}
				return ids
			},
		}
	})
}

func TestSMTPPasswordIsNeverShown(t *testing.T) {
	t.Parallel()
	cfg := SMTPConfig{Host: "mail.example.com", From: "status@example.com", Username: "ll", Password: "s3cret-pw"}
	s, err := NewSMTPSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	slog.New(slog.NewJSONHandler(&log, nil)).Info("config", "smtp", s, "cfg", cfg)
	slog.New(slog.NewTextHandler(&log, nil)).Info("config", "smtp", s, "cfg", cfg)
	for _, shown := range []string{fmt.Sprint(s), fmt.Sprintf("%+v", s), fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), log.String()} {
		if strings.Contains(shown, "s3cret-pw") {
			t.Fatalf("password shown: %s", shown)
		}
		if !strings.Contains(shown, "mail.example.com") {
			t.Fatalf("nothing useful shown: %s", shown)
		}
	}
	for _, bad := range []SMTPConfig{{From: "a@example.com"}, {Host: "h", From: "nobody"}, {Host: "h", From: "a@example.com", TLS: "ssl"}} {
		if _, err := NewSMTPSender(bad); fault.CodeOf(err) != fault.Invalid {
			t.Errorf("%+v accepted: %v", bad, err)
		}
	}
}

// TestOnlyARefusedRecipientIsABounce: mailpit's 550 to RCPT TO is a bounce
// (the vault will mark the address), with the server's reply as the reason
// and no address in it; a 550 to MAIL FROM, from a local listener that
// refuses every sender, is permanent but says nothing of the recipient.
func TestOnlyARefusedRecipientIsABounce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	send := func(port int, to string) error {
		s, err := NewSMTPSender(SMTPConfig{Host: "127.0.0.1", Port: port, From: "status@lifeline.test", TLS: TLSNone, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s.Send(ctx, Message{ID: "b@lifeline.test", To: to, Subject: "s", Text: "t\n"}, func(context.Context) error { return nil })
	}
	mp := StartMailpit(t, "--smtp-allowed-recipients", `@example\.com$`)
	err := send(mp.SMTPPort, "gone@refused.test")
	if !IsBounce(err) || !strings.HasPrefix(bounceReason(err), "550") || strings.Contains(bounceReason(err), "gone@") {
		t.Fatalf("RCPT TO refused: %v (bounce %v, reason %q); want a bounce with the reply as its reason", err, IsBounce(err), bounceReason(err))
	}
	if err := send(mp.SMTPPort, "ok@example.com"); err != nil || IsBounce(err) {
		t.Fatalf("an accepted address: %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				fmt.Fprint(c, "220 refuser ready\r\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch cmd := strings.ToUpper(strings.Fields(line + " x")[0]); cmd {
					case "EHLO", "HELO", "RSET", "NOOP":
						fmt.Fprint(c, "250 ok\r\n")
					case "MAIL":
						fmt.Fprint(c, "550 5.7.1 sender refused\r\n")
					case "QUIT":
						fmt.Fprint(c, "221 bye\r\n")
						return
					default:
						fmt.Fprint(c, "503 bad sequence\r\n")
					}
				}
			}()
		}
	}()
	err = send(ln.Addr().(*net.TCPAddr).Port, "someone@example.com")
	if !IsPermanent(err) || IsBounce(err) {
		t.Fatalf("MAIL FROM refused: %v (permanent %v, bounce %v); want permanent, not a bounce", err, IsPermanent(err), IsBounce(err))
	}
}
