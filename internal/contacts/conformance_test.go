package contacts

import (
	"errors"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
	"lifeline/internal/state"
)

// The conformance suite: every behaviour of the vault, on each engine.

func TestSQLite(t *testing.T) {
	t.Parallel()
	runConformance(t, sqliteBackend)
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	runConformance(t, postgresBackend)
}

func runConformance(t *testing.T, b backend) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, backend)
	}{
		{"SyncIsIdempotentAndRecordsRemovals", testSyncIdempotentAndRemovals},
		{"EmptyQueryDoesNotWipeTheVault", testEmptyQueryDoesNotWipe},
		{"DeletedAndPurgedTenantsKeepTheirContacts", testDeletedTenantKeepsContacts},
		{"NormalisationMergesDuplicates", testNormalisationMerges},
		{"ImportDryRunChangesNothing", testImportDryRun},
		{"ImportRefusesBadRowsWhole", testImportRefusesBadRows},
		{"ForRanksBestFirst", testForRanking},
		{"VerificationLinksExpireAndCannotBeForged", testVerificationLinks},
		{"VaultRebuiltFromItsBackup", testRestoreAfterLoss},
		{"ErasureSurvivesRestore", testErasureSurvivesRestore},
		{"HistoryIsAppendOnly", testHistoryAppendOnly},
		{"ReportReadiness", testReport},
		{"APIUpsertAndAudit", testAPIUpsert},
		{"ExportsAreThinned", testPrune},
		{"LogsNeverShowAnAddress", testLogsMask},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, b)
		})
	}
}

func testSyncIdempotentAndRemovals(t *testing.T, b backend) {
	e := setup(t, b, 10)
	ch := e.sync(SyncOptions{})
	if ch.ContactsAdded != 15 || ch.LinksAdded != 15 || ch.LinksRemoved != 0 {
		t.Fatalf("first sync: %+v; want 15 contacts and links", ch)
	}
	rev, hist := e.revision(), e.count("history")
	again := e.sync(SyncOptions{})
	if again.Changed() || e.revision() != rev || e.count("history") != hist {
		t.Fatalf("second sync changed something: %+v (revision %d -> %d, history %d -> %d)", again, rev, e.revision(), hist, e.count("history"))
	}

	// The customer removes its billing contact of site 4: one removal, recorded.
	e.productExec("DELETE FROM site_admins WHERE email = 'billing-4@site-4.example'")
	ch = e.sync(SyncOptions{})
	if ch.LinksRemoved != 1 {
		t.Fatalf("after removing one row: %+v", ch)
	}
	res, err := e.svc.Lookup(e.ctx, "billing-4@site-4.example", "support")
	must(t, err)
	c := res.Contacts[0]
	if !c.Removed || len(c.Links) != 1 || c.Links[0].Removed.IsZero() || c.Version != 2 {
		t.Errorf("removed contact: %+v; want kept, marked removed with a time, version 2", c)
	}
	if actions := historyActions(res.History); !slices.Equal(actions, []string{"create", "link.add", "link.remove"}) {
		t.Errorf("history %v", actions)
	}
	for _, h := range res.History {
		if h.Actor != "tester" || h.Source != "sync:tracker" || h.At.IsZero() {
			t.Errorf("history entry without who, when or source: %+v", h)
		}
	}
	// It comes back: the link is restored, not duplicated.
	e.productExec("INSERT INTO site_admins VALUES (4, 'billing-4@site-4.example', 'Billing 4', 'billing')")
	if ch := e.sync(SyncOptions{}); ch.LinksRestored != 1 || ch.LinksAdded != 0 {
		t.Errorf("re-added row: %+v", ch)
	}
}

func historyActions(h []Change) []string {
	var out []string
	for _, c := range h {
		out = append(out, c.Action)
	}
	return out
}

