package productdb

import (
	"slices"
	"strings"
	"testing"

	"lifeline/internal/fault"
)

// tbl builds a table: columns by name (all TEXT), pk, and foreign keys
// written "col->table".
func tbl(name string, cols, pk []string, fks ...string) Table {
	t := Table{Name: name, PrimaryKey: pk}
	for _, c := range cols {
		t.Columns = append(t.Columns, Column{Name: c, Type: "TEXT"})
	}
	for _, fk := range fks {
		from, to, _ := strings.Cut(fk, "->")
		t.ForeignKeys = append(t.ForeignKeys, ForeignKey{Columns: []string{from}, RefTable: to, RefColumns: []string{"id"}})
	}
	return t
}

func sampleSchema() *Schema {
	id := []string{"id"}
	return &Schema{Tables: []Table{
		tbl("sites", []string{"id", "title"}, id),
		tbl("projects", []string{"id", "site_id"}, id, "site_id->sites"),
		tbl("issues", []string{"id", "site_id", "project_id"}, id, "site_id->sites", "project_id->projects"),
		tbl("comments", []string{"id", "site_id", "issue_id", "parent_id"}, id, "issue_id->issues", "parent_id->comments"),
		tbl("attachments", []string{"id", "site_id", "issue_id"}, id, "issue_id->issues"),
		tbl("insight_objects", []string{"id", "site_id"}, id),
		tbl("insight_links", []string{"id", "site_id", "object_id", "issue_id"}, id, "object_id->insight_objects", "issue_id->issues"),
		tbl("plans", []string{"code"}, []string{"code"}),
	}}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	spec := Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "sites",
		Apps: map[string][]string{"insight": {"insight_objects", "insight_links"}}}
	l, err := Resolve(spec, sampleSchema())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"sites", "insight_objects", "projects", "issues", "attachments", "comments", "insight_links"}
	if !slices.Equal(l.Tables, want) {
		t.Fatalf("order %v, want %v", l.Tables, want)
	}
	if l.KeyColumn != "id" || l.NameColumn != "title" {
		t.Fatalf("key %q name %q", l.KeyColumn, l.NameColumn)
	}
	if l.Limits != (Limits{DefaultRowsPerStatement, DefaultRowsPerTransaction, DefaultTenantsPerStatement}) {
		t.Fatalf("limits not defaulted: %+v", l.Limits)
	}
	if got := l.AppTables("insight", false); !slices.Equal(got, []string{"insight_objects", "insight_links"}) {
		t.Fatalf("app tables %v", got)
	}
	if got := l.AppTables("", false); slices.Contains(got, "insight_links") || !slices.Contains(got, "sites") {
		t.Fatalf("non-app tables %v", got)
	}

	// Listed tables: the tenants table and the app tables join them.
	spec.Tables = []string{"projects", "issues", "comments", "attachments"}
	spec.NameColumn = "id"
	l, err = Resolve(spec, sampleSchema())
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Tables) != 7 || l.Tables[0] != "sites" || l.NameColumn != "id" {
		t.Fatalf("listed layout %+v", l)
	}
}

func TestResolveProblems(t *testing.T) {
	t.Parallel()
	s := sampleSchema()
	s.Tables = append(s.Tables,
		tbl("audit", []string{"id", "issue_id"}, []string{"id"}, "issue_id->issues"), // no tenant column, references a protected table
		tbl("events", []string{"site_id", "what"}, nil),                              // protected, no primary key
	)
	spec := Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "sites",
		Apps: map[string][]string{"insight": {"insight_objects", "insight_gone", "plans"}, "other": {"insight_objects"}}}
	_, err := Resolve(spec, s)
	wantCode(t, err, fault.Refused,
		"table audit is not protected but references protected table issues",
		"protected table events has no primary key: add a primary key",
		"table insight_gone (app insight) does not exist",
		"table plans (app insight) has no tenant column site_id",
		"table insight_objects is listed in apps insight and other",
		"lifeline protect")
	if n := strings.Count(err.Error(), "\n  - "); n != 5 {
		t.Errorf("want 5 problems listed, got %d:\n%v", n, err)
	}

	_, err = Resolve(Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "orgs", Tables: []string{"nope"}}, sampleSchema())
	wantCode(t, err, fault.Refused, "tenants table orgs does not exist", "table nope (listed in tables) does not exist")

	s = sampleSchema()
	s.Tables[0].PrimaryKey = []string{"id", "title"}
	_, err = Resolve(Spec{Product: "tracker", TenantColumn: "site_id", TenantsTable: "sites", NameColumn: "label"}, s)
	wantCode(t, err, fault.Refused, "needs a single-column primary key", "no column label")
}

func TestResolveCycles(t *testing.T) {
	t.Parallel()
	id := []string{"id"}
	s := &Schema{Tables: []Table{
		tbl("t", []string{"id"}, id),
		tbl("b", []string{"id", "t", "a_id"}, id, "a_id->a"),
		tbl("a", []string{"id", "t", "b_id"}, id, "b_id->b"),
		tbl("c", []string{"id", "t", "a_id"}, id, "a_id->a", "t->t"),
	}}
	spec := Spec{Product: "p", TenantColumn: "t", TenantsTable: "t"}
	first, err := Resolve(spec, s)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(s.Tables)
	second, err := Resolve(spec, s)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"t", "a", "b", "c"}
	if !slices.Equal(first.Tables, want) || !slices.Equal(second.Tables, want) {
		t.Fatalf("cycle order %v / %v, want %v", first.Tables, second.Tables, want)
	}
}

func TestKeyOrder(t *testing.T) {
	t.Parallel()
	keys := []string{"b", "10", "9", "a", "-1", "100"}
	slices.SortFunc(keys, func(a, b string) int {
		if keyLess(a, b) {
			return -1
		}
		if keyLess(b, a) {
			return 1
		}
		return 0
	})
	if strings.Join(keys, ",") != "-1,9,10,100,a,b" {
		t.Fatal(keys)
	}
}

func TestFingerprintAndDiff(t *testing.T) {
	t.Parallel()
	a := sampleSchema()
	b := sampleSchema()
	slices.Reverse(b.Tables)
	if Fingerprint(a) != Fingerprint(b) {
		t.Fatal("fingerprint depends on table order")
	}
	c := sampleSchema()
	c.Tables[1].Columns[1].Type = "INTEGER"
	c.Tables[2].ForeignKeys = c.Tables[2].ForeignKeys[:1]
	got := Diff(a, c)
	want := []string{"table issues: foreign key (project_id) -> projects(id) removed", "table projects: column site_id type changed from TEXT to INTEGER"}
	if !slices.Equal(got, want) {
		t.Fatalf("diff %q, want %q", got, want)
	}
}
