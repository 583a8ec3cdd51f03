package status

import (
	"slices"
	"strings"
	"testing"
	"time"

	"lifeline/internal/fault"
)

func TestDoubleOptInAndUnsubscribe(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		ctx, svc := b.ctx, b.svc
		for _, bad := range []SubscribeRequest{
			{Channel: ChannelEmail, Address: "not an address"},
			{Channel: ChannelEmail, Address: "Ann <ann@example.com>"},
			{Channel: ChannelWebhook, Address: "ftp://example.com/hook", OwnerEmail: "ops@example.com"},
			{Channel: ChannelWebhook, Address: "https://example.com/hook"},
			{Channel: "sms", Address: "+15550100"},
		} {
			if _, err := svc.Subscribe(ctx, bad); fault.CodeOf(err) != fault.Invalid {
				t.Errorf("%+v accepted: %v", bad, err)
			}
		}

		p, err := svc.Subscribe(ctx, SubscribeRequest{Channel: ChannelEmail, Address: "ann@example.com", Lang: Chinese})
		if err != nil {
			t.Fatal(err)
		}
		if p.Token == "" || p.ConfirmTo != "ann@example.com" || p.Subscriber.Active() || p.Subscriber.Lang != Chinese {
			t.Fatalf("pending = %+v", p)
		}
		// Subscribing again replaces the link: the first one no longer works.
		p2, err := svc.Subscribe(ctx, SubscribeRequest{Channel: ChannelEmail, Address: "ann@example.com"})
		if err != nil || p2.Subscriber.ID != p.Subscriber.ID || p2.Token == p.Token {
			t.Fatalf("re-subscribe = %+v, %v", p2, err)
		}
		if _, err := svc.Confirm(ctx, p.Token); fault.CodeOf(err) != fault.NotFound {
			t.Fatalf("old link confirmed: %v", err)
		}
		sub, err := svc.Confirm(ctx, p2.Token)
		if err != nil || !sub.Active() {
			t.Fatalf("confirm = %+v, %v", sub, err)
		}
		if _, err := svc.Confirm(ctx, p2.Token); fault.CodeOf(err) != fault.NotFound {
			t.Fatalf("link used twice: %v", err)
		}
		// A stranger re-subscribing a confirmed address changes nothing.
		if p3, err := svc.Subscribe(ctx, SubscribeRequest{Channel: ChannelEmail, Address: "ann@example.com", Lang: Chinese}); err != nil || p3.Token != "" || p3.Subscriber.Lang != English {
			t.Fatalf("re-subscribe of a confirmed address = %+v, %v", p3, err)
		}

		tok, err := svc.UnsubscribeToken(ctx, sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		id, mac, _ := strings.Cut(tok, ".")
		flipped := "A"
		if mac[0] == 'A' {
			flipped = "B"
		}
		for _, forged := range []string{id + "." + flipped + mac[1:], "other." + mac, id} {
			if _, err := svc.Unsubscribe(ctx, forged); fault.CodeOf(err) != fault.Invalid {
				t.Fatalf("forged token %q accepted: %v", forged, err)
			}
		}
		got, err := svc.Unsubscribe(ctx, tok)
		if err != nil || got.Active() || got.DisabledReason != "unsubscribed" {
			t.Fatalf("unsubscribe = %+v, %v", got, err)
		}
		if _, err := svc.Unsubscribe(ctx, tok); err != nil {
			t.Fatalf("second unsubscribe: %v", err)
		}

		// Links expire after ConfirmWithin.
		late, err := svc.Subscribe(ctx, SubscribeRequest{Channel: ChannelEmail, Address: "bob@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		b.clock.Add(ConfirmWithin + time.Minute)
		if _, err := svc.Confirm(ctx, late.Token); fault.CodeOf(err) != fault.Refused {
			t.Fatalf("expired link: %v", err)
		}
	})
}

func TestNoticesAreRecordedWithTheUpdate(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		ctx, svc := b.ctx, b.svc
		for _, n := range []string{"tracker", "wiki"} {
			if _, err := svc.PutComponent(ctx, Component{Name: Text{En: n}}); err != nil {
				t.Fatal(err)
			}
		}
		subscribe := func(req SubscribeRequest, confirm bool) Subscriber {
			t.Helper()
			p, err := svc.Subscribe(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if !confirm {
				return p.Subscriber
			}
			sub, err := svc.Confirm(ctx, p.Token)
			if err != nil {
				t.Fatal(err)
			}
			return sub
		}
		all := subscribe(SubscribeRequest{Channel: ChannelEmail, Address: "all@example.com"}, true)
		wiki := subscribe(SubscribeRequest{Channel: ChannelEmail, Address: "wiki@example.com", Components: []string{"wiki"}}, true)
		hook := subscribe(SubscribeRequest{Channel: ChannelWebhook, Address: "https://hooks.example.com/x", OwnerEmail: "ops@example.com", Components: []string{"tracker"}}, true)
		subscribe(SubscribeRequest{Channel: ChannelEmail, Address: "unconfirmed@example.com"}, false)
		gone := subscribe(SubscribeRequest{Channel: ChannelEmail, Address: "gone@example.com"}, true)
		if _, err := svc.DisableSubscriber(ctx, gone.ID, "bounced"); err != nil {
			t.Fatal(err)
		}

		inc, err := svc.OpenIncident(ctx, NewIncident{Name: Text{En: "Tracker down"}, Draft: Draft{Impact: ImpactCritical, Body: fullBody(),
			Components: []ComponentChange{{ComponentID: "tracker", Status: MajorOutage}}}})
		if err != nil {
			t.Fatal(err)
		}
		owed := func() []string {
			t.Helper()
			ns, err := svc.Notices(ctx, "pending", 0)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, n := range ns {
				out = append(out, n.SubscriberID+"/"+n.UpdateID)
			}
			slices.Sort(out)
			return out
		}
		want := []string{all.ID + "/" + inc.Updates[0].ID, hook.ID + "/" + inc.Updates[0].ID}
		slices.Sort(want)
		if got := owed(); !slices.Equal(got, want) {
			t.Fatalf("notices = %v, want %v (all + tracker hook; not wiki, unconfirmed or disabled)", got, want)
		}
		// The incident spreads to the wiki: its subscriber is owed this update,
		// and the tracker hook still is (the incident still affects tracker).
		inc, err = svc.PostUpdate(ctx, inc.ID, Draft{CarryOver: true, Components: []ComponentChange{{ComponentID: "wiki", Status: PartialOutage}}})
		if err != nil {
			t.Fatal(err)
		}
		if got := owed(); len(got) != 5 || !slices.Contains(got, wiki.ID+"/"+inc.Updates[0].ID) || !slices.Contains(got, hook.ID+"/"+inc.Updates[0].ID) {
			t.Fatalf("after spreading: %v", got)
		}
		// A refused update owes nothing.
		if _, err := svc.PostUpdate(ctx, inc.ID, Draft{Body: Body{Situation: Text{En: "x"}}}); fault.CodeOf(err) != fault.Refused {
			t.Fatalf("partial update: %v", err)
		}
		if got := owed(); len(got) != 5 {
			t.Fatalf("a refused update recorded notices: %v", got)
		}
		withSecret, err := svc.Subscriber(ctx, hook.ID)
		if err != nil || !strings.HasPrefix(withSecret.Secret, "whsec_") {
			t.Fatalf("webhook secret = %q, %v", withSecret.Secret, err)
		}
	})
}

