package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"lifeline/internal/fault"
	"lifeline/internal/plan/waves"
)

// Plans configures reviewed bulk operations (docs/plans.md). Zero values
// take the plan engine's defaults, listed in docs/config.md.
type Plans struct {
	// Caps: a plan over more tenants than this, or more than this share
	// of all tenants, needs an admin's approval (default 50 and 1%).
	Caps PlanCaps `yaml:"caps"`
	// Handful is how many tenants destructive lifecycle commands may touch
	// outside plans within HandfulWindow (default 5 per 1h).
	Handful       int      `yaml:"handful"`
	HandfulWindow Duration `yaml:"handful_window"`
	// Internal finds wave 0: the company's own tenants.
	Internal PlanInternal `yaml:"internal"`
	// Waves, Bake and Deadline are the defaults of `plan create`.
	Waves    []string `yaml:"waves"`
	Bake     Duration `yaml:"bake"`
	Deadline Duration `yaml:"deadline"`
	// Checks are the automatic checks of every gate.
	Checks PlanChecks `yaml:"checks"`
	// Events are webhook URLs told of every plan change.
	Events []string `yaml:"events"`
}

// PlanCaps are the blast-radius caps above which approval needs an admin.
type PlanCaps struct {
	Tenants int   `yaml:"tenants"`
	Share   Share `yaml:"share"`
}

// PlanInternal says which tenants are internal: a tag column of the
// tenants tables (default "internal": rows where it is not 0), or one
// query per product whose first column is tenant keys.
type PlanInternal struct {
	Column  string          `yaml:"column"`
	Queries []InternalQuery `yaml:"queries"`
}

// InternalQuery lists one product's internal tenants.
type InternalQuery struct {
	Product string `yaml:"product"`
	Query   string `yaml:"query"`
}

// PlanChecks are the automatic gate checks every plan gets.
type PlanChecks struct {
	// MaxFailedShare of a wave's steps may fail before its gate fails
	// (default 0: any failed step fails it).
	MaxFailedShare FailShare `yaml:"max_failed_share"`
	// Webhooks are asked at every gate: pass, fail or inconclusive.
	Webhooks []string `yaml:"webhooks"`
	// Timeout bounds each webhook check (default 10s; no answer is
	// inconclusive).
	Timeout Duration `yaml:"timeout"`
}

// FailShare is a share from 0 up to (not including) 1, written "5%" or
// 0.05: unlike Share, 0 is a setting of its own (no failure allowed).
type FailShare float64

// UnmarshalYAML accepts "5%", 0.05 and 0.
func (s *FailShare) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseFailShare(n.Value)
	if err != nil {
		return err
	}
	*s = FailShare(v)
	return nil
}

func parseFailShare(text string) (float64, error) {
	v, err := parseFraction(text)
	if err != nil || v < 0 || v >= 1 {
		return 0, fault.New(fault.Invalid, `write a share below 100% like "5%" or 0.05, or 0 for none`, "%q is not a share from 0 to below 1", text)
	}
	return v, nil
}

func (p Plans) validate(products map[string]bool) error {
	if p.Caps.Tenants < 0 {
		return bad("plans.caps.tenants", strconv.Itoa(p.Caps.Tenants), "use a positive number of tenants; leave it out for 50")
	}
	if p.Handful < 0 {
		return bad("plans.handful", strconv.Itoa(p.Handful), "use a positive number of tenants; leave it out for 5")
	}
	in := p.Internal
	if in.Column != "" && len(in.Queries) > 0 {
		return bad("plans.internal", "column and queries", "give a tag column or queries, not both")
	}
	if in.Column != "" && !identRE.MatchString(in.Column) {
		return bad("plans.internal.column", in.Column, "name a column of the tenants tables (letters, digits and _), such as internal")
	}
	for i, q := range in.Queries {
		if err := checkQuery(fmt.Sprintf("plans.internal.queries[%d]", i), products, q.Product, q.Query,
			"give a query whose first column is the keys of the product's internal tenants"); err != nil {
			return err
		}
	}
	if len(p.Waves) > 0 {
		if _, err := waves.Parse(p.Waves); err != nil {
			return fault.New(fault.Invalid, waves.Hint, "config key plans.waves has a bad value %q: %s", strings.Join(p.Waves, ","), err.Error())
		}
	}
	for i, u := range p.Checks.Webhooks {
		if err := checkURL(fmt.Sprintf("plans.checks.webhooks[%d]", i), u); err != nil {
			return err
		}
	}
	for i, u := range p.Events {
		if err := checkURL(fmt.Sprintf("plans.events[%d]", i), u); err != nil {
			return err
		}
	}
	return nil
}

// checkQuery checks a {product, query} entry: a listed product and a
// query; fix says what the query must return.
func checkQuery(at string, products map[string]bool, product, query, fix string) error {
	if !products[product] {
		return bad(at+".product", product, "name one of the products listed under products:")
	}
	if strings.TrimSpace(query) == "" {
		return bad(at+".query", "", fix)
	}
	return nil
}

// checkURL refuses anything but an http(s) URL with a host.
func checkURL(at, v string) error {
	if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad(at, v, "give an http:// or https:// URL, such as https://hooks.example.com/lifeline")
	}
	return nil
}
