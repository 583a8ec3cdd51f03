package tenant

import (
	"strings"
	"testing"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

func TestParseTargetTyped(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Target{
		"site:42":                {Kind: KindSite, Tenant: "42"},
		"product:42/tracker":     {Kind: KindProduct, Tenant: "42", Product: "tracker"},
		"app:42/tracker/insight": {Kind: KindApp, Tenant: "42", Product: "tracker", App: "insight"},
		" site:acme ":            {Kind: KindSite, Tenant: "acme"},
	} {
		got, err := ParseTarget(in)
		if err != nil || got != want {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if err == nil && strings.TrimSpace(in) != got.String() {
			t.Errorf("String() = %q, want %q", got.String(), strings.TrimSpace(in))
		}
	}
}

// The April 2022 mistake: a site key where an app was expected. It must be
// refused before anything runs, saying what the key really is.
func TestParseTargetRefusesWrongKinds(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"42":                   {"bare key", "site:42"},
		"app:42":               {"is a site, not an app", "whole site"},
		"app:42/tracker":       {"is a product, not an app"},
		"site:42/tracker":      {"is a product, not a site"},
		"product:42":           {"is a site, not a product"},
		"product:42/x/insight": {"is an app, not a product"},
		"tenant:42":            {"unknown kind"},
		"site:":                {"empty part"},
		"app:42//insight":      {"empty part"},
		"app:1/2/3/4":          {"too many parts"},
	}
	for in, want := range cases {
		_, err := ParseTarget(in)
		if err == nil {
			t.Errorf("ParseTarget(%q) accepted", in)
			continue
		}
		if fault.ExitStatus(err) != 2 {
			t.Errorf("ParseTarget(%q): exit %d, want 2", in, fault.ExitStatus(err))
		}
		for _, w := range want {
			if !strings.Contains(err.Error()+" "+fault.HintOf(err), w) {
				t.Errorf("ParseTarget(%q) = %q; want it to say %q", in, err, w)
			}
		}
	}
}

// A target's state in a product: an app's own state, active while none is
// recorded for it; the tenant's otherwise; never "".
func TestStateIn(t *testing.T) {
	t.Parallel()
	deleted := time.Date(2026, 4, 5, 8, 0, 0, 0, time.UTC)
	info := &productdb.TenantInfo{State: productdb.Deactivated, Since: deleted.Add(-time.Hour),
		Apps: []productdb.TenantState{{App: "insight", State: productdb.Deleted, Changed: deleted}}}
	for _, tc := range []struct {
		target Target
		info   *productdb.TenantInfo
		want   productdb.State
		since  time.Time
	}{
		{Target{Kind: KindSite, Tenant: "42"}, info, productdb.Deactivated, info.Since},
		{Target{Kind: KindProduct, Tenant: "42", Product: "tracker"}, info, productdb.Deactivated, info.Since},
		{Target{Kind: KindApp, Tenant: "42", Product: "tracker", App: "insight"}, info, productdb.Deleted, deleted},
		{Target{Kind: KindApp, Tenant: "42", Product: "tracker", App: "other"}, info, productdb.Active, time.Time{}},
		{Target{Kind: KindSite, Tenant: "42"}, &productdb.TenantInfo{}, productdb.Active, time.Time{}},
	} {
		if got, since := tc.target.StateIn(tc.info); got != tc.want || !since.Equal(tc.since) {
			t.Errorf("%s: %s since %v, want %s since %v", tc.target, got, since, tc.want, tc.since)
		}
	}
}
