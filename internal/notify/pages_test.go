package notify_test

import (
	"context"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lifeline/internal/notify"
	"lifeline/internal/state"
	"lifeline/internal/status"
	"lifeline/internal/web"
)

// TestSubscriptionPagesEndToEnd drives the public pages as a visitor
// would, with the real delivery behind them: subscribe on the form, follow
// the link in the confirmation mail (from mailpit), receive a notice, leave
// with the one-click unsubscribe its headers carry. A webhook is subscribed
// the same way, and its deliveries verify with the secret the confirmation
// page showed.
func TestSubscriptionPagesEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := state.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "state.db"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stat, err := status.New(ctx, status.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stat.PutComponent(ctx, status.Component{Name: status.Text{En: "tracker"}}); err != nil {
		t.Fatal(err)
	}
	mp := notify.StartMailpit(t)
	hooks := notify.StartHooks(t)

	var handler http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	defer srv.Close()
	mail, err := notify.NewSMTPSender(notify.SMTPConfig{Host: "127.0.0.1", Port: mp.SMTPPort, From: "status@lifeline.test", TLS: notify.TLSNone})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := notify.New(ctx, notify.Config{Store: st, Status: stat, Email: mail, PageName: "Example", PublicURL: srv.URL,
		FetchPoll: 50 * time.Millisecond, DrainEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer svc.Stop(ctx)
	page := &web.StatusPage{Service: stat, Name: "Example", URL: srv.URL, Subscriptions: svc}
	handler = (&web.Server{Auth: st, Registry: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler), Status: page}).Handler()

	jar, _ := cookiejar.New(nil)
	visitor := &http.Client{Jar: jar}
	get := func(u string) string {
		t.Helper()
		resp, err := visitor.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s\n%s", u, resp.Status, b)
		}
		return string(b)
	}
	post := func(c *http.Client, u string, form url.Values) string {
		t.Helper()
		resp, err := c.PostForm(u, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("POST %s: %s\n%s", u, resp.Status, b)
		}
		return string(b)
	}
	field := func(page, name string) string {
		t.Helper()
		m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no %s field in\n%s", name, page)
		}
		return html.UnescapeString(m[1])
	}
	confirmLink := regexp.MustCompile(regexp.QuoteMeta(srv.URL) + `/subscribe/confirm\?token=\S+`)
	confirm := func(addr string) string {
		t.Helper()
		msg := mp.WaitFor(t, addr, 15*time.Second)
		link := confirmLink.FindString(msg.Text)
		if link == "" {
			t.Fatalf("no confirmation link in\n%s", msg.Text)
		}
		form := get(link) // opening the link only shows the button
		return post(visitor, srv.URL+"/subscribe/confirm", url.Values{"token": {field(form, "token")}})
	}

	home := get(srv.URL + "/")
	if !strings.Contains(home, `href="/subscribe?lang=en"`) {
		t.Fatal("the status page does not link to the subscription form")
	}
	form := get(srv.URL + "/subscribe")
	post(visitor, srv.URL+"/subscribe", url.Values{"csrf": {field(form, "csrf")}, "channel": {"email"}, "address": {"visitor@example.com"}})
	post(visitor, srv.URL+"/subscribe", url.Values{"csrf": {field(form, "csrf")}, "channel": {"webhook"}, "url": {hooks.URL + "/ok"}, "owner_email": {"ops@example.com"}})
	if ns, _ := stat.Notices(ctx, "", 0); len(ns) != 0 {
		t.Fatal("notices owed before confirmation")
	}
	if done := confirm("visitor@example.com"); !strings.Contains(done, "visitor@example.com will now receive updates") {
		t.Fatalf("confirmation page:\n%s", done)
	}
	done := confirm("ops@example.com")
	m := regexp.MustCompile(`<pre class="secret" id="webhook-secret">([^<]+)</pre>`).FindStringSubmatch(done)
	if m == nil {
		t.Fatalf("the webhook's confirmation page shows no secret:\n%s", done)
	}
	hooks.SetSecret(html.UnescapeString(m[1]))

	inc, err := stat.OpenIncident(ctx, status.NewIncident{Name: status.Text{En: "Tracker down"}, Draft: status.Draft{Impact: status.ImpactMinor,
		Body:       status.Body{Situation: status.Text{En: "Pages fail to load."}, Support: status.Text{En: "Write to help@example.com."}, Known: status.Text{En: "Tracker."}, Unknown: status.Text{En: "Why."}},
		Components: []status.ComponentChange{{ComponentID: "tracker", Status: status.PartialOutage}}}})
	if err != nil {
		t.Fatal(err)
	}
	var notice notify.MailMessage
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if mp.To(t)["visitor@example.com"] == 2 && len(hooks.Got("/ok")) == 1 {
			notice = mp.WaitFor(t, "visitor@example.com", time.Second)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("notices not delivered: mail %v, webhook %d", mp.To(t), len(hooks.Got("/ok")))
		}
	}
	if !strings.Contains(notice.Subject, "Tracker down") || !strings.Contains(notice.Text, "Pages fail to load.") {
		t.Fatalf("notice:\n%s\n%s", notice.Subject, notice.Text)
	}

	// The mail client's unsubscribe button: a POST from the provider's
	// server, no cookies, the token in the URL.
	lu := strings.Trim(strings.Join(notice.Headers["List-Unsubscribe"], ""), "<>")
	if !strings.HasPrefix(lu, srv.URL+"/unsubscribe?token=") {
		t.Fatalf("List-Unsubscribe = %q", lu)
	}
	if out := post(http.DefaultClient, lu, url.Values{"List-Unsubscribe": {"One-Click"}}); !strings.Contains(out, "visitor@example.com will receive no more updates") {
		t.Fatalf("unsubscribe page:\n%s", out)
	}
	up, err := stat.PostUpdate(ctx, inc.ID, status.Draft{CarryOver: true, Body: status.Body{Situation: status.Text{En: "Fixed soon."}}})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); len(hooks.Got("/ok")) < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the webhook did not get the second update")
		}
	}
	ns, err := stat.Notices(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.UpdateID == up.Updates[0].ID && n.Channel == status.ChannelEmail {
			t.Fatalf("the unsubscribed visitor is owed %+v", n)
		}
	}
	if n := mp.To(t)["visitor@example.com"]; n != 2 {
		t.Fatalf("the visitor got %d mails; want the confirmation and one notice", n)
	}
}