// TestRateBucketsAreShared: two services on one store (two serve processes)
// draw from the same bucket; the refusal says when the next token comes;
// a full bucket is pruned, and another client's bucket is its own.
func TestRateBucketsAreShared(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		other, err := New(b.ctx, Config{Store: b.svc.db.st, Now: b.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		r := Rate{Every: 6 * time.Second, Burst: 3}
		take := func(s *Service, bucket string) (bool, time.Duration) {
			t.Helper()
			ok, wait, err := s.Take(b.ctx, bucket, r)
			if err != nil {
				t.Fatal(err)
			}
			return ok, wait
		}
		for i, s := range []*Service{b.svc, other, b.svc} {
			if ok, _ := take(s, "form:192.0.2.1"); !ok {
				t.Fatalf("take %d within the burst refused", i)
			}
		}
		if ok, wait := take(other, "form:192.0.2.1"); ok || wait != 6*time.Second {
			t.Fatalf("fourth take: %v, wait %s; want refused for 6s", ok, wait)
		}
		if ok, _ := take(other, "form:192.0.2.2"); !ok {
			t.Fatal("another address was refused")
		}
		b.clock.Add(4 * time.Second)
		if ok, wait := take(b.svc, "form:192.0.2.1"); ok || wait != 2*time.Second {
			t.Fatalf("after 4s: %v, wait %s; want refused for 2s more", ok, wait)
		}
		b.clock.Add(2 * time.Second)
		if ok, _ := take(other, "form:192.0.2.1"); !ok {
			t.Fatal("a token that came back was refused")
		}
		b.clock.Add(time.Minute)
		if err := b.svc.PruneRates(b.ctx); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := b.svc.db.st.DB().QueryRowContext(b.ctx, "SELECT COUNT(*) FROM status_rate_buckets").Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d buckets after pruning full ones (%v)", n, err)
		}
	})
}

