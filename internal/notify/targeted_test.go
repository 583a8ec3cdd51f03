package notify

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/status"
)

// fakeVault stands in for the contacts vault: fixed contacts per tenant,
// and an error to return while it is "down".
type fakeVault struct {
	mu       sync.Mutex
	contacts map[string][]Recipient
	err      error
	rev      int64
	reads    int // calls of Recipients
}

func (v *fakeVault) Revision(context.Context) (int64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rev, v.err
}

// add gives tenant a contact, as a sync or import would, moving the
// revision.
func (v *fakeVault) add(tenant string, r Recipient) {
	v.mu.Lock()
	v.contacts[tenant] = append(v.contacts[tenant], r)
	v.rev++
	v.mu.Unlock()
}

func (v *fakeVault) Recipients(_ context.Context, tenants []string) (map[string][]Recipient, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.reads++
	if v.err != nil {
		return nil, v.err
	}
	out := map[string][]Recipient{}
	for _, k := range tenants {
		out[k] = v.contacts[k]
	}
	return out, nil
}

func (v *fakeVault) down(err error) {
	v.mu.Lock()
	v.err = err
	v.mu.Unlock()
}

// numberedVault gives tenant tNNN two contacts, a-tNNN@example.com (admin)
// and b-tNNN@example.com (technical); the crash test's child uses it.
type numberedVault struct{}

func (numberedVault) Revision(context.Context) (int64, error) { return 1, nil }

func (numberedVault) Recipients(_ context.Context, tenants []string) (map[string][]Recipient, error) {
	out := map[string][]Recipient{}
	for _, k := range tenants {
		out[k] = []Recipient{{ContactID: "a" + k, Email: "a-" + k + "@example.com", Role: "admin", Reachable: true},
			{ContactID: "b" + k, Email: "b-" + k + "@example.com", Role: "technical", Reachable: true}}
	}
	return out, nil
}

var tenantLink = regexp.MustCompile(`https://status\.example\.test/tenant-status\?t=(\S+)`)

