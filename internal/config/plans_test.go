package config

import (
	"slices"
	"testing"
	"time"
)

func TestPlansSection(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(good+`plans:
  caps: {tenants: 20, share: 0.5%}
  handful: 3
  handful_window: 2h
  internal: {queries: [{product: tracker, query: "SELECT site_id FROM sites WHERE staff = 1"}]}
  waves: [internal, "5", 25%, 100%]
  bake: 30m
  deadline: 2h
  checks: {max_failed_share: 5%, webhooks: [https://checks.example.com/gate], timeout: 5s}
  events: [https://chat.example.com/lifeline]
`), "/tmp")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Plans
	if p.Caps.Tenants != 20 || p.Caps.Share != 0.005 || p.Handful != 3 || p.HandfulWindow.D() != 2*time.Hour || p.Bake.D() != 30*time.Minute ||
		p.Deadline.D() != 2*time.Hour || p.Checks.MaxFailedShare != 0.05 || p.Checks.Timeout.D() != 5*time.Second {
		t.Errorf("plans: %+v", p)
	}
	if !slices.Equal(p.Waves, []string{"internal", "5", "25%", "100%"}) || len(p.Internal.Queries) != 1 || p.Internal.Queries[0].Product != "tracker" ||
		p.Checks.Webhooks[0] != "https://checks.example.com/gate" || p.Events[0] != "https://chat.example.com/lifeline" {
		t.Errorf("plans lists: %+v", p)
	}
	if c, err = Parse([]byte(good+"plans: {checks: {max_failed_share: 0}}\n"), "/tmp"); err != nil || c.Plans.Checks.MaxFailedShare != 0 {
		t.Errorf("max_failed_share 0: %v", err)
	}
}

// Every plans error names the key path, the bad value and a fix, and exits 2.
func TestPlansErrorsNameKeyValueAndFix(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		yaml string
		want []string
	}{
		"cap share":       {"plans: {caps: {share: 150%}}\n", []string{"plans.caps.share", "150%", "up to 100%"}},
		"cap tenants":     {"plans: {caps: {tenants: -3}}\n", []string{"plans.caps.tenants", "-3", "positive"}},
		"handful":         {"plans: {handful: -1}\n", []string{"plans.handful", "-1", "positive"}},
		"window":          {"plans: {handful_window: an hour}\n", []string{"plans.handful_window", "an hour", "duration"}},
		"waves shrink":    {"plans: {waves: [internal, 50%, 10%, 100%]}\n", []string{"plans.waves", "internal,50%,10%,100%", "does not grow", "ending at 100%"}},
		"waves short":     {"plans: {waves: [10%, 50%]}\n", []string{"plans.waves", "10%,50%", "last wave must be 100%"}},
		"internal both":   {"plans: {internal: {column: staff, queries: [{product: tracker, query: SELECT 1}]}}\n", []string{"plans.internal", "not both"}},
		"internal column": {"plans: {internal: {column: \"is internal\"}}\n", []string{"plans.internal.column", "is internal", "name a column"}},
		"internal product": {"plans: {internal: {queries: [{product: wiki, query: SELECT 1}]}}\n",
			[]string{"plans.internal.queries[0].product", "wiki", "products listed"}},
		"internal query": {"plans: {internal: {queries: [{product: tracker}]}}\n", []string{"plans.internal.queries[0].query", "first column"}},
		"failed share":   {"plans: {checks: {max_failed_share: 100%}}\n", []string{"plans.checks.max_failed_share", "100%", "below 100%"}},
		"check url":      {"plans: {checks: {webhooks: [checks.example.com]}}\n", []string{"plans.checks.webhooks[0]", "checks.example.com", "https://"}},
		"event url":      {"plans: {events: [\"ftp://x\"]}\n", []string{"plans.events[0]", "ftp://x", "https://"}},
		"typo":           {"plans: {cap: {tenants: 5}}\n", []string{"plans.cap", "did you mean caps"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			wantRefused(t, good+tc.yaml, tc.want...)
		})
	}
}