func testEmptyQueryDoesNotWipe(t *testing.T, b backend) {
	e := setup(t, b, 20)
	e.sync(SyncOptions{})
	rev, links := e.revision(), e.count("links WHERE removed_at = 0")

	e.productExec("DELETE FROM site_admins")
	_, err := e.svc.Sync(e.ctx, []Source{e.source()}, SyncOptions{Actor: "cron"})
	wantCode(t, err, fault.Refused, "no contacts", "--confirm")
	if e.revision() != rev || e.count("links WHERE removed_at = 0") != links {
		t.Fatal("a sync whose query returned nothing changed the vault")
	}

	// A broken query that loses about half the rows is stopped too.
	e.productExec("INSERT INTO site_admins VALUES (1, 'admin-1@site-1.example', 'Admin 1', 'admin')")
	for i := 2; i <= 16; i++ {
		e.productExec("INSERT INTO site_admins VALUES (?, ?, 'x', 'admin')", i, "admin-"+strconv.Itoa(i)+"@site-"+strconv.Itoa(i)+".example")
	}
	_, err = e.svc.Sync(e.ctx, []Source{e.source()}, SyncOptions{Actor: "cron"})
	wantCode(t, err, fault.Refused, "max_removal")
	if e.revision() != rev {
		t.Fatal("a refused sync changed the vault")
	}
	// A failing query changes nothing either.
	bad := e.source()
	bad.Query = "SELECT nope FROM site_admins"
	_, err = e.svc.Sync(e.ctx, []Source{bad}, SyncOptions{Actor: "cron"})
	wantCode(t, err, fault.Invalid, "contacts query")
	// With --confirm the operator takes responsibility.
	ch := e.sync(SyncOptions{Confirm: true})
	if ch.LinksRemoved != 14 {
		t.Errorf("confirmed sync removed %d links, want the 10 billing contacts and admins 17-20", ch.LinksRemoved)
	}
}

func testDeletedTenantKeepsContacts(t *testing.T, b backend) {
	e := setup(t, b, 6)
	e.sync(SyncOptions{})
	// Site 4 is deleted: its rows leave the live tables, so the contacts
	// query no longer returns them.
	e.dirs.set("4", "tracker", productdb.Deleted)
	e.productExec("DELETE FROM site_admins WHERE site_id = 4")
	ch := e.sync(SyncOptions{})
	if ch.LinksRemoved != 0 || ch.LinksHeld != 2 {
		t.Fatalf("sync after a tenant delete: %+v; want both links held, none removed", ch)
	}
	e.dirs.set("4", "tracker", productdb.Purged)
	e.sync(SyncOptions{})
	// The product database is gone altogether now: lookups still work.
	e.dirs.err = errors.New("product database unreachable")

	res, err := e.svc.For(e.ctx, "site:4", "support", false)
	must(t, err)
	if len(res.Contacts) != 2 || res.Contacts[0].Email != "admin-4@site-4.example" || res.Contacts[0].Role != RoleAdmin {
		t.Fatalf("contacts for a purged site: %+v", res.Contacts)
	}
	if res.Tenant.States["tracker"] != "purged" || res.Tenant.StatesAsOf.IsZero() {
		t.Errorf("tenant %+v: want the recorded state purged, with its date", res.Tenant)
	}
	lk, err := e.svc.Lookup(e.ctx, "ADMIN-4@Site-4.example", "support")
	must(t, err)
	if len(lk.Tenants) != 1 || lk.Tenants[0].Key != "4" || lk.Tenants[0].States["tracker"] != "purged" {
		t.Errorf("lookup of a purged site's admin: tenants %+v", lk.Tenants)
	}
	dom, err := e.svc.Lookup(e.ctx, "@SITE-4.example", "support")
	must(t, err)
	if len(dom.Contacts) != 2 {
		t.Errorf("domain lookup found %d contacts, want 2", len(dom.Contacts))
	}
	_, err = e.svc.For(e.ctx, "app:4/tracker/insight", "support", false)
	wantCode(t, err, fault.Refused, "site:4")
	_, err = e.svc.For(e.ctx, "4", "support", false)
	wantCode(t, err, fault.Invalid, "bare key")
	_, err = e.svc.For(e.ctx, "site:999", "support", false)
	wantCode(t, err, fault.NotFound)
}

