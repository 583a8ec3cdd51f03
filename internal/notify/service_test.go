package notify

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"lifeline/internal/fault"
	"lifeline/internal/pgtest"
	"lifeline/internal/state"
	"lifeline/internal/status"
)

type bundle struct {
	ctx     context.Context
	st      *state.Store
	dsn     string
	status  *status.Service
	svc     *Service
	mp      *Mailpit
	hooks   *Hooks
	tracker status.Component
}

// engines runs fn on a SQLite state store and on PostgreSQL.
func engines(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Helper()
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			fn(t, newDSN(t, engine))
		})
	}
}

func newDSN(t *testing.T, engine string) string {
	if engine == "postgres" {
		return pgtest.NewDB(t)
	}
	return "sqlite:" + filepath.Join(t.TempDir(), "state.db")
}

// testConfig is quick to react: the queue is polled often and retries
// start at 100ms. River's scheduler still only moves retries along every
// 5s, which is what the retry tests wait on.
func testConfig() Config {
	return Config{PageName: "Lifeline test", PublicURL: "https://status.example.test", FetchPoll: 50 * time.Millisecond,
		DrainEvery: 50 * time.Millisecond, Backoff: Backoff{Base: 100 * time.Millisecond, Max: time.Second}, JobTimeout: 5 * time.Second}
}