// tenantDeliveries counts targeted notices recorded sent.
func (b *bundle) tenantDeliveries(t *testing.T) int {
	t.Helper()
	ds, err := b.svc.Deliveries(b.ctx, StateSent, 100000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range ds {
		if d.Kind == "tenant_notice" {
			n++
		}
	}
	return n
}

func TestTargetedNoticesReachEachTenantsContacts(t *testing.T) {
	engines(t, func(t *testing.T, dsn string) {
		vault := &fakeVault{contacts: map[string][]Recipient{
			// Site 883 was deleted in every product; the vault kept its people.
			"883": {
				{ContactID: "c1", Email: "zhang@example.com", Name: "张伟", Language: "zh-CN", Role: "admin", Reachable: true},
				{ContactID: "c2", Email: "tech@example.com", Role: "technical", Reachable: true},
				{ContactID: "c3", Email: "billing@example.com", Role: "billing", Reachable: true},
				{ContactID: "c4", Email: "security@example.com", Role: "security", Reachable: true},
				{ContactID: "c5", Email: "bounced@example.com", Role: "admin", Reachable: false},
			},
			"884": {{ContactID: "c6", Email: "ann@example.com", Name: "Ann", Role: "admin", Reachable: true}},
			// 885 has nobody to tell.
		}}
		b := setup(t, dsn, true, func(c *Config) { c.Recipients = vault })
		inc, err := b.status.OpenIncident(b.ctx, status.NewIncident{Name: status.Text{En: "Sites deleted", Zh: "站点被删除"}, Draft: status.Draft{
			Impact: status.ImpactCritical, Body: fullBody(), Tenants: []string{"883", "site:884", "885"}}})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "four targeted notices sent", func() bool { return b.tenantDeliveries(t) == 4 })

		zh := b.mp.WaitFor(t, "zhang@example.com", 5*time.Second)
		if !strings.Contains(zh.Subject, "您的站点 883") || !strings.Contains(zh.Text, "张伟，您好") || !strings.Contains(zh.Text, "管理员联系人") ||
			!strings.Contains(zh.Text, "一个脚本删除了 883 个站点。") {
			t.Errorf("the Chinese notice:\nSubject: %s\n%s", zh.Subject, zh.Text)
		}
		m := tenantLink.FindStringSubmatch(zh.Text)
		if m == nil {
			t.Fatalf("no private link in:\n%s", zh.Text)
		}
		token, err := url.QueryUnescape(m[1])
		if err != nil {
			t.Fatal(err)
		}
		v, err := b.status.TenantView(b.ctx, token)
		if err != nil || v.Tenant != "883" || v.Incident.ID != inc.ID || v.SupportNoLogin.En != "Call +1 555 0100." {
			t.Fatalf("the link opens %+v, %v", v, err)
		}
		en := b.mp.WaitFor(t, "ann@example.com", 5*time.Second)
		if !strings.Contains(en.Subject, "Sites deleted: your site 884") || !strings.Contains(en.Text, "the admin contact of site 884") ||
			!strings.Contains(en.Text, "If you cannot sign in: Call +1 555 0100.") {
			t.Errorf("the English notice:\nSubject: %s\n%s", en.Subject, en.Text)
		}
		ns, err := b.status.TenantNotices(b.ctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, n := range ns {
			got[n.Tenant] = fmt.Sprintf("%s/%d", n.Status, n.Contacts)
		}
		if got["883"] != "queued/3" || got["884"] != "queued/1" || got["885"] != "uncontactable/0" {
			t.Fatalf("targeted notices: %v", got)
		}

		// The vault is down when the next update is published: its
		// notices wait, and go out once it answers.
		vault.down(fault.New(fault.Unavailable, "", "vault unreachable"))
		b.update(t, inc.ID, "Restores are running.")
		if _, err := b.svc.Drain(b.ctx); fault.CodeOf(err) != fault.Unavailable {
			t.Fatalf("drain with the vault down: %v", err)
		}
		if pending, _ := b.status.TenantNotices(b.ctx, status.NoticePending, 0); len(pending) != 3 {
			t.Fatalf("%d notices pending with the vault down, want 3", len(pending))
		}
		vault.down(nil)
		eventually(t, 30*time.Second, "the second update's notices", func() bool { return b.tenantDeliveries(t) == 8 })
		time.Sleep(200 * time.Millisecond) // a duplicate would show now
		if n, err := b.svc.Drain(b.ctx); err != nil || n != 0 {
			t.Fatalf("a drain after everything was queued moved %d, %v", n, err)
		}
		to := b.mp.To(t)
		for addr, want := range map[string]int{"zhang@example.com": 2, "tech@example.com": 2, "billing@example.com": 2, "ann@example.com": 2,
			"security@example.com": 0, "bounced@example.com": 0} {
			if to[addr] != want {
				t.Errorf("%s got %d mails, want %d", addr, to[addr], want)
			}
		}
	})
}

// TestNoDuplicateTargetedMailAfterKill kills the delivering process in the
// middle of an update's targeted notices: every contact still gets exactly
// one.
func TestNoDuplicateTargetedMailAfterKill(t *testing.T) {
	t.Parallel()
	const tenants = 200
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	st, stat := openStatus(t, "sqlite:"+path)
	var keys []string
	for i := range tenants {
		keys = append(keys, fmt.Sprintf("t%03d", i))
	}
	mp := StartMailpit(t)
	if _, err := stat.OpenIncident(ctx, status.NewIncident{Name: status.Text{En: "Sites deleted"}, Draft: status.Draft{
		Impact: status.ImpactCritical, Body: fullBody(), Tenants: keys}}); err != nil {
		t.Fatal(err)
	}
	killMidBatch(t, st, path, mp, 2*tenants, func() int {
		var n int
		if err := st.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM notify_deliveries WHERE kind = 'tenant_notice' AND state = 'sent'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	})
}

// TestUncontactableTenantIsToldWhenAContactIsAdded: a tenant with nobody
// to tell gets the incident's newest notice as soon as the vault gains a
// contact for it, without another update, while the incident is open; an
// idle vault is not read again; a resolved incident's tenant is not told.
func TestUncontactableTenantIsToldWhenAContactIsAdded(t *testing.T) {
	engines(t, func(t *testing.T, dsn string) {
		vault := &fakeVault{contacts: map[string][]Recipient{}}
		b := setup(t, dsn, true, func(c *Config) { c.Recipients = vault })
		open := func(name, tenant string) *status.Incident {
			inc, err := b.status.OpenIncident(b.ctx, status.NewIncident{Name: status.Text{En: name}, Draft: status.Draft{
				Impact: status.ImpactCritical, Body: fullBody(), Tenants: []string{tenant}}})
			if err != nil {
				t.Fatal(err)
			}
			return inc
		}
		states := func(incidentID string) []string {
			ns, err := b.status.IncidentNotices(b.ctx, incidentID)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, n := range ns {
				out = append(out, fmt.Sprintf("%s/%d", n.Status, n.Contacts))
			}
			return out
		}
		inc := open("Sites deleted", "886")
		b.update(t, inc.ID, "Restores are running.")
		closed := open("Sites slow", "887")
		if _, err := b.status.Resolve(b.ctx, closed.ID, status.Draft{CarryOver: true, Body: status.Body{Situation: status.Text{En: "Fixed."}}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "every notice uncontactable", func() bool {
			return slices.Equal(states(inc.ID), []string{"uncontactable/0", "uncontactable/0"}) &&
				slices.Equal(states(closed.ID), []string{"uncontactable/0", "uncontactable/0"})
		})
		time.Sleep(300 * time.Millisecond) // several drains
		vault.mu.Lock()
		reads := vault.reads
		vault.mu.Unlock()
		time.Sleep(300 * time.Millisecond)
		vault.mu.Lock()
		if vault.reads != reads {
			t.Errorf("the vault was read %d more times while it did not change", vault.reads-reads)
		}
		vault.mu.Unlock()

		vault.add("886", Recipient{ContactID: "c7", Email: "new-admin@example.com", Role: "admin", Reachable: true})
		vault.add("887", Recipient{ContactID: "c8", Email: "late@example.com", Role: "admin", Reachable: true})
		m := b.mp.WaitFor(t, "new-admin@example.com", 30*time.Second)
		if !strings.Contains(m.Text, "Restores are running.") {
			t.Errorf("the retried notice is not the newest update:\n%s", m.Text)
		}
		eventually(t, 10*time.Second, "the newest notice queued", func() bool {
			return slices.Equal(states(inc.ID), []string{"uncontactable/0", "queued/1"})
		})
		time.Sleep(300 * time.Millisecond) // a second copy, or the resolved incident's, would show now
		to := b.mp.To(t)
		if to["new-admin@example.com"] != 1 || to["late@example.com"] != 0 {
			t.Errorf("mail received: %v; want one to new-admin@, none to late@ (its incident is resolved)", to)
		}
		if got := states(closed.ID); !slices.Equal(got, []string{"uncontactable/0", "uncontactable/0"}) {
			t.Errorf("the resolved incident's notices: %v", got)
		}
	})
}