// TestStopUnconfirmedLeavesOthersAlone: a refused confirmation stops only
// a subscription still waiting for that very mailbox: not one confirmed
// meanwhile, nor a webhook subscribed again with another owner.
func TestStopUnconfirmedLeavesOthersAlone(t *testing.T) {
	engines(t, func(t *testing.T, b *bundle) {
		ctx, svc := b.ctx, b.svc
		const reason = "confirmation mail refused for good: 550 no such user"
		subscribe := func(req SubscribeRequest) *Pending {
			t.Helper()
			p, err := svc.Subscribe(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		confirmed := subscribe(SubscribeRequest{Channel: ChannelEmail, Address: "ann@example.com"})
		if _, err := svc.Confirm(ctx, confirmed.Token); err != nil {
			t.Fatal(err)
		}
		hook := SubscribeRequest{Channel: ChannelWebhook, Address: "https://example.com/hook", OwnerEmail: "old@example.com"}
		subscribe(hook)
		hook.OwnerEmail = "new@example.com"
		moved := subscribe(hook)
		for _, c := range []struct{ id, to string }{{confirmed.Subscriber.ID, "ann@example.com"}, {moved.Subscriber.ID, "old@example.com"}} {
			if stopped, err := svc.StopUnconfirmed(ctx, c.id, c.to, reason); err != nil || stopped {
				t.Fatalf("stopping %s for %s: %v, %v; want it left alone", c.id, c.to, stopped, err)
			}
		}
		if stopped, err := svc.StopUnconfirmed(ctx, moved.Subscriber.ID, "new@example.com", reason); err != nil || !stopped {
			t.Fatalf("stopping the webhook for its current owner: %v, %v", stopped, err)
		}
		if list, err := svc.StoppedSubscribers(ctx); err != nil || len(list) != 1 || list[0].ID != moved.Subscriber.ID || list[0].DisabledReason != reason {
			t.Fatalf("stopped: %+v, %v", list, err)
		}
		if _, err := svc.Confirm(ctx, moved.Token); fault.CodeOf(err) != fault.NotFound {
			t.Fatalf("the stopped webhook's link still confirms: %v", err)
		}
		if stopped, err := svc.StopUnconfirmed(ctx, moved.Subscriber.ID, "new@example.com", reason); err != nil || stopped {
			t.Fatalf("stopping it twice: %v, %v", stopped, err)
		}
	})
}