func testNormalisationMerges(t *testing.T, b backend) {
	e := setup(t, b, 0)
	csv := "email,name,role,tenant\n" +
		"  Ana.Lima@Example.COM ,Ana Lima,admin,7\n" +
		"ana.lima@example.com,,technical,7\n" +
		"Jose\u0301@example.com,José,billing,7\n" + // decomposed é
		"jos\u00e9@EXAMPLE.com,,admin,8\n" // composed é
	ch, err := e.svc.ImportCSV(e.ctx, strings.NewReader(csv), ImportOptions{Actor: "ops", Source: "import:test.csv"})
	must(t, err)
	if ch.ContactsAdded != 2 || ch.Merged != 2 || ch.LinksAdded != 4 {
		t.Fatalf("import: %+v; want 2 contacts, 2 merged spellings, 4 links", ch)
	}
	res, err := e.svc.Lookup(e.ctx, "ANA.LIMA@example.com", "ops")
	must(t, err)
	if res.Contacts[0].Email != "Ana.Lima@example.com" || !slices.Equal(res.Contacts[0].Roles, []Role{RoleAdmin, RoleTechnical}) {
		t.Errorf("contact %+v: want the first spelling with its domain lower-cased, and both roles", res.Contacts[0])
	}
	if !slices.Contains(historyActions(res.History), "merge") {
		t.Errorf("the merge is not recorded: %v", historyActions(res.History))
	}
	jose, err := e.svc.Lookup(e.ctx, "jos\u00e9@example.com", "ops")
	must(t, err)
	if len(jose.Contacts) != 1 || len(jose.Tenants) != 2 {
		t.Errorf("NFC: %+v", jose)
	}
	// The same file again: nothing new, the merge is not recorded twice.
	again, err := e.svc.ImportCSV(e.ctx, strings.NewReader(csv), ImportOptions{Actor: "ops", Source: "import:test.csv"})
	must(t, err)
	if again.Changed() || again.Merged != 0 {
		t.Errorf("a repeated import changed something: %+v", again)
	}
}

func testImportDryRun(t *testing.T, b backend) {
	e := setup(t, b, 4)
	e.sync(SyncOptions{})
	_, err := e.svc.Backup(e.ctx)
	must(t, err)
	before, err := e.svc.Export(e.ctx, "t")
	must(t, err)
	rev, hist := e.revision(), e.count("history")
	csv := "email,name,phone,role,tenant,account,account_name\n" +
		"new@acme.example,New Person,+41 44 000,technical,1;2,acme,Acme\n" +
		"admin-1@site-1.example,Renamed,,,,,\n"
	ch, err := e.svc.ImportCSV(e.ctx, strings.NewReader(csv), ImportOptions{Actor: "ops", DryRun: true})
	must(t, err)
	if !ch.DryRun || ch.ContactsAdded != 1 || ch.ContactsUpdated != 1 || ch.LinksAdded != 2 || ch.AccountsAdded != 1 {
		t.Errorf("dry run report: %+v", ch)
	}
	after, err := e.svc.Export(e.ctx, "t")
	must(t, err)
	if e.revision() != rev || e.count("history") != hist || !reflect.DeepEqual(before, after) {
		t.Fatal("an import dry run changed the vault")
	}
	if res, err := e.svc.Backup(e.ctx); err != nil || !res.Skipped {
		t.Errorf("backup after a dry run: %+v, %v; want nothing to export", res, err)
	}
	// The real import does what the dry run said.
	real, err := e.svc.ImportCSV(e.ctx, strings.NewReader(csv), ImportOptions{Actor: "ops"})
	must(t, err)
	real.DryRun, ch.DryRun, real.Revision, ch.Revision = false, false, 0, 0
	if !reflect.DeepEqual(real, ch) {
		t.Errorf("import %+v differs from its dry run %+v", real, ch)
	}
}

func testImportRefusesBadRows(t *testing.T, b backend) {
	e := setup(t, b, 0)
	for name, tc := range map[string]struct{ csv, want string }{
		"bad email":      {"email,role,tenant\nok@x.example,admin,1\nnot-an-address,admin,1\n", "line 3"},
		"unknown role":   {"email,role,tenant\nok@x.example,owner,1\n", "owner"},
		"unknown column": {"email,rolle\nok@x.example,admin\n", "rolle"},
		"no email":       {"name\nAna\n", "no email column"},
		"role alone":     {"email,role\nok@x.example,admin\n", "tenant or account"},
		"ragged":         {"email,role\nok@x.example,admin,extra\n", "CSV"},
	} {
		_, err := e.svc.ImportCSV(e.ctx, strings.NewReader(tc.csv), ImportOptions{Actor: "ops"})
		if err == nil || fault.ExitStatus(err) != 2 || !strings.Contains(err.Error()+fault.HintOf(err), tc.want) {
			t.Errorf("%s: %v; want a refusal naming %q", name, err, tc.want)
		}
		if strings.Contains(err.Error(), "not-an-address") {
			t.Errorf("%s: the error shows the address in full: %v", name, err)
		}
	}
	if n := e.count("contacts"); n != 0 {
		t.Errorf("refused imports left %d contacts", n)
	}
}