// openStatus opens the state store at dsn, closed when the test ends, and
// the status domain over it.
func openStatus(t *testing.T, dsn string) (*state.Store, *status.Service) {
	t.Helper()
	st, err := state.Open(context.Background(), dsn, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	stat, err := status.New(context.Background(), status.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return st, stat
}

// setup opens a state store with a "tracker" component, a mailpit that
// accepts only example.com recipients (others are refused for good), and
// webhook receivers, and starts a Service on them unless start is false.
func setup(t *testing.T, dsn string, start bool, tweak func(*Config)) *bundle {
	t.Helper()
	ctx := context.Background()
	st, stat := openStatus(t, dsn)
	tracker, err := stat.PutComponent(ctx, status.Component{Name: status.Text{En: "tracker", Zh: "追踪器"}})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{ctx: ctx, st: st, dsn: dsn, status: stat, tracker: tracker, hooks: StartHooks(t),
		mp: StartMailpit(t, "--smtp-allowed-recipients", `@example\.com$`)}
	email, err := NewSMTPSender(SMTPConfig{Host: "127.0.0.1", Port: b.mp.SMTPPort, From: "Status <status@lifeline.test>", TLS: TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = email.Close() })
	cfg := testConfig()
	cfg.Store, cfg.Status, cfg.Email = st, stat, email
	if st.Engine() == state.EnginePostgres {
		cfg.PostgresURL = dsn
	}
	if tweak != nil {
		tweak(&cfg)
	}
	if b.svc, err = New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if start {
		if err := b.svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.svc.Stop(sctx)
	})
	return b
}

// subscribe makes a confirmed subscriber straight through the domain.
func (b *bundle) subscribe(t *testing.T, req status.SubscribeRequest) status.Subscriber {
	t.Helper()
	p, err := b.status.Subscribe(b.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.status.Confirm(b.ctx, p.Token)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func fullBody() status.Body {
	pct := 12.5
	return status.Body{
		Situation:      status.Text{En: "A script deleted 883 sites.", Zh: "一个脚本删除了 883 个站点。"},
		AffectedGroups: []status.AffectedGroup{{Kind: "product", Name: "tracker", Count: 883}},
		Timeline:       status.Text{En: "Most sites back within 6 hours."}, TimelineConfidence: status.Medium,
		FullerPictureAt: time.Date(2026, 4, 5, 15, 0, 0, 0, time.UTC), PercentRestored: &pct, PercentConfidence: status.High,
		DataLoss: status.Text{En: "At most 5 minutes."}, DataLossConfidence: status.Low,
		Support: status.Text{En: "Open a ticket."}, SupportNoLogin: status.Text{En: "Call +1 555 0100."},
		Known: status.Text{En: "Which sites."}, Unknown: status.Text{En: "Attachments."},
	}
}

func (b *bundle) open(t *testing.T, name string) *status.Incident {
	t.Helper()
	inc, err := b.status.OpenIncident(b.ctx, status.NewIncident{Name: status.Text{En: name, Zh: name + "（中文）"}, Draft: status.Draft{
		Impact: status.ImpactCritical, Body: fullBody(), Components: []status.ComponentChange{{ComponentID: "tracker", Status: status.MajorOutage}}}})
	if err != nil {
		t.Fatal(err)
	}
	return inc
}

func (b *bundle) update(t *testing.T, id, situation string) *status.Incident {
	t.Helper()
	d := status.Draft{CarryOver: true, Body: status.Body{Situation: status.Text{En: situation}}}
	inc, err := b.status.PostUpdate(b.ctx, id, d)
	if err != nil {
		t.Fatal(err)
	}
	return inc
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(25 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

func (b *bundle) notices(t *testing.T, state string) []status.Notice {
	t.Helper()
	ns, err := b.status.Notices(b.ctx, state, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func (b *bundle) jobs(t *testing.T, kind string) []*rivertype.JobRow {
	t.Helper()
	res, err := b.svc.q.JobList(b.ctx, river.NewJobListParams().Kinds(kind).First(10000))
	if err != nil {
		t.Fatal(err)
	}
	return res.Jobs
}

var confirmLink = regexp.MustCompile(`https://status\.example\.test/subscribe/confirm\?token=(\S+)`)

// confirmByMail follows the link in the confirmation mail to addr.
func (b *bundle) confirmByMail(t *testing.T, addr string) status.Subscriber {
	t.Helper()
	msg := b.mp.WaitFor(t, addr, 15*time.Second)
	m := confirmLink.FindStringSubmatch(msg.Text)
	if m == nil {
		t.Fatalf("no confirmation link in the mail to %s:\n%s", addr, msg.Text)
	}
	tok, err := url.QueryUnescape(m[1])
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.svc.Confirm(b.ctx, tok)
	if err != nil {
		t.Fatalf("confirming %s: %v", addr, err)
	}
	return sub
}

func TestNoticesReachConfirmedSubscribersOnce(t *testing.T) {
	engines(t, func(t *testing.T, dsn string) {
		b := setup(t, dsn, true, nil)
		ctx := b.ctx
		for _, req := range []status.SubscribeRequest{
			{Channel: status.ChannelEmail, Address: "ann@example.com"},
			{Channel: status.ChannelEmail, Address: "li@example.com", Lang: status.Chinese, Components: []string{"tracker"}},
			{Channel: status.ChannelWebhook, Address: b.hooks.URL + "/ok", OwnerEmail: "ops@example.com"},
			{Channel: status.ChannelEmail, Address: "never-confirms@example.com"},
		} {
			if _, err := b.svc.Subscribe(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
		// Double opt-in: nothing is owed before the link in the mail is used.
		ann := b.confirmByMail(t, "ann@example.com")
		li := b.confirmByMail(t, "li@example.com")
		hook := b.confirmByMail(t, "ops@example.com")
		if !strings.Contains(b.mp.WaitFor(t, "li@example.com", time.Second).Subject, "请确认订阅") {
			t.Error("the Chinese subscriber's confirmation is not in Chinese")
		}
		b.hooks.SetSecret(hook.Secret)

		inc := b.open(t, "Tracker down")
		u1 := inc.Updates[0]
		eventually(t, 20*time.Second, "three notices sent", func() bool { return len(b.notices(t, status.NoticeSent)) == 3 })
		mail := b.mp.WaitForSubject(t, "ann@example.com", "Tracker down", 10*time.Second)
		if mail.Subject != "[Lifeline test] Tracker down: Investigating" || !strings.Contains(mail.Text, "A script deleted 883 sites.") ||
			!strings.Contains(mail.Text, "Sites restored: 12.5%") || !strings.Contains(mail.Text, "https://status.example.test/#incident-"+inc.ID) {
			t.Fatalf("notice mail:\nSubject: %s\n%s", mail.Subject, mail.Text)
		}
		if zh := b.mp.WaitForSubject(t, "li@example.com", "调查中", 10*time.Second); !strings.Contains(zh.Subject, "调查中") || !strings.Contains(zh.Text, "一个脚本删除了 883 个站点。") {
			t.Fatalf("Chinese notice:\nSubject: %s\n%s", zh.Subject, zh.Text)
		}
		// One-click unsubscribe (RFC 8058) in the headers.
		lu := strings.Join(mail.Headers["List-Unsubscribe"], "")
		if strings.Join(mail.Headers["List-Unsubscribe-Post"], "") != "List-Unsubscribe=One-Click" || !strings.HasPrefix(lu, "<https://status.example.test/unsubscribe?token=") {
			t.Fatalf("unsubscribe headers: %v", mail.Headers)
		}
		got := b.hooks.Got("/ok")
		if len(got) != 1 {
			t.Fatalf("webhook deliveries: %d", len(got))
		}
		var ev WebhookEvent
		if err := json.Unmarshal(got[0].Body, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type != "incident.update" || ev.Data.Update.ID != u1.ID || ev.Data.Incident.Status != status.Investigating ||
			ev.Data.Update.Template.Situation.En != "A script deleted 883 sites." || got[0].ID != "notice_"+u1.ID+"_"+hook.ID {
			t.Fatalf("webhook event = %+v (id %s)", ev, got[0].ID)
		}

		// Ann leaves through the link in her mail; the next update reaches
		// the others only.
		u, err := url.Parse(strings.Trim(lu, "<>"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.svc.Unsubscribe(ctx, u.Query().Get("token")); err != nil {
			t.Fatal(err)
		}
		b.update(t, inc.ID, "Restores are running.")
		eventually(t, 20*time.Second, "the second update delivered", func() bool { return len(b.notices(t, status.NoticeSent)) == 5 })
		// A notice is recorded sent just before its mail goes out, so the
		// last mails may reach mailpit a moment after the count above.
		want := map[string]int{"ann@example.com": 2, "li@example.com": 3, "ops@example.com": 1, "never-confirms@example.com": 1}
		counts := b.mp.To(t)
		for deadline := time.Now().Add(10 * time.Second); !maps.Equal(counts, want) && time.Now().Before(deadline); counts = b.mp.To(t) {
			time.Sleep(25 * time.Millisecond)
		}
		for addr, n := range want { // confirmation + notices
			if counts[addr] != n {
				t.Errorf("%s got %d mails, want %d", addr, counts[addr], n)
			}
		}
		if n := len(b.hooks.Got("/ok")); n != 2 {
			t.Errorf("webhook got %d deliveries, want 2", n)
		}
		sent, err := b.svc.CountDeliveries(ctx, StateSent)
		if err != nil || sent != 4+5 {
			t.Errorf("%d deliveries recorded sent (%v), want 4 confirmations + 5 notices", sent, err)
		}
		_ = li
		_ = ann
	})
}

// TestRefusedMailboxDisablesItsSubscriber: mailpit refuses every address
// outside example.com with a 550 to RCPT TO. The notice to such a
// subscriber fails at once, the subscriber is disabled saying why (and
// listed as stopped), and the next update owes it nothing, while a
// subscriber whose mailbox takes mail gets both.
func TestRefusedMailboxDisablesItsSubscriber(t *testing.T) {
	engines(t, func(t *testing.T, dsn string) {
		b := setup(t, dsn, true, nil)
		gone := b.subscribe(t, status.SubscribeRequest{Channel: status.ChannelEmail, Address: "someone@refused.test"})
		b.subscribe(t, status.SubscribeRequest{Channel: status.ChannelEmail, Address: "reader@example.com"})
		inc := b.open(t, "Tracker down")
		eventually(t, 20*time.Second, "the notice failed", func() bool { return len(b.notices(t, status.NoticeFailed)) == 1 })
		n := b.notices(t, status.NoticeFailed)[0]
		if n.SubscriberID != gone.ID || n.Attempts != 1 || !strings.Contains(n.LastError, "550") {
			t.Fatalf("notice = %+v: a permanent refusal must end it at once", n)
		}
		eventually(t, 10*time.Second, "the job cancelled", func() bool {
			for _, j := range b.jobs(t, noticeJob{}.Kind()) {
				if j.State == rivertype.JobStateCancelled {
					return true
				}
			}
			return false
		})
		sub, err := b.status.Subscriber(b.ctx, gone.ID)
		if err != nil || sub.Active() || !strings.HasPrefix(sub.DisabledReason, "mailbox refused for good: 550") {
			t.Fatalf("the refused subscriber: %+v, %v; want it disabled with the 550", sub, err)
		}
		stopped, err := b.status.StoppedSubscribers(b.ctx)
		if err != nil || len(stopped) != 1 || stopped[0].ID != gone.ID {
			t.Fatalf("stopped subscribers: %+v, %v", stopped, err)
		}

		b.update(t, inc.ID, "Recovering.")
		b.mp.WaitFor(t, "reader@example.com", 10*time.Second)
		eventually(t, 20*time.Second, "the reader's second notice", func() bool { return b.mp.To(t)["reader@example.com"] == 2 })
		var owed int
		if err := b.st.DB().QueryRowContext(b.ctx, b.st.Rebind("SELECT COUNT(*) FROM status_notices WHERE subscriber_id = ?"), gone.ID).Scan(&owed); err != nil {
			t.Fatal(err)
		}
		if owed != 1 {
			t.Errorf("the disabled subscriber is owed %d notices, want only the first", owed)
		}
	})
}

// TestRefusedConfirmationStopsTheSubscription: mailpit refuses the
// confirmation mail to an address outside example.com (and to a webhook
// owner's) with a 550. Each subscription is stopped with the reply,
// listed as stopped, its link no longer confirms it and no notice is
// owed to it; subscribing the address again clears the stop and mails a
// fresh link, whose refusal stops it again.
func TestRefusedConfirmationStopsTheSubscription(t *testing.T) {
	engines(t, func(t *testing.T, dsn string) {
		b := setup(t, dsn, true, nil)
		gone, err := b.svc.Subscribe(b.ctx, status.SubscribeRequest{Channel: status.ChannelEmail, Address: "someone@refused.test"})
		if err != nil {
			t.Fatal(err)
		}
		hook, err := b.svc.Subscribe(b.ctx, status.SubscribeRequest{Channel: status.ChannelWebhook, Address: b.hooks.URL + "/ok", OwnerEmail: "owner@refused.test"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.svc.Subscribe(b.ctx, status.SubscribeRequest{Channel: status.ChannelEmail, Address: "reader@example.com"}); err != nil {
			t.Fatal(err)
		}
		b.confirmByMail(t, "reader@example.com")
		stoppedWith := func(id, reason string) bool {
			sub, err := b.status.Subscriber(b.ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return !sub.Disabled.IsZero() && strings.HasPrefix(sub.DisabledReason, reason)
		}
		const reason = "confirmation mail refused for good: 550"
		eventually(t, 20*time.Second, "both subscriptions stopped", func() bool {
			return stoppedWith(gone.Subscriber.ID, reason) && stoppedWith(hook.Subscriber.ID, reason)
		})
		stopped, err := b.status.StoppedSubscribers(b.ctx)
		if err != nil || len(stopped) != 2 {
			t.Fatalf("stopped subscribers: %+v, %v; want the email and the webhook", stopped, err)
		}
		if _, err := b.svc.Confirm(b.ctx, gone.Token); fault.CodeOf(err) != fault.NotFound {
			t.Fatalf("confirming a stopped subscription: %v; its link must no longer work", err)
		}
		eventually(t, 10*time.Second, "both confirmation jobs cancelled", func() bool {
			n := 0
			for _, j := range b.jobs(t, mailJob{}.Kind()) {
				if j.State == rivertype.JobStateCancelled {
					n++
				}
			}
			return n == 2
		})

		b.open(t, "Tracker down")
		b.mp.WaitFor(t, "reader@example.com", 10*time.Second)
		eventually(t, 20*time.Second, "the reader's notice", func() bool { return b.mp.To(t)["reader@example.com"] == 2 })
		var owed int
		if err := b.st.DB().QueryRowContext(b.ctx, b.st.Rebind("SELECT COUNT(*) FROM status_notices WHERE subscriber_id IN (?, ?)"),
			gone.Subscriber.ID, hook.Subscriber.ID).Scan(&owed); err != nil {
			t.Fatal(err)
		}
		if owed != 0 {
			t.Errorf("the stopped subscriptions are owed %d notices, want none", owed)
		}

		again, err := b.svc.Subscribe(b.ctx, status.SubscribeRequest{Channel: status.ChannelEmail, Address: "someone@refused.test"})
		if err != nil || again.Subscriber.ID != gone.Subscriber.ID || again.Token == "" || !again.Subscriber.Disabled.IsZero() {
			t.Fatalf("subscribing again: %+v, %v; want the same subscriber, no longer stopped, with a fresh link", again, err)
		}
		eventually(t, 20*time.Second, "the fresh link refused and the subscription stopped again", func() bool {
			return stoppedWith(gone.Subscriber.ID, reason)
		})
		if _, err := b.svc.Confirm(b.ctx, again.Token); fault.CodeOf(err) != fault.NotFound {
			t.Fatalf("confirming with the refused fresh link: %v", err)
		}
	})
}

func TestRetriesBackOff(t *testing.T) {
	t.Parallel()
	b := setup(t, newDSN(t, "sqlite"), true, func(c *Config) {
		c.Backoff = Backoff{Base: time.Second, Max: 4 * time.Second}
		c.DisableAfter = 100
	})
	hook := b.subscribe(t, status.SubscribeRequest{Channel: status.ChannelWebhook, Address: b.hooks.URL + "/flaky", OwnerEmail: "ops@example.com"})
	b.hooks.SetSecret(hook.Secret)
	b.hooks.Answer("/flaky", http.StatusServiceUnavailable)
	b.open(t, "Tracker down")

	// Each failure schedules the next attempt Backoff.Delay(n) (plus at most
	// a tenth) after it: read from the job's row, not from a stopwatch.
	seen := map[int]bool{}
	eventually(t, 40*time.Second, "three failed attempts", func() bool {
		jobs := b.jobs(t, noticeJob{}.Kind())
		if len(jobs) != 1 {
			return false
		}
		// A retry due within River's scheduler interval is left available
		// with a future scheduled_at rather than retryable; either way the
		// row's scheduled_at is the one set by its latest failure.
		j := jobs[0]
		n := len(j.Errors)
		if n == 0 || seen[n] {
			return n >= 3
		}
		seen[n] = true
		want := b.svc.cfg.Backoff.Delay(n)
		got := j.ScheduledAt.Sub(j.Errors[n-1].At)
		// River stamps the error and asks the policy a moment apart; a
		// loaded machine stretches that moment, hence the slack.
		if got < want-200*time.Millisecond || got > want+want/10+500*time.Millisecond {
			t.Errorf("after failure %d the retry is scheduled %s later, want %s (+10%% jitter)", n, got, want)
		}
		return n >= 3
	})
	if len(seen) < 2 {
		t.Fatalf("saw the schedule after %d failures only", len(seen))
	}
	if d := b.svc.cfg.Backoff; d.Delay(1) != time.Second || d.Delay(2) != 2*time.Second || d.Delay(3) != 4*time.Second || d.Delay(9) != 4*time.Second {
		t.Fatalf("delays %s %s %s %s: want doubling from 1s, capped at 4s", d.Delay(1), d.Delay(2), d.Delay(3), d.Delay(9))
	}

	// The receiver recovers: the next attempt gets through, with the id
	// every attempt carried.
	b.hooks.Answer("/flaky", http.StatusOK)
	eventually(t, 30*time.Second, "the notice sent", func() bool { return len(b.notices(t, status.NoticeSent)) == 1 })
	got := b.hooks.Got("/flaky")
	if len(got) != 1 || b.hooks.Calls("/flaky") < 4 {
		t.Fatalf("%d accepted of %d calls", len(got), b.hooks.Calls("/flaky"))
	}
	ds, err := b.svc.Deliveries(b.ctx, StateSent, 0)
	if err != nil || len(ds) != 1 || ds[0].Attempts < 4 || ds[0].MessageID != got[0].ID {
		t.Fatalf("deliveries = %+v, %v", ds, err)
	}
}

func TestFailingWebhookIsDisabledAndItsOwnerTold(t *testing.T) {
	t.Parallel()
	b := setup(t, newDSN(t, "sqlite"), true, func(c *Config) { c.DisableAfter = 3 })
	hook := b.subscribe(t, status.SubscribeRequest{Channel: status.ChannelWebhook, Address: b.hooks.URL + "/dead", OwnerEmail: "ops@example.com"})
	b.hooks.SetSecret(hook.Secret)
	b.hooks.Answer("/dead", http.StatusInternalServerError)
	inc := b.open(t, "Tracker down")
	b.update(t, inc.ID, "Still down.")
	b.update(t, inc.ID, "Restores are running.")

	mail := b.mp.WaitFor(t, "ops@example.com", 30*time.Second)
	if !strings.Contains(mail.Subject, "Webhook disabled: "+hook.Address) || !strings.Contains(mail.Text, "3 deliveries in a row failed") {
		t.Fatalf("owner's mail:\nSubject: %s\n%s", mail.Subject, mail.Text)
	}
	sub, err := b.status.Subscriber(b.ctx, hook.ID)
	if err != nil || sub.Active() || !strings.Contains(sub.DisabledReason, "3 deliveries in a row failed") {
		t.Fatalf("subscriber = %+v, %v", sub, err)
	}
	eventually(t, 30*time.Second, "every job finished", func() bool {
		for _, j := range b.jobs(t, noticeJob{}.Kind()) {
			if j.FinalizedAt == nil {
				return false
			}
		}
		return true
	})
	calls := b.hooks.Calls("/dead")
	b.update(t, inc.ID, "Nearly there.")
	time.Sleep(500 * time.Millisecond)
	if b.hooks.Calls("/dead") != calls {
		t.Fatal("a disabled webhook was still called")
	}
	if n := b.mp.To(t)["ops@example.com"]; n != 1 {
		t.Fatalf("the owner was told %d times", n)
	}

	// Subscribed and confirmed again, it starts afresh: one more failure
	// does not disable it at once.
	b.subscribe(t, status.SubscribeRequest{Channel: status.ChannelWebhook, Address: hook.Address, OwnerEmail: "ops@example.com"})
	b.update(t, inc.ID, "Back to the start.")
	eventually(t, 20*time.Second, "one more call", func() bool { return b.hooks.Calls("/dead") > calls })
	time.Sleep(300 * time.Millisecond)
	if sub, _ := b.status.Subscriber(b.ctx, hook.ID); !sub.Active() {
		t.Fatal("a re-confirmed webhook was disabled by its old failures")
	}
}

func TestDrainIsIdempotent(t *testing.T) {
	engines(t, func(t *testing.T, dsn string) {
		b := setup(t, dsn, false, nil)
		for _, a := range []string{"a", "b", "c", "d", "e"} {
			b.subscribe(t, status.SubscribeRequest{Channel: status.ChannelEmail, Address: a + "@example.com"})
		}
		b.subscribe(t, status.SubscribeRequest{Channel: status.ChannelWebhook, Address: b.hooks.URL + "/ok", OwnerEmail: "ops@example.com"})
		b.open(t, "Tracker down")

		// Two processes drain at once, then a crash between the insert and
		// the marking sends the notices round again: still one job each.
		other, err := New(b.ctx, Config{Store: b.st, Status: b.status, Email: b.svc.email, PostgresURL: b.svc.cfg.PostgresURL})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Stop(b.ctx)
		var wg sync.WaitGroup
		for _, s := range []*Service{b.svc, other} {
			wg.Go(func() {
				if _, err := s.Drain(b.ctx); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if _, err := b.st.DB().ExecContext(b.ctx, "UPDATE status_notices SET status = 'pending'"); err != nil {
			t.Fatal(err)
		}
		if n, err := b.svc.Drain(b.ctx); err != nil || n != 6 {
			t.Fatalf("drain again = %d, %v", n, err)
		}
		jobs := b.jobs(t, noticeJob{}.Kind())
		var keys []string
		for _, j := range jobs {
			var a noticeJob
			if err := json.Unmarshal(j.EncodedArgs, &a); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, noticeKey(a))
			if want := queueFor(status.Channel(a.Channel)); j.Queue != want {
				t.Errorf("%s job in queue %s, want %s", a.Channel, j.Queue, want)
			}
		}
		slices.Sort(keys)
		if len(jobs) != 6 || len(slices.Compact(keys)) != 6 {
			t.Fatalf("%d jobs for 6 notices: %v", len(jobs), keys)
		}
		if n := len(b.notices(t, status.NoticeQueued)); n != 6 {
			t.Fatalf("%d notices queued", n)
		}
	})
}

func TestEmailIsRateLimited(t *testing.T) {
	t.Parallel()
	const rate, n = 5.0, 15
	b := setup(t, newDSN(t, "sqlite"), true, func(c *Config) { c.EmailRate = rate })
	for i := range n {
		b.subscribe(t, status.SubscribeRequest{Channel: status.ChannelEmail, Address: "r" + string(rune('a'+i)) + "@example.com"})
	}
	b.open(t, "Tracker down")
	eventually(t, 30*time.Second, "every notice sent", func() bool { return len(b.notices(t, status.NoticeSent)) == n })
	ds, err := b.svc.Deliveries(b.ctx, StateSent, 0)
	if err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	for _, d := range ds {
		at = append(at, d.Sent)
	}
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	// A bucket of 5 tokens refilled at 5/s: no more than 10 sends in any
	// second, and 15 take at least (15-5)/5 = 2s. The times are those of
	// the sent records, written a moment after each token; a loaded
	// machine may bunch a few, hence the slack.
	for i := range at {
		in := 0
		for _, x := range at[i:] {
			if x.Sub(at[i]) < time.Second {
				in++
			}
		}
		if in > 2*int(rate)+2 {
			t.Fatalf("%d sends within one second from %s", in, at[i])
		}
	}
	if span := at[len(at)-1].Sub(at[0]); span < 1500*time.Millisecond {
		t.Fatalf("%d sends took %s; the bucket allows no less than 2s", n, span)
	}
}
