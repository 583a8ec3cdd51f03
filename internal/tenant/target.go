package tenant

import (
	"fmt"
	"strings"
	"time"

	"lifeline/internal/fault"
	"lifeline/internal/productdb"
)

// Kind is what a target names. The 2022 script was handed site IDs where it
// expected app IDs; a Kind written next to every key is what stops that.
type Kind string

const (
	KindSite    Kind = "site"    // a tenant in every product: site:KEY
	KindProduct Kind = "product" // a tenant in one product: product:KEY/PRODUCT
	KindApp     Kind = "app"     // one app of a tenant in one product: app:KEY/PRODUCT/APP
)

// Kinds lists the kinds in order of size.
var Kinds = []Kind{KindApp, KindProduct, KindSite}

// Target is a typed reference to tenant data.
type Target struct {
	Kind    Kind
	Tenant  string
	Product string // product and app targets
	App     string // app targets
}

// String renders the target in its typed form, e.g. "app:42/tracker/insight".
func (t Target) String() string {
	switch t.Kind {
	case KindProduct:
		return fmt.Sprintf("product:%s/%s", t.Tenant, t.Product)
	case KindApp:
		return fmt.Sprintf("app:%s/%s/%s", t.Tenant, t.Product, t.App)
	}
	return "site:" + t.Tenant
}

// StateIn is the target's lifecycle state in one product, and since when,
// from what that product holds for its tenant: an app target's own state
// (active while none is recorded for the app), the tenant's otherwise. It
// is never "": a tenant with no recorded state is active.
func (t Target) StateIn(info *productdb.TenantInfo) (productdb.State, time.Time) {
	cur, since := info.State, info.Since
	if t.Kind == KindApp {
		cur, since = productdb.Active, time.Time{}
		for _, as := range info.Apps {
			if as.App == t.App {
				cur, since = as.State, as.Changed
			}
		}
	}
	if cur == "" {
		cur = productdb.Active
	}
	return cur, since
}

// parts is how many /-separated parts each kind's key has.
var parts = map[Kind]int{KindSite: 1, KindProduct: 2, KindApp: 3}

// ParseTarget parses a typed target. It refuses a bare key, an unknown kind,
// and a key whose shape belongs to another kind, saying what it would mean.
// It does not look anything up; Service.Resolve does.
func ParseTarget(s string) (Target, error) {
	kind, key, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Target{}, fault.New(fault.Invalid,
			fmt.Sprintf("write site:%[1]s for the whole tenant, product:%[1]s/PRODUCT for one product, or app:%[1]s/PRODUCT/APP for one app", s),
			"%q is a bare key: Lifeline only acts on typed targets", s)
	}
	k := Kind(kind)
	want, known := parts[k]
	if !known {
		return Target{}, fault.New(fault.Invalid, "use site:, product: or app:", "%q has an unknown kind %q", s, kind)
	}
	fields := strings.Split(key, "/")
	for _, f := range fields {
		if f == "" {
			return Target{}, fault.New(fault.Invalid, "write "+example(k), "%q has an empty part", s)
		}
	}
	if len(fields) != want {
		return Target{}, wrongShape(s, k, fields)
	}
	t := Target{Kind: k, Tenant: fields[0]}
	if want >= 2 {
		t.Product = fields[1]
	}
	if want == 3 {
		t.App = fields[2]
	}
	return t, nil
}

// wrongShape explains what the key would have meant in its real kind: the
// refusal the 2022 script never got.
func wrongShape(s string, k Kind, fields []string) error {
	var is Kind
	switch len(fields) {
	case 1:
		is = KindSite
	case 2:
		is = KindProduct
	case 3:
		is = KindApp
	default:
		return fault.New(fault.Invalid, "write "+example(k), "%q has too many parts for a %s target", s, k)
	}
	real := Target{Kind: is, Tenant: fields[0]}
	if len(fields) >= 2 {
		real.Product = fields[1]
	}
	if len(fields) == 3 {
		real.App = fields[2]
	}
	return fault.New(fault.Refused, "write "+example(k)+"; if you really mean "+string(is)+" "+real.String()+", say so",
		"%q is %s %s, not %s %s: acting on it would touch %s", s, article(is), is, article(k), k, scope(is))
}

func scope(k Kind) string {
	switch k {
	case KindSite:
		return "the whole site in every product"
	case KindProduct:
		return "all of the tenant's data in that product"
	}
	return "only that app's tables"
}

func article(k Kind) string {
	if k == KindApp {
		return "an"
	}
	return "a"
}

func example(k Kind) string {
	switch k {
	case KindProduct:
		return "product:KEY/PRODUCT"
	case KindApp:
		return "app:KEY/PRODUCT/APP"
	}
	return "site:KEY"
}