func testForRanking(t *testing.T, b backend) {
	e := setup(t, b, 0)
	csv := "email,role,tenant\n" +
		"billing@acme.example,billing,42\n" +
		"tech@acme.example,technical,42\n" +
		"old-admin@acme.example,admin,42\n" +
		"new-admin@acme.example,admin,42\n" +
		"bounced-admin@acme.example,admin,42\n" +
		"other@elsewhere.example,admin,43\n"
	_, err := e.svc.ImportCSV(e.ctx, strings.NewReader(csv), ImportOptions{Actor: "ops"})
	must(t, err)
	_, _, err = e.svc.UpsertAccount(e.ctx, AccountInput{ID: "acme", Name: "Acme", Tenants: []string{"42"}}, "ops")
	must(t, err)
	_, _, err = e.svc.UpsertContact(e.ctx, ContactInput{Email: "ceo@acme.example", Links: []LinkInput{{Account: "acme", Role: "security"}}}, "ops")
	must(t, err)
	must(t, e.svc.MarkBounced(e.ctx, "bounced-admin@acme.example", "550", "webhook", "mta"))
	e.verifyNow("new-admin@acme.example")
	e.clock.Advance(time.Hour)
	e.verifyNow("tech@acme.example")

	res, err := e.svc.For(e.ctx, "site:42", "ops", false)
	must(t, err)
	var got []string
	for _, c := range res.Contacts {
		got = append(got, strings.Split(c.Email, "@")[0]+"/"+string(c.Role)+"/"+c.Via)
	}
	want := []string{"new-admin/admin/tenant", "old-admin/admin/tenant", "tech/technical/tenant", "billing/billing/tenant", "ceo/security/account:acme", "bounced-admin/admin/tenant"}
	if !slices.Equal(got, want) {
		t.Errorf("order\n got %v\nwant %v", got, want)
	}
}

// verifyNow sends a link to addr and follows it.
func (e *env) verifyNow(addr string) {
	e.t.Helper()
	_, err := e.svc.SendVerifications(e.ctx, VerifyOptions{Emails: []string{addr}, Actor: "ops"})
	must(e.t, err)
	u, err := url.Parse(e.mail.link(e.t, addr))
	must(e.t, err)
	_, err = e.svc.Confirm(e.ctx, u.Query().Get("t"))
	must(e.t, err)
}

