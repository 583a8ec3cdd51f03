package contacts

import (
	"errors"
	"slices"
	"testing"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

// TestForSitesAnswersForDeletedTenants checks the reads targeted notices
// use: many sites' contacts in one read and one audit entry, the same
// ranking as For, and answers for sites the products deleted and purged.
func TestForSitesAnswersForDeletedTenants(t *testing.T) {
	t.Parallel()
	for _, b := range []backend{sqliteBackend, postgresBackend} {
		t.Run(b.engine, func(t *testing.T) {
			t.Parallel()
			e := setup(t, b, 6)
			e.sync(SyncOptions{})
			// Site 4 is deleted, then purged; its rows leave the product.
			e.dirs.set("4", "tracker", productdb.Deleted)
			e.productExec("DELETE FROM site_admins WHERE site_id = 4")
			e.sync(SyncOptions{})
			e.dirs.set("4", "tracker", productdb.Purged)
			e.sync(SyncOptions{})
			before := len(auditActions(t, e.ledger))

			res, err := e.svc.ForSites(e.ctx, []string{"4", "3", "999"}, "notify", "incident notice")
			must(t, err)
			var emails []string
			for _, c := range res["4"].Contacts {
				emails = append(emails, c.Email)
			}
			if !slices.Equal(emails, []string{"admin-4@site-4.example", "billing-4@site-4.example"}) || res["4"].Contacts[0].Role != RoleAdmin {
				t.Fatalf("contacts of the purged site 4: %v", res["4"].Contacts)
			}
			one, err := e.svc.For(e.ctx, "site:3", "notify", false)
			must(t, err)
			if len(res["3"].Contacts) != 1 || res["3"].Contacts[0].Email != one.Contacts[0].Email {
				t.Fatalf("site 3: %+v, For says %+v", res["3"].Contacts, one.Contacts)
			}
			if res["999"] == nil || len(res["999"].Contacts) != 0 {
				t.Fatalf("an unknown site: %+v; want no contacts, no error", res["999"])
			}
			if got := auditActions(t, e.ledger)[before:]; len(got) != 2 || got[0] != "contacts.for" {
				t.Fatalf("audit entries %v; want one for ForSites and one for For", got)
			}

			// The products cannot be read: the recorded state, with its date.
			e.dirs.err = errors.New("product database unreachable")
			states, asOf, err := e.svc.TenantStates(e.ctx, "4")
			must(t, err)
			if states["tracker"] != "purged" || asOf.IsZero() {
				t.Fatalf("states of site 4: %v as of %v; want purged, recorded", states, asOf)
			}
			e.dirs.err = nil
			if states, asOf, err = e.svc.TenantStates(e.ctx, "3"); err != nil || states["tracker"] != "active" || !asOf.IsZero() {
				t.Fatalf("states of site 3: %v as of %v, %v; want active, live", states, asOf, err)
			}
			_, _, err = e.svc.TenantStates(e.ctx, "999")
			wantCode(t, err, fault.NotFound)
		})
	}
}
