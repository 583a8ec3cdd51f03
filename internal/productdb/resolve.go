package productdb

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"lifeline/internal/fault"
)

// Default mass-delete limits, used when a Spec leaves one at zero. They match
// the config defaults; a limit can be raised but never switched off.
const (
	DefaultRowsPerStatement    = 1000
	DefaultRowsPerTransaction  = 10000
	DefaultTenantsPerStatement = 10
)

// Resolve checks spec against the inspected schema and builds the Layout that
// Protect installs and Apply acts on. It is a pure function.
//
// Every problem found is reported at once, in one fault.Refused, each naming
// the table and the fix: a missing tenants table or one without a
// single-column primary key, a protected table without a primary key, a
// listed or app table that is missing or lacks the tenant column, and an
// unprotected table with a foreign key into a protected one (its rows would
// be orphaned, or cascaded away where Lifeline cannot see them).
func Resolve(spec Spec, s *Schema) (*Layout, error) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	l := &Layout{Spec: spec}
	l.Limits = withDefaults(spec.Limits)

	if spec.TenantColumn == "" {
		bad("no tenant column configured: set tenant_column for product %s in lifeline.yaml", spec.Product)
	}
	root := s.Table(spec.TenantsTable)
	switch {
	case spec.TenantsTable == "":
		bad("no tenants table configured: set tenants_table (the table with one row per tenant) for product %s in lifeline.yaml", spec.Product)
	case root == nil:
		bad("tenants table %s does not exist: create it, or set tenants_table to the table with one row per tenant", spec.TenantsTable)
	case len(root.PrimaryKey) != 1:
		bad("tenants table %s has primary key %s: it needs a single-column primary key, the tenant key", root.Name, keyList(root.PrimaryKey))
	default:
		l.KeyColumn = root.PrimaryKey[0]
	}
	if root != nil {
		if spec.NameColumn != "" {
			if root.Column(spec.NameColumn) == nil {
				bad("tenants table %s has no column %s: fix name_column, or leave it out to use name, title or display_name", root.Name, spec.NameColumn)
			}
			l.NameColumn = spec.NameColumn
		} else {
			for _, c := range []string{"name", "title", "display_name"} {
				if root.Column(c) != nil {
					l.NameColumn = c
					break
				}
			}
		}
	}

	// The protected set: listed (or every table with the tenant column), the
	// tenants table, and every app table.
	protected := map[string]bool{}
	if root != nil {
		protected[root.Name] = true
	}
	needTenantCol := func(name, why string) {
		t := s.Table(name)
		switch {
		case t == nil:
			bad("table %s (%s) does not exist: create it or remove it from lifeline.yaml", name, why)
		case t.Name == spec.TenantsTable:
		case spec.TenantColumn != "" && t.Column(spec.TenantColumn) == nil:
			bad("table %s (%s) has no tenant column %s: add it, or remove the table from lifeline.yaml", name, why, spec.TenantColumn)
		default:
			protected[name] = true
		}
	}
	if len(spec.Tables) > 0 {
		for _, name := range spec.Tables {
			needTenantCol(name, "listed in tables")
		}
	} else if spec.TenantColumn != "" {
		for _, t := range s.Tables {
			if t.Column(spec.TenantColumn) != nil {
				protected[t.Name] = true
			}
		}
	}
	apps := make([]string, 0, len(spec.Apps))
	for a := range spec.Apps {
		apps = append(apps, a)
	}
	sort.Strings(apps)
	owner := map[string]string{}
	for _, a := range apps {
		for _, name := range spec.Apps[a] {
			if prev, dup := owner[name]; dup {
				bad("table %s is listed in apps %s and %s: a table belongs to at most one app", name, prev, a)
				continue
			}
			owner[name] = a
			if name == spec.TenantsTable {
				bad("tenants table %s is listed in app %s: deleting the app would delete the tenants' root rows; remove it from apps.%s", name, a, a)
				continue
			}
			needTenantCol(name, "app "+a)
		}
	}

	for _, t := range s.Tables {
		if protected[t.Name] && len(t.PrimaryKey) == 0 && t.Name != spec.TenantsTable {
			bad("protected table %s has no primary key: add a primary key (Lifeline needs one to back up, compare and restore rows exactly)", t.Name)
		}
	}
	for _, t := range s.Tables {
		if protected[t.Name] {
			continue
		}
		for _, fk := range t.ForeignKeys {
			if protected[fk.RefTable] {
				bad("table %s is not protected but references protected table %s (%s): its rows would be orphaned or cascaded away unseen when a tenant is deleted; add the tenant column %s to %s so it is protected, or drop the foreign key",
					t.Name, fk.RefTable, fkString(fk), spec.TenantColumn, t.Name)
				break
			}
		}
	}

	if len(problems) > 0 {
		msg := fmt.Sprintf("product %s cannot be protected as configured (%d problem", spec.Product, len(problems))
		if len(problems) > 1 {
			msg += "s"
		}
		msg += "):\n  - " + strings.Join(problems, "\n  - ")
		return nil, fault.New(fault.Refused,
			"fix the schema or the product's tables/apps/tenants_table in lifeline.yaml, then run `lifeline protect` again",
			"%s", msg)
	}
	l.Tables = order(s, protected, spec.TenantsTable)
	return l, nil
}

func withDefaults(lim Limits) Limits {
	if lim.RowsPerStatement <= 0 {
		lim.RowsPerStatement = DefaultRowsPerStatement
	}
	if lim.RowsPerTransaction <= 0 {
		lim.RowsPerTransaction = DefaultRowsPerTransaction
	}
	if lim.TenantsPerStatement <= 0 {
		lim.TenantsPerStatement = DefaultTenantsPerStatement
	}
	return lim
}

// order sorts the protected tables parents first by foreign key, the root
// first. Self-references do not constrain the order. A cycle is broken by
// taking the alphabetically first table still waiting, so the order is
// deterministic.
func order(s *Schema, protected map[string]bool, root string) []string {
	parents := map[string]map[string]bool{}
	var waiting []string
	for _, t := range s.Tables {
		if !protected[t.Name] {
			continue
		}
		waiting = append(waiting, t.Name)
		parents[t.Name] = map[string]bool{}
		for _, fk := range t.ForeignKeys {
			if fk.RefTable != t.Name && protected[fk.RefTable] && fk.RefTable != root {
				parents[t.Name][fk.RefTable] = true
			}
		}
	}
	sort.Strings(waiting)
	var out []string
	done := map[string]bool{}
	take := func(name string) {
		out = append(out, name)
		done[name] = true
		waiting = slices.DeleteFunc(waiting, func(n string) bool { return n == name })
	}
	if protected[root] {
		take(root)
	}
	for len(waiting) > 0 {
		next := ""
		for _, n := range waiting {
			ready := true
			for p := range parents[n] {
				if !done[p] {
					ready = false
					break
				}
			}
			if ready {
				next = n
				break
			}
		}
		if next == "" { // a cycle: break it deterministically
			next = waiting[0]
		}
		take(next)
	}
	return out
}