func testVerificationLinks(t *testing.T, b backend) {
	e := setup(t, b, 3)
	e.sync(SyncOptions{})
	res, err := e.svc.SendVerifications(e.ctx, VerifyOptions{Stale: true, Actor: "ops"})
	must(t, err)
	if len(res.Sent) != 4 || len(e.mail.sent) != 4 {
		t.Fatalf("verify --stale sent %v; want all 4 never-verified contacts", res.Sent)
	}
	for _, s := range res.Sent {
		if !strings.Contains(s, "***@") {
			t.Errorf("the result shows %q unmasked", s)
		}
	}
	// A second run does not resend while the links are valid.
	if again, err := e.svc.SendVerifications(e.ctx, VerifyOptions{Stale: true, Actor: "ops"}); err != nil || len(again.Sent) != 0 || again.Pending != 4 {
		t.Errorf("second verify --stale: %+v, %v", again, err)
	}
	link, err := url.Parse(e.mail.link(t, "admin-2@site-2.example"))
	must(t, err)
	if !strings.HasPrefix(link.String(), "https://ll.example/contacts/verify?t=") {
		t.Errorf("link %s", link)
	}
	token := link.Query().Get("t")
	parts := strings.Split(token, ".")
	other := e.mail.link(t, "admin-1@site-1.example")
	otherToken := must1(url.Parse(other)).Query().Get("t")
	for name, forged := range map[string]string{
		"flipped mac":     parts[0] + "." + parts[1] + "." + flip(parts[2]),
		"later expiry":    parts[0] + "." + strconv.Itoa(int(time.Now().Unix()+1e8)) + "." + parts[2],
		"other contact":   strings.Split(otherToken, ".")[0] + "." + parts[1] + "." + parts[2],
		"unknown contact": "c_0000000000000000." + parts[1] + "." + parts[2],
		"garbage":         "x",
		"empty":           "",
	} {
		if _, err := e.svc.Confirm(e.ctx, forged); !errors.Is(err, ErrLinkInvalid) {
			t.Errorf("%s: %v; want ErrLinkInvalid", name, err)
		}
	}
	// A link signed with another secret is refused too.
	foreign, err := New(Config{Store: e.store, Ledger: e.ledger, LinkSecret: []byte(strings.Repeat("k", 32)), LinkBase: "https://x", Now: e.clock.Now})
	must(t, err)
	if _, err := foreign.Confirm(e.ctx, token); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("a link checked with another secret: %v", err)
	}
	if c, err := e.svc.CheckLink(e.ctx, token); err != nil || c != "a***@site-2.example" {
		t.Errorf("CheckLink: %q, %v", c, err)
	}
	conf, err := e.svc.Confirm(e.ctx, token)
	must(t, err)
	lk, err := e.svc.Lookup(e.ctx, "admin-2@site-2.example", "t")
	must(t, err)
	if !lk.Contacts[0].VerifiedAt.Equal(conf.VerifiedAt) || lk.Contacts[0].Stale {
		t.Errorf("after following the link: %+v", lk.Contacts[0])
	}
	// Links expire.
	e.clock.Advance(7*24*time.Hour + time.Second)
	if _, err := e.svc.Confirm(e.ctx, otherToken); !errors.Is(err, ErrLinkExpired) {
		t.Errorf("an expired link: %v; want ErrLinkExpired", err)
	}
	// A hard bounce at send time marks the contact bounced.
	e.mail.refuse["admin-3@site-3.example"] = true
	res, err = e.svc.SendVerifications(e.ctx, VerifyOptions{Stale: true, Actor: "ops"})
	must(t, err)
	if len(res.Bounced) != 1 {
		t.Errorf("bounced %v", res.Bounced)
	}
	// Verified contacts go stale after the configured age.
	e.clock.Advance(181 * 24 * time.Hour)
	lk, err = e.svc.Lookup(e.ctx, "admin-2@site-2.example", "t")
	must(t, err)
	if !lk.Contacts[0].Stale {
		t.Error("a contact verified 188 days ago is not flagged stale")
	}
}

