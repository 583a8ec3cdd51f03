package tenant

import (
	"strings"
	"testing"

	"lifeline/internal/fault"
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