func must1[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func flip(s string) string {
	b := []byte(s)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}

func testRestoreAfterLoss(t *testing.T, b backend) {
	e := setup(t, b, 8)
	e.key = []byte(strings.Repeat("K", 32))
	e.open()
	e.sync(SyncOptions{})
	_, _, err := e.svc.UpsertAccount(e.ctx, AccountInput{ID: "acme", Name: "Acme", Tenants: []string{"1", "2"}}, "ops")
	must(t, err)
	e.verifyNow("admin-1@site-1.example")
	bk, err := e.svc.Backup(e.ctx)
	must(t, err)
	if bk.Skipped || !strings.HasPrefix(bk.Key, ExportPrefix) {
		t.Fatalf("backup: %+v", bk)
	}
	if again, _ := e.svc.Backup(e.ctx); !again.Skipped {
		t.Error("a second backup without changes exported again")
	}
	before, err := e.svc.Export(e.ctx, "t")
	must(t, err)
	hBefore, err := e.svc.Lookup(e.ctx, "admin-1@site-1.example", "t")
	must(t, err)

	e.lose()
	// The new, empty vault refuses writes until it is restored: a
	// scheduled sync must not fill it and become the newest export.
	_, err = e.svc.Sync(e.ctx, []Source{e.source()}, SyncOptions{Actor: "serve"})
	wantCode(t, err, fault.Refused, "contacts restore")
	if r, err := e.svc.Backup(e.ctx); err != nil || !r.Skipped {
		t.Fatalf("an empty new vault was exported: %+v %v", r, err)
	}
	// An erasure while the vault awaits its restore goes to the ledger,
	// and the restore applies it.
	er, err := e.svc.Erase(e.ctx, "billing-8@site-8.example", "request #9", "dpo")
	if err != nil || er.Note == "" || e.count("history") != 0 {
		t.Fatalf("erasure before the restore: %+v, %v; history %d", er, err, e.count("history"))
	}
	// Without the key the export cannot be read, and nothing changes.
	nokey, err := New(Config{Store: e.store, Ledger: e.ledger, Blobs: e.blobs, Now: e.clock.Now})
	must(t, err)
	if _, err := nokey.Restore(e.ctx, RestoreOptions{Actor: "ops"}); !errors.Is(err, ErrKey) {
		t.Fatalf("restore without the key: %v", err)
	}
	dry, err := e.svc.Restore(e.ctx, RestoreOptions{Actor: "ops", DryRun: true})
	must(t, err)
	if dry.Contacts != 12 || e.count("contacts") != 0 {
		t.Fatalf("dry restore: %+v, vault holds %d", dry, e.count("contacts"))
	}
	res, err := e.svc.Restore(e.ctx, RestoreOptions{Actor: "ops"})
	must(t, err)
	if res.Key != bk.Key || res.Contacts != 12 || res.Erasures != 1 {
		t.Fatalf("restore: %+v", res)
	}
	after, err := e.svc.Export(e.ctx, "t")
	must(t, err)
	// Apart from the person erased meanwhile, everything is as it was.
	before.Contacts = slices.DeleteFunc(before.Contacts, func(c Contact) bool { return c.Email == "billing-8@site-8.example" })
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("restored vault differs\nbefore %+v\nafter  %+v", before, after)
	}
	hAfter, err := e.svc.Lookup(e.ctx, "admin-1@site-1.example", "t")
	must(t, err)
	if !reflect.DeepEqual(hBefore.History, hAfter.History) {
		t.Error("history differs after restore")
	}
	// A restore never overwrites: the vault now holds data.
	_, err = e.svc.Restore(e.ctx, RestoreOptions{Actor: "ops"})
	wantCode(t, err, fault.Conflict, "not empty")
	// And the restored vault carries on: sync works, and is a no-op.
	if ch := e.sync(SyncOptions{}); ch.Changed() {
		t.Errorf("sync after restore changed %+v", ch)
	}
	if entries := auditActions(t, e.ledger); !slices.Contains(entries, "contacts.restore") {
		t.Errorf("restore not audited: %v", entries)
	}
}

func auditActions(t *testing.T, s *state.Store) []string {
	t.Helper()
	list, err := s.ListAudit(t.Context(), "", 1000)
	must(t, err)
	var out []string
	for _, a := range list {
		out = append(out, a.Action)
	}
	return out
}

func testErasureSurvivesRestore(t *testing.T, b backend) {
	e := setup(t, b, 4)
	e.sync(SyncOptions{})
	old, err := e.svc.Backup(e.ctx) // written while the person is still in the vault
	must(t, err)

	_, err = e.svc.Erase(e.ctx, "admin-2@site-2.example", "", "dpo")
	wantCode(t, err, fault.Invalid, "--reason")
	er, err := e.svc.Erase(e.ctx, "Admin-2@SITE-2.example", "GDPR request #77", "dpo")
	must(t, err)
	if !er.InVault || er.LedgerID == 0 || er.Links != 2-1 {
		t.Errorf("erase: %+v", er)
	}
	if _, err := e.svc.Lookup(e.ctx, "admin-2@site-2.example", "t"); fault.CodeOf(err) != fault.NotFound {
		t.Fatalf("lookup after erasure: %v", err)
	}
	ledger, err := e.ledger.Erasures(e.ctx, "")
	must(t, err)
	if len(ledger) != 1 || ledger[0].Product != LedgerProduct || strings.Contains(ledger[0].Tenant, "site-2") || ledger[0].Reason != "GDPR request #77" {
		t.Fatalf("ledger %+v: want one contacts erasure naming no address", ledger)
	}
	// The product still lists the person: a sync keeps them out.
	if ch := e.sync(SyncOptions{}); ch.SkippedErased != 1 || ch.ContactsAdded != 0 {
		t.Errorf("sync after erasure: %+v", ch)
	}

	e.lose()
	res, err := e.svc.Restore(e.ctx, RestoreOptions{Actor: "ops", From: old.Key})
	must(t, err)
	if res.Erasures != 1 {
		t.Errorf("restore re-applied %d erasures, want 1", res.Erasures)
	}
	if _, err := e.svc.Lookup(e.ctx, "admin-2@site-2.example", "t"); fault.CodeOf(err) != fault.NotFound {
		t.Fatalf("the erased person is back after a restore: %v", err)
	}
	var leaked int
	must(t, e.store.read(e.ctx, func(tx *tx) error {
		return tx.QueryRowContext(tx.ctx, "SELECT count(*) FROM history WHERE detail LIKE '%admin-2@%' OR contact_id IN (SELECT contact_id FROM erased)").Scan(&leaked)
	}))
	if leaked != 0 {
		t.Errorf("%d history rows still name the erased person", leaked)
	}
	if _, err := e.svc.Lookup(e.ctx, "admin-1@site-1.example", "t"); err != nil {
		t.Errorf("the others must stay: %v", err)
	}
	// Erasing someone never in the vault is still recorded.
	er, err = e.svc.Erase(e.ctx, "never@seen.example", "request #78", "dpo")
	must(t, err)
	if er.InVault || er.LedgerID == 0 {
		t.Errorf("erasure of an unknown address: %+v", er)
	}
}

func testHistoryAppendOnly(t *testing.T, b backend) {
	e := setup(t, b, 2)
	e.sync(SyncOptions{})
	for _, q := range []string{"UPDATE history SET actor = 'mallory'", "DELETE FROM history"} {
		_, err := e.store.db.ExecContext(e.ctx, q)
		if err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v; want the database to refuse", q, err)
		}
	}
	if b.engine == EnginePostgres {
		if _, err := e.store.db.ExecContext(e.ctx, "TRUNCATE history"); err == nil {
			t.Error("TRUNCATE history was allowed")
		}
	}
}

func testReport(t *testing.T, b backend) {
	e := setup(t, b, 4)
	e.dirs.set("5", "tracker", productdb.Active) // a tenant without any contact
	e.dirs.set("6", "tracker", productdb.Purged) // not counted
	e.sync(SyncOptions{})
	e.verifyNow("admin-1@site-1.example")
	must(t, e.svc.MarkBounced(e.ctx, "admin-3@site-3.example", "550 unknown user", "webhook", "mta"))
	rep, err := e.svc.Report(e.ctx, "auditor")
	must(t, err)
	if rep.Tenants != 5 || rep.Reachable != 3 || rep.ReachableShare != 0.6 {
		t.Errorf("report: %d tenants, %d reachable (%.2f); want 5, 3 (0.60)", rep.Tenants, rep.Reachable, rep.ReachableShare)
	}
	var noAdmin []string
	for _, tn := range rep.NoVerifiedAdmin {
		noAdmin = append(noAdmin, tn.Key)
	}
	if !slices.Equal(noAdmin, []string{"2", "3", "4", "5"}) {
		t.Errorf("no verified admin: %v", noAdmin)
	}
	if len(rep.Bounced) != 1 || rep.Bounced[0].BounceReason != "550 unknown user" || rep.Stale != 5 {
		t.Errorf("bounced %+v, stale %d", rep.Bounced, rep.Stale)
	}
}

func testAPIUpsert(t *testing.T, b backend) {
	e := setup(t, b, 0)
	c, ch, err := e.svc.UpsertContact(e.ctx, ContactInput{Email: "pat@corp.example", Name: "Pat", Phone: "+1 555",
		Links: []LinkInput{{Tenant: "9", Role: "admin"}, {Account: "corp", Role: "billing"}}}, "alice")
	must(t, err)
	if c.Version != 1 || len(c.Links) != 2 || ch.ContactsAdded != 1 {
		t.Fatalf("upsert: %+v %+v", c, ch)
	}
	c, _, err = e.svc.UpsertContact(e.ctx, ContactInput{Email: "PAT@corp.example", Language: "de",
		Links: []LinkInput{{Tenant: "9", Role: "admin", Remove: true}}}, "bob")
	must(t, err)
	if c.Version != 2 || c.Name != "Pat" || c.Language != "de" || !slices.Equal(c.Roles, []Role{RoleBilling}) {
		t.Errorf("second upsert: %+v; want the name kept, language set, the admin link removed", c)
	}
	_, _, err = e.svc.UpsertContact(e.ctx, ContactInput{Email: "pat@corp.example", Links: []LinkInput{{Tenant: "9", Account: "corp", Role: "admin"}}}, "bob")
	wantCode(t, err, fault.Invalid, "exactly one")
	_, _, err = e.svc.UpsertContact(e.ctx, ContactInput{Email: "nobody"}, "bob")
	wantCode(t, err, fault.Invalid)
	a, _, err := e.svc.UpsertAccount(e.ctx, AccountInput{ID: "corp", Name: "Corp Inc", Tenants: []string{"9", "10"}}, "alice")
	must(t, err)
	if a.Name != "Corp Inc" || !slices.Equal(a.Tenants, []string{"10", "9"}) {
		t.Errorf("account %+v", a)
	}
	// The account's billing contact speaks for its tenants.
	res, err := e.svc.For(e.ctx, "site:10", "alice", false)
	must(t, err)
	if len(res.Contacts) != 1 || res.Contacts[0].Via != "account:corp" {
		t.Errorf("contacts for site:10 through the account: %+v", res.Contacts)
	}
	list, err := e.svc.Export(e.ctx, "alice")
	must(t, err)
	if len(list.Contacts) != 1 || len(list.Accounts) != 1 {
		t.Errorf("export %+v", list)
	}
	acts := auditActions(t, e.ledger)
	for _, want := range []string{"contacts.for", "contacts.export"} {
		if !slices.Contains(acts, want) {
			t.Errorf("%s not audited: %v", want, acts)
		}
	}
}

func testPrune(t *testing.T, b backend) {
	if b.engine != EngineSQLite {
		t.Skip("the repository side does not depend on the engine")
	}
	e := setup(t, b, 2)
	start := e.clock.Now()
	// An export every 30 minutes for 3 days.
	for i := 0; i < 3*24*2; i++ {
		e.productExec("UPDATE site_admins SET name = ? WHERE site_id = 1", "Admin "+strconv.Itoa(i))
		e.sync(SyncOptions{})
		_, err := e.svc.Backup(e.ctx)
		must(t, err)
		e.clock.Advance(30 * time.Minute)
	}
	list, err := e.svc.Exports(e.ctx)
	must(t, err)
	// At the last export (71.5h): those of the last hour (3), then the
	// newest of each hour of the last day (24), then of each day (3).
	if len(list) != 30 {
		t.Errorf("%d exports kept after 3 days of half-hourly changes", len(list))
	}
	if !list[0].At.Before(start.Add(24 * time.Hour)) {
		t.Errorf("the oldest day was thinned away entirely: oldest %v", list[0].At)
	}
	e.clock.Advance(40 * 24 * time.Hour)
	e.productExec("UPDATE site_admins SET name = 'Final' WHERE site_id = 1")
	e.sync(SyncOptions{})
	_, err = e.svc.Backup(e.ctx)
	must(t, err)
	list, err = e.svc.Exports(e.ctx)
	must(t, err)
	if len(list) != 1 {
		t.Errorf("after the retention window %d exports remain, want only the newest", len(list))
	}
}

func testLogsMask(t *testing.T, b backend) {
	e := setup(t, b, 3)
	e.sync(SyncOptions{})
	e.mail.refuse["admin-3@site-3.example"] = true
	e.verifyNow("admin-1@site-1.example")
	_, err := e.svc.SendVerifications(e.ctx, VerifyOptions{Stale: true, Actor: "ops"})
	must(t, err)
	must(t, e.svc.MarkBounced(e.ctx, "billing-2@site-2.example", "550", "webhook", "mta"))
	_, err = e.svc.Erase(e.ctx, "admin-2@site-2.example", "request", "dpo")
	must(t, err)
	_, err = e.svc.Backup(e.ctx)
	must(t, err)
	logs := e.logs.String()
	if !strings.Contains(logs, "***@site-") {
		t.Fatalf("the test logged no (masked) address at all; it proves nothing:\n%s", logs)
	}
	for _, local := range []string{"admin-1@", "admin-2@", "admin-3@", "billing-2@"} {
		if strings.Contains(logs, local) {
			t.Errorf("the log shows %s… in full:\n%s", local, logs)
		}
	}
}
